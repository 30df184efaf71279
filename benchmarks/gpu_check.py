"""One command for a machine with a GPU: is the MLP's training path right and fast there?

    python benchmarks/gpu_check.py [--steps 1000] [--device cuda]

1. 1,000 steps (`--steps`) of the paper profile's MLP run (float64, lr 5e-4, its 3 seeds as one
   batched module; loss compiled with CUDA graphs, fused AdamW) on the GPU, and the same steps
   on the CPU (eager loss, single-tensor AdamW, which computes the plain loop's bits): steps/s
   of each, and the largest weight difference between them relative to the largest weight.
   The two round differently (other matrix kernels, fused code), so expect about 1e-12, not 0.
2. `python -m grokutils.tools.bench --device cuda`: every loop's steps/s on the GPU.

Nothing is written to results/. This project's own machine has no GPU: these figures are
missing from the README until someone runs this where one is.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from grokutils import tasks
from grokutils.tools.bench import training_digits, weight_difference
from grokutils.tools.train import config_of
from grokutils.train import SeedGroup


def timed_group(config, device: torch.device, steps: int) -> tuple[SeedGroup, float, float]:
    """A seed group of the config's seeds after `steps` steps; (group, setup seconds, steps/s)."""
    tic = time.perf_counter()
    group = SeedGroup(tasks.MLP, config, list(range(config.n_seeds)), training_digits(config), device)
    group.run(1)  # compiles and captures on CUDA
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    toc = time.perf_counter()
    group.run(steps - 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return group, toc - tic, (steps - 1) / (time.perf_counter() - toc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    if not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    config = config_of("mlp", "paper", {})
    print(f"paper profile MLP: {config.n_seeds} seeds batched, {config.dtype}, lr {config.lr:g}; "
          f"{args.steps} steps; {torch.cuda.get_device_name(torch.device(args.device))}, torch {torch.__version__}")
    results = {}
    for name in (args.device, "cpu"):
        torch.set_num_threads(1 if name == "cpu" else torch.get_num_threads())
        results[name] = timed_group(config, torch.device(name), args.steps)
        group, setup, rate = results[name]
        print(f"{name:<8} setup {setup:6.1f} s  {rate:9,.1f} steps/s  {rate * config.n_seeds:9,.1f} seed-steps/s")
    gpu, cpu = results[args.device][0], results["cpu"][0]
    worst = max(weight_difference(gpu.model.seed_weights(index), cpu.model.seed_weights(index))[1]
                for index in range(config.n_seeds))
    print(f"GPU vs CPU weights after {gpu.step} steps: max |difference| / max |w| = {worst:.3g}; "
          f"diverged: {gpu.diverged or 'none'}; the profile's {config.steps:,} steps at this rate: "
          f"{config.steps / results[args.device][2] / 3600:.1f} h")
    subprocess.run([sys.executable, "-m", "grokutils.tools.bench", "--device", args.device], check=True)


if __name__ == "__main__":
    main()

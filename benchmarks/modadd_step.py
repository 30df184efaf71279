"""Steps per second of the modular-addition training step: its four implementations, and how
close the fastest comes to the bound that its matrix products set on this machine.

All run in this process, on the same device, from the same initial weights and data (the
30% training split of all 113 x 113 pairs, full batch), with the same AdamW settings:

  reference  the model's own forward at all three positions, logits of the last one
  fast       `FullBatch.loss`: attention per token of the vocabulary, only the last position
             through the MLP and the unembedding (grokutils.transformer); the baseline
  compiled   the fast loss under torch.compile (`step_impl="compiled"`, grokutils.modadd)
  lean       `FullBatch.lean_loss` under torch.compile with PyTorch's fused AdamW
             (`step_impl="lean"`): the fast loss laid out feature-major for the CPU

Each implementation keeps its own model and optimizer; they take turns in blocks of --block
steps, --rounds times, so that all see the same load, and each is reported by its best block
(and the median). Prints milliseconds per step, steps per second, the ratios, and the losses
after the timed steps: in float64 they agree to about seven digits; in float32 Adam's first
steps amplify the round-off to about 1e-4 (tests/test_transformer.py and tests/test_modadd.py
check the agreement closely). The bound: the matrix products of one step (forward and backward
of the MLP, the attention output and the unembedding on every training row; the same in all
but the reference) timed alone as plain matmuls of the same shapes in the same run; no
implementation can beat it without doing less arithmetic.

Usage: python benchmarks/modadd_step.py [--device cpu|cuda] [--block 10] [--rounds 5] [--dtype float32] [--threads 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from grokutils.config import ModAddConfig
from grokutils.modadd import cached_data, loss_function, make_optimizer, split_batch
from grokutils.tools.bench import header
from grokutils.train import train_step
from grokutils.transformer import D_HEAD, D_MLP, D_MODEL, N_HEADS, make_transformer

IMPLEMENTATIONS = ("reference", "fast", "compiled", "lean")


def make_stepper(config: ModAddConfig, device: torch.device, warmup: int = 5):
    """A function that runs n updates of `config.step_impl` and returns the last loss; warmed up."""
    batch = split_batch(cached_data(config.p, config.train_fraction, config.data_seed), "train").to(device)
    model = make_transformer(0, config.p, config.dtype).to(device)
    optimizer, loss_of = make_optimizer(config, model.parameters()), loss_function(config)
    last = [float("nan")]

    def run(n: int) -> float:
        for _ in range(n):
            last[0] = train_step(model, optimizer, lambda: loss_of(batch, model), config.lr)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return float(last[0])

    run(warmup)
    return run


def time_blocks(steppers: dict, block: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per step of every block of every implementation, taking turns block by block."""
    seconds = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, run in steppers.items():
            start = time.perf_counter()
            run(block)
            seconds[name].append((time.perf_counter() - start) / block)
    return seconds


def matmul_shapes(rows: int, p: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product of one fast step that runs on all `rows` training rows:
    forward, input gradient and weight gradient of out_proj, fc1, fc2 and the unembedding."""
    shapes = []
    for d_in, d_out in ((N_HEADS * D_HEAD, D_MODEL), (D_MODEL, D_MLP), (D_MLP, D_MODEL), (D_MODEL, p)):
        shapes += [(rows, d_in, d_out), (rows, d_out, d_in), (d_out, rows, d_in)]
    return shapes


def bound_seconds(shapes, dtype: torch.dtype, device: torch.device, repeats: int = 20) -> float:
    """Seconds for one pass over `shapes` as plain matmuls: the floor of a step on this machine."""
    pairs = [(torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device))
             for m, k, n in shapes]
    for a, b in pairs:
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    """Command line: time the four steps and the bound, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per implementation")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    for name in ("block", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, base = torch.device(args.device), ModAddConfig(dtype=args.dtype)
    steppers = {name: make_stepper(dataclasses.replace(base, step_impl=name), device) for name in IMPLEMENTATIONS}
    seconds = time_blocks(steppers, args.block, args.rounds)
    best = {name: min(blocks) for name, blocks in seconds.items()}
    median = {name: statistics.median(blocks) for name, blocks in seconds.items()}
    rows = len(split_batch(cached_data(base.p, base.train_fraction, base.data_seed), "train").labels)
    shapes = matmul_shapes(rows, base.p)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    floor = bound_seconds(shapes, getattr(torch, args.dtype), device)
    for line in header(device):
        print(line)
    print(f"dtype {args.dtype}; {args.rounds} blocks of {args.block} full-batch steps each, taking turns; "
          f"best block (median)")
    for name, blocks in seconds.items():
        print(f"{name:>9}: {best[name] * 1e3:8.2f} ms/step ({median[name] * 1e3:.2f})  "
              f"{1 / best[name]:7.1f} steps/s")
    print(f"    bound: {floor * 1e3:8.2f} ms/step  {1 / floor:7.1f} steps/s  (the step's {flops / 1e9:.2f} GFLOP of "
          f"matrix products alone, at {flops / floor / 1e9:.0f} GFLOP/s)")
    fast = best["fast"]
    print(f"fast over reference: {best['reference'] / fast:.2f}x; over fast: compiled {fast / best['compiled']:.2f}x, "
          f"lean {fast / best['lean']:.2f}x (medians: compiled {median['fast'] / median['compiled']:.2f}x, "
          f"lean {median['fast'] / median['lean']:.2f}x)")
    print(f"lean reaches {floor / best['lean']:.0%} of the bound, which allows {fast / floor:.2f}x over fast")
    losses = ", ".join(f"{name} {run(0):.7f}" for name, run in steppers.items())
    print(f"loss after {5 + args.rounds * args.block} steps: {losses}")


if __name__ == "__main__":
    main()

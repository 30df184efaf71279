"""Steps per second of the modular-addition training step: fast loss against the eager baseline.

Both run in this process, on the same device, from the same initial weights and data (the
30% training split of all 113 x 113 pairs, full batch), with the same AdamW settings:

  reference  the model's own forward at all three positions, logits of the last one
  fast       `FullBatch.loss`: attention per token of the vocabulary, only the last position
             through the MLP and the unembedding (grokutils.transformer)

Prints milliseconds per step, steps per second, their ratio, and both losses after the timed
steps: in float64 they agree to about seven digits; in float32 Adam's first steps amplify the
round-off to about 1e-4 (tests/test_transformer.py checks the agreement more closely).

Usage: python benchmarks/modadd_step.py [--device cpu|cuda] [--steps 50] [--dtype float32]
"""
from __future__ import annotations

import argparse
import time

import torch

from grokutils.config import ModAddConfig
from grokutils.modadd import cached_data, make_optimizer, split_batch
from grokutils.train import train_step
from grokutils.transformer import FullBatch, make_transformer


def time_steps(loss_of, config: ModAddConfig, device: torch.device, steps: int, warmup: int = 5) -> tuple[float, float]:
    """Seconds per step of `steps` timed updates after `warmup` untimed ones; and the last loss."""
    batch = split_batch(cached_data(config.p, config.train_fraction, config.data_seed), "train").to(device)
    model = make_transformer(0, config.p, config.dtype).to(device)
    optimizer = make_optimizer(model, config)
    for _ in range(warmup):
        train_step(model, optimizer, lambda: loss_of(batch, model), config.lr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, optimizer, lambda: loss_of(batch, model), config.lr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps, float(loss)


def main() -> None:
    """Command line: time both steps and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per implementation")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, config = torch.device(args.device), ModAddConfig(dtype=args.dtype)
    timings = {}
    for name, loss_of in (("reference", FullBatch.reference_loss), ("fast", FullBatch.loss)):
        timings[name] = time_steps(loss_of, config, device, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; dtype {args.dtype}; {args.steps} timed full-batch steps each")
    for label, (seconds, _) in timings.items():
        print(f"{label:>9}: {seconds * 1e3:8.2f} ms/step  {1 / seconds:9.1f} steps/s")
    print(f"speed-up (fast over reference): {timings['reference'][0] / timings['fast'][0]:.2f}x")
    print(f"loss after {args.steps + 5} steps: reference {timings['reference'][1]:.7f}, fast {timings['fast'][1]:.7f}")


if __name__ == "__main__":
    main()

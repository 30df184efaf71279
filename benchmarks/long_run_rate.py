"""A real long run's training rate against the bench's step, measured in one sitting.

    python benchmarks/long_run_rate.py RESULTS_DIR [--minutes 15] [--steps 4000]

1. Pauses every run training in RESULTS_DIR (SIGSTOP to the process its lock file names), so
   that the bench has the cores alone, and times the bench's step: `grokutils.train.SeedGroup`,
   the loop the runs use, for 3 float32 seeds at lr 5e-4, in as many one-thread processes as
   there are paused runs (one per core), and then in one process with that many threads.
2. Resumes the runs (SIGCONT) and, after `--minutes`, reads each run's progress file
   (`grokutils.train.ProgressFile`): its steps per second over those minutes, checkpoints,
   measures and state saves included.
3. Prints both rates and their ratio. The difference is what a run does besides stepping:
   measuring its checkpoints (in-process for the long runs) and saving its state.

Compare rates only within one such sitting: the machine's speed varies from hour to hour.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

from grokutils.config import MLPConfig
from grokutils.tools.bench import batched_group, in_processes, training_digits
from grokutils.tools.status import lock_holder
from grokutils.train import read_progress

SEEDS = 3


def _step_worker(args: argparse.Namespace, barrier, queue) -> None:
    """One timed process: `args.steps` steps of the group on `args.threads` threads, after a barrier."""
    torch.set_num_threads(args.threads)
    config = MLPConfig(steps=10_000_000, dtype="float32", lr=5e-4, n_seeds=SEEDS)
    group = batched_group(config, SEEDS, *training_digits(config), torch.device("cpu"))
    group.run(50)  # compiles
    barrier.wait()
    tic = time.perf_counter()
    group.run(args.steps)
    queue.put(args.steps / (time.perf_counter() - tic))


def bench_rates(processes: int, threads: int, steps: int) -> list[float]:
    """Steps per second of each of `processes` spawned processes, timed together (`bench.in_processes`)."""
    return in_processes(_step_worker, argparse.Namespace(steps=steps, threads=threads), processes)


def running_runs(results_dir: Path) -> dict[str, int]:
    """{run folder name: pid} of the runs whose lock file names a live process."""
    finals = [partial.with_name(partial.name.removesuffix(".partial")) for partial in results_dir.glob("*.partial")]
    holders = {final.name: lock_holder(final) for final in sorted(finals)}
    return {name: pid for name, pid in holders.items() if pid is not None}


def realized_rate(results_dir: Path, name: str, since: float) -> tuple[float, int, int]:
    """(steps/s, first step, last step) of a run's progress samples taken after `since`."""
    record = read_progress(results_dir / f"{name}.partial" / "progress.json") or {}
    samples = [sample for sample in record.get("samples", []) if sample[0] >= since]
    if len(samples) < 2:
        return float("nan"), 0, 0
    (t0, s0), (t1, s1) = samples[0], samples[-1]
    return (s1 - s0) / (t1 - t0), int(s0), int(s1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--minutes", type=float, default=15.0, help="how long to watch the runs afterwards")
    parser.add_argument("--steps", type=int, default=4000, help="timed steps of the bench")
    args = parser.parse_args(argv)
    runs = running_runs(args.results_dir)
    if not runs:
        parser.error(f"no run is training in {args.results_dir}")
    for pid in runs.values():
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2)
        separate = bench_rates(len(runs), 1, args.steps)
        together = bench_rates(1, len(runs), args.steps)
    finally:
        for pid in runs.values():
            os.kill(pid, signal.SIGCONT)
    resumed = time.time()
    print(f"bench step, {SEEDS} float32 seeds, lr 5e-4: {len(runs)} one-thread processes: "
          + ", ".join(f"{rate:.1f}" for rate in separate) + f" steps/s (sum {sum(separate):.1f}); "
          f"one {len(runs)}-thread process: {together[0]:.1f} steps/s", flush=True)
    time.sleep(args.minutes * 60)
    bench = sum(separate) / len(separate)
    for name in runs:
        rate, first, last = realized_rate(args.results_dir, name, resumed)
        print(f"{name}: steps {first:,} -> {last:,}, {rate:.1f} steps/s realized, "
              f"{rate / bench:.0%} of the bench's {bench:.1f} per process")
    return 0


if __name__ == "__main__":
    sys.exit(main())

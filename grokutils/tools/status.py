"""Every unfinished run in a results store: its step, recent speed and the time it still needs.

    python -m grokutils.tools.status                      # results/ of this checkout
    python -m grokutils.tools.status --results-dir DIR --window 30

One row per `NAME.partial` folder: whether a process is training it now (the run's lock file
names a live process on this host, or one with a recent heartbeat on another), the step of its
latest progress sample and the step a restart would resume from (the oldest `state.pt` of its
seeds), the checkpoints measured so far, the steps per second over the last `--window` minutes
of progress samples (`grokutils.train.ProgressFile`) and the time left at that rate. A stopped
run shows the rate it last had.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from grokutils.paths import RESULTS_DIR
from grokutils.store import lock_is_live, lock_owner, lock_path
from grokutils.train import read_progress

WINDOW_MIN = 30.0  # minutes of progress samples that the recent rate is taken over


@dataclass
class RunStatus:
    """What `status` knows of one unfinished run."""

    name: str
    running: bool
    step: int | None  # the latest progress sample's step (None: no progress file)
    resumes_from: int | None  # the oldest step among the seeds' saved states (None: none saved)
    total_steps: int | None
    measured: int  # checkpoints measured, over all seeds
    rate: float | None  # steps per second over the window (None: too few samples)

    @property
    def hours_left(self) -> float | None:
        """Hours to the last step at `rate`, from the latest known step."""
        step = self.step if self.step is not None else self.resumes_from
        if not self.rate or step is None or self.total_steps is None:
            return None
        return (self.total_steps - step) / self.rate / 3600


def recent_rate(samples: list[list[float]], window_s: float) -> float | None:
    """Steps per second between the first and the last sample within `window_s` of the last one."""
    if len(samples) < 2:
        return None
    last_time, last_step = samples[-1]
    recent = [sample for sample in samples if sample[0] >= last_time - window_s]
    first_time, first_step = recent[0] if len(recent) >= 2 else samples[-2]
    return (last_step - first_step) / (last_time - first_time) if last_time > first_time else None


def lock_holder(run_folder: Path) -> int | None:
    """The process id of the live holder of the run's lock, else None: on this host, a process
    that runs; on another (a cluster node), one whose heartbeat is recent (`grokutils.store`)."""
    path = lock_path(run_folder)
    owner = lock_owner(path)
    return owner.pid if owner is not None and lock_is_live(path, owner) else None


def is_running(run_folder: Path) -> bool:
    """True if a live process holds the run's lock."""
    return lock_holder(run_folder) is not None


def saved_steps(partial: Path) -> list[int]:
    """The step of each seed's saved training state in a `.partial` folder."""
    steps = []
    for state in sorted(partial.glob("seed*/state.pt")):
        try:
            steps.append(int(torch.load(state, weights_only=True, map_location="cpu")["step"]))
        except Exception:  # a state being replaced, or damaged: the run itself will say so
            continue
    return steps


def run_status(partial: Path, window_s: float) -> RunStatus:
    """The status of the run whose work lives in `partial` (NAME.partial)."""
    final = partial.with_name(partial.name.removesuffix(".partial"))
    progress = read_progress(partial / "progress.json") or {}
    samples = progress.get("samples", [])
    steps = saved_steps(partial)
    return RunStatus(name=final.name, running=is_running(final),
                     step=int(samples[-1][1]) if samples else None,
                     resumes_from=min(steps) if steps else None,
                     total_steps=progress.get("total_steps"),
                     measured=len(list(partial.glob("seed*/measures/*.npz"))),
                     rate=recent_rate(samples, window_s))


def unfinished(results_dir: Path, window_s: float = WINDOW_MIN * 60) -> list[RunStatus]:
    """The status of every `.partial` folder in `results_dir`, by name."""
    return [run_status(partial, window_s) for partial in sorted(Path(results_dir).glob("*.partial"))
            if partial.is_dir()]


def _number(value, form: str = ",") -> str:
    return "-" if value is None else format(value, form)


def format_table(statuses: list[RunStatus]) -> str:
    """The status rows as a fixed-width table."""
    lines = [f"{'run':<52}{'state':>9}{'step':>13}{'resumes from':>14}{'of':>13}{'measured':>10}"
             f"{'steps/s':>9}{'hours left':>12}"]
    for status in statuses:
        lines.append(f"{status.name:<52}{'running' if status.running else 'stopped':>9}"
                     f"{_number(status.step):>13}{_number(status.resumes_from):>14}{_number(status.total_steps):>13}"
                     f"{status.measured:>10}{_number(status.rate, '.1f'):>9}{_number(status.hours_left, '.1f'):>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="a results store (default: %(default)s)")
    parser.add_argument("--window", type=float, default=WINDOW_MIN, help="minutes of samples for the rate")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        parser.error(f"--results-dir {args.results_dir!r} is not a folder")
    if not args.window > 0:
        parser.error(f"--window must be a positive number of minutes, got {args.window}")
    statuses = unfinished(Path(args.results_dir), args.window * 60)
    print(format_table(statuses) if statuses else f"no unfinished run in {args.results_dir}")
    print(f"({time.strftime('%Y-%m-%d %H:%M:%S')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs that take longer than a session: trained from a worktree pinned at one commit, resumed
every session from a snapshot committed with the project.

    python -m grokutils.tools.longrun start longruns/papers_protocol.yaml     # resume or begin, background
    python -m grokutils.tools.longrun status longruns/papers_protocol.yaml    # step, steps/s, hours left
    python -m grokutils.tools.longrun snapshot longruns/papers_protocol.yaml  # then commit longruns/
    python -m grokutils.tools.longrun collect longruns/papers_protocol.yaml   # sealed runs -> results/

A spec file names the commit whose code trains the runs and each run (`experiment`, `profile`,
`sets`: as `python -m grokutils.tools.train` takes them). The code is pinned because a run
resumed with other arithmetic would not be one run; work on main goes on meanwhile.

Why snapshots: a session's machine and its ignored files (`.partial` folders) are not kept for
the next session; only what is committed is. `snapshot` copies each run's resumable state (the
seeds' `state.pt`, the measures so far, the weights the finished run will keep, the progress
file) into `longruns/snapshots/NAME.partial/`, a few MB per seed; `start` puts it back into the
worktree's store when the worktree has nothing newer. Each run trains in its own process on one
thread, pinned to its own core, measuring its checkpoints in that process (`--workers 0`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from grokutils import store
from grokutils.paths import REPO_ROOT, RESULTS_DIR, data_roots
from grokutils.tools import status as status_tool
from grokutils.tools.train import config_of

WORKTREES = REPO_ROOT / ".longruns"  # pinned worktrees and logs (ignored by git)
SNAPSHOTS = REPO_ROOT / "longruns" / "snapshots"  # committed resumable states
KEPT = ("progress.json", "seed*/state.pt", "seed*/measures/*.npz", "seed*/weights/*.safetensors")


@dataclass(frozen=True)
class LongRun:
    """One run of a spec: what `tools.train` is given, and its folder name in the store."""

    experiment: str
    profile: str
    sets: dict
    name: str

    def train_arguments(self) -> list[str]:
        """`python -m grokutils.tools.train` arguments of this run."""
        sets = [f"--set={field}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for field, value in self.sets.items()]
        return [self.experiment, "--profile", self.profile, *sets]


@dataclass(frozen=True)
class Spec:
    """A spec file: the pinned commit and the runs."""

    commit: str
    runs: tuple[LongRun, ...]
    threads: int

    @property
    def worktree(self) -> Path:
        return WORKTREES / self.commit[:12]


def read_spec(path: Path) -> Spec:
    """Read and check a spec file: a commit of this repository and runs that make valid configs."""
    content = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(content, dict) or not isinstance(content.get("runs"), list) or not content["runs"]:
        raise ValueError(f"{path}: a spec maps commit to a hash and runs to a non-empty list")
    commit = str(content.get("commit", ""))
    resolved = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                              capture_output=True, text=True)
    if not commit or resolved.returncode != 0:
        raise ValueError(f"{path}: commit must name a commit of this repository, got {commit!r}")
    runs = []
    for entry in content["runs"]:
        experiment, profile, sets = entry.get("experiment"), entry.get("profile", "accelerated"), entry.get("sets", {})
        config = config_of(experiment, profile, sets)
        runs.append(LongRun(experiment, profile, dict(sets), store.run_dir(config, RESULTS_DIR).name))
    threads = content.get("threads", 1)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{path}: threads must be a positive integer, got {threads!r}")
    return Spec(resolved.stdout.strip(), tuple(runs), threads)


def ensure_worktree(spec: Spec) -> Path:
    """The pinned worktree, added (detached at the commit) if this machine has none yet."""
    if not (spec.worktree / "grokutils").is_dir():
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(spec.worktree), spec.commit],
                       check=True, capture_output=True)
    return spec.worktree


def _resume_step(partial: Path) -> int:
    """The step a `.partial` folder would resume from (-1 if it has no saved state)."""
    steps = status_tool.saved_steps(partial)
    return min(steps) if steps else -1


def _checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint's weights or measures file (`step_000001234.*`), else None."""
    stem = path.name.split(".")[0]
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None


def copy_state(source: Path, target: Path) -> None:
    """Copy the resumable files (`KEPT`) of a `.partial` folder into `target`, replacing it whole:
    written beside it first, then swapped in, so a stop midway leaves the old copy.

    Checkpoints after the step the copy resumes from are left out: the resumed run saves and
    measures them again from its own weights (on another CPU it rounds differently from there)."""
    upto = _resume_step(source)
    staging = target.with_name(target.name + ".copying")
    shutil.rmtree(staging, ignore_errors=True)
    for pattern in KEPT:
        for path in source.glob(pattern):
            step = _checkpoint_step(path)
            if step is not None and step > upto:
                continue
            destination = staging / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(path, destination)
            except FileNotFoundError:  # removed by the running process meanwhile (a pruned weights file)
                continue
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def start(spec: Spec) -> list[str]:
    """Resume (from the snapshot, where the worktree has nothing newer) or begin every unfinished
    run in the background; returns one line per run saying what was done."""
    worktree = ensure_worktree(spec)
    results, logs = worktree / "results", WORKTREES / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lines = []
    for core, run in enumerate(spec.runs):
        final = results / run.name
        partial, snapshot = store.partial_dir(final), SNAPSHOTS / f"{run.name}.partial"
        if store.is_complete(RESULTS_DIR / run.name) or store.is_complete(final):
            lines.append(f"{run.name}: finished (collect it if results/ lacks it)")
            continue
        if status_tool.is_running(final):
            lines.append(f"{run.name}: already running")
            continue
        if snapshot.is_dir() and _resume_step(snapshot) > _resume_step(partial):
            copy_state(snapshot, partial)
            lines.append(f"{run.name}: restored from the snapshot at step {_resume_step(partial):,}")
        lines.append(f"{run.name}: started on core {core % (os.cpu_count() or 1)}, log {logs / run.name}.log")
        launch(spec, run, core % (os.cpu_count() or 1), logs / f"{run.name}.log")
    return lines


def launch(spec: Spec, run: LongRun, core: int, log_file: Path) -> None:
    """`tools.train` of one run from the worktree, in the background, on one core (taskset)."""
    environment = {**os.environ, "PYTHONPATH": str(spec.worktree), "OMP_NUM_THREADS": str(spec.threads)}
    data = [root for root in data_roots() if (root / "MNIST" / "raw").is_dir()]
    if data:  # the worktree's own candidates (beside .longruns/) hold no data
        environment["GROKUTILS_DATA"] = str(data[0])
    command = [sys.executable, "-m", "grokutils.tools.train", *run.train_arguments(),
               "--threads", str(spec.threads), "--workers", "0", "--results-dir", str(spec.worktree / "results")]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    with open(log_file, "ab") as log:
        subprocess.Popen(command, cwd=spec.worktree, env=environment, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)


def snapshot(spec: Spec) -> list[str]:
    """Copy each unfinished run's resumable state into `longruns/snapshots/` (to be committed)."""
    lines = []
    for run in spec.runs:
        partial = store.partial_dir(spec.worktree / "results" / run.name)
        target = SNAPSHOTS / f"{run.name}.partial"
        if not partial.is_dir():
            lines.append(f"{run.name}: nothing to snapshot")
            continue
        if _resume_step(partial) < _resume_step(target):
            lines.append(f"{run.name}: the snapshot is ahead of the worktree; kept")
            continue
        copy_state(partial, target)
        lines.append(f"{run.name}: snapshot at step {_resume_step(target):,}")
    return lines


def collect(spec: Spec) -> list[str]:
    """Copy each sealed run from the worktree into results/ and drop its snapshot."""
    lines = []
    for run in spec.runs:
        sealed, target = spec.worktree / "results" / run.name, RESULTS_DIR / run.name
        if store.is_complete(sealed) and not store.is_complete(target):
            shutil.copytree(sealed, target, dirs_exist_ok=True)
        if store.is_complete(target):
            shutil.rmtree(SNAPSHOTS / f"{run.name}.partial", ignore_errors=True)
            lines.append(f"{run.name}: in results/")
        else:
            lines.append(f"{run.name}: not finished")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.longrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "status", "snapshot", "collect"))
    parser.add_argument("spec", type=Path, help="a spec file, e.g. longruns/papers_protocol.yaml")
    args = parser.parse_args(argv)
    if not args.spec.is_file():
        parser.error(f"spec {str(args.spec)!r} is not a file")
    try:
        spec = read_spec(args.spec)
    except ValueError as err:
        parser.error(str(err))
    if args.action == "status":
        results = spec.worktree / "results"
        rows = [status for status in status_tool.unfinished(results) if status.name in {r.name for r in spec.runs}] \
            if results.is_dir() else []
        print(status_tool.format_table(rows) if rows else f"no unfinished run of {args.spec} on this machine")
        return 0
    for line in {"start": start, "snapshot": snapshot, "collect": collect}[args.action](spec):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs that take longer than a session: trained from a worktree pinned at one commit, resumed
every session from a snapshot committed with the project.

    python -m grokutils.tools.longrun start longruns/papers_protocol.yaml     # resume or begin, background
    python -m grokutils.tools.longrun status longruns/papers_protocol.yaml    # step, steps/s, hours left
    python -m grokutils.tools.longrun snapshot longruns/papers_protocol.yaml  # then commit longruns/
    python -m grokutils.tools.longrun collect longruns/papers_protocol.yaml   # sealed runs -> results/
    python -m grokutils.tools.longrun ledger longruns/papers_protocol.yaml    # what the runs have cost
    python -m grokutils.tools.longrun preview longruns/papers_protocol.yaml   # the curves so far, per seed

A spec file names the commit whose code trains the runs and each run (`experiment`, `profile`,
`sets`: as `python -m grokutils.tools.train` takes them). The code is pinned because a run
resumed with other arithmetic would not be one run; work on main goes on meanwhile.

Why snapshots: a session's machine and its ignored files (`.partial` folders) are not kept for
the next session; only what is committed is. `snapshot` copies each run's resumable state (the
seeds' `state.pt`, the measures so far, the weights the finished run will keep, the progress
file) into `longruns/snapshots/NAME.partial/`, a few MB per seed; `start` puts it back into the
worktree's store when the worktree has nothing newer. Each run trains in its own process on one
thread, pinned to its own core, measuring its checkpoints in that process (`--workers 0`).

Why a ledger: a sealed run's metadata times only its last process, from its last resume. So
`snapshot` and `start` also record each training process they see (when it started, from which step, the
latest step and time of its progress file, the CPU) in `longruns/SPEC.ledger.json`, which stays
after the snapshots are gone; `collect` closes the last process from the sealed run's timings.
The ledger is what the runs cost in wall time, with the steps trained again after each resume.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from grokutils import store
from grokutils.paths import REPO_ROOT, RESULTS_DIR, data_roots
from grokutils.runs import DEFAULT_PROFILE
from grokutils.tools import status as status_tool
from grokutils.tools.bench import cpu_model
from grokutils.tools.train import config_of
from grokutils.train import read_progress

WORKTREES = REPO_ROOT / ".longruns"  # pinned worktrees and logs (ignored by git)
LEDGERS = REPO_ROOT / "longruns"  # the specs, and beside each its ledger of training processes
SNAPSHOTS = LEDGERS / "snapshots"  # committed resumable states
LEDGER_COLUMNS = ("run", "started", "hours", "from step", "to step", "steps/s", "steps trained again", "cpu")
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
        experiment, sets = entry.get("experiment"), entry.get("sets", {})
        profile = entry.get("profile", DEFAULT_PROFILE)
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


def start(spec: Spec, ledger: Path | None = None) -> list[str]:
    """Resume (from the snapshot, where the worktree has nothing newer) or begin every unfinished
    run in the background; returns one line per run saying what was done. The worktree's progress
    file of a stopped process goes into the ledger (when given) first: on the same machine, that
    process may have trained past the last snapshot."""
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
        _record_progress(ledger, run.name, partial)
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


def snapshot(spec: Spec, ledger: Path | None = None) -> list[str]:
    """Copy each unfinished run's resumable state into `longruns/snapshots/` (to be committed), and
    record its training process in the ledger (when given)."""
    lines = []
    for run in spec.runs:
        partial = store.partial_dir(spec.worktree / "results" / run.name)
        target = SNAPSHOTS / f"{run.name}.partial"
        if not partial.is_dir():
            lines.append(f"{run.name}: nothing to snapshot")
            continue
        _record_progress(ledger, run.name, partial)
        if _resume_step(partial) < _resume_step(target):
            lines.append(f"{run.name}: the snapshot is ahead of the worktree; kept")
            continue
        copy_state(partial, target)
        lines.append(f"{run.name}: snapshot at step {_resume_step(target):,}")
    return lines


def collect(spec: Spec, ledger: Path | None = None) -> list[str]:
    """Copy each sealed run from the worktree into results/, close its last process in the ledger
    (when given) and drop its snapshot."""
    lines = []
    for run in spec.runs:
        sealed, target = spec.worktree / "results" / run.name, RESULTS_DIR / run.name
        if store.is_complete(sealed) and not store.is_complete(target):
            if ledger is not None:
                close_last_segment(ledger, run.name, sealed)
            shutil.copytree(sealed, target, dirs_exist_ok=True)
        if store.is_complete(target):
            shutil.rmtree(SNAPSHOTS / f"{run.name}.partial", ignore_errors=True)
            lines.append(f"{run.name}: in results/")
        else:
            lines.append(f"{run.name}: not finished")
    return lines


# --- the ledger: every training process of a spec's runs -----------------------------------------


def ledger_path(spec_file: Path) -> Path:
    """`longruns/NAME.ledger.json` beside the spec file `longruns/NAME.yaml`."""
    return spec_file.with_name(spec_file.stem + ".ledger.json")


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def segment_of(progress: dict, cpu: str | None = None) -> dict:
    """One training process, from its progress file: started (time, step) and its latest sample."""
    (started, from_step), (last, to_step) = progress["started"], progress["samples"][-1]
    return {"started": _iso(started), "from_step": int(from_step), "last": _iso(last), "to_step": int(to_step),
            "cpu": cpu if cpu is not None else cpu_model()}


def read_ledger(path: Path) -> dict[str, list[dict]]:
    """Run name -> its processes in order of start ({} where the file does not exist yet)."""
    if not path.is_file():
        return {}
    content = json.loads(path.read_text())
    if not isinstance(content, dict) or not isinstance(content.get("runs"), dict):
        raise ValueError(f"{path}: a ledger maps 'runs' to run names and their processes")
    return content["runs"]


def _write_ledger(path: Path, runs: dict[str, list[dict]]) -> None:
    content = {"about": "each training process of the runs of " + path.name.replace(".ledger.json", ".yaml")
               + ": when it started and from which step, its last recorded time and step, the CPU "
               "(python -m grokutils.tools.longrun ledger SPEC sums it up)", "runs": runs}
    store.atomic_write_bytes(path, (json.dumps(content, indent=1) + "\n").encode())


def _record_progress(ledger: Path | None, name: str, partial: Path) -> None:
    """Record the process of a `.partial` folder's progress file, if there is a ledger and a file."""
    progress = read_progress(partial / "progress.json")
    if ledger is not None and progress and progress.get("started") and progress.get("samples"):
        record_segment(ledger, name, segment_of(progress))


def record_segment(path: Path, name: str, segment: dict) -> None:
    """Add a process to the ledger, or update it (same start time) with its later progress."""
    runs = read_ledger(path)
    segments = [old for old in runs.get(name, []) if old["started"] != segment["started"]]
    runs[name] = sorted([*segments, segment], key=lambda one: one["started"])
    _write_ledger(path, runs)


def close_last_segment(path: Path, name: str, sealed: Path) -> None:
    """Close the run's last process at its end: its sealed metadata's wall time, counted from that
    process's start, and the run's last step. A process the ledger never saw is added with its
    start step unknown (None)."""
    meta = json.loads((sealed / "meta.json").read_text())
    steps = max(status["step"] for status in meta["status"].values())
    ended = (sealed / "meta.json").stat().st_mtime
    started = ended - meta["timings"]["wall_s"]
    runs = read_ledger(path)
    segments = runs.get(name, [])
    if segments and abs(_seconds(segments[-1]["started"]) - started) < 600:  # the same process
        segments[-1] = {**segments[-1], "last": _iso(ended), "to_step": steps}
    else:
        segments.append({"started": _iso(started), "from_step": None, "last": _iso(ended), "to_step": steps,
                         "cpu": cpu_model()})
    runs[name] = segments
    _write_ledger(path, runs)


def ledger_table(path: Path) -> pd.DataFrame:
    """One row per process: run, start, hours, steps from and to, steps/s, steps trained again
    (those before the step where the previous process had got to), CPU."""
    rows = []
    for name, segments in read_ledger(path).items():
        reached = 0
        for segment in segments:
            hours = (_seconds(segment["last"]) - _seconds(segment["started"])) / 3600
            start = segment["from_step"]
            trained = None if start is None else segment["to_step"] - start
            rows.append({"run": name, "started": segment["started"], "hours": hours, "from step": start,
                         "to step": segment["to_step"], "steps/s": None if trained is None or hours <= 0
                         else trained / hours / 3600,
                         "steps trained again": None if start is None else max(0, reached - start),
                         "cpu": segment["cpu"]})
            reached = max(reached, segment["to_step"])
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS))


def ledger_rows(names, folder: Path = LEDGERS) -> pd.DataFrame:
    """The processes that trained the runs `names` (folder names in the store), from every ledger in
    `folder`; no rows where none of them trained as a long run."""
    names = set(names)
    tables = [ledger_table(path) for path in sorted(folder.glob("*.ledger.json"))]
    rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(LEDGER_COLUMNS))
    return rows[rows.run.isin(names)].reset_index(drop=True)


def cost_values(rows: pd.DataFrame) -> dict:
    """What the runs of ledger `rows` cost: per run, its processes, wall hours and the steps it trained
    again after resumes; over all processes, the range of steps/s and the mean (steps trained over
    hours); the CPUs recorded. `n_runs` 0 where there are no rows. In words: templates/longrun.j2."""
    if rows.empty:
        return {"n_runs": 0}
    per_run = rows.groupby("run")
    trained = (rows["to step"] - rows["from step"]).groupby(rows.run).sum()
    seconds = per_run.hours.sum() * 3600
    recorded = sorted({cpu for cpu in rows.cpu if cpu != "not recorded"})
    return {"n_runs": len(per_run), "processes": sorted(int(n) for n in per_run.size().unique()),
            "hours": sorted(float(hours) for hours in per_run.hours.sum()),
            "rate": float((trained / seconds).mean()), "rate_low": float(rows["steps/s"].min()),
            "rate_high": float(rows["steps/s"].max()), "again": int(rows["steps trained again"].fillna(0).sum()),
            "cpus": recorded, "unrecorded": int((rows.cpu == "not recorded").sum())}


# --- the preview: an unfinished run's curves so far -------------------------------------------------

PREVIEW_LAYERS = ("fc1", "fc2")


def preview(spec: Spec) -> pd.DataFrame:
    """Per run and seed, from the checkpoints measured so far (the worktree's `.partial` folder, else
    the committed snapshot): the last measured step with its raw test and train accuracy; the phase
    rule's reading of the curves so far (`phases.collapse_table`: the smoothed peak and its step, the
    fall with train held, the step train slips, the verdict); alpha and traps of FC1 and FC2 at the
    last step. Provisional: the sealed run is read by the chapters, not this. Empty where no run has
    a measured checkpoint."""
    from grokutils.engine import collect_measures
    from grokutils.phases import collapse_table

    rows = []
    for run in spec.runs:
        partial = store.partial_dir(spec.worktree / "results" / run.name)
        source = partial if partial.is_dir() else SNAPSHOTS / f"{run.name}.partial"
        config = config_of(run.experiment, run.profile, run.sets)
        every = {seed: {"step": config.steps} for seed in range(config.n_seeds)}
        curves, layers, _ = collect_measures(config, source, every)
        if curves.empty:
            continue
        table = collapse_table(curves)
        for seed, mine in curves.groupby("seed"):
            last = mine.loc[mine.step.idxmax()]
            ruled = table.loc[seed]
            row = {"run": run.name, "seed": int(seed), "step": int(last.step),
                   "test": float(last.test_accuracy), "train": float(last.train_accuracy),
                   "peak": float(ruled.peak_test_accuracy), "peak step": ruled.t_peak,
                   "held fall": float(ruled.held_fall), "slip step": ruled.t_slip, "verdict": ruled.verdict}
            at_last = layers[(layers.seed == seed) & (layers.step == last.step)].set_index("layer")
            for layer in PREVIEW_LAYERS:
                row[f"{layer} alpha"] = float(at_last.alpha.get(layer, float("nan")))
                row[f"{layer} traps"] = at_last.traps.get(layer, pd.NA)
            rows.append(row)
    return pd.DataFrame(rows)


def _print_table(table: pd.DataFrame, empty: str, footer, decimals) -> None:
    """Print `table` rounded to `decimals` (as DataFrame.round takes them) with the line `footer(table)`
    under it, or the line `empty` when it has no row."""
    if table.empty:
        print(empty)
        return
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.round(decimals).to_string(index=False))
    print(footer(table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.longrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "status", "snapshot", "collect", "ledger", "preview"))
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
    if args.action == "preview":
        _print_table(preview(spec), f"no measured checkpoint of {args.spec} on this machine or in its snapshots",
                     lambda table: "provisional: the phase rule read on the checkpoints measured so far, "
                                   "not the sealed run", 3)
        return 0
    ledger = ledger_path(args.spec)
    if args.action == "ledger":
        _print_table(ledger_table(ledger), f"{ledger} records no process yet",
                     lambda table: "hours per run: " + ", ".join(
                         f"{name} {hours:.1f}" for name, hours in table.groupby("run").hours.sum().items()),
                     {"hours": 2, "steps/s": 1})
        return 0
    for line in {"start": start, "snapshot": snapshot, "collect": collect}[args.action](spec, ledger):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

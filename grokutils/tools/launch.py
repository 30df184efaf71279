"""Launch a profile's runs as cluster jobs (Slurm, through submitit): one job per run.

    python -m grokutils.tools.launch --profile paper --dry-run               # the jobs and their folders
    python -m grokutils.tools.launch mlp --profile paper --grid weight_decay=0,0.01 --partition gpu --gpus 1
    python -m grokutils.tools.launch mlp --profile smoke --set steps=300 --executor local --wait

The runs are those the book loads under the profile: the MLP at the chapters' two weight decays
(0.0 and 0.01), the modular-addition run and the modular-addition chapter's collapse search (`notebooks.
03_modular_addition.search`); or, with `--grid FIELD=V1,V2` (repeatable; values read as YAML),
each named experiment's profile entry crossed with the grid. `--set FIELD=VALUE` applies to every
run, as in `grokutils.tools.train`. Every run is built and checked before anything is submitted,
and a run already stored is reported, not submitted. Each job runs `grokutils.tools.train` on
its run, so it stores the run where `make book PROFILE=...` loads it without training.

Executor parameters come from the profile's `cluster:` block, overridden by flags: partition,
account, qos, constraint, GPUs and CPUs per job, memory, time limit (minutes). A job at its time
limit or preempted gets submitit's signal, saves nothing extra (the run's `.partial` folder holds
its latest checkpoint) and is requeued; it then resumes from the store. A job whose run was
stored meanwhile loads it and exits. With `--wait` the launcher waits for the jobs and names
each failed one with its log and run folder; the others' results are kept. Job logs go to
`logs/launch/JOBID_*` (`--log-dir`). `--executor local` runs the jobs as processes on this
machine; `auto` (default) submits to Slurm where `sbatch` exists.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
import yaml

from grokutils import runs, store
from grokutils.paths import REPO_ROOT, RESULTS_DIR
from grokutils.tools import train as train_cli
from grokutils.tools.status import saved_steps

log = logging.getLogger(__name__)
LOG_DIR = REPO_ROOT / "logs" / "launch"  # job logs and submitit's pickles (git-ignored)
BOOK_WEIGHT_DECAYS = (0.0, 0.01)  # the MLP runs of the book: the main run (0.0) and its control (0.01)
SEARCH_NOTEBOOK = "03_modular_addition"  # its `search` list: one-seed modular-addition runs
# A profile's `cluster:` key -> (its type, submitit's parameter)
CLUSTER_KEYS = {
    "partition": (str, "slurm_partition"),
    "account": (str, "slurm_account"),
    "qos": (str, "slurm_qos"),
    "constraint": (str, "slurm_constraint"),
    "gpus_per_node": (int, "gpus_per_node"),
    "cpus_per_task": (int, "cpus_per_task"),
    "mem_gb": (int, "mem_gb"),
    "timeout_min": (int, "timeout_min"),
    "array_parallelism": (int, "slurm_array_parallelism"),
}
CLUSTER_DEFAULTS = {"cpus_per_task": 2, "timeout_min": 24 * 60}  # one core trains, one measures; one day


@dataclass(frozen=True)
class PlannedRun:
    """One job: a run of the profile, as `tools.train` arguments, and its results folder."""

    experiment: str
    sets: dict  # --set values on top of the profile entry
    config: object
    folder: Path

    def train_arguments(self, profile: Path, results_dir: Path, device: str, cpus: int) -> list[str]:
        """The `python -m grokutils.tools.train` arguments of this run, in a job with `cpus` cores."""
        workers = max(cpus - 1, 0)  # one core trains, the others measure checkpoints
        sets = [f"--set={name}={json.dumps(value)}" for name, value in self.sets.items()]
        return [self.experiment, "--profile", str(profile), *sets, "--device", device,
                "--results-dir", str(results_dir), "--workers", str(workers), "--threads", "1"]


class RunJob(submitit.helpers.Checkpointable):
    """A run as a job: `tools.train` on it. Requeued (same arguments) at a time limit or a
    preemption; the store's resume continues from the run's `.partial` folder."""

    def __init__(self, arguments: list[str], folder: str):
        self.arguments, self.folder = arguments, folder

    def __call__(self) -> str:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        steps = saved_steps(store.partial_dir(Path(self.folder)))
        if steps:
            log.info("%s: resuming from step %s (each seed's saved state: %s)", Path(self.folder).name,
                     min(steps), steps)
        code = train_cli.main(self.arguments)
        if code != 0:
            raise RuntimeError(f"grokutils.tools.train exited with {code}")
        return self.folder

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit at a time limit or preemption: the run's checkpoints are in the
        store already, so the job is requeued as it was."""
        steps = saved_steps(store.partial_dir(Path(self.folder)))
        log.warning("%s: stopped by the scheduler; requeued, to resume from step %s",
                    Path(self.folder).name, min(steps) if steps else 0)
        return super().checkpoint(*args, **kwargs)


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["weight_decay=0,0.01"]` -> {"weight_decay": [0, 0.01]}; bad items named."""
    grid = {}
    for item in items:
        name, sep, text = item.partition("=")
        values = [yaml.safe_load(value) for value in text.split(",") if value.strip()]
        if not sep or not name.strip() or not values:
            raise ValueError(f"--grid takes FIELD=VALUE[,VALUE...], got {item!r}")
        grid[name.strip()] = values
    return grid


def _check_fields(experiment: str, names, flag: str) -> None:
    fields = {field.name for field in dataclasses.fields(runs.EXPERIMENTS[experiment])}
    unknown = sorted(set(names) - fields)
    if unknown:
        raise ValueError(f"{flag} names {unknown}, not fields of {runs.EXPERIMENTS[experiment].__name__}; "
                         f"accepted: {sorted(fields)}")


def _run_sets(experiment: str, profile: Path, grid: dict[str, list], sets: dict) -> list[dict]:
    """The --set values of each run of `experiment`: the grid's points, or the book's runs."""
    if grid:
        _check_fields(experiment, grid, "--grid")
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    elif experiment == "mlp":
        points = [{"weight_decay": decay} for decay in BOOK_WEIGHT_DECAYS]
    else:
        points = [{}]
    if experiment == "modadd" and not grid:
        search = runs.read_profile(profile)["notebooks"].get(SEARCH_NOTEBOOK, {}).get("search") or []
        points += [{"n_seeds": 1, **override} for override in search]
    return [{**point, **sets} for point in points]


def plan(experiments: list[str], profile: Path, grid: dict[str, list], sets: dict,
         results_dir: Path) -> tuple[list[PlannedRun], list[str]]:
    """Every run to launch, each built and checked, and notes on the runs left out."""
    planned, notes, seen = [], [], set()
    for experiment in experiments:
        _check_fields(experiment, sets, "--set")
        for run_sets in _run_sets(experiment, profile, grid, sets):
            config = train_cli.config_of(experiment, str(profile), run_sets)
            folder = store.run_dir(config, results_dir)
            if folder in seen:
                continue
            seen.add(folder)
            if getattr(config, "init_from", ""):
                try:
                    train_cli.check_run_arguments(config, "cpu", None, None)
                except (ValueError, FileNotFoundError) as err:
                    notes.append(f"not launched: {folder.name} starts from a run not stored yet ({err}); "
                                 "launch again once it is")
                    continue
            planned.append(PlannedRun(experiment, run_sets, config, folder))
    return planned, notes


def cluster_parameters(profile: Path, flags: dict) -> dict:
    """Executor parameters: defaults, then the profile's `cluster:` block, then the flags set."""
    path = runs.profile_path(profile)
    block = (yaml.safe_load(path.read_text()) or {}).get("cluster") or {}
    if not isinstance(block, dict):
        raise ValueError(f"{path.name}: cluster must map {sorted(CLUSTER_KEYS)} to values, got {block!r}")
    merged = {**CLUSTER_DEFAULTS, **block, **{k: v for k, v in flags.items() if v is not None}}
    for key, value in merged.items():
        if key not in CLUSTER_KEYS:
            raise ValueError(f"{path.name}: cluster sets {key!r}; accepted: {sorted(CLUSTER_KEYS)}")
        kind, least = CLUSTER_KEYS[key][0], 0 if key == "gpus_per_node" else 1
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < least):
            wanted = "a string" if kind is str else ("a non-negative" if least == 0 else "a positive") + " integer"
            raise ValueError(f"cluster {key} must be {wanted}, got {value!r}")
    return merged


def make_executor(kind: str, log_dir: Path, parameters: dict, name: str) -> submitit.AutoExecutor:
    """submitit's executor for `kind` (slurm, local, or auto: Slurm where sbatch exists)."""
    if kind == "slurm" and submitit.AutoExecutor.which() != "slurm":
        raise ValueError("--executor slurm: no Slurm here (sbatch not found); accepted here: local, auto")
    executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster=None if kind == "auto" else kind)
    executor.update_parameters(name=name, slurm_additional_parameters={"requeue": True},
                               **{CLUSTER_KEYS[key][1]: value for key, value in parameters.items()})
    return executor


GONE_GRACE_S = 30.0  # a job out of the queue this long without a result file has failed


def in_queue(job) -> bool:
    """True while the scheduler still holds `job` (pending, running or requeued). Slurm is asked
    with `squeue`, which needs no accounting (submitit's own check calls `sacct`)."""
    if isinstance(job, submitit.SlurmJob):
        listed = subprocess.run(["squeue", "--noheader", "-j", job.job_id, "-o", "%T"], capture_output=True,
                                text=True, timeout=60)
        return listed.returncode == 0 and bool(listed.stdout.strip())
    return job.get_info().get("jobState") == "RUNNING"


def wait_for(jobs: list, poll_s: float = 5.0) -> None:
    """Until every job has written its result file or has left the queue for GONE_GRACE_S."""
    gone: dict[int, float] = {}
    waiting = set(range(len(jobs)))
    while waiting:
        for index in sorted(waiting):
            job = jobs[index]
            if job.paths.result_pickle.exists():
                waiting.discard(index)
            elif in_queue(job):
                gone.pop(index, None)
            elif time.monotonic() - gone.setdefault(index, time.monotonic()) > GONE_GRACE_S:
                waiting.discard(index)
        if waiting:
            time.sleep(poll_s)


def wait_and_report(jobs: list, planned: list[PlannedRun]) -> int:
    """Wait for every job; print each run's outcome, a failed one with its log and run folder.
    Returns the number of failed jobs."""
    wait_for(jobs)
    failed = 0
    for job, run in zip(jobs, planned):
        if not job.paths.result_pickle.exists():
            reason = "it left the queue without a result (killed: memory, time limit after its requeues, scancel?)"
        else:
            try:
                job.result()
                print(f"finished: job {job.job_id}: {run.folder}", flush=True)
                continue
            except Exception as err:  # noqa: BLE001 - a job's failure is reported, the others go on
                lines = str(err).strip().splitlines()
                reason = lines[-1] if lines else type(err).__name__
        failed += 1
        print(f"FAILED: job {job.job_id}: {reason}\n  log: {job.paths.stderr}\n  run folder: {run.folder} "
              f"(its .partial folder keeps the work done)", flush=True)
    return failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help=f"any of {sorted(runs.EXPERIMENTS)} (default: every one the profile names)")
    parser.add_argument("--profile", default=runs.DEFAULT_PROFILE, help="profile name or .yaml path")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--executor", default="auto", choices=("auto", "slurm", "local"))
    parser.add_argument("--device", default=None, help="default: the profile entry's device")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--log-dir", default=str(LOG_DIR))
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and their folders; submit nothing")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs and report each one")
    cluster = parser.add_argument_group("executor parameters (default: the profile's cluster: block)")
    for flag, key, kind in (("--partition", "partition", str), ("--account", "account", str), ("--qos", "qos", str),
                            ("--constraint", "constraint", str), ("--gpus", "gpus_per_node", int),
                            ("--cpus", "cpus_per_task", int), ("--mem-gb", "mem_gb", int),
                            ("--time", "timeout_min", int), ("--array-parallelism", "array_parallelism", int)):
        cluster.add_argument(flag, dest=key, type=kind, default=None,
                             help="minutes" if key == "timeout_min" else None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        profile = runs.profile_path(args.profile).resolve()
        named = runs.read_profile(profile)["runs"]
        experiments = args.experiments or sorted(named)
        absent = [name for name in experiments if name not in runs.EXPERIMENTS or name not in named]
        if absent:
            raise ValueError(f"experiments {absent} are not in profile {profile.name}; accepted: {sorted(named)}")
        parameters = cluster_parameters(profile, {key: getattr(args, key) for key in CLUSTER_KEYS})
        results_dir = Path(args.results_dir).resolve()
        planned, notes = plan(experiments, profile, parse_grid(args.grid), train_cli.parse_sets(args.sets),
                              results_dir)
        devices = {run.experiment: args.device or runs.device_of(run.experiment, profile) for run in planned}
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    stored = [run for run in planned if store.is_complete(run.folder)]
    pending = [run for run in planned if run not in stored]
    arguments = [run.train_arguments(profile, results_dir, devices[run.experiment], parameters["cpus_per_task"])
                 for run in pending]
    print(f"{len(pending)} job(s), executor {args.executor}, {parameters}", flush=True)
    for run in stored:
        print(f"stored: {run.folder} (not submitted)")
    for run, job_arguments in zip(pending, arguments):
        print(f"job: {run.folder}\n  python -m grokutils.tools.train {' '.join(job_arguments)}")
    for note in notes:
        print(note)
    if args.dry_run or not pending:
        return 0
    try:
        executor = make_executor(args.executor, Path(args.log_dir).resolve(), parameters, f"grokutils-{profile.stem}")
    except ValueError as err:
        parser.error(str(err))
    with executor.batch():
        jobs = [executor.submit(RunJob(job_arguments, str(run.folder)))
                for run, job_arguments in zip(pending, arguments)]
    for job, run in zip(jobs, pending):
        print(f"submitted: job {job.job_id}: {run.folder.name}\n  log: {job.paths.stdout}", flush=True)
    print(f"watch: squeue --me; python -m grokutils.tools.status --results-dir {results_dir}", flush=True)
    if not args.wait:
        return 0
    return 1 if wait_and_report(jobs, pending) else 0


if __name__ == "__main__":
    sys.exit(main())

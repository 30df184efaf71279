"""Train (or load) one run of a profile from the command line: for long runs in the background.

    python -m grokutils.tools.train mlp --profile accelerated --set weight_decay=0.01
    nohup python -m grokutils.tools.train mlp --set steps=1000000 --set n_checkpoints=120 > run.log 2>&1 &

The run is the profile's `runs.<experiment>` entry with each `--set FIELD=VALUE` applied on top
(VALUE read as YAML: `0.01`, `float64`, `true`); every field is checked before any work. The
run is stored in the results store like the notebooks' runs (`grokutils.engine.run`): started
again after an interruption, it resumes from each seed's last checkpoint; once finished it is
loaded, not retrained. `--dry-run` prints the run's folder and settings and stops.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from grokutils import runs, store
from grokutils.config import resolve_device, resolve_init_from
from grokutils.paths import RESULTS_DIR


def parse_sets(items: list[str]) -> dict:
    """`["steps=1000", "dtype=float64"]` -> {"steps": 1000, "dtype": "float64"}; bad items named."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        values[name.strip()] = yaml.safe_load(text)
    return values


def config_of(experiment: str, profile: str, sets: dict):
    """The profile's run of `experiment` with `sets` applied (unknown fields refused)."""
    if experiment not in runs.EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(runs.EXPERIMENTS)}, got {experiment!r}")
    config_class = runs.EXPERIMENTS[experiment]
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = set(sets) - fields
    if unknown:
        raise ValueError(f"--set names {sorted(unknown)}, not fields of {config_class.__name__}; "
                         f"accepted: {sorted(fields)}")
    entry = {k: v for k, v in runs.read_profile(profile)["runs"].get(experiment, {}).items()
             if k not in runs.RUN_ONLY_KEYS}
    if experiment == "mlp":
        entry.setdefault("weight_decay", 0.0)
    if experiment == "modadd" and "init_from" in sets:  # 'main:final': the profile's own run
        sets = {**sets, "init_from": resolve_init_from(str(sets["init_from"]), config_class(**entry))}
    return config_class(**{**entry, **sets})


def check_run_arguments(config, device: str, workers: int | None, threads: int | None) -> None:
    """Everything a run would refuse, checked before any work (and by --dry-run): the device, the
    worker and thread counts, and the weights that `init_from` names."""
    resolve_device(device)
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be a non-negative integer, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {threads}")
    if getattr(config, "init_from", ""):
        from grokutils.modadd import initial_weights

        for seed in range(config.n_seeds):
            initial_weights(config, seed)  # a missing or unsealed run, or other data, is refused here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help=f"one of {sorted(runs.EXPERIMENTS)}")
    parser.add_argument("--profile", default=runs.DEFAULT_PROFILE, help="profile name or .yaml path")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--device", default=None, help="default: the profile entry's device")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--workers", type=int, default=None,
                        help="measuring processes (default: cores - 1; 0: measure in this process)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the training process (default: the cores the workers leave)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = config_of(args.experiment, args.profile, parse_sets(args.sets))
        device = args.device or runs.device_of(args.experiment, args.profile)
        check_run_arguments(config, device, args.workers, args.threads)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    folder = store.run_dir(config, Path(args.results_dir))
    print(f"run: {folder}\nconfig: {dataclasses.asdict(config)}\ndevice: {device}", flush=True)
    if args.dry_run:
        return 0
    result = runs.get(config, device, args.results_dir, n_workers=args.workers, threads=args.threads)
    print(f"finished: {folder} ({len(result.curves)} curve rows)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

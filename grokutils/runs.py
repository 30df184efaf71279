"""Named runs: a profile names each run once, and every notebook asks for its runs here.

    result = runs.mlp(weight_decay=0.0, profile="accelerated")   # loaded if stored, else trained
    config = runs.mlp_config(weight_decay=0.01, profile="paper")
    stored = runs.stored(config)                                  # never trains: None if not stored

A profile is `profiles/NAME.yaml` (or the path of such a file) with two sections (and an
optional `cluster:` block of Slurm job parameters, read by `grokutils.tools.launch`):

    runs:         # the experiments' settings, one entry per experiment
      mlp:    {steps: 200000, n_seeds: 3, n_checkpoints: 100, lr: 0.005, dtype: float32, device: cpu}
      modadd: {steps: 1200, lr: 0.003, ...}
    notebooks:    # notebook name -> its own parameters (not run settings)
      04_correlation_traps: {n_false_positive_draws: 100}

An entry's keys are fields of `MLPConfig` or `ModAddConfig`, plus `device` (where to train it if it
is not stored yet); reading the profile checks them, so an unknown key or a bad value stops
before any work. The MLP entry sets no `weight_decay`: the chapters choose it (0.0, and 0.01
for the control), and a profile that sets one is refused rather than silently overridden.
Every MLP chapter and the scorecard read the same `mlp` entry, so no chapter can
retrain a run another one shows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from grokutils import engine
from grokutils.config import MLPConfig, ModAddConfig
from grokutils.paths import REPO_ROOT, RESULTS_DIR
from grokutils.store import RunResult

PROFILES_DIR = REPO_ROOT / "profiles"
DEFAULT_PROFILE = "accelerated"  # the default build's (`make book`): every tool's and every chapter's default
SECTIONS = ("runs", "notebooks")
TOOL_SECTIONS = ("cluster",)  # read by grokutils.tools.launch (its executor parameters), not by the notebooks
EXPERIMENTS = {"mlp": MLPConfig, "modadd": ModAddConfig}
RUN_ONLY_KEYS = ("device",)  # entry keys that are not config fields


def available_profiles() -> list[str]:
    """Names of the profiles in `profiles/`."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def profile_path(profile: str | Path) -> Path:
    """`profiles/NAME.yaml` for a name, or the file itself for a path ending in .yaml."""
    path = Path(profile) if str(profile).endswith((".yaml", ".yml")) else PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown profile {str(profile)!r}; available: {', '.join(available_profiles())} "
                         "(or the path of a .yaml file)")
    return path


def read_profile(profile: str | Path) -> dict[str, dict]:
    """A profile's sections {"runs": ..., "notebooks": ...}, checked: known sections, and run
    entries that make valid configs (so a bad value stops before any notebook starts)."""
    path = profile_path(profile)
    content = _load_yaml(path) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{path.name}: a profile is a mapping with sections {list(SECTIONS)}, "
                         f"got a {type(content).__name__}")
    unknown = set(content) - set(SECTIONS) - set(TOOL_SECTIONS)
    if unknown:
        raise ValueError(f"{path.name}: unknown sections {sorted(unknown)}; accepted: {list(SECTIONS)} "
                         f"(and {list(TOOL_SECTIONS)}, for grokutils.tools.launch)")
    sections = {name: content.get(name) or {} for name in SECTIONS}
    if not isinstance(sections["runs"], dict):
        raise ValueError(f"{path.name}: runs must map experiments {sorted(EXPERIMENTS)} to their settings, "
                         f"got {sections['runs']!r}")
    for experiment, entry in sections["runs"].items():
        _check_entry(path, experiment, entry)
    return sections


def _load_yaml(path: Path):
    """The YAML content of `path`; a syntax error names the file, line and column."""
    with open(path) as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err


def _check_entry(path: Path, experiment: str, entry) -> None:
    """One `runs` entry: known experiment and fields, weight decay left to the chapters (MLP),
    and values that make a valid config; each error names the file and the entry."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"{path.name}: runs names {experiment!r}; accepted: {sorted(EXPERIMENTS)}")
    where = f"{path.name}: runs.{experiment}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping of fields to values, got {entry!r}")
    fields = {field.name for field in dataclasses.fields(EXPERIMENTS[experiment])} | set(RUN_ONLY_KEYS)
    if set(entry) - fields:
        raise ValueError(f"{where} sets {sorted(set(entry) - fields)}, not fields of "
                         f"{EXPERIMENTS[experiment].__name__}; accepted: {sorted(fields)}")
    if experiment == "mlp" and "weight_decay" in entry:
        raise ValueError(f"{where} sets weight_decay={entry['weight_decay']!r}; the chapters choose the MLP's "
                         "weight decay (0.0 and 0.01), so a profile cannot: remove it (one run at another weight "
                         "decay: python -m grokutils.tools.train mlp --set weight_decay=VALUE)")
    if not isinstance(entry.get("device", "auto"), str):
        raise ValueError(f"{where}: device must be a string ('auto', 'cpu' or 'cuda[:N]'), got {entry['device']!r}")
    try:
        EXPERIMENTS[experiment](**{k: v for k, v in entry.items() if k not in RUN_ONLY_KEYS})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _entry(experiment: str, profile: str | Path) -> dict:
    entry = read_profile(profile)["runs"].get(experiment)
    if entry is None:
        raise ValueError(f"profile {str(profile)!r} has no runs.{experiment} entry")
    return dict(entry)


def _config_fields(experiment: str, profile: str | Path) -> dict:
    """The entry's config fields (without `device` and other run-only keys)."""
    return {k: v for k, v in _entry(experiment, profile).items() if k not in RUN_ONLY_KEYS}


def mlp_config(weight_decay: float = 0.0, profile: str | Path = DEFAULT_PROFILE) -> MLPConfig:
    """The profile's MLP run at this weight decay (0.0: the main run; 0.01: its weight-decay control).

    The chapter chooses the weight decay; a profile whose `runs.mlp` sets one is refused.
    """
    return MLPConfig(**{**_config_fields("mlp", profile), "weight_decay": weight_decay})


def modadd_config(profile: str | Path = DEFAULT_PROFILE) -> ModAddConfig:
    """The profile's modular-addition run."""
    return ModAddConfig(**_config_fields("modadd", profile))


def device_of(experiment: str, profile: str | Path) -> str:
    """Where the profile trains this experiment's runs when they are not stored ("auto" unless it says)."""
    return _entry(experiment, profile).get("device", "auto")


def get(config, device: str = "auto", results_dir: str | Path = "", **engine_options) -> RunResult:
    """The finished run of `config`: loaded from the store, or trained there (`engine.run`)."""
    return engine.run(config, results_dir=results_dir or RESULTS_DIR, device=device, **engine_options)


def stored(config, results_dir: str | Path = "") -> RunResult | None:
    """The finished run of `config` if stored, else None; never trains (paper-scale runs on a CPU)."""
    return engine.load_if_stored(config, results_dir or RESULTS_DIR)


def mlp(weight_decay: float = 0.0, profile: str | Path = DEFAULT_PROFILE, results_dir: str | Path = "",
        **engine_options) -> RunResult:
    """The profile's MLP run at this weight decay, loaded or trained."""
    return get(mlp_config(weight_decay, profile), device_of("mlp", profile), results_dir, **engine_options)


def modadd(profile: str | Path = DEFAULT_PROFILE, results_dir: str | Path = "", **engine_options) -> RunResult:
    """The profile's modular-addition run, loaded or trained."""
    return get(modadd_config(profile), device_of("modadd", profile), results_dir, **engine_options)

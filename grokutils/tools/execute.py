"""Execute the book's notebooks with papermill under a parameter profile (`make notebooks`).

    python -m grokutils.tools.execute                            # every notebook, profile accelerated
    python -m grokutils.tools.execute --profile paper --only 01_mlp_grokking
    python -m grokutils.tools.execute --only 04_correlation_traps --output-dir /tmp/nb -p n_false_positive_draws 20

A profile is `profiles/NAME.yaml` (`grokutils.runs`): its `runs` section names each experiment's
run once, and every notebook that declares a `profile` parameter is given the profile's name
to ask `grokutils.runs` for its runs; its `notebooks` section holds each notebook's own
parameters. `-p NAME VALUE` overrides one parameter after it (VALUE is read as a Python literal if
it is one, else kept as a string, as papermill's `-p` does).

Everything is checked before the first kernel starts: the profile exists, names known notebooks,
and it and `-p` only set parameters the notebook declares (papermill itself only logs a warning
for an unknown name, and runs on); every profile a notebook will read (`--profile`, or `-p
profile X`) makes valid run configs. Paths given on the command line (`--profile FILE.yaml`, `-p
profile FILE.yaml`, `-p results_dir DIR`) are read against the caller's working directory, once,
here: the kernels run in `notebooks/`.

Kernels talk to papermill over Unix sockets in a folder of their own (IPC transport, no TCP
ports that two concurrent runs could both pick). Each cell has a finite time limit
(CELL_TIMEOUT_S; PROGRESS_CELL_TIMEOUT_S for the cells tagged `progress`, which train or
measure whole runs; a profile raises the latter per notebook with `cell_timeout_s` in its
`notebooks` entry, `--cell-timeout` sets both); a cell past its limit stops the run with an
error naming the notebook and the cell. Each notebook is executed into a temporary file beside
its output and moved over the original (or into `--output-dir`) only when it ran to the end,
so a failure never leaves a half-executed notebook behind.
"""
from __future__ import annotations

import argparse
import ast
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from jupyter_client.manager import AsyncKernelManager

from grokutils import runs
from grokutils.paths import REPO_ROOT
from grokutils.runs import available_profiles, read_profile

log = logging.getLogger(__name__)
# Cells with this tag show a progress bar while they run; its stderr is dropped afterwards,
# so that re-running from cached results (no bar) gives the same outputs (nbval).
PROGRESS_TAG = "progress"
CELL_TIMEOUT_S = 1800  # any other cell; the slowest here takes about 2 minutes
PROGRESS_CELL_TIMEOUT_S = 4 * 3600  # training cells: the accelerated runs take ~75 min from scratch on 2 cores
TIMEOUT_KEY = "cell_timeout_s"  # in a profile's notebooks entry: an execution setting, not a parameter
# Parameters whose value is a path when the caller gives one; resolved against the caller's folder.
PROFILE_PARAMETERS = ("profile", "mlp_profile")  # a profile name, or a .yaml file
DIRECTORY_PARAMETERS = ("results_dir",)  # "" means the default folder
# The kernel spec JupyterLab 4 writes for ipykernel's kernel; any other display name makes Lab
# rewrite it on opening, which marks the notebook modified.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# Cells the book collapses whole (input and output): the config and provenance tables.
COLLAPSED_CALLS = ("setup(", "run_summary(")
# What an interactive widget's output says where no widget manager runs (an untrusted notebook, the book).
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_PLACEHOLDER = "Interactive explorer: run the notebook's cells in JupyterLab to get the slider."


def load_profile(name: str, notebooks: list[Path] | None = None) -> dict[str, dict]:
    """What profile `name` sets per notebook: {notebook: {parameter: value}}, its `notebooks`
    section (less the execution setting `cell_timeout_s`) plus `profile: name` for each notebook
    that declares a `profile` parameter."""
    plan = {notebook: {key: value for key, value in (values or {}).items() if key != TIMEOUT_KEY}
            for notebook, values in read_profile(name)["notebooks"].items()}
    for path in notebooks if notebooks is not None else notebooks_in_toc():
        if "profile" in declared_parameters(path):
            plan.setdefault(path.stem, {})["profile"] = name
    return plan


def progress_timeouts(name: str) -> dict[str, float]:
    """The profile's `cell_timeout_s` per notebook: the limit of its `progress` cells, in seconds."""
    limits = {}
    for notebook, values in read_profile(name)["notebooks"].items():
        limit = (values or {}).get(TIMEOUT_KEY)
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            raise ValueError(f"profile {name!r}: {notebook}.{TIMEOUT_KEY} must be a positive number of seconds, "
                             f"got {limit!r}")
        limits[notebook] = float(limit)
    return limits


def caller_paths(parameters: dict, cwd: Path) -> dict:
    """`parameters` with the paths in them made absolute against `cwd`, the caller's folder
    (the kernel runs in `notebooks/`, where a relative path would point elsewhere); a profile
    file that does not exist there is refused."""
    resolved = dict(parameters)
    for name in PROFILE_PARAMETERS:
        value = resolved.get(name)
        if isinstance(value, (str, Path)) and str(value).endswith((".yaml", ".yml")):
            path = (cwd / Path(value).expanduser()).resolve()
            if not path.is_file():
                raise ValueError(f"{name} {str(value)!r}: no such file {path} (a relative path is read "
                                 "against the folder you run from)")
            resolved[name] = str(path)
    for name in DIRECTORY_PARAMETERS:
        value = resolved.get(name)
        if isinstance(value, (str, Path)) and str(value):
            resolved[name] = str((cwd / Path(value).expanduser()).resolve())
    return resolved


def check_run_entries(profile: str) -> None:
    """Build every run config the profile names (raises ValueError on a bad value), so a bad
    profile stops here rather than at the end of a kernel's traceback."""
    entries = read_profile(profile)["runs"]
    if "mlp" in entries:
        runs.mlp_config(0.0, profile)
    if "modadd" in entries:
        runs.modadd_config(profile)


def notebooks_in_toc() -> list[Path]:
    """The notebooks listed in `_toc.yml`, in book order."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc.get("parts", []) for chapter in part.get("chapters", [])]
    return [REPO_ROOT / f"{file}.ipynb" for file in files if (REPO_ROOT / f"{file}.ipynb").is_file()]


@functools.lru_cache(maxsize=None)
def declared_parameters(path: Path) -> frozenset[str]:
    """Names assigned in the notebook's `parameters` cell (read once per notebook and process:
    the profile and every `-p` are checked against it before any notebook runs)."""
    import papermill

    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    papermill_log.setLevel(logging.WARNING)  # its "Input Notebook:" line would name every notebook of the book
    try:
        return frozenset(papermill.inspect_notebook(str(path)))
    finally:
        papermill_log.setLevel(level)


def check_plan(profile: dict[str, dict], notebooks: list[Path], source: str = "profile") -> None:
    """Fail before any work if the overrides (of a profile, or of `-p`) name unknown notebooks or
    parameters; `source` names them in the error."""
    by_name = {path.stem: path for path in notebooks}
    for name, overrides in profile.items():
        if name not in by_name:
            raise ValueError(f"{source} names notebook {name!r}, not in _toc.yml; known: {sorted(by_name)}")
        unknown = set(overrides or {}) - declared_parameters(by_name[name])
        if unknown:
            raise ValueError(f"{source} sets {sorted(unknown)} for {name}, which declares no such parameter; "
                             f"declared: {sorted(declared_parameters(by_name[name]))}")


def parse_value(text: str):
    """A `-p` value: a Python literal if it is one (5, 1e-3, True, [1, 2]), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def tidy_executed(path: Path, name: str) -> None:
    """Drop the progress bars' stderr; record papermill's paths relative, not machine paths; one
    kernel spec (`tidy_metadata`); a widget's text fallback says how to get the widget."""
    notebook = nbformat.read(path, as_version=4)
    papermill_meta = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in papermill_meta:
            papermill_meta[key] = f"notebooks/{name}"
    for cell in notebook.cells:
        if cell.cell_type == "code" and PROGRESS_TAG in cell.metadata.get("tags", []):
            cell.outputs = [out for out in cell.outputs
                            if not (out.output_type == "stream" and out.name == "stderr")]
        for out in cell.get("outputs", []):
            if WIDGET_MIME in out.get("data", {}):
                out.data["text/plain"] = WIDGET_PLACEHOLDER
    tidy_metadata(notebook)
    nbformat.write(notebook, path)


def plumbing_tags(cell: nbformat.NotebookNode, first_code: bool) -> set[str]:
    """The MyST-NB tags that collapse a plumbing cell in the book (its prose stays): the imports
    (the first code cell), the parameters, the cells that load or train a run (`progress`) show
    only a toggle for their code; `setup()` and `run_summary(...)` (config and provenance
    tables) are collapsed whole."""
    if cell.cell_type != "code":
        return set()
    tags = set(cell.metadata.get("tags", []))
    if first_code or "parameters" in tags or PROGRESS_TAG in tags:
        return {"hide-input"}
    if cell.source.lstrip().startswith(COLLAPSED_CALLS):
        return {"hide-cell"}
    return set()


def tidy_metadata(notebook: nbformat.NotebookNode) -> bool:
    """Give `notebook` the kernel spec JupyterLab writes (KERNELSPEC), so that opening it in Lab
    changes nothing, and its plumbing cells their `plumbing_tags`; True if anything changed.
    `python -m grokutils.tools.execute --tidy-metadata` applies it to every notebook of the book
    (or those of `--only`) without executing any."""
    changed = notebook.metadata.get("kernelspec") != KERNELSPEC
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        tags = cell.metadata.get("tags", [])
        missing = sorted(plumbing_tags(cell, cell is code[0]) - set(tags))
        if missing:
            cell.metadata["tags"] = [*tags, *missing]
            changed = True
    return changed


class IPCKernelManager(AsyncKernelManager):
    """A kernel that talks over Unix sockets in a temporary folder of its own: no TCP ports, so
    kernels started at the same moment cannot pick the same one (a hang, issue 21)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.socket_folder = tempfile.mkdtemp(prefix="grokutils-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self.socket_folder, "kernel")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self.socket_folder, ignore_errors=True)


class CellClock:
    """nbclient's `timeout_func`: each cell's limit, remembering the cell it was last asked for."""

    def __init__(self, cell_timeout_s: float, progress_timeout_s: float) -> None:
        self.limits = (cell_timeout_s, progress_timeout_s)
        self.cell = None

    def __call__(self, cell) -> float:
        self.cell = cell
        return self.limits[PROGRESS_TAG in cell.metadata.get("tags", [])]


def execute_notebook(path: Path, parameters: dict, output: Path | None = None,
                     cell_timeout_s: float = CELL_TIMEOUT_S,
                     progress_timeout_s: float = PROGRESS_CELL_TIMEOUT_S) -> None:
    """Run one notebook in its own folder with papermill; write it (over `path` by default) only
    on success. A cell past its limit raises TimeoutError naming the notebook and the cell."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    output = Path(output or path)
    temporary = output.with_name(f".{path.stem}.running.ipynb")
    clock = CellClock(cell_timeout_s, progress_timeout_s)
    try:
        papermill.execute_notebook(str(path), str(temporary), parameters=parameters,
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                   kernel_manager_class=IPCKernelManager, timeout_func=clock)
        tidy_executed(temporary, path.name)
        os.replace(temporary, output)
    except CellTimeoutError as err:
        first_line = (clock.cell.source.strip().splitlines() or [""])[0] if clock.cell is not None else "?"
        raise TimeoutError(f"{path.name}: the cell starting {first_line!r} ran past its limit of "
                           f"{clock(clock.cell):g} s and was stopped (raise it with --cell-timeout, or "
                           f"{TIMEOUT_KEY} in the profile's entry for {path.stem})") from err
    finally:
        temporary.unlink(missing_ok=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="accelerated", help=f"one of {available_profiles()}")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names (default: all in _toc.yml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override one parameter of every selected notebook, after the profile")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write the executed notebooks here (default: over the originals)")
    parser.add_argument("--tidy-metadata", action="store_true",
                        help="only give every notebook of the book the one kernel spec (no execution)")
    parser.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"limit of every cell (default: {CELL_TIMEOUT_S} s, {PROGRESS_CELL_TIMEOUT_S} s "
                             f"for cells tagged {PROGRESS_TAG!r} or the profile's {TIMEOUT_KEY})")
    args = parser.parse_args(argv)
    if args.cell_timeout is not None and not (math.isfinite(args.cell_timeout) and args.cell_timeout > 0):
        parser.error(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout:g}")
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {str(args.output_dir)!r} is a file, not a folder")
    return args


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks named by `--only` (all if None), in book order; unknown names are refused."""
    if only is None:
        return notebooks
    unknown = set(only) - {path.stem for path in notebooks}
    if unknown:
        raise ValueError(f"--only names {sorted(unknown)}, not in _toc.yml")
    return [path for path in notebooks if path.stem in only]


class PlanError(ValueError):
    """A bad profile, parameter or notebook name, found before any notebook runs."""


def _plans(args: argparse.Namespace) -> tuple[str, dict[Path, dict], dict[str, float]]:
    """(profile name, {notebook: its parameters}, progress-cell limits), every value checked
    (ValueError names the bad one)."""
    cwd = Path.cwd()
    name = caller_paths({"profile": args.profile}, cwd)["profile"]
    notebooks = notebooks_in_toc()
    profile = load_profile(name, notebooks)
    check_plan(profile, notebooks)
    limits = progress_timeouts(name)
    notebooks = select(notebooks, args.only)
    overrides = {key: parse_value(value) for key, value in args.parameter}
    check_plan({path.stem: overrides for path in notebooks}, notebooks, source="-p")
    plans = {path: caller_paths({**(profile.get(path.stem) or {}), **overrides}, cwd) for path in notebooks}
    for parameters in plans.values():
        for key in PROFILE_PARAMETERS:
            if key in parameters:
                check_run_entries(parameters[key])
    return name, plans, limits


def main(argv: list[str] | None = None) -> int:
    """Command line: execute the notebooks of a profile, with `-p` overrides on top."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.tidy_metadata:
        for path in select(notebooks_in_toc(), args.only):
            notebook = nbformat.read(path, as_version=4)
            if tidy_metadata(notebook):
                nbformat.write(notebook, path)
                log.info("kernel spec and plumbing tags set in %s", path.relative_to(REPO_ROOT))
        return 0
    try:
        name, plans, limits = _plans(args)
    except ValueError as err:
        raise PlanError(str(err)) from err
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    for number, (path, parameters) in enumerate(plans.items(), start=1):
        log.info("[%d/%d] executing %s (profile %s)", number, len(plans), path.relative_to(REPO_ROOT),
                 parameters.get("profile", f"none: {path.stem} takes its own parameters"))
        output = None if args.output_dir is None else args.output_dir / path.name
        cell_limit = args.cell_timeout or CELL_TIMEOUT_S
        progress_limit = args.cell_timeout or limits.get(path.stem, PROGRESS_CELL_TIMEOUT_S)
        started = time.monotonic()
        execute_notebook(path, parameters, output, cell_limit, progress_limit)
        log.info("[%d/%d] finished %s in %.0f s", number, len(plans), path.name, time.monotonic() - started)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`main` as a command: a bad plan is one line on stderr and exit status 2, not a traceback."""
    try:
        return main(argv)
    except PlanError as err:
        print(f"python -m grokutils.tools.execute: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())

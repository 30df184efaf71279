"""Execute the book's notebooks with papermill under a parameter profile (`make notebooks`).

    python -m grokutils.tools.execute                            # every notebook, profile accelerated
    python -m grokutils.tools.execute --profile paper --only 01_mlp_grokking
    python -m grokutils.tools.execute --only 04_correlation_traps --output-dir /tmp/nb -p n_false_positive_draws 20

A profile is `profiles/NAME.yaml` (`grokutils.runs`): its `runs` section names each experiment's
run once, and every notebook that declares a `profile` parameter is given the profile's name
to ask `grokutils.runs` for its runs; its `notebooks` section holds each notebook's own
parameters. `-p NAME VALUE` overrides one parameter after it (VALUE is read as a Python literal if
it is one, else kept as
a string, as papermill's `-p` does). Everything is checked before the first notebook runs (the
profile exists, names a known notebook, and it and `-p` only set parameters the notebook
declares: papermill itself only logs a warning for an unknown name, and runs on). Each
notebook is executed into a temporary file beside it and moved over the original (or into
`--output-dir`) only when it ran to the end, so a failure never leaves a half-executed
notebook behind.
"""
from __future__ import annotations

import argparse
import ast
import functools
import logging
import os
import sys
from pathlib import Path

import nbformat
import yaml

from grokutils.paths import REPO_ROOT
from grokutils.runs import available_profiles, read_profile

log = logging.getLogger(__name__)
# Cells with this tag show a progress bar while they run; its stderr is dropped afterwards,
# so that re-running from cached results (no bar) gives the same outputs (nbval).
PROGRESS_TAG = "progress"


def load_profile(name: str, notebooks: list[Path] | None = None) -> dict[str, dict]:
    """What profile `name` sets per notebook: {notebook: {parameter: value}}, its `notebooks`
    section plus `profile: name` for each notebook that declares a `profile` parameter."""
    plan = {notebook: dict(values or {}) for notebook, values in read_profile(name)["notebooks"].items()}
    for path in notebooks if notebooks is not None else notebooks_in_toc():
        if "profile" in declared_parameters(path):
            plan.setdefault(path.stem, {})["profile"] = name
    return plan


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

    return frozenset(papermill.inspect_notebook(str(path)))


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
    """Drop the progress bars' stderr; record papermill's paths relative, not machine paths."""
    notebook = nbformat.read(path, as_version=4)
    papermill_meta = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in papermill_meta:
            papermill_meta[key] = f"notebooks/{name}"
    for cell in notebook.cells:
        if cell.cell_type == "code" and PROGRESS_TAG in cell.metadata.get("tags", []):
            cell.outputs = [out for out in cell.outputs
                            if not (out.output_type == "stream" and out.name == "stderr")]
    nbformat.write(notebook, path)


def execute_notebook(path: Path, parameters: dict, output: Path | None = None) -> None:
    """Run one notebook in its own folder with papermill; write it (over `path` by default) only
    on success."""
    import papermill

    output = Path(output or path)
    temporary = output.with_name(f".{path.stem}.running.ipynb")
    try:
        papermill.execute_notebook(str(path), str(temporary), parameters=parameters,
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False)
        tidy_executed(temporary, path.name)
        os.replace(temporary, output)
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
    return parser.parse_args(argv)


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks named by `--only` (all if None), in book order; unknown names are refused."""
    if only is None:
        return notebooks
    unknown = set(only) - {path.stem for path in notebooks}
    if unknown:
        raise ValueError(f"--only names {sorted(unknown)}, not in _toc.yml")
    return [path for path in notebooks if path.stem in only]


def main(argv: list[str] | None = None) -> int:
    """Command line: execute the notebooks of a profile, with `-p` overrides on top."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    notebooks = notebooks_in_toc()
    profile = load_profile(args.profile, notebooks)
    check_plan(profile, notebooks)
    notebooks = select(notebooks, args.only)
    overrides = {name: parse_value(value) for name, value in args.parameter}
    check_plan({path.stem: overrides for path in notebooks}, notebooks, source="-p")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        log.info("executing %s (profile %s)", path.relative_to(REPO_ROOT), args.profile)
        output = None if args.output_dir is None else args.output_dir / path.name
        execute_notebook(path, {**(profile.get(path.stem) or {}), **overrides}, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

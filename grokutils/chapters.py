"""The book's chapters, discovered: which notebooks there are (`_toc.yml`) and what kind each one
is (its own metadata). Nothing else lists them: the tests parametrize over `notebooks_in_toc()`
and `chapter_info`, and `grokutils.tools.execute` runs the notebooks in this order.

A chapter states its kind in its notebook metadata, under the key `grokutils`:

    "grokutils": {"kind": "runs", "runs": ["mlp"], "glued_results": true}

* `kind` (required), one of KINDS;
* `runs` (kind "runs" only, required there): the experiments of the profile's `runs` section the
  chapter reads through `grokutils.runs` (`mlp`, `modadd`);
* `glued_results` (optional, default false): the chapter states the shared results, so every
  result number in its prose is glued (`grokutils.claims`), none typed in (tests/test_prose_numbers.py).

In JupyterLab: the property inspector (the gear icon), "Notebook metadata"; or with `nbformat`.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml

from grokutils.paths import REPO_ROOT
from grokutils.runs import EXPERIMENTS as RUN_ENTRIES

KEY = "grokutils"  # the notebook metadata key
KINDS = {
    "data": "shows the data sets; its own parameters, no runs",
    "runs": "reads the runs a profile names: declares `profile` and asks grokutils.runs for the experiments in `runs` "
            "(it may also train a grid of its own, set by its own parameters, as the accelerated-protocol sweep)",
    "llm": "analyzes pretrained weights; its own parameters, no runs",
}
EXPERIMENTS = tuple(sorted(RUN_ENTRIES))  # a profile's run entries: mlp, modadd
FIELDS = ("kind", "runs", "glued_results")
EXAMPLE = '"grokutils": {"kind": "runs", "runs": ["mlp"]} or {"kind": "data"}'


def toc_files(entries: list) -> list[str]:
    """The `root` and `file` of every entry of a `_toc.yml` list (parts, chapters, sections), in order."""
    files = []
    for entry in entries or []:
        files += [entry[key] for key in ("root", "file") if key in entry]
        for key in ("parts", "chapters", "sections"):
            files += toc_files(entry.get(key))
    return files


def notebooks_in_toc(root: Path = REPO_ROOT) -> list[Path]:
    """The notebooks listed in `root/_toc.yml`, in book order (markdown pages left out)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = toc_files([toc])
    return [root / f"{file}.ipynb" for file in files if (root / f"{file}.ipynb").is_file()]


def notebooks_in_folder(root: Path = REPO_ROOT) -> list[Path]:
    """Every notebook in `root/notebooks/` (hidden files, such as the executor's temporaries, left out)."""
    return sorted(path for path in (root / "notebooks").glob("*.ipynb") if not path.name.startswith("."))


@functools.lru_cache(maxsize=None)
def chapter_info(path: Path) -> dict:
    """The notebook's `grokutils` metadata, checked: {"kind", "runs" (a tuple), "glued_results"}.
    ValueError names the notebook, the bad entry and what is accepted."""
    metadata = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    where = f"{Path(path).name}: metadata {KEY!r}"
    info = metadata.get(KEY)
    if not isinstance(info, dict):
        raise ValueError(f"{where} is missing or not a mapping; a chapter states its kind, e.g. {EXAMPLE}; "
                         f"kinds: {sorted(KINDS)}")
    unknown = set(info) - set(FIELDS)
    if unknown:
        raise ValueError(f"{where} sets {sorted(unknown)}; accepted: {list(FIELDS)}")
    kind, reads, glued = info.get("kind"), info.get("runs", []), info.get("glued_results", False)
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r}; accepted: {sorted(KINDS)}")
    if kind == "runs" and not (isinstance(reads, list) and reads and all(name in EXPERIMENTS for name in reads)):
        raise ValueError(f"{where}: a 'runs' chapter lists the experiments it reads, a non-empty list of "
                         f"{list(EXPERIMENTS)}; got runs={reads!r}")
    if kind != "runs" and reads:
        raise ValueError(f"{where}: runs={reads!r}, but only kind 'runs' reads a profile's runs")
    if not isinstance(glued, bool):
        raise ValueError(f"{where}: glued_results must be true or false, got {glued!r}")
    return {"kind": kind, "runs": tuple(reads), "glued_results": glued}

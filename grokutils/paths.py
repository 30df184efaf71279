"""Where the repository, its results and the data live, resolved from this file."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"  # committed, compact results of finished runs


def data_roots() -> list[Path]:
    """Folders searched for MNIST IDX files, in order (each may hold `MNIST/raw/`)."""
    roots = []
    if os.environ.get("GROKUTILS_DATA"):
        roots.append(Path(os.environ["GROKUTILS_DATA"]).expanduser())
    roots.append(REPO_ROOT / "data")  # git-ignored; torchvision downloads land here
    roots.append(REPO_ROOT.parent / "shared" / "data")  # the CI and GPU-run layout
    return roots

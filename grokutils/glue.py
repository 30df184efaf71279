"""The values a notebook's text quotes: `myst_nb.glue`, remembered so the notebook can list them.

The book fills each `{glue:text}` role of a page with its value when it is built. JupyterLab
(jupyterlab-myst) cannot: it shows the name instead. So each notebook glues through `glue` here,
and its last cell, `quoted_values()`, lists every name with its value for a reader in
JupyterLab; the book leaves that cell out (tag `remove-cell`).
"""
from __future__ import annotations

import numbers

import pandas as pd
from myst_nb import glue as myst_glue

# name -> value, in the order the kernel glued them (a name glued twice keeps its last value)
_QUOTED: dict[str, object] = {}


def glue(name: str, value, display: bool = True) -> None:
    """`myst_nb.glue(name, value, display)`, and remember the value for `quoted_values`."""
    _QUOTED[name] = value
    myst_glue(name, value, display=display)


def quoted_values() -> pd.DataFrame:
    """Every value glued in this kernel so far: its name (as the text in JupyterLab shows it) and
    the text the book puts in its place; a value that is not text is shown by its type."""
    rows = [(name, value if isinstance(value, str) else _describe(value)) for name, value in _QUOTED.items()]
    return pd.DataFrame(rows, columns=["name in the text", "value in the book"]).set_index("name in the text")


def _describe(value) -> str:
    """A short text for a glued value that is not a string: a number as `str` writes it, anything
    else (a figure, a table) by its type."""
    if isinstance(value, numbers.Number):
        return str(value)
    return f"({type(value).__name__})"

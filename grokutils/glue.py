"""The values a notebook's text quotes: `myst_nb.glue`, remembered so the notebook can list them.

The book fills each `{glue:text}` role of a page with its value when it is built. JupyterLab
(jupyterlab-myst) cannot: it shows the name instead. So each notebook glues through `glue` here,
and its last cell, `quoted_values()`, lists every name with its value for a reader in
JupyterLab; the book leaves that cell out (tag `remove-cell`).
"""
from __future__ import annotations

import numbers

from myst_nb import glue as myst_glue

# name -> value, in the order the kernel glued them (a name glued twice keeps its last value)
_QUOTED: dict[str, object] = {}


def glue(name: str, value, display: bool = True) -> None:
    """`myst_nb.glue(name, value, display)`, and remember the value for `quoted_values`."""
    _QUOTED[name] = value
    myst_glue(name, value, display=display)


def glue_all(values: dict[str, object]) -> None:
    """Glue every value of `values` under its name, for the text only (not shown where glued):
    a chapter glues the dict that its function in `grokutils.glued` returns."""
    for name, value in values.items():
        glue(name, value, display=False)


class QuotedValues:
    """A list of glued values as a notebook shows it: markdown in JupyterLab, the same lines as text."""

    def __init__(self, values: dict[str, object]):
        self.text = "\n".join(f"- `{name}`: {value if isinstance(value, str) else _describe(value)}"
                              for name, value in values.items()) or "(nothing glued yet)"

    def _repr_markdown_(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def quoted_values() -> QuotedValues:
    """Every value glued in this kernel so far, one line each: its name (as the text shows it in
    JupyterLab) and the text the book puts in its place, in full."""
    return QuotedValues(dict(_QUOTED))


def _describe(value) -> str:
    """A short text for a glued value that is not a string: a number as `str` writes it, anything
    else (a figure, a table) by its type."""
    if isinstance(value, numbers.Number):
        return str(value)
    return f"({type(value).__name__})"

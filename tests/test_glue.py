"""grokutils.glue: the values a notebook's text quotes, listed in full for JupyterLab (issue 32)."""
from __future__ import annotations

from grokutils import glue


def test_quoted_values_lists_every_glued_value_in_full(monkeypatch):
    monkeypatch.setattr(glue, "_QUOTED", {})
    monkeypatch.setattr(glue, "myst_glue", lambda name, value, display: None)  # no kernel here
    sentence = "3 of 3 seeds anti-grok, by 0.169, 0.116 and 0.123, with train accuracy held at 1.000 " * 2
    glue.glue("verdict", sentence, display=False)
    glue.glue("n_seeds", 3, display=False)
    glue.glue("figure", object(), display=False)
    glue.glue("n_seeds", 4, display=False)  # glued again: the last value
    shown = glue.quoted_values()
    assert repr(shown) == shown._repr_markdown_()
    lines = repr(shown).splitlines()
    assert lines == [f"- `verdict`: {sentence}", "- `n_seeds`: 4", "- `figure`: (object)"]


def test_nothing_glued_says_so(monkeypatch):
    monkeypatch.setattr(glue, "_QUOTED", {})
    assert repr(glue.quoted_values()) == "(nothing glued yet)"

"""No typed-in result numbers in the prose of the chapters that state shared results, nor in the
headline paragraphs of the introduction and discussion: those numbers are glued from
`grokutils.claims.shared_claims` and the scorecard, so no two pages can disagree."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from grokutils import phases

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01_mlp_grokking", "02_wd_control", "07_alarm", "90_scorecard"]
HEADLINES = {"book/intro.md": "(intro-headline)=", "book/discussion.md": "(disc-headline)="}
# Stated settings and rule constants, not results: weight decay 0.01, the 1,000 training digits, the
# authors' dropout of 0.5, the phase rule's levels.
ALLOWED = {"0.01", "1,000", "0.5", f"{phases.HIGH_TRAIN:g}", f"{phases.PEAK_BAND:g}", f"{phases.COLLAPSE_DROP:g}"}
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d{1,3}(?:,\d{3})+)(?![\w.])")


def typed_numbers(markdown: str) -> list[str]:
    """Decimals and comma-grouped integers left in prose once math, code and glue roles are removed."""
    text = re.sub(r"\{glue:[a-z]+\}`[^`]*`", "", markdown)
    text = re.sub(r"\$[^$]*\$", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    return [number for number in NUMBER.findall(text) if number not in ALLOWED]


def test_the_check_finds_typed_results_and_ignores_glue_math_and_settings():
    assert typed_numbers("falls by 0.14 and alpha settles 19,000 steps early") == ["0.14", "19,000"]
    assert typed_numbers("{glue:text}`fall` at $10^5$ steps, `lr 0.005`, WD = 0.01") == []


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_prose_has_no_typed_result_numbers(name):
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    found = {index: typed_numbers(cell.source) for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "markdown" and typed_numbers(cell.source)}
    assert not found, f"{name}: typed-in numbers in markdown cells {found}; glue them from grokutils.claims"


@pytest.mark.parametrize("path, label", HEADLINES.items())
def test_headline_paragraphs_have_no_typed_result_numbers(path, label):
    text = (ROOT / path).read_text()
    headline = text[text.index(label):].split("\n## ", 2)[1]  # the section after the label
    assert not typed_numbers(headline), f"{path}: typed-in numbers {typed_numbers(headline)}"

"""No typed-in result numbers in the prose of the chapters that state shared results, nor in the
headline paragraphs of the introduction and discussion: those numbers are glued from
`grokutils.claims.shared_claims` and the scorecard, so no two pages can disagree. A chapter is
checked when its notebook metadata says `"glued_results": true` (`grokutils.chapters`)."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from grokutils import chapters, phases

ROOT = Path(__file__).resolve().parents[1]


def glues_results(path: Path) -> bool:
    """True for a chapter whose metadata says it states the shared results (`glued_results`)."""
    try:
        return chapters.chapter_info(path)["glued_results"]
    except ValueError:  # reported by tests/test_notebooks.py::test_every_chapter_states_its_kind
        return False


CHAPTERS = [path.stem for path in chapters.notebooks_in_toc() if glues_results(path)]
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


# The README's two-line outcome: each of these glued values, as the committed notebook holds it.
README_OUTCOME = {"01_mlp_grokking": ["wd0_peak_test", "wd0_final_test", "wd0_fall", "wd0_final_train",
                                      "paper_final_test"],
                  "02_wd_control": ["wd001_fall", "wd001_final_train"],
                  "90_scorecard": ["n_claims", "n_reproduced", "n_partly", "n_not_reproduced", "n_not_run_yet"]}
VERDICTS = {"01_mlp_grokking": "wd0_verdict_words", "02_wd_control": "wd001_verdict_words"}


def glued_values(name: str) -> dict[str, str]:
    """The text of every value glued in a committed notebook: {glue name: text}."""
    values = {}
    for cell in nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells:
        for out in cell.get("outputs", []):
            record = out.get("metadata", {}).get("scrapbook")
            if record:
                values[record["name"]] = out.data[f"{record['mime_prefix']}text/plain"].strip("'\"")
    return values


def readme_outcome() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("<!-- outcome"):text.index("<!-- /outcome -->")]


def test_the_readme_outcome_states_the_glued_values_and_no_other_result():
    """Issue 32: the README's first screen gives the outcome, kept equal to the chapters."""
    outcome, stated = readme_outcome(), set()
    assert len([line for line in outcome.splitlines()[1:] if line.strip()]) == 2  # two lines
    for name, keys in README_OUTCOME.items():
        values = glued_values(name)
        for key in keys:
            assert values[key] in outcome, f"README outcome lacks {name}::{key} = {values[key]!r}"
            stated |= set(NUMBER.findall(values[key]))
    for name, key in VERDICTS.items():
        verdict = glued_values(name)[key].split(";")[0]  # "0 of 3 seeds anti-grok by the rule"
        assert verdict in outcome, f"README outcome lacks {name}::{key} = {verdict!r}"
        stated |= set(NUMBER.findall(verdict))
    protocol = glued_values("01_mlp_grokking")["protocol"].split(":")[0].lower()
    assert protocol in outcome, f"README outcome does not name {protocol!r}"
    assert set(typed_numbers(outcome)) <= stated, "README outcome states a number that no chapter glues"


# --- issue 31: one definition per quantity, and the defects the reread found ----------------------


def test_a_fall_is_stated_alike_wherever_it_appears():
    """Chapter 08 once took the main fall from the raw mean curve (0.241) where chapter 01 gave the
    smoothed per-seed fall (0.237): both now glue the same value, as do the smoothed train ends."""
    ch01, ch08 = glued_values("01_mlp_grokking"), glued_values("08_accelerated_protocol")
    assert ch08["main_fall"] == ch08["len_wd0_long_fall"] == ch01["wd0_fall"]
    assert ch08["len_wd0_long_train"] == ch01["wd0_final_train"]
    assert ch08["len_wd0_long_verdict"] == ch01["wd0_verdict_words"]


def test_the_papers_ks_values_before_the_collapse_are_given_as_the_paper_gives_them():
    assert glued_values("04_correlation_traps")["paper_ks_before"] == "0.012 in pre-grokking and 0.0212 at grokking"


def test_measures_are_tested_for_a_turn_whenever_a_seed_anti_groks():
    values = glued_values("01_mlp_grokking")
    tested = not values["turning_measures"].startswith("none tested")
    assert tested == (int(values["wd0_n_collapsed"]) > 0), values["turning_measures"]


@pytest.mark.parametrize("path", HEADLINES)
def test_the_headline_counts_include_the_claims_not_run_yet(path):
    assert "90_scorecard.ipynb::n_not_run_yet" in (ROOT / path).read_text()

"""The sentence templates: filters, lookup, and that every macro renders its values."""
import math

import pytest

from grokutils import prose


def test_listed_joins_with_and_and_leaves_out_missing_values():
    assert prose.listed([0.1234, math.nan, 0.5], ".2f") == "0.12 and 0.50"
    assert prose.listed([1, 2, 3]) == "1, 2 and 3"
    assert prose.listed([None]) == "none"


def test_steps_give_a_range_one_step_or_never():
    assert prose.steps([47884, 38430, 38430.0]) == "38,430 to 47,884"
    assert prose.steps([1000]) == "1,000"
    assert prose.steps([math.nan]) == "never"
    assert prose.step_words([1000, 2000]) == "steps 1,000 to 2,000"
    assert prose.step_words([1000]) == "step 1,000"
    assert prose.step_words([]) == "never"


def test_fired_counts_the_seeds_where_a_rule_never_fired():
    assert prose.fired([20806, 1000, None]) == "1,000 to 20,806; never in 1"
    assert prose.fired([500, 500]) == "500"
    assert prose.fired([None, math.nan]) == "never"
    assert prose.fired([]) == ""
    assert prose.fired_words([20806, None, None]) == "step 20,806; never in 2"
    assert prose.fired_words([1000, 2000]) == "steps 1,000 to 2,000"
    assert prose.fired_words([None]) == "no step (never)"


def test_lead_range_is_signed_and_gives_equal_values_once():
    assert prose.lead_range([60307, 5888, -12]) == "-12 to +60,307"
    assert prose.lead_range([5, 5]) == "+5"
    assert prose.lead_range([0]) == "+0"
    assert prose.lead_range([None]) == "-"


def test_pandas_missing_values_are_left_out():
    import pandas as pd

    values = pd.Series([1000, None, 3000], dtype="Int64").tolist()  # holds pd.NA
    assert prose.steps(values) == "1,000 to 3,000" and prose.listed(values, ",d") == "1,000 and 3,000"
    assert prose.fired(values) == "1,000 to 3,000; never in 1"


def test_count_agrees_with_its_number():
    assert prose.count(1, "seed") == "1 seed"
    assert prose.count(3, "seed") == "3 seeds"
    assert prose.count(2, "this", "these") == "2 these"


def test_say_names_a_missing_template_or_macro():
    with pytest.raises(KeyError, match="no sentence 'nowhere.verdict'"):
        prose.say("nowhere.verdict", {})
    with pytest.raises(KeyError, match="claims.j2 defines"):
        prose.say("claims.no_such_macro", {})


def test_a_missing_value_is_an_error_not_a_blank():
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        prose.say("claims.turning", {"tested": True})


def test_every_template_compiles_and_every_macro_is_documented():
    for path in prose.TEMPLATES_DIR.glob("*.j2"):
        text = path.read_text()
        for name in prose.macros(path.stem):
            assert f"{{#- {name}:" in text, f"{path.name}: macro {name} has no comment '{{#- {name}: ...' above it"

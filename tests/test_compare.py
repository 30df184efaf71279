"""Comparing two stored runs checkpoint by checkpoint (chapter 08)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokutils import compare
from grokutils.store import RunResult


def fake_run(name: str, steps, values: dict) -> RunResult:
    """A RunResult with curves only: {seed: test accuracies at `steps`}."""
    rows = [{"seed": seed, "step": step, "test_accuracy": value}
            for seed, series in values.items() for step, value in zip(steps, series)]
    return RunResult(path=Path(name), config=None, meta={}, curves=pd.DataFrame(rows),
                     layers=pd.DataFrame(columns=["seed", "step", "layer"]))


def test_paired_difference_is_per_seed_on_shared_steps():
    a = fake_run("a", [0, 10, 100], {0: [0.1, 0.5, 0.9], 1: [0.1, 0.6, 0.7]})
    b = fake_run("b", [0, 100, 1000], {0: [0.1, 0.8, 0.8], 1: [0.1, 0.8, 0.5]})
    table = compare.paired_curve(a, b, "test_accuracy")
    assert table.index.tolist() == [0, 100]
    assert table.loc[100, "difference"] == pytest.approx(0.0)  # +0.1 and -0.1
    assert table.loc[100, "sd of difference"] == pytest.approx(np.std([0.1, -0.1], ddof=1))
    assert table.loc[100, "mean a"] == pytest.approx(0.8)


def test_no_shared_step_and_bad_column_are_named():
    a = fake_run("a", [1, 2], {0: [0.1, 0.2]})
    b = fake_run("b", [3, 4], {0: [0.1, 0.2]})
    with pytest.raises(ValueError, match="share no measured step"):
        compare.paired_curve(a, b, "test_accuracy")
    with pytest.raises(ValueError, match="column must be one of"):
        compare.seed_table(a, "test_acc")


def test_interpolation_is_in_log_steps_and_bounded():
    run = fake_run("long", [0, 9, 99], {0: [0.0, 1.0, 2.0]})
    values = compare.on_steps(run, [9, 30], "test_accuracy")[0]
    assert values.loc[9] == pytest.approx(1.0)
    assert values.loc[30] == pytest.approx(1.0 + np.log(31 / 10) / np.log(10))
    with pytest.raises(ValueError, match="within long's 0..99"):
        compare.on_steps(run, [200], "test_accuracy")


def test_paper_clock():
    assert compare.paper_clock([1e6], 5e-3)[0] == pytest.approx(1e7)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        compare.paper_clock([1], 0)

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


def falling_run(name: str, fall: float) -> RunResult:
    """Two seeds that fit at step 10, peak at 0.9 and fall by `fall`, with fc1 alpha and traps."""
    steps = np.unique(np.round(np.geomspace(1, 100_000, 60)).astype(int))
    test = np.where(steps < 1000, 0.9, 0.9 - fall * np.clip(np.log10(steps / 1000) / 2, 0, 1))
    curves = pd.DataFrame([{"seed": seed, "step": step, "train_accuracy": 1.0 if step >= 10 else 0.5,
                            "test_accuracy": value} for seed in (0, 1) for step, value in zip(steps, test)])
    layers = curves[["seed", "step"]].assign(layer="fc1", alpha=3.0, traps=2)
    return RunResult(path=Path(name), config=None, meta={}, curves=curves, layers=layers)


def test_edge_table_reads_each_run_at_its_own_edges():
    table = compare.edge_table({"falls": falling_run("a", 0.3), "holds": falling_run("b", 0.0)}, layers=("fc1",))
    assert table.loc["seeds that anti-grok"].tolist() == ["2 of 2", "0 of 2"]
    assert float(table.loc["whole fall, smoothed peak to end", "falls"].split()[0]) == pytest.approx(0.3, abs=0.01)
    rows = ("fall with train held (smoothed)", "whole fall, smoothed peak to end")
    assert table.loc[rows[0], "falls"] == table.loc[rows[1], "falls"]
    assert table.loc["lowest smoothed train accuracy after the slip"].tolist() == ["held", "held"]
    assert table.loc["step at the end of anti-grokking", "holds"] == "not reached"
    assert table.loc["fc1 alpha at the end of anti-grokking", "falls"] == "3.00 ± 0.00"
    assert table.loc["fc1 alpha at the end of anti-grokking", "holds"] == "-"


def test_length_pair_reads_the_long_run_at_the_short_runs_checkpoints():
    short = fake_run("short", [0, 9, 99], {0: [0.1, 0.5, 0.8], 1: [0.1, 0.6, 0.8]})
    long = fake_run("long", [0, 99, 999], {0: [0.1, 0.7, 0.6], 1: [0.1, 0.7, 0.4]})
    table = compare.length_pair(short, long, "test_accuracy")
    assert table.index.tolist() == [0, 9, 99]
    expected_long_at_9 = 0.1 + 0.6 * np.log(10) / np.log(100)  # halfway in log(1 + step)
    assert table.loc[9, "mean b"] == pytest.approx(expected_long_at_9)
    assert table.loc[99, "difference"] == pytest.approx(0.1)  # +0.1 on both seeds
    assert table.loc[99, "sd of difference"] == pytest.approx(0.0)


def test_length_pair_keeps_only_checkpoints_inside_the_long_run():
    short = fake_run("short", [0, 9, 99], {0: [0.1, 0.5, 0.8]})
    long = fake_run("long", [0, 50], {0: [0.1, 0.7]})
    assert compare.length_pair(short, long, "test_accuracy").index.tolist() == [0, 9]


def test_fall_table_pairs_seeds_and_reads_the_last_shared_step():
    steps = list(np.unique(np.round(np.geomspace(1, 100_000, 60)).astype(int)))
    deep, shallow = falling_run("deep", 0.3), falling_run("shallow", 0.1)
    table = compare.fall_table(deep, shallow)
    assert table.index.tolist() == [0, 1]
    assert table["fall difference"].to_numpy() == pytest.approx([0.2, 0.2], abs=0.02)
    assert (table.step == steps[-1]).all()
    assert table["test difference"].to_numpy() == pytest.approx([-0.2, -0.2])


def test_first_divergence_per_seed_at_exactly_shared_steps():
    a = fake_run("a", [0, 10, 100], {0: [1.0, 0.5, 0.2], 1: [1.0, 0.5, 0.2]})
    b = fake_run("b", [0, 10, 50, 100], {0: [1.0, 0.5, 0.3, 0.2], 1: [1.0, 0.5 + 1e-3, 0.3, 0.2]})
    table = compare.first_divergence(a, b, "test_accuracy")
    assert table["last shared step"].tolist() == [100, 100]
    assert pd.isna(table.loc[0, "first step apart"]) and table.loc[1, "first step apart"] == 10


def test_precision_reading_gives_an_interval_and_what_it_still_allows():
    falls = pd.DataFrame({"fall a": [0.10, 0.12, 0.11], "fall b": [0.10, 0.10, 0.12], "step": [200_000] * 3})
    falls["fall difference"] = falls["fall a"] - falls["fall b"]
    words = compare.precision_reading(falls, held=3)
    # mean +0.0033, sd 0.0153, t(0.975, 2) = 4.303: half-width 0.038
    assert words.startswith("+0.003, 95% interval -0.035 to +0.041 over 3 seeds: no difference is shown, but the "
                            "interval still allows one of 0.041, 38% of the fall")
    assert words.endswith("it covers the first 200,000 steps only, in which 3 of 3 seeds of the first run keep "
                          "their training fit")
    apart = falls.assign(**{"fall difference": [0.05, 0.06, 0.055]})
    assert "the first run's fall is deeper" in compare.precision_reading(apart, held=1)
    with pytest.raises(ValueError, match="at least 2 seeds, got 1"):
        compare.precision_reading(falls.iloc[:1], held=1)

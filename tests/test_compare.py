"""Comparing two stored runs checkpoint by checkpoint (chapter 08)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokutils import compare, prose
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


def test_clock_table_puts_each_runs_peak_and_slip_on_the_papers_clock():
    import dataclasses

    from grokutils.config import MLPConfig

    run = falling_run("a", 0.3)
    slipping = falling_run("b", 0.3)
    slipping.curves.loc[(slipping.curves.seed == 1) & (slipping.curves.step >= 10_000), "train_accuracy"] = 0.9
    runs = {"lr 5e-3": dataclasses.replace(run, config=MLPConfig(lr=5e-3, steps=100_000)),
            "lr 5e-4": dataclasses.replace(slipping, config=MLPConfig(lr=5e-4, steps=100_000))}
    table = compare.clock_table(runs)
    fast, slow = table.loc["lr 5e-3"], table.loc["lr 5e-4"]
    assert (fast["clock at the end"] == 1e6).all() and (slow["clock at the end"] == 1e5).all()
    assert fast["peak on the clock"].tolist() == pytest.approx(10 * slow["peak on the clock"].to_numpy())
    assert fast["slip on the clock"].isna().all() and fast["fall after the slip"].tolist() == [0.0, 0.0]
    assert np.isnan(slow.loc[0, "slip on the clock"]) and 10_000 <= slow.loc[1, "slip on the clock"] <= 20_000
    assert slow.loc[1, "fall with train held"] < fast.loc[1, "fall with train held"]  # the slip cuts the held part
    assert slow.loc[1, "fall with train held"] + slow.loc[1, "fall after the slip"] == pytest.approx(
        slow.loc[1, "peak test accuracy"] - slow.loc[1, "final test accuracy"])


def test_by_protocol_names_each_distinct_run_once():
    import dataclasses

    from grokutils.config import MLPConfig

    def run_of(name, **fields):
        return dataclasses.replace(falling_run(name, 0.1), config=MLPConfig(**fields))

    accelerated = {wd: run_of(f"acc{wd}", lr=5e-3, steps=1_000_000, dtype="float32", weight_decay=wd)
                   for wd in (0.0, 0.01)}
    papers = {wd: run_of(f"pap{wd}", dtype="float32", weight_decay=wd) for wd in (0.0, 0.01)}
    assert list(compare.by_protocol(accelerated, accelerated)) == ["accelerated protocol, WD = 0",
                                                                 "accelerated protocol, WD = 0.01"]
    both = compare.by_protocol(accelerated, papers)
    assert list(both) == ["accelerated protocol, WD = 0", "papers' protocol in float32, WD = 0",
                          "accelerated protocol, WD = 0.01", "papers' protocol in float32, WD = 0.01"]
    assert both["papers' protocol in float32, WD = 0.01"] is papers[0.01]
    other = {wd: dataclasses.replace(run, config=dataclasses.replace(run.config, n_checkpoints=7))
             for wd, run in accelerated.items()}  # other runs of the same protocol: their names would collide
    with pytest.raises(ValueError, match="would both be named 'accelerated protocol, WD = 0'"):
        compare.by_protocol(accelerated, other)
    with pytest.raises(ValueError, match="the same weight decays"):
        compare.by_protocol(accelerated, {0.0: papers[0.0]})
    short = {wd: dataclasses.replace(run, config=dataclasses.replace(run.config, steps=200_000))
             for wd, run in accelerated.items()}
    assert list(compare.by_protocol(short, accelerated, papers))[:3] == [
        "accelerated protocol, 2e5 steps, WD = 0", "accelerated protocol, WD = 0",
        "papers' protocol in float32, WD = 0"]


def test_protocols_on_clock_values_read_each_run_on_the_clock():
    import dataclasses

    from grokutils import prose
    from grokutils.config import MLPConfig

    def run_of(name, **fields):
        return dataclasses.replace(falling_run(name, 0.3), path=Path(name), config=MLPConfig(**fields))

    accelerated = {wd: run_of(f"acc{wd}", lr=5e-3, steps=100_000, dtype="float32", weight_decay=wd)
                   for wd in (0.0, 0.01)}
    papers = {wd: run_of(f"pap{wd}", steps=100_000, dtype="float32", weight_decay=wd) for wd in (0.0, 0.01)}
    curves = accelerated[0.0].curves
    curves.loc[(curves.seed == 1) & (curves.step >= 10_000), "train_accuracy"] = 0.9
    alone = compare.protocols_on_clock_values(compare.by_protocol(accelerated, accelerated), accelerated)
    assert alone["other"] is None and [row["wd"] for row in alone["rows"]] == [0.0, 0.01]
    values = compare.protocols_on_clock_values(compare.by_protocol(accelerated, papers), accelerated)
    assert values["accelerated"] == "accelerated protocol, 1e5 steps" and values["other"] == "reduced run in float32"
    first, second = values["rows"][:2]
    assert (first["protocol"], first["wd"], first["end"], first["n_slipped"]) == (values["accelerated"], 0.0, 1e6, 1)
    assert 100_000 <= first["slips"][0] <= 200_000  # step 10,000 to 20,000 at ten times the papers' lr
    assert (second["protocol"], second["end"], second["n_slipped"], second["slips"]) == (values["other"], 1e5, 0, [])
    def peak(row):
        return float(row["peak"].split(" ± ")[0].replace(",", ""))

    assert peak(first) == pytest.approx(10 * peak(second))  # the same step, ten times the lr
    unfit = {wd: dataclasses.replace(run, curves=run.curves.assign(train_accuracy=0.5)) for wd, run in papers.items()}
    never = compare.protocols_on_clock_values(compare.by_protocol(accelerated, unfit), accelerated)
    assert never["rows"][1]["peak"] is None  # it never fits its training set, so it has no peak to fall from
    assert "has no test peak by its end" in prose.say("compare.protocols_on_clock", never)
    for case in (alone, values):
        assert prose.say("compare.protocols_on_clock", case)


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


def test_precision_values_give_an_interval_and_what_it_still_allows():
    falls = pd.DataFrame({"fall a": [0.10, 0.12, 0.11], "fall b": [0.10, 0.10, 0.12], "step": [200_000] * 3})
    falls["fall difference"] = falls["fall a"] - falls["fall b"]
    values = compare.precision_values(falls, held=3)
    # mean +0.0033, sd 0.0153, t(0.975, 2) = 4.303: half-width 0.038
    assert values["mean"] == pytest.approx(0.0033, abs=1e-4) and values["n_seeds"] == 3 and values["held"] == 3
    assert (values["low"], values["high"]) == (pytest.approx(-0.0346, abs=1e-4), pytest.approx(0.0413, abs=1e-4))
    assert values["shows_none"] and values["largest"] == pytest.approx(values["high"])
    assert values["share"] == pytest.approx(values["high"] / 0.11) and values["steps"] == 200_000
    apart = falls.assign(**{"fall difference": [0.05, 0.06, 0.055]}).drop(columns="step")
    deeper = compare.precision_values(apart, held=1)
    assert not deeper["shows_none"] and deeper["mean"] > 0 and deeper["steps"] is None
    shallower = compare.precision_values(apart.assign(**{"fall difference": [-0.05, -0.06, -0.055]}), held=1)
    assert not shallower["shows_none"] and shallower["mean"] < 0
    with pytest.raises(ValueError, match="at least 2 seeds, got 1"):
        compare.precision_values(falls.iloc[:1], held=1)
    for case in (values, deeper, shallower):  # every branch of the sentence renders
        assert prose.say("compare.precision", case)


def test_divergence_values_split_agreeing_and_parting_seeds():
    def apart(first):
        return pd.DataFrame({"last shared step": 1_081, "first step apart": pd.array(first, dtype="Int64")},
                            index=pd.Index(range(len(first)), name="seed"))

    cases = [compare.divergence_values(apart(first)) for first in ([None, None, 3], [None, 5, 3], [7, None, None],
                                                                   [None, None], [1_000, 5])]
    assert cases[0] == {"same": [0, 1], "parted": [(2, 3)], "last_shared_step": 1_081}
    assert cases[1] == {"same": [0], "parted": [(1, 5), (2, 3)], "last_shared_step": 1_081}
    assert cases[4]["same"] == [] and cases[4]["parted"] == [(0, 1_000), (1, 5)]
    for case in cases:
        assert prose.say("compare.divergence", case)


def test_three_phase_values_name_the_points_that_anti_grok_or_the_deepest_fall():
    def points(rows):
        index = pd.MultiIndex.from_tuples([row[:3] for row in rows], names=["lr", "dtype", "steps"])
        return pd.DataFrame([row[3:] for row in rows], index=index, columns=["t_fit", "t_collapse", "fall from peak"])

    nan = float("nan")
    anti = compare.three_phase_values(points([(5e-3, "float32", 50_000, 4_863, 40_000, 0.08),
                                              (5e-3, "float64", 50_000, 4_863, 41_000, 0.09),
                                              (1e-3, "float32", 50_000, 2_499, nan, 0.01)]))
    assert anti["lrs"] == [5e-3] and anti["n_fitting"] == 2  # the float64 point is not counted
    shallow = compare.three_phase_values(points([(5e-3, "float32", 50_000, 4_863, nan, 0.018),
                                                 (1e-3, "float32", 50_000, 2_499, nan, 0.01),
                                                 (1e-2, "float32", 50_000, nan, nan, 0.4)]))
    assert shallow["lrs"] == [] and (shallow["deepest_fall"], shallow["deepest_lr"]) == (0.018, 5e-3)
    unfit = compare.three_phase_values(points([(5e-4, "float32", 50_000, nan, nan, 0.0)]))
    assert unfit["n_fitting"] == 0 and unfit["deepest_fall"] is None
    for case in (anti, shallow, unfit):
        assert prose.say("compare.three_phase", case)

"""grokutils.claims: the per-seed checks of the papers' MLP claims, on runs of known shape."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokutils import claims
from grokutils.config import MLPConfig
from grokutils.store import RunResult

STEPS = [0, 10, 100, 1_000, 10_000, 100_000]


def _run(test: list[float], alpha_fc1: list[float], traps_fc1: list[int], l2: list[float],
         train: list[float] | None = None, seeds: int = 2) -> RunResult:
    """A stored-run look-alike: the same curves for every seed (seed s shifted by s / 1000)."""
    train = train or [0.1, 0.5, 1.0, 1.0, 1.0, 1.0]
    curves, layers = [], []
    for seed in range(seeds):
        for i, step in enumerate(STEPS):
            curves.append({"seed": seed, "step": step, "train_accuracy": train[i],
                           "test_accuracy": test[i] + seed / 1000, "l2_norm": l2[i],
                           "activation_sparsity": 0.5, "lcc_paper": 1.0 + i, "lcc_notebook": 2.0 - i / 10})
            for layer, alpha, traps in (("fc1", alpha_fc1[i], traps_fc1[i]), ("fc2", 3.0, 0), ("fc3", 4.0, 0)):
                layers.append({"seed": seed, "step": step, "layer": layer, "alpha": alpha, "traps": traps,
                               "abs_weight_entropy": 100.0 + i})
    return RunResult(Path("synthetic"), MLPConfig(steps=100_000, n_seeds=seeds), {}, pd.DataFrame(curves),
                     pd.DataFrame(layers))


COLLAPSING = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5, 5, 4, 3, 1.9, 1.5],
                  traps_fc1=[0, 0, 0, 0, 0, 4], l2=[1, 2, 3, 4, 5, 6])


def test_collapse_found_per_seed_with_its_size_and_step():
    table = claims.collapse_table(COLLAPSING)
    assert list(table.index) == [0, 1]
    assert table.loc[0, "t_fit"] == 100 and table.loc[0, "t_peak"] == 1_000
    assert table.loc[0, "t_collapse"] == 10_000  # 0.7 < 0.8 - 0.05
    assert table.loc[0, "fall"] == pytest.approx(0.25)
    assert bool(table.loc[0, "collapsed"])


SLIPPING = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6,
                train=[0.1, 0.5, 1.0, 1.0, 0.95, 0.9])  # train slips right after the peak, with the fall
HOLDS_THEN_SLIPS = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6,
                        train=[0.1, 0.5, 1.0, 1.0, 1.0, 0.9])  # 0.1 lost with train held, then 0.15 more


def test_a_fall_that_comes_with_falling_train_accuracy_is_not_anti_grokking():
    table = claims.collapse_table(SLIPPING)
    assert not table.collapsed.any() and (table.held_fall == 0).all()
    assert table.further_fall.tolist() == pytest.approx([0.25, 0.25]) and (table.lowest_train == 0.9).all()


def test_a_fall_with_train_held_then_slipping_is_split_and_counted_by_its_held_part():
    table = claims.collapse_table(HOLDS_THEN_SLIPS)
    assert table.collapsed.all() and table.held_fall.tolist() == pytest.approx([0.1, 0.1])
    assert (table.t_held_end == 10_000).all() and (table.t_slip == 100_000).all()
    assert table.further_fall.tolist() == pytest.approx([0.15, 0.15])


def test_verdict_in_words_gives_both_parts_of_the_fall():
    assert claims.verdict_words(claims.collapse_table(SLIPPING)) == (
        "0 of 2 seeds anti-grok by the rule (a fall of at least 0.05 with train accuracy held at 0.99); 2 seeds "
        "fall less than 0.05 with train held (0.000 and 0.000); 2 of 2 then lose their training fit (smoothed "
        "train accuracy down to 0.900) and fall 0.250 and 0.250 more")
    assert claims.verdict_words(claims.collapse_table(HOLDS_THEN_SLIPS)).startswith(
        "2 of 2 seeds anti-grok by the rule (a fall of at least 0.05 with train "
        "accuracy held at 0.99), by 0.100 and 0.100; 2 of 2 then lose their training fit")
    assert claims.verdict_words(claims.collapse_table(COLLAPSING)).endswith(
        "by 0.250 and 0.250; train accuracy stays at or above 0.99 to the end in every seed that fits")
    flat = _run(test=[0.1, 0.2, 0.5, 0.8, 0.79, 0.78], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6)
    assert "; 2 seeds fall less than 0.05 with train held (0.020 and 0.020);" in claims.verdict_words(
        claims.collapse_table(flat))


def test_crossing_words_lead_only_over_counted_collapses():
    collapse = claims.collapse_table(COLLAPSING)
    fc1 = claims.alpha_crossing_table(COLLAPSING).xs("fc1", level="layer")
    assert claims.crossing_words(fc1, collapse).endswith("with leads of +0 and +0 steps over the start of the fall "
                                                         "of the seeds that anti-grok (negative: after it)")
    none = collapse.assign(collapsed=False)
    assert claims.crossing_words(fc1, none).endswith("with no counted collapse to lead")
    assert claims.crossing_words(fc1.assign(t_below_2=pd.NA), collapse) == "never settles below 2 for good"


def test_alpha_crossing_and_its_lead_before_the_collapse():
    table = claims.alpha_crossing_table(COLLAPSING)
    fc1 = table.loc[(0, "fc1")]
    assert fc1["t_below_2"] == 10_000 and fc1["t_collapse"] == 10_000 and fc1["lead_steps"] == 0
    assert fc1["alpha_grokking"] == 3 and fc1["alpha_anti-grokking"] == 1.5
    assert pd.isna(table.loc[(0, "fc2"), "t_below_2"])  # fc2 stays at 3


def test_alpha_must_stay_below_2_to_count_as_crossed():
    run = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5, 1.5, 4, 3, 1.9, 1.5],
               traps_fc1=[0] * 6, l2=[1] * 6)
    assert claims.alpha_crossing_table(run).loc[(0, "fc1"), "t_below_2"] == 10_000  # not the dip at step 10


def test_traps_none_before_the_collapse_some_after():
    table = claims.trap_onset_table(COLLAPSING)
    assert table.loc[(0, "fc1"), "max_traps_before_collapse"] == 0
    assert table.loc[(0, "fc1"), "traps_at_end"] == 4 and table.loc[(0, "fc1"), "first_step_with_trap"] == 100_000


def test_measure_turns_only_where_the_trend_reverses():
    table = claims.measure_turn_table(COLLAPSING)
    assert not table.loc[(0, "l2_norm"), "turns"]  # grows through both phases
    assert table.loc[(0, "l2_norm"), "change_in_anti_grokking"] == pytest.approx((6 - 4) / 4)
    turning = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5] * 6, traps_fc1=[0] * 6,
                   l2=[1, 2, 3, 4, 3, 2])
    assert claims.measure_turn_table(turning).loc[(0, "l2_norm"), "turns"]


def test_no_collapse_no_turn_rows_and_summary_says_not_reached():
    flat = _run(test=[0.1, 0.2, 0.5, 0.8, 0.8, 0.8], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6)
    assert claims.measure_turn_table(flat).empty and claims.summarize(claims.measure_turn_table(flat)).empty
    summary = claims.summarize(claims.collapse_table(flat))
    assert summary.loc["all seeds", "t_collapse"] == "not reached"
    assert summary.loc["all seeds", "peak_test_accuracy"].startswith("0.8")


def test_summary_is_mean_and_sd_over_seeds():
    summary = claims.summarize(claims.collapse_table(COLLAPSING))
    values = [0.8, 0.801]
    assert summary.loc["all seeds", "peak_test_accuracy"] == f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


def test_shared_claims_are_one_text_table_for_every_chapter(tiny_run):
    shared = claims.shared_claims(tiny_run, tiny_run)
    assert shared.map(type).eq(str).all()
    for key in ("wd0_n_collapsed", "wd001_fall", "wd0_lead_fc1", "wd0_fc1_alpha_top10_end", "alarm_recommendation",
                "paper_alpha_end_fc1", "phase_rule"):
        assert key in shared.index
    assert shared["wd0_n_collapsed"] == "0" and shared["wd0_t_collapse"] == "never"  # 30 steps: no collapse
    assert shared["paper_alpha_end_fc1"] == "0.9 ± 0.4"


@pytest.mark.parametrize("counts, expected", [
    ((3, 3, 3), "it survives the check"), ((3, 1, 3), "survives the check only in part"),
    ((3, 0, 1), "it does not survive the check"), ((0, 3, 3), "the fit, not the spectrum"),
    ((0, 0, 1), "with any of the three fits"),
])
def test_sensitivity_in_words(counts, expected):
    words = claims.sensitivity_words(dict(zip(("alpha", "alpha_top10", "alpha_top25"), counts)), 3)
    assert expected in words


def test_timing_and_weight_decay_words():
    collapse = claims.collapse_table(COLLAPSING)
    assert claims.timing_words(collapse[collapse.collapsed]).startswith("in the 2 seeds that anti-grok the fall starts")
    assert claims.timing_words(collapse.iloc[:0]) == "no seed anti-groks by the rule, so no start of a fall is dated"
    words = claims.weight_decay_words(claims.collapse_table(SLIPPING), collapse)
    assert words.startswith("weight decay makes the mean fall with train held no smaller (0.250 against 0.000 "
                            "without it) and makes the mean whole fall no smaller (0.250 against 0.250 without it)")
    assert words.endswith("to the end in 2 of 2 seeds with it against 0 of 2 without")


def test_turning_values_name_the_measures_that_turn_in_most_seeds():
    turns = claims.measure_turn_table(COLLAPSING)
    assert claims.turning_values(turns.iloc[:0])["tested"] is False
    n = turns.index.get_level_values("measure").nunique()
    values = claims.turning_values(turns.assign(turns=True), {"l2_norm": "l2 norm"})
    assert values["tested"] and values["n_measures"] == n and values["n_seeds"] == 2
    assert values["turning"][0] == "l2 norm" and len(values["turning"]) == n
    assert claims.turning_values(turns.assign(turns=False))["turning"] == []
    for case in (turns.iloc[:0], turns.assign(turns=True), turns.assign(turns=False)):
        assert claims.turning_words(case)  # every case renders


def test_separation_words_name_the_firing_steps_of_the_best_rule():
    table = pd.DataFrame({"fires on WD = 0": ["35,112 to 53,367", "never"], "fires on WD = 0.01": ["20,806", "100"],
                          "separates": ["no", "no"]}, index=pd.Index(["alpha", "traps"], name="rule"))
    assert claims.separation_words(table, "alpha") == (
        "no rule tested fires on every seed of the run without weight decay before any seed of the control: 'alpha' "
        "fires at steps 35,112 to 53,367 without weight decay and at step 20,806 with it")
    apart = table.assign(separates=["yes", "no"])
    assert claims.separation_words(apart, "traps").startswith("1 of 2 rules fire on every seed of the run without "
                                                             "weight decay before any seed of the control ('alpha'); "
                                                             "'traps' fires at no step (never) without")


def test_verdict_words_agree_in_number_for_one_seed_that_slips():
    one = claims.collapse_table(HOLDS_THEN_SLIPS).iloc[:1]
    assert claims.verdict_words(one).endswith("; 1 of 1 then loses its training fit (smoothed train accuracy down "
                                              "to 0.900) and falls 0.150 more")

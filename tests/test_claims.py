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


def test_edges_values_give_each_phase_edge_of_the_mean_curves_beside_the_papers_steps():
    from grokutils import prose

    values = claims.edges_values(COLLAPSING)
    assert values["ours"]["pre-grokking"] == 100 and values["ours"]["grokking"] == 1_000  # fit, then the peak
    assert values["ours"]["anti-grokking"] == 100_000 and values["last"] == 100_000
    assert values["papers"] == {"pre-grokking": 100_000, "grokking": 1_000_000, "anti-grokking": 10_000_000}
    assert prose.say("claims.edges", values).endswith("where the papers read these phases at 100,000, 1,000,000 "
                                                      "and 10,000,000 steps")
    never = {**values, "ours": {"pre-grokking": None, "grokking": None, "anti-grokking": None}}
    assert prose.say("claims.edges", never).startswith("on the mean curves pre-grokking lasts to the last step")
    held = claims.edges_values(_run(test=[0.1, 0.2, 0.5, 0.8, 0.8, 0.8], alpha_fc1=[5] * 6, traps_fc1=[0] * 6,
                                    l2=[1] * 6))
    assert held["ours"]["anti-grokking"] is None and "no anti-grokking phase follows" in prose.say("claims.edges", held)


def test_a_fall_that_comes_with_falling_train_accuracy_is_not_anti_grokking():
    table = claims.collapse_table(SLIPPING)
    assert not table.collapsed.any() and (table.held_fall == 0).all()
    assert table.further_fall.tolist() == pytest.approx([0.25, 0.25]) and (table.lowest_train == 0.9).all()


def test_a_fall_with_train_held_then_slipping_is_split_and_counted_by_its_held_part():
    table = claims.collapse_table(HOLDS_THEN_SLIPS)
    assert table.collapsed.all() and table.held_fall.tolist() == pytest.approx([0.1, 0.1])
    assert (table.t_held_end == 10_000).all() and (table.t_slip == 100_000).all()
    assert table.further_fall.tolist() == pytest.approx([0.15, 0.15])


def test_verdict_values_give_both_parts_of_the_fall():
    slipping = claims.verdict_values(claims.collapse_table(SLIPPING))
    assert slipping["collapsed_falls"] == [] and slipping["short_falls"] == pytest.approx([0.0, 0.0])
    assert slipping["n_slipped"] == 2 and slipping["further_falls"] == pytest.approx([0.25, 0.25])
    assert slipping["lowest_train"] == pytest.approx(0.9) and slipping["n_fitted"] == slipping["n_seeds"] == 2
    split = claims.verdict_values(claims.collapse_table(HOLDS_THEN_SLIPS))
    assert split["collapsed_falls"] == pytest.approx([0.1, 0.1]) and split["short_falls"] == []
    assert split["further_falls"] == pytest.approx([0.15, 0.15])
    assert claims.verdict_values(claims.collapse_table(HOLDS_THEN_SLIPS).iloc[:1])["n_slipped"] == 1
    held = claims.verdict_values(claims.collapse_table(COLLAPSING))
    assert held["collapsed_falls"] == pytest.approx([0.25, 0.25]) and held["n_slipped"] == 0
    assert held["lowest_train"] is None and (held["drop"], held["high_train"]) == (0.05, 0.99)
    flat = _run(test=[0.1, 0.2, 0.5, 0.8, 0.79, 0.78], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6)
    assert claims.verdict_values(claims.collapse_table(flat))["short_falls"] == pytest.approx([0.02, 0.02])


UNFIT = _run(test=[0.1, 0.2, 0.5, 0.8, 0.7, 0.55], alpha_fc1=[5] * 6, traps_fc1=[0] * 6, l2=[1] * 6,
             train=[0.1, 0.5, 0.6, 0.7, 0.8, 0.9])  # train never reaches the fit level


def test_verdict_values_count_the_seeds_that_never_fit():
    mixed = pd.concat([claims.collapse_table(COLLAPSING).iloc[:1], claims.collapse_table(SLIPPING).iloc[1:],
                       claims.collapse_table(UNFIT).iloc[:1]], ignore_index=True)
    values = claims.verdict_values(mixed)
    assert (values["n_seeds"], values["n_fitted"], values["n_slipped"]) == (3, 2, 1)
    assert values["collapsed_falls"] == pytest.approx([0.25]) and values["short_falls"] == pytest.approx([0.0])
    assert claims.verdict_values(claims.collapse_table(UNFIT))["n_fitted"] == 0


def test_every_verdict_and_lowest_train_case_renders_its_values():
    from grokutils.prose import say

    for run in (COLLAPSING, SLIPPING, HOLDS_THEN_SLIPS, UNFIT):
        for table in (claims.collapse_table(run), claims.collapse_table(run).iloc[:1]):  # many seeds, and one
            values = claims.verdict_values(table)
            words = claims.verdict_words(table)
            assert words.startswith(f"{len(values['collapsed_falls'])} of {values['n_seeds']} ")
            assert all(f"{fall:.3f}" in words for fall in values["collapsed_falls"] + values["further_falls"])
            lowest = say("claims.lowest_train", values)
            assert lowest == "not below the bar" if values["lowest_train"] is None else lowest in words


def test_crossing_values_lead_only_over_counted_collapses():
    collapse = claims.collapse_table(COLLAPSING)
    fc1 = claims.alpha_crossing_table(COLLAPSING).xs("fc1", level="layer")
    values = claims.crossing_values(fc1, collapse)
    assert values == {"line": 2.0, "n_seeds": 2, "t_below": [10_000, 10_000], "leads": [0, 0]}
    assert claims.crossing_values(fc1, collapse.assign(collapsed=False))["leads"] == []
    assert claims.crossing_values(fc1.assign(t_below_2=pd.NA), collapse)["t_below"] == []
    late = fc1.assign(lead_steps=fc1.lead_steps - 12_345)
    assert claims.crossing_values(late, collapse)["leads"] == [-12_345, -12_345]
    for case in ((fc1, collapse), (fc1, collapse.assign(collapsed=False)), (fc1.assign(t_below_2=pd.NA), collapse),
                 (late, collapse)):
        values, words = claims.crossing_values(*case), claims.crossing_words(*case)
        assert all(f"{lead:+,}" in words for lead in values["leads"]) or not values["t_below"]


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
                "paper_alpha_end_fc1", "phase_rule", "wd0_edges_words"):
        assert key in shared.index
    assert shared["wd0_n_collapsed"] == "0" and shared["wd0_t_collapse"] == "never"  # 30 steps: no collapse
    assert shared["paper_alpha_end_fc1"] == "0.9 ± 0.4"


@pytest.mark.parametrize("counts, below_in_most, held, lost", [
    ((3, 3, 3), True, [10, 25], []), ((3, 1, 3), True, [25], [10]), ((3, 0, 1), True, [], [10, 25]),
    ((0, 3, 3), False, [10, 25], []), ((0, 0, 1), False, [], [10, 25]), ((2, 1, 2), True, [25], [10]),
])
def test_sensitivity_values_count_most_seeds_by_each_fit(counts, below_in_most, held, lost):
    n_below = dict(zip(("alpha", "alpha_top10", "alpha_top25"), counts))
    values = claims.sensitivity_values(n_below, 3)
    assert (values["below_in_most"], values["held_tails"], values["lost_tails"]) == (below_in_most, held, lost)
    assert claims.sensitivity_words(n_below, 3)  # every case renders
    assert claims.sensitivity_values({"alpha": 3}, 3)["lost_tails"] == []  # no fixed tail given: none lost


def test_timing_values_date_the_fall_of_the_seeds_that_anti_grok():
    collapse = claims.collapse_table(COLLAPSING)
    values = claims.timing_values(collapse[collapse.collapsed])
    assert values == {"n_collapsed": 2, "t_collapse": [10_000, 10_000], "t_half_fall": [100_000, 100_000]}
    assert claims.timing_values(collapse.iloc[:0])["n_collapsed"] == 0
    assert "10,000" in claims.timing_words(collapse[collapse.collapsed])
    assert claims.timing_words(collapse.iloc[:0])  # the case without a fall renders too


def test_weight_decay_values_compare_the_means_of_the_two_runs():
    values = claims.weight_decay_values(claims.collapse_table(SLIPPING), claims.collapse_table(COLLAPSING))
    assert values["held_fall"] == pytest.approx({"wd0": 0.0, "wd001": 0.25, "smaller": False})
    assert values["fall"] == pytest.approx({"wd0": 0.25, "wd001": 0.25, "smaller": False})
    assert values["n_held"] == {"wd0": 0, "wd001": 2} and values["n_seeds"] == {"wd0": 2, "wd001": 2}
    reverse = claims.weight_decay_values(claims.collapse_table(HOLDS_THEN_SLIPS), claims.collapse_table(SLIPPING))
    assert reverse["held_fall"]["smaller"] and not reverse["fall"]["smaller"]
    for case in ((SLIPPING, COLLAPSING), (HOLDS_THEN_SLIPS, SLIPPING)):
        assert "0.250" in claims.weight_decay_words(*(claims.collapse_table(run) for run in case))


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


def _evaluation(fires: dict[str, dict[str, list]]) -> pd.DataFrame:
    """An `alarm_eval.evaluate` look-alike: each rule's firing step per run and seed (None: never); a
    firing is a hit, led by 10 steps, or by -10 in seed 0."""
    from grokutils.phases import with_int_steps

    rows = [{"rule": rule, "run": run, "seed": seed, "fires": fire, "outcome": "hit" if fire else "miss",
             "lead_steps": (10 if seed else -10) if fire else None}
            for rule, by_run in fires.items() for run, steps in by_run.items() for seed, fire in enumerate(steps)]
    return with_int_steps(pd.DataFrame(rows), ("fires", "lead_steps")).set_index(["rule", "run", "seed"])


SEPARATION = _evaluation({"alpha": {"WD = 0": [35_112, 53_367], "WD = 0.01": [20_806, 20_806]},
                          "traps": {"WD = 0": [None, None], "WD = 0.01": [100, None]},
                          "early": {"WD = 0": [10, 20], "WD = 0.01": [None, 500]}})


def test_separation_values_name_the_rules_that_separate_and_the_best_rules_firing_steps():
    values = claims.separation_values(SEPARATION, "alpha")
    assert values == {"n_rules": 3, "apart": ["early"], "best": "alpha", "fires_run": [35_112, 53_367],
                      "fires_control": [20_806, 20_806]}
    assert claims.separation_values(SEPARATION, "traps")["fires_run"] == [None, None]
    alone = SEPARATION.drop("early", level="rule")
    assert claims.separation_values(alone, "alpha")["apart"] == []
    for evaluation, best in ((SEPARATION, "alpha"), (SEPARATION, "traps"), (alone, "alpha")):
        words = claims.separation_words(evaluation, best)
        assert f"'{best}'" in words and ("35,112 to 53,367" in words) == (best == "alpha")


def test_alarm_lead_values_count_the_hits_before_the_fall():
    from grokutils.prose import say

    assert claims.alarm_lead_values(SEPARATION, "alpha") == {"n_hits": 4, "n_early": 2}
    assert claims.alarm_lead_values(SEPARATION, "traps") == {"n_hits": 1, "n_early": 0}
    silent = _evaluation({"quiet": {"WD = 0": [None], "WD = 0.01": [None]}})
    assert claims.alarm_lead_values(silent, "quiet") == {"n_hits": 0, "n_early": 0}
    for evaluation, best in ((SEPARATION, "alpha"), (silent, "quiet")):
        assert say("claims.alarm_lead", claims.alarm_lead_values(evaluation, best))  # both cases render


def _control(falls=(0.2, 0.1), wd001_end=(1.0, 1.0), peaks=(1.0, 2.0), traps=(2.0, 1.0)) -> dict:
    """`claims.control_values`, each pair for ('wd0', 'wd001'); the WD = 0 run's fixed-tail alpha ends at
    1.5 in FC1 and FC2, the control's at `wd001_end`."""
    return claims.control_values(dict(zip(("wd0", "wd001"), falls)),
                                 {"wd0": {"fc1": 1.5, "fc2": 1.5}, "wd001": dict(zip(("fc1", "fc2"), wd001_end))},
                                 dict(zip(("wd0", "wd001"), peaks)), dict(zip(("wd0", "wd001"), traps)))


def test_control_values_ask_whether_the_deeper_run_carries_the_signals():
    values = _control()
    assert values["deeper"] == "wd0" and (values["deeper_fall"], values["other_fall"]) == (0.2, 0.1)
    assert values["heavier"] == {"wd0": [], "wd001": ["FC1", "FC2"]} and not values["deeper_heavier_in_both"]
    assert values["lower_peak_alpha"] and values["more_peak_traps"]
    deeper_control = _control(falls=(0.1, 0.2))
    assert deeper_control["deeper"] == "wd001" and deeper_control["deeper_heavier_in_both"]
    assert not deeper_control["lower_peak_alpha"] and not deeper_control["more_peak_traps"]
    split = _control(wd001_end=(1.0, 2.0), traps=(1.0, 1.0))
    assert split["heavier"] == {"wd0": ["FC2"], "wd001": ["FC1"]} and not split["more_peak_traps"]
    assert _control(falls=(0.1, 0.1))["deeper"] == "wd0"  # a tie counts for the run without weight decay
    assert _control(wd001_end=(1.5, 1.5))["heavier"]["wd0"] == ["FC1", "FC2"]  # so does a tied alpha


def test_every_control_case_renders_its_values():
    from grokutils.prose import say

    for values in (_control(), _control(falls=(0.1, 0.2)), _control(wd001_end=(1.0, 2.0), traps=(1.0, 1.0)),
                   _control(peaks=(2.0, 1.0)), _control(wd001_end=(2.0, 2.0))):
        for macro in ("control_tails", "control_signals"):
            assert f"{values['deeper_fall']:.3f} against {values['other_fall']:.3f}" in say(f"claims.{macro}", values)


@pytest.mark.parametrize("means, below", [
    ((2.5, 1.5, 1.5), (False, True, True)), ((1.5, 1.5, 1.5), (True, True, True)),
    ((1.5, 2.5, 1.5), (True, False, True)),
])
def test_fc1_peak_values_say_by_which_fit_alpha_is_below_2(means, below):
    from grokutils.prose import say

    at_peak = pd.DataFrame({"alpha": [means[0], means[0]], "alpha_top10": [means[1], 2.0],
                            "alpha_top25": [means[2], means[2]]})
    values = claims.fc1_peak_values(at_peak)
    assert values["below"] == dict(zip(("alpha", "alpha_top10", "alpha_top25"), below))
    assert say("claims.fc1_peak", values)  # every case renders

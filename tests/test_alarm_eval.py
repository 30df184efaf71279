"""grokutils.alarm_eval: rules scored as a detector, on synthetic runs whose phases are known."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grokutils import alarm_eval
from grokutils.config import MLPConfig
from grokutils.prose import lead_range
from grokutils.store import RunResult

STEPS = np.unique(np.r_[0, np.round(np.logspace(0, 5, 60)).astype(int)])
LOGS = np.log10(STEPS + 1.0)


def _seed(seed: int, collapses: bool, alpha_cross: float | None, traps_from: float | None = None):
    """Curves that plateau at 0.85 from 1e3 steps (and fall to 0.55 from 1e4 if `collapses`); FC1 alpha
    that drops from 4 to 1.5 at 10**alpha_cross steps; FC1 traps 5 from 10**traps_from."""
    test = np.clip(0.1 + 0.75 * (LOGS - 2.0), 0.1, 0.85)
    if collapses:
        test = np.where(LOGS < 4.0, test, 0.85 - 0.3 * np.clip((LOGS - 4.0) / 0.5, 0, 1))
    curves = pd.DataFrame({"seed": seed, "step": STEPS, "train_accuracy": np.where(STEPS >= 100, 1.0, 0.5),
                           "test_accuracy": test})
    alpha = np.where(LOGS >= alpha_cross, 1.5, 4.0) if alpha_cross is not None else np.full(len(STEPS), 4.0)
    traps = np.where(LOGS >= traps_from, 5, 0) if traps_from is not None else np.zeros(len(STEPS))
    layers = pd.concat([pd.DataFrame({"seed": seed, "step": STEPS, "layer": "fc1", "alpha": alpha, "traps": traps}),
                        pd.DataFrame({"seed": seed, "step": STEPS, "layer": "fc2", "alpha": 3.0, "traps": 0})])
    return curves, layers


def _run(*seeds) -> RunResult:
    curves, layers = zip(*(_seed(i, *spec) for i, spec in enumerate(seeds)))
    return RunResult(Path("synthetic"), MLPConfig(steps=100_000, n_seeds=len(seeds)), {},
                     pd.concat(curves, ignore_index=True), pd.concat(layers, ignore_index=True))


def test_first_firing_needs_the_condition_to_persist():
    condition = pd.Series([False, True, False, True, True, True], index=[1, 2, 3, 4, 5, 6])
    assert alarm_eval.first_firing(condition, 1) == 2 and alarm_eval.first_firing(condition, 3) == 6
    assert alarm_eval.first_firing(condition & False, 1) is None


@pytest.mark.parametrize("spec, expected", [
    ((True, 3.9), "hit"),  # crosses in the peak region, before half of the fall
    ((True, 2.5), "false alarm"),  # crosses before the peak region begins
    ((True, 4.8), "miss"),  # crosses after half of the fall
    ((True, None), "miss"),  # never fires on a collapse
    ((False, 3.9), "false alarm"),  # fires on a run that holds its accuracy
    ((False, None), "quiet"),
])
def test_outcomes(spec, expected):
    evaluation = alarm_eval.evaluate({"run": _run(spec)})
    rule = "FC1 or FC2 alpha < 2"
    assert evaluation.loc[(rule, "run", 0), "outcome"] == expected


def test_trap_rule_fires_on_a_trap_present_from_the_start_and_the_rise_rule_does_not():
    evaluation = alarm_eval.evaluate({"run": _run((True, None, 0.0), (True, None, 3.9))})
    assert evaluation.loc[("any trap in FC1 or FC2", "run", 0), "outcome"] == "false alarm"
    rise = "FC1 traps >= early level + 2, 3 checkpoints"
    assert evaluation.loc[(rise, "run", 0), "outcome"] == "miss"  # the early level is already 5: no rise
    assert evaluation.loc[(rise, "run", 1), "outcome"] == "hit"


def test_summary_and_recommendation():
    evaluation = alarm_eval.evaluate({"a": _run((True, 3.9), (False, None)), "b": _run((True, 3.9))})
    table = alarm_eval.summary(evaluation)
    row = table.loc["FC1 or FC2 alpha < 2"]
    assert (row["collapsing seeds"], row.hit, row["false alarm"], row.quiet) == (2, 2, 0, 1)
    hits = evaluation[evaluation.outcome == "hit"].xs("FC1 or FC2 alpha < 2", level="rule")
    assert (hits.lead_half_steps > hits.lead_steps).all()  # half the fall comes after its start
    assert row["lead over the fall's start (steps)"] == lead_range(hits.lead_steps.tolist())
    supported = alarm_eval.recommendation_values(table)
    assert "FC1 or FC2 alpha < 2" in supported["supported"] and not supported["all_collapse"]
    assert alarm_eval.recommendation(table)  # renders
    table.loc[:, "false alarm"] = 1
    none = alarm_eval.recommendation_values(table)
    assert none["supported"] == [] and (none["hits"], none["collapsing"], none["false_alarms"]) == (2, 2, 1)
    assert none["best"] == (table.hit - table["false alarm"]).idxmax() and none["seeds"] == 3
    assert f"'{none['best']}'" in alarm_eval.recommendation(table)


def test_detector_figure_draws_one_panel_per_rule():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from grokutils.plots.alarm import detector_figure

    fig = detector_figure(alarm_eval.evaluate({"run": _run((True, 3.9), (False, 3.9))}))
    assert sum(ax.get_visible() for ax in fig.axes) == len(alarm_eval.RULES)
    plt.close(fig)


def test_separation_needs_every_seed_of_the_run_to_fire_before_any_seed_of_the_control():
    early, late = _run((True, 3.9), (True, 3.9)), _run((True, 4.8), (False, None))
    table = alarm_eval.separation(alarm_eval.evaluate({"a": early, "b": late}), "a", "b")
    row = table.loc["FC1 or FC2 alpha < 2"]
    assert row.separates == "yes" and row["fires on b"].endswith("; never in 1")
    assert alarm_eval.separation(alarm_eval.evaluate({"a": late, "b": early}), "a", "b").loc[
        "FC1 or FC2 alpha < 2"].separates == "no"  # seed 1 of a never fires
    assert alarm_eval.separation(alarm_eval.evaluate({"a": early, "b": early}), "a", "b").loc[
        "FC1 or FC2 alpha < 2"].separates == "no"  # a tie is not a separation


def test_a_recommendation_from_runs_that_all_collapse_says_false_alarms_are_untested():
    table = alarm_eval.summary(alarm_eval.evaluate({"a": _run((True, 3.9), (True, 3.9))}))
    assert alarm_eval.recommendation_values(table)["all_collapse"]
    mixed = alarm_eval.summary(alarm_eval.evaluate({"a": _run((True, 3.9), (False, None))}))
    assert not alarm_eval.recommendation_values(mixed)["all_collapse"]
    for case in (table, table.assign(**{"false alarm": 1})):
        assert alarm_eval.recommendation(case) != alarm_eval.recommendation(case.assign(seeds=case.seeds + 1))

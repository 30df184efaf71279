"""grokutils.scorecard: verdicts and the MLP claims computed from a run."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from grokutils import scorecard


def test_tolerance_combines_both_spreads_with_a_floor_and_a_cap():
    assert scorecard.tolerance(5.0, 0.3, 0.4, floor=0.25) == pytest.approx(1.0)  # 2 * sqrt(0.09 + 0.16)
    assert scorecard.tolerance(5.0, None, 0.0, floor=0.25) == pytest.approx(0.5)  # the floor
    assert scorecard.tolerance(7.5, 5.6, 0.0, floor=1.0) == pytest.approx(3.75)  # capped: 0 traps cannot pass
    assert scorecard.tolerance(0.0, None, 0.0, floor=1.0) == pytest.approx(2.0)


@pytest.mark.parametrize("ours, holds, expected", [
    (5.5, None, "reproduced"), (7.0, True, "partly"), (7.0, None, "not reproduced"), (7.0, False, "not reproduced"),
    (np.nan, True, "not run yet"),
])
def test_value_verdicts(ours, holds, expected):
    assert scorecard.value_verdict(ours, paper_mean=5.0, tol=1.0, direction_holds=holds) == expected


@pytest.mark.parametrize("per_seed, paper_mean, expected", [
    ([0, 0, 1], 0, "reproduced"), ([0, 1, 1], 0, "not reproduced"), ([1, 1, 1], 0, "not reproduced"),
    ([8, 9, 6], 7.5, "reproduced"), ([20, 25, 30], 7.5, "partly"), ([0, 0, 30], 7.5, "not reproduced"),
    ([], 0, "not run yet"),
])
def test_count_verdicts_need_zero_or_traps_in_most_seeds(per_seed, paper_mean, expected):
    assert scorecard.count_verdict(np.array(per_seed), paper_mean, tol=3.75) == expected


def test_direction_is_the_sign_of_the_change_from_the_previous_phase():
    assert scorecard._sign_holds(2.0, 3.0, 0.9, 3.6) is True
    assert scorecard._sign_holds(4.0, 3.0, 0.9, 3.6) is False
    assert scorecard._sign_holds(4.0, 3.0, 1.0, 1.0) is None


def test_tiny_run_claims_beyond_its_length_are_not_run_yet_at_paper_scale(tiny_run):
    card = scorecard.mlp_scorecard(None, (tiny_run, None))
    assert len(card) == 3 + 9 + 6 + 6  # Fig 1 narrative, Table 1, Table 2 (WD = 0), Table 4 without its trap column
    assert card.groupby(["source", "claim"]).size().max() == 1  # no claim counted twice
    assert set(card["verdict, paper scale"]) == {"not run yet"}  # 30 steps reach none of 1e5, 1e6, 1e7
    assert set(card["verdict, own edges"]) == {"not run yet"}  # no run of ours given
    counts = scorecard.verdict_counts(card, "verdict, paper scale")
    assert list(counts.index) == list(scorecard.VERDICTS) and counts["not run yet"] == (card.counted == "yes").sum()


def test_our_claims_are_read_at_our_phase_edges(tiny_run):
    """30 steps never fit the training set: the whole run is pre-grokking, read at its last step."""
    card = scorecard.mlp_scorecard((tiny_run, None)).set_index("claim")
    row = card.loc["alpha fc1, pre-grokking"]
    assert row["ours, own edges"].endswith("(step 30)") and row["verdict, own edges"] != "not run yet"
    assert card.loc["alpha fc1, grokking", "verdict, own edges"] == "not run yet"
    assert card.loc["WD = 0: test accuracy collapses, train accuracy held", "verdict, own edges"] == "not reproduced"
    assert "tolerance, own edges" in card and "flagged, own edges" in card


def test_claims_are_scored_once_the_step_is_reached(tiny_run, monkeypatch):
    """Pretend the run's last checkpoint is 1e5: the pre-grokking claims get real verdicts."""
    layers = tiny_run.layers.assign(step=tiny_run.layers.step.replace({30: 100_000}))
    curves = tiny_run.curves.assign(step=tiny_run.curves.step.replace({30: 100_000}))
    stretched = dataclasses.replace(tiny_run, layers=layers, curves=curves)
    monkeypatch.setattr(scorecard, "_ks_claims", lambda result, edges: [])  # its arrays keep the old step keys
    card = scorecard.mlp_scorecard(None, (stretched, None)).set_index("claim")
    row = card.loc["alpha fc1, pre-grokking"]
    assert row["verdict, paper scale"] in {"reproduced", "partly", "not reproduced"}
    assert row["ours, paper scale"].endswith("(step 100,000)")
    assert card.loc["alpha fc1, grokking", "verdict, paper scale"] == "not run yet"


def test_wrong_run_is_rejected(tiny_run):
    other = dataclasses.replace(tiny_run, config=dataclasses.replace(tiny_run.config, weight_decay=0.01))
    with pytest.raises(ValueError, match="wd0 must be a weight_decay=0 run, got weight_decay=0.01"):
        scorecard.mlp_scorecard((other, None))
    with pytest.raises(ValueError, match="got neither"):
        scorecard.mlp_scorecard(None, None)
    with pytest.raises(ValueError, match="scale must be one of"):
        scorecard.claim_edges(tiny_run, "fast")


def test_modadd_claims_from_the_stored_smoke_run():
    from grokutils.config import ModAddConfig
    from grokutils.paths import RESULTS_DIR
    from grokutils.store import load_run

    folder = next(RESULTS_DIR.glob("modadd-*"))
    card = scorecard.modadd_scorecard(load_run(folder, ModAddConfig)).set_index("claim")
    assert len(card) == 9 and set(card.source) == {"Table 5 (b)", "Table 6 (b)", "Table 7 (b)"}
    assert card.loc["test accuracy, anti-grokking", "verdict"] == "not run yet"  # the smoke run never collapses
    assert card.loc["test accuracy, grokking", "paper"] == "0.97 ± 0.02"
    assert card.loc["test accuracy, grokking", "verdict"] in scorecard.VERDICTS


def test_no_row_passes_absurd_values(monkeypatch):
    """A run whose alpha is 50 and trap count 100 everywhere, and whose test accuracy never rises,
    reproduces nothing: every row of the card can fail."""
    from pathlib import Path

    import pandas as pd

    from grokutils.config import MLPConfig
    from grokutils.store import RunResult

    steps = [0, 10, 100, 1_000, 10_000, 100_000]
    curves = pd.DataFrame([{"seed": s, "step": t, "train_accuracy": 1.0 if t >= 100 else 0.5, "test_accuracy": 0.1}
                           for s in range(3) for t in steps])
    layers = pd.DataFrame([{"seed": s, "step": t, "layer": layer, "alpha": 50.0, "traps": 100, "num_pl_spikes": 20,
                            "num_evals": 200} for s in range(3) for t in steps for layer in ("fc1", "fc2")])
    run = RunResult(Path("synthetic"), MLPConfig(steps=100_000, n_seeds=3), {}, curves, layers)
    control = dataclasses.replace(run, config=dataclasses.replace(run.config, weight_decay=0.01))
    monkeypatch.setattr(scorecard, "_ks_claims", lambda result, edges: [])  # no stored spectra here
    card = scorecard.mlp_scorecard((run, control))
    scored = card[~card["verdict, own edges"].isin(["not run yet"])]
    passed = scored[scored["verdict, own edges"] == "reproduced"]
    assert passed[passed.counted == "yes"].claim.tolist() == ["WD = 0.01: no collapse (test accuracy plateaus)"]
    assert passed[passed.counted != "yes"].claim.tolist() == ["train accuracy reaches 100%"]  # context: not counted


def _run_of(test, train, weight_decay=0.0):
    """A three-seed run on log-spaced steps with the given accuracy curves and alpha 1.5 / 3 traps everywhere."""
    from pathlib import Path

    import pandas as pd

    from grokutils.config import MLPConfig
    from grokutils.store import RunResult

    steps = [0, 10, 100, 1_000, 10_000, 100_000, 1_000_000]
    curves = pd.DataFrame([{"seed": s, "step": t, "train_accuracy": tr, "test_accuracy": te}
                           for s in range(3) for t, tr, te in zip(steps, train, test)])
    layers = pd.DataFrame([{"seed": s, "step": t, "layer": layer, "alpha": 1.5 + t / 1e6, "traps": 3,
                            "num_pl_spikes": 20, "num_evals": 200} for s in range(3) for t in steps
                           for layer in ("fc1", "fc2")])
    return RunResult(Path("synthetic"), MLPConfig(steps=1_000_000, n_seeds=3, weight_decay=weight_decay), {},
                     curves, layers)


def test_both_runs_are_read_alike_at_the_held_end_and_at_the_last_step(monkeypatch):
    """WD = 0 anti-groks with train held to 1e5, then slips: its anti-grokking rows are read at 1e5 and also
    show the last step. A control that never falls is read at its last step, by the same function."""
    monkeypatch.setattr(scorecard, "_ks_claims", lambda result, edges: [])
    run = _run_of(test=[0.1, 0.2, 0.5, 0.8, 0.6, 0.55, 0.5], train=[0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 0.9])
    control = _run_of(test=[0.1, 0.2, 0.5, 0.8, 0.8, 0.8, 0.8], train=[0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0],
                      weight_decay=0.01)
    assert scorecard.claim_edges(run, "own edges")["anti-grokking"] == 100_000  # the last step with train held
    assert scorecard.claim_edges(control, "own edges")["anti-grokking"] == 1_000_000  # no anti-grokking: the end
    card = scorecard.mlp_scorecard((run, control)).set_index("claim")
    ours = card.loc["alpha fc1, anti-grokking", "ours, own edges"]
    assert "(step 100,000)" in ours and ours.endswith("last step: 2.50 ± 0.00 (step 1,000,000)")
    collapse = card.loc["WD = 0: test accuracy collapses, train accuracy held"]
    assert collapse["ours, own edges"].startswith(
        "3 of 3 seeds anti-grok, by 0.250 ± 0.000, to 0.550 ± 0.000 with train held")
    assert "then 3 lose the fit (train down to 0.900)" in collapse["ours, own edges"]
    assert card.loc["WD = 0.01: no collapse (test accuracy plateaus)", "verdict, own edges"] == "reproduced"


def test_rows_that_cannot_fail_or_repeat_others_are_shown_but_not_counted(tiny_run):
    card = scorecard.mlp_scorecard((tiny_run, None)).set_index("claim")
    assert card.loc["train accuracy reaches 100%", "counted"] == "context"
    assert card.loc["FC1 W_rand sigma_mp, pre-grokking", "counted"] == "context"
    assert set(card[card.index.str.startswith("alpha average")].counted) == {"derived"}
    assert card.loc["test accuracy rises after the fit and peaks", "counted"] == "yes"  # the fall is the next row's
    counts = scorecard.verdict_counts(card.reset_index(), "verdict, own edges")
    assert counts.sum() == (card.counted == "yes").sum() == len(card) - 5
    assert set(card.counted) <= set(scorecard.COUNTED)


def test_where_the_papers_differ_both_values_are_shown_each_with_its_paper(tiny_run):
    card = scorecard.mlp_scorecard((tiny_run, None)).set_index("claim")
    assert card.loc["traps fc1, grokking", "paper"] == "0 (b); 1 (a)"
    assert card.loc["traps fc1, anti-grokking", "paper"] == "7.5 ± 5.6"
    assert set(card.source[card.index.str.startswith("traps")]) == {"Table 2 (a, b), WD = 0"}

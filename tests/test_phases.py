"""grokutils.phases: the phase rule, specified on synthetic curves (a spike, a recovery, a slow
drift, a real fall) before it meets real ones."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokutils import phases as ph
from grokutils.phases import FIT_LOST, claim_steps, collapse_table, find_phases, seed_phases, smooth

STEPS = np.unique(np.r_[0, np.round(np.logspace(0, 5, 100)).astype(int)])  # log-spaced, like a stored run
LOGS = np.log10(STEPS + 1.0)


def _curve(test, train=None, seed=0) -> pd.DataFrame:
    """A one-seed run on STEPS: train reaches 1 by step 100 unless given; test as given."""
    train = np.where(STEPS >= 100, 1.0, 0.5) if train is None else train
    return pd.DataFrame({"seed": seed, "step": STEPS, "train_accuracy": train, "test_accuracy": test})


def _plateau(level=0.85, rise_at=3.0):
    """Test accuracy that rises to `level` by 10**rise_at steps and stays there."""
    return np.clip(0.1 + (level - 0.1) * (LOGS - 2.0) / (rise_at - 2.0), 0.1, level)


def _at(step_log: float) -> int:
    """Index of the first checkpoint at or after 10**step_log steps."""
    return int(np.flatnonzero(LOGS >= step_log)[0])


def test_smoothing_removes_a_one_checkpoint_spike_and_keeps_a_step():
    values = np.full(len(STEPS), 0.5)
    values[50] = 0.9
    assert smooth(STEPS, values)[50] == pytest.approx(0.5)
    edge = np.where(LOGS > 3, 0.2, 0.8)
    assert smooth(STEPS, edge)[_at(3.5)] == pytest.approx(0.2) and smooth(STEPS, edge)[_at(2.5)] == pytest.approx(0.8)


def test_a_spike_is_not_the_peak_and_its_end_is_not_a_collapse():
    test = _plateau()
    test[_at(3.5)] = 0.95  # one checkpoint 10 points above the plateau, then back
    phases = find_phases(_curve(test))
    assert phases.peak_test_accuracy == pytest.approx(0.85)
    assert not phases.collapsed and phases.t_collapse is None


def test_a_dip_that_recovers_is_not_a_collapse():
    test = _plateau()
    test[(LOGS > 3.5) & (LOGS < 4.0)] = 0.70  # half a decade 15 points down, then back up
    phases = find_phases(_curve(test))
    assert not phases.collapsed and phases.fall == pytest.approx(0.0)


def test_a_slow_drift_smaller_than_the_drop_is_not_a_collapse():
    test = _plateau() - np.clip(LOGS - 3.0, 0, None) * 0.02  # 0.04 lost over two decades
    phases = find_phases(_curve(test))
    assert not phases.collapsed
    assert 0.03 < phases.fall < ph.COLLAPSE_DROP


def test_a_real_fall_that_stays_down_is_a_collapse_with_its_edges():
    test = np.where(LOGS < 4.0, _plateau(), 0.85 - 0.3 * np.clip((LOGS - 4.0) / 0.5, 0, 1))  # to 0.55 by 10**4.5
    phases = find_phases(_curve(test))
    assert phases.collapsed and phases.fall == pytest.approx(0.3)
    assert STEPS[_at(2.9)] <= phases.t_peak_start <= STEPS[_at(3.0)]  # where the rise enters the 0.02 band
    assert STEPS[_at(3.9)] <= phases.t_collapse <= STEPS[_at(4.15)]  # leaves the 0.02 band soon after 1e4
    assert phases.t_collapse < phases.t_drop <= phases.t_half_fall < STEPS[_at(4.5)]
    assert phases.spans()["anti-grokking"] == (phases.t_collapse, 100_000)
    assert phases.edge_steps() == {"pre-grokking": phases.t_fit, "grokking": phases.t_peak, "anti-grokking": 100_000}


def test_a_fall_that_recovers_before_the_end_is_not_a_collapse():
    test = np.where((LOGS > 3.5) & (LOGS < 4.6), 0.6, _plateau())  # more than a decade down, then back
    assert not find_phases(_curve(test)).collapsed


def test_a_fall_with_train_accuracy_falling_too_is_not_anti_grokking():
    test = np.where(LOGS < 4.0, _plateau(), 0.6)
    train = np.where(STEPS >= 100, np.where(LOGS < 4.0, 1.0, 0.95), 0.5)
    phases = find_phases(_curve(test, train))
    assert phases.fall == pytest.approx(0.25) and not phases.train_held and not phases.collapsed


def test_one_low_train_checkpoint_does_not_break_train_held():
    test = np.where(LOGS < 4.0, _plateau(), 0.6)
    train = np.where(STEPS >= 100, 1.0, 0.5)
    train[-1] = 0.985  # the last checkpoint alone reads below 0.99
    assert find_phases(_curve(test, train)).collapsed


def test_never_fitting_is_all_pre_grokking():
    phases = find_phases(_curve(_plateau(), train=np.full(len(STEPS), 0.6)))
    assert phases.spans() == {"pre-grokking": (0, 100_000)}
    assert phases.edge_steps() == {"pre-grokking": 100_000, "grokking": None, "anti-grokking": None}


def test_mean_over_seeds_and_each_seed_on_its_own():
    falls = _curve(np.where(LOGS < 4.0, _plateau(), 0.6), seed=0)
    holds = _curve(_plateau(), seed=1)
    both = pd.concat([falls, holds])
    assert {seed: p.collapsed for seed, p in seed_phases(both).items()} == {0: True, 1: False}
    table = collapse_table(both)
    assert table.collapsed.tolist() == [True, False] and table.fall.iloc[0] == pytest.approx(0.25)
    assert find_phases(both).fall == pytest.approx(0.125)  # the mean curve falls half as far: a collapse too


def test_claim_steps_at_our_edges_and_the_papers():
    curves = _curve(np.where(LOGS < 4.0, _plateau(), 0.6))
    ours = claim_steps(curves, "own edges")
    assert ours["anti-grokking"] == 100_000 and ours["grokking"] == find_phases(curves).t_peak
    assert claim_steps(curves, "paper scale") == {"pre-grokking": 100_000, "grokking": None, "anti-grokking": None}
    with pytest.raises(ValueError, match="scale must be one of"):
        claim_steps(curves, "fast")


def test_empty_curves_rejected():
    with pytest.raises(ValueError, match="curves is empty"):
        find_phases(pd.DataFrame(columns=["seed", "step", "train_accuracy", "test_accuracy"]))


# --- a fall split where training accuracy slips ------------------------------------------------


def test_a_fall_with_train_held_is_all_anti_grokking_depth():
    phases = find_phases(_curve(np.where(LOGS < 4.0, _plateau(), 0.85 - 0.3 * np.clip((LOGS - 4.0) / 0.5, 0, 1))))
    assert phases.collapsed and phases.held_fall == pytest.approx(0.3) == pytest.approx(phases.fall)
    assert phases.t_slip is None and phases.further_fall == 0.0 and phases.t_held_end == 100_000
    assert phases.train_held and FIT_LOST not in phases.spans()
    assert phases.verdict_values()["collapsed"] and "0.300" in phases.verdict()  # the verdict carries the depth


def test_a_fall_that_holds_train_then_slips_is_split_at_the_slip():
    """Test falls 0.85 -> 0.7 by 10**4.2 with train at 1, then train slips to 0.95 from 10**4.5
    and test falls to 0.55: 0.15 of anti-grokking, then 0.15 more with the fit lost."""
    test = np.where(LOGS < 4.0, _plateau(), np.where(LOGS < 4.5, 0.7, 0.55))
    train = np.where(STEPS >= 100, np.where(LOGS < 4.5, 1.0, 0.95), 0.5)
    phases = find_phases(_curve(test, train))
    assert phases.collapsed and phases.held_fall == pytest.approx(0.15) and not phases.train_held
    assert phases.further_fall == pytest.approx(0.15) and phases.lowest_train == pytest.approx(0.95)
    assert phases.fall == pytest.approx(0.3)
    assert STEPS[_at(4.4)] <= phases.t_held_end < phases.t_slip <= STEPS[_at(4.6)]
    assert phases.t_collapse <= phases.t_half_fall <= phases.t_held_end
    spans = phases.spans()
    assert spans["anti-grokking"] == (phases.t_collapse, phases.t_held_end)
    assert spans[FIT_LOST] == (phases.t_slip, 100_000)
    assert phases.edge_steps()["anti-grokking"] == phases.t_held_end  # read with the fit held, not at the end
    values = phases.verdict_values()
    assert values["t_slip"] == phases.t_slip and values["further_fall"] == pytest.approx(0.15)
    assert f"{phases.t_slip:,}" in phases.verdict() and "0.150" in phases.verdict()


def test_a_fall_that_starts_only_when_train_slips_is_not_anti_grokking():
    test = np.where(LOGS < 4.5, _plateau(), 0.55)
    train = np.where(STEPS >= 100, np.where(LOGS < 4.5, 1.0, 0.95), 0.5)
    phases = find_phases(_curve(test, train))
    assert not phases.collapsed and phases.held_fall == pytest.approx(0.0, abs=1e-9)
    assert phases.further_fall == pytest.approx(0.3) and phases.edge_steps()["anti-grokking"] is None
    values = phases.verdict_values()
    assert not values["collapsed"] and values["t_slip"] is not None and values["drop"] == 0.05
    assert f"{phases.t_slip:,}" in phases.verdict()


def test_a_dip_while_train_is_held_that_recovers_before_the_slip_is_not_anti_grokking():
    test = np.where((LOGS > 3.5) & (LOGS < 4.0), 0.6, np.where(LOGS < 4.5, _plateau(), 0.55))
    train = np.where(STEPS >= 100, np.where(LOGS < 4.5, 1.0, 0.95), 0.5)
    phases = find_phases(_curve(test, train))
    assert not phases.collapsed and phases.held_fall == pytest.approx(0.0, abs=1e-9)


def test_the_split_per_seed_and_a_curve_that_never_fits():
    held = np.where(LOGS < 4.0, _plateau(), 0.7)
    table = collapse_table(pd.concat([_curve(held, seed=0), _curve(_plateau(), seed=1)]))
    assert table.collapsed.tolist() == [True, False]
    assert table.loc[0, "held_fall"] == pytest.approx(0.15) and table.loc[1, "held_fall"] == pytest.approx(0.0)
    assert "0.150" in table.verdict[0] and table.verdict[1] == find_phases(_curve(_plateau(), seed=1)).verdict()
    never = find_phases(_curve(_plateau(), train=np.full(len(STEPS), 0.6)))
    assert never.held_fall == 0.0 and never.verdict_values()["t_fit"] is None and not never.train_held
    assert never.verdict()  # the never-fits case renders too

"""The papers' MLP claims checked per seed on a finished run, whatever the outcome.

    collapse_table(result)      claim 1: does test accuracy collapse while train accuracy stays high
    alpha_crossing_table(result) claim 2: alpha at the phase edges; does it cross 2, and before the collapse
    trap_onset_table(result)    claim 3: no traps before the collapse, some after
    measure_turn_table(result)  claim 4: do the other progress measures mark the collapse
    summarize(table, columns)   mean +- sd over seeds of a per-seed table

Every table has one row per seed; phases are found per seed by the rule of
`grokutils.phases` (train accuracy 1.0 ends pre-grokking, the test peak ends grokking, a
drop of more than 5 points below the peak starts anti-grokking).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from grokutils.measures import with_average_alpha, with_fc1_entropy
from grokutils.phases import Phases, find_phases
from grokutils.store import RunResult

ALPHA_LINE = 2.0  # HTSR: alpha < 2 marks a very heavy-tailed, over-correlated layer
HIGH_TRAIN_ACCURACY = 0.99  # "train accuracy stays high" means at least this, at every later checkpoint
COMPETING_MEASURES = ("l2_norm", "activation_sparsity", "abs_weight_entropy_fc1", "lcc_paper", "lcc_notebook")


def seed_phases(result: RunResult) -> dict[int, Phases]:
    """The phase edges of each seed on its own."""
    return {int(seed): find_phases(curves) for seed, curves in result.curves.groupby("seed")}


def collapse_table(result: RunResult) -> pd.DataFrame:
    """Claim 1 per seed: peak and final test accuracy, the drop, its step, and train accuracy after the peak."""
    rows = []
    for seed, phases in seed_phases(result).items():
        curves = result.curves[result.curves.seed == seed].set_index("step").sort_index()
        after_peak = curves.loc[phases.t_peak:] if phases.t_peak is not None else curves.iloc[:0]
        min_train = float(after_peak.train_accuracy.min()) if len(after_peak) else np.nan
        rows.append({"seed": seed, "t_fit": phases.t_fit, "t_peak": phases.t_peak,
                     "peak_test_accuracy": phases.peak_test_accuracy,
                     "final_test_accuracy": phases.final_test_accuracy,
                     "fall": phases.peak_test_accuracy - phases.final_test_accuracy,
                     "t_collapse": phases.t_collapse, "min_train_accuracy_after_peak": min_train,
                     "collapsed_with_high_train": phases.t_collapse is not None
                     and min_train >= HIGH_TRAIN_ACCURACY})
    return _with_int_steps(pd.DataFrame(rows).set_index("seed"), ("t_fit", "t_peak", "t_collapse"))


def _with_int_steps(table: pd.DataFrame, columns) -> pd.DataFrame:
    """Step columns as nullable integers (a phase not reached is <NA>, not NaN)."""
    for column in columns:
        table[column] = pd.array(table[column].tolist(), dtype="Int64")
    return table


def _value_at(frame: pd.DataFrame, column: str, step: int | None) -> float:
    """The value of `column` at checkpoint `step` (NaN if the phase was not reached)."""
    if step is None:
        return np.nan
    return float(frame.loc[frame.step == step, column].astype(float).mean())


def first_step_below(frame: pd.DataFrame, column: str, line: float) -> int | None:
    """First checkpoint from which `column` stays below `line` to the end (a NaN counts as above)."""
    ordered = frame.sort_values("step")
    above = ordered[(ordered[column].astype(float) >= line) | ordered[column].isna()]
    last_above = int(above.step.max()) if len(above) else -1
    later = ordered[ordered.step > last_above]
    return int(later.step.iloc[0]) if len(later) else None


def alpha_crossing_table(result: RunResult, layers=("fc1", "fc2", "average")) -> pd.DataFrame:
    """Claim 2 per seed and layer: alpha at the three phase edges, when it settles below 2, lead time.

    `t_below_2` is the first checkpoint from which alpha stays below 2; `lead_steps` =
    t_collapse - t_below_2 (positive: alpha crossed before test accuracy fell).
    """
    frame = with_average_alpha(result.layers)
    rows = []
    for seed, phases in seed_phases(result).items():
        edges = {"pre-grokking": phases.t_fit, "grokking": phases.t_peak,
                 "anti-grokking": phases.t_end if phases.t_collapse is not None else None}
        for layer in layers:
            mine = frame[(frame.seed == seed) & (frame.layer == layer)]
            crossing = first_step_below(mine, "alpha", ALPHA_LINE)
            lead = (phases.t_collapse - crossing) if crossing is not None and phases.t_collapse is not None else None
            rows.append({"seed": seed, "layer": layer,
                         **{f"alpha_{phase}": _value_at(mine, "alpha", step) for phase, step in edges.items()},
                         "t_below_2": crossing, "t_collapse": phases.t_collapse, "lead_steps": lead})
    table = pd.DataFrame(rows).set_index(["seed", "layer"])
    return _with_int_steps(table, ("t_below_2", "t_collapse", "lead_steps"))


def trap_onset_table(result: RunResult, layers=("fc1", "fc2")) -> pd.DataFrame:
    """Claim 3 per seed and layer: most traps before the collapse, at the end, first step with a trap."""
    rows = []
    for seed, phases in seed_phases(result).items():
        for layer in layers:
            mine = result.layers[(result.layers.seed == seed) & (result.layers.layer == layer)]
            traps = mine.set_index("step").traps.astype(float).sort_index()
            cut = phases.t_collapse if phases.t_collapse is not None else phases.t_end + 1
            with_traps = traps[traps > 0]
            rows.append({"seed": seed, "layer": layer, "max_traps_before_collapse": traps[traps.index < cut].max(),
                         "traps_at_end": traps.iloc[-1],
                         "first_step_with_trap": int(with_traps.index[0]) if len(with_traps) else None,
                         "t_collapse": phases.t_collapse})
    return _with_int_steps(pd.DataFrame(rows).set_index(["seed", "layer"]), ("first_step_with_trap", "t_collapse"))


def measure_turn_table(result: RunResult, measures=COMPETING_MEASURES) -> pd.DataFrame:
    """Claim 4 per seed and measure: its relative change in grokking and in anti-grokking.

    A measure marks the collapse only if its trend turns there: `turns` is True when the
    change from the test peak to the end has the opposite sign of the change from t_fit to
    the peak. A measure that keeps its direction through both phases has no landmark at
    the collapse (only its clock position tells the phases apart).
    """
    frame, rows = with_fc1_entropy(result), []
    for seed, phases in seed_phases(result).items():
        if phases.t_collapse is None:
            continue
        mine = frame[frame.seed == seed]
        for measure in measures:
            at_fit, at_peak, at_end = (_value_at(mine, measure, step) for step in
                                       (phases.t_fit, phases.t_peak, phases.t_end))
            grokking, anti = (at_peak - at_fit) / abs(at_fit), (at_end - at_peak) / abs(at_peak)
            rows.append({"seed": seed, "measure": measure, "at_fit": at_fit, "at_peak": at_peak, "at_end": at_end,
                         "change_in_grokking": grokking, "change_in_anti_grokking": anti,
                         "turns": bool(np.sign(grokking) != np.sign(anti))})
    columns = ["seed", "measure", "at_fit", "at_peak", "at_end", "change_in_grokking", "change_in_anti_grokking",
               "turns"]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "measure"])  # empty: no seed collapsed


def summarize(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """'mean ± sd' over seeds of every numeric column (grouped by the index level `by`)."""
    if table.empty:
        return pd.DataFrame(columns=table.columns)
    numeric = table.apply(lambda column: pd.to_numeric(column, errors="coerce")).astype(float)

    def mean_sd(values: pd.Series) -> str:
        values = values.dropna()
        if values.empty:
            return "not reached"
        steps = bool((values == values.round()).all() and values.abs().max() >= 1000)  # step counts: 12,345
        spec, sd_spec = (",.0f", ",.0f") if steps else (".4g", ".2g")
        return f"{values.mean():{spec}}" if len(values) < 2 else f"{values.mean():{spec}} ± {values.std():{sd_spec}}"

    grouped = numeric.groupby(level=by) if by else numeric.groupby(lambda _: "all seeds")
    return grouped.agg(mean_sd)

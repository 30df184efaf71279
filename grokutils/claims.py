"""The papers' MLP claims checked per seed on a finished run, whatever the outcome.

    collapse_table(result)      claim 1: does test accuracy collapse while train accuracy stays high
    alpha_crossing_table(result) claim 2: alpha at the phase edges; does it cross 2, and before the collapse
    trap_onset_table(result)    claim 3: no traps before the collapse, some after
    measure_turn_table(result)  claim 4: do the other progress measures mark the collapse
    summarize(table, columns)   mean +- sd over seeds of a per-seed table
    shared_claims(wd0, wd001)   the numbers several chapters state, computed once (glued from here)

A sentence that a chapter states has two parts: a `*_values` function here returns its values as a
dict (counts, steps, flags), and a macro in `templates/claims.j2`, whose comment names that
function, words them (`grokutils.prose.say`); `*_words` renders the two together.

Every table has one row per seed; phases are found per seed by the one rule of
`grokutils.phases` (smoothed curves; each fall is split where smoothed train accuracy first
drops below 0.99 after the peak; a seed anti-groks, "collapses", when the part before that
slip is at least 0.05; it starts where the smoothed test curve leaves its peak region for the
rest of that stretch). Every accuracy, fall and minimum here is read from the smoothed
per-seed curves.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from grokutils import phases as phase_rule
from grokutils.htsr import ALPHA_LINE
from grokutils.mlp import with_average_alpha, with_fc1_entropy
from grokutils.phases import Phases
from grokutils.prose import listed, say, steps
from grokutils.store import RunResult

HIGH_TRAIN_ACCURACY = phase_rule.HIGH_TRAIN  # "train accuracy stays high": the phase rule's level
COMPETING_MEASURES = ("l2_norm", "activation_sparsity", "abs_weight_entropy_fc1", "lcc_paper", "lcc_notebook")


def seed_phases(result: RunResult) -> dict[int, Phases]:
    """The phase edges of each seed on its own (`grokutils.phases.seed_phases`)."""
    return phase_rule.seed_phases(result.curves)


def collapse_table(result: RunResult) -> pd.DataFrame:
    """Claim 1 per seed (`grokutils.phases.collapse_table`): the phase edges, the held fall (the
    anti-grokking depth), the further fall once train slips with its lowest train accuracy, and the verdict."""
    return phase_rule.collapse_table(result.curves)


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
    t_collapse - t_below_2, where t_collapse is where the smoothed test curve leaves its peak
    region for the rest of the stretch with train held (positive: alpha crossed before test
    accuracy started to fall).
    """
    frame = with_average_alpha(result.layers)
    rows = []
    for seed, phases in seed_phases(result).items():
        edges = phases.edge_steps()
        for layer in layers:
            mine = frame[(frame.seed == seed) & (frame.layer == layer)]
            crossing = first_step_below(mine, "alpha", ALPHA_LINE)
            lead = (phases.t_collapse - crossing) if crossing is not None and phases.t_collapse is not None else None
            rows.append({"seed": seed, "layer": layer,
                         **{f"alpha_{phase}": _value_at(mine, "alpha", step) for phase, step in edges.items()},
                         "t_below_2": crossing, "t_collapse": phases.t_collapse, "lead_steps": lead})
    table = pd.DataFrame(rows).set_index(["seed", "layer"])
    return phase_rule.with_int_steps(table, ("t_below_2", "t_collapse", "lead_steps"))


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
    return phase_rule.with_int_steps(pd.DataFrame(rows).set_index(["seed", "layer"]),
                                     ("first_step_with_trap", "t_collapse"))


def measure_turn_table(result: RunResult, measures=COMPETING_MEASURES) -> pd.DataFrame:
    """Claim 4 per seed and measure: its relative change in grokking and in anti-grokking.

    A measure marks the collapse only if its trend turns there: `turns` is True when the
    change from the test peak to the end of anti-grokking (t_held_end, the last checkpoint with
    the fit held) has the opposite sign of the change from t_fit to the peak. Only seeds that
    anti-grok have rows. A measure that keeps its direction through both phases has no landmark at
    the collapse (only its clock position tells the phases apart).
    """
    frame, rows = with_fc1_entropy(result), []
    for seed, phases in seed_phases(result).items():
        if phases.t_collapse is None:
            continue
        mine = frame[frame.seed == seed]
        for measure in measures:
            at_fit, at_peak, at_end = (_value_at(mine, measure, step) for step in
                                       (phases.t_fit, phases.t_peak, phases.t_held_end))
            grokking, anti = (at_peak - at_fit) / abs(at_fit), (at_end - at_peak) / abs(at_peak)
            rows.append({"seed": seed, "measure": measure, "at_fit": at_fit, "at_peak": at_peak, "at_end": at_end,
                         "change_in_grokking": grokking, "change_in_anti_grokking": anti,
                         "turns": bool(np.sign(grokking) != np.sign(anti))})
    columns = ["seed", "measure", "at_fit", "at_peak", "at_end", "change_in_grokking", "change_in_anti_grokking",
               "turns"]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "measure"])  # empty: no seed collapsed


def turning_values(turns: pd.DataFrame, names: dict[str, str] | None = None) -> dict:
    """The measures whose trend turns at the peak in more than half of the seeds (`measure_turn_table`),
    by their names in `names`: {tested, turning, n_measures, n_seeds}. `tested` is False when no seed
    anti-groks, so there is no fall for a measure to mark."""
    if turns.empty:
        return {"tested": False, "turning": [], "n_measures": 0, "n_seeds": 0}
    share = turns.groupby(level="measure", sort=False).turns.mean()
    return {"tested": True, "turning": [(names or {}).get(measure, measure) for measure, value in share.items()
                                        if value > 0.5],
            "n_measures": len(share), "n_seeds": turns.index.get_level_values("seed").nunique()}


def turning_words(turns: pd.DataFrame, names: dict[str, str] | None = None) -> str:
    """`turning_values` in words (templates/claims.j2, `turning`)."""
    return say("claims.turning", turning_values(turns, names))


def summarize(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """'mean ± sd' over seeds of every numeric column (grouped by the index level `by`)."""
    if table.empty:
        return pd.DataFrame(columns=table.columns)
    numeric = table.apply(lambda column: pd.to_numeric(column, errors="coerce")).astype(float)

    def mean_sd(values: pd.Series) -> str:
        values = values.dropna()
        if values.empty:
            return "not reached"
        step_counts = bool((values == values.round()).all() and values.abs().max() >= 1000)  # as 12,345
        spec, sd_spec = (",.0f", ",.0f") if step_counts else (".4g", ".2g")
        return f"{values.mean():{spec}}" if len(values) < 2 else f"{values.mean():{spec}} ± {values.std():{sd_spec}}"

    grouped = numeric.groupby(level=by) if by else numeric.groupby(lambda _: "all seeds")
    return grouped.agg(mean_sd)


def _numbers(values) -> list[float]:
    """`values` as Python floats in their order (NaN for a missing one)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").astype(float).tolist()


def _steps_of(values) -> list[int]:
    """`values` as Python int steps in their order, missing ones left out."""
    return [int(value) for value in pd.Series(values, dtype=object).dropna()]


def _at_last_step(result: RunResult, layer: str, column: str = "alpha"):
    """`column` of `layer` at the run's last step, one value per seed (FC1-FC2 average as 'average')."""
    frame = with_average_alpha(result.layers)
    last = frame[(frame.layer == layer) & (frame.step == frame.step.max())]
    return last.set_index("seed")[column].astype(float)


def sensitivity_values(n_below: dict[str, int], n_seeds: int) -> dict:
    """Whether 'alpha < 2' survives the fixed-tail check, from how many seeds end below 2 with
    WeightWatcher's fit ('alpha') and with the fixed tails ('alpha_top10', 'alpha_top25'):
    {line, below_in_most, held_tails, lost_tails}. `below_in_most` is True when most seeds end below
    the line by WeightWatcher's fit; `held_tails` and `lost_tails` are the fixed tails (in percent of
    the eigenvalues: 10, 25) with which most seeds do and do not end below it."""
    most = {name: count > n_seeds / 2 for name, count in n_below.items()}
    fixed = [name for name in ("alpha_top10", "alpha_top25") if name in most]
    return {"line": ALPHA_LINE, "below_in_most": most["alpha"],
            "held_tails": [int(name.removeprefix("alpha_top")) for name in fixed if most[name]],
            "lost_tails": [int(name.removeprefix("alpha_top")) for name in fixed if not most[name]]}


def sensitivity_words(n_below: dict[str, int], n_seeds: int) -> str:
    """`sensitivity_values` in words (templates/claims.j2, `sensitivity`)."""
    return say("claims.sensitivity", sensitivity_values(n_below, n_seeds))


def verdict_values(collapse: pd.DataFrame) -> dict:
    """How many seeds anti-grok by the phase rule and by how much, and how many then lose their
    training fit and fall further (from `collapse_table`; every value smoothed): {n_seeds, drop,
    high_train, n_fitted, collapsed_falls, short_falls, n_slipped, lowest_train, further_falls}.
    `collapsed_falls` are the held falls of the seeds that anti-grok, `short_falls` those of the seeds
    that fit but fall less than `drop`; `further_falls` are the falls after the training fit slips, in
    the `n_slipped` seeds where it does, down to `lowest_train` (None when no seed slips)."""
    fitted = collapse[collapse.t_fit.notna()]
    slipped = fitted[fitted.t_slip.notna()]
    lowest = collapse.lowest_train.min()
    return {"n_seeds": len(collapse), "drop": phase_rule.COLLAPSE_DROP, "high_train": HIGH_TRAIN_ACCURACY,
            "n_fitted": len(fitted), "collapsed_falls": _numbers(collapse.held_fall[collapse.collapsed]),
            "short_falls": _numbers(fitted.held_fall[~fitted.collapsed]), "n_slipped": len(slipped),
            "lowest_train": None if pd.isna(lowest) else float(lowest),
            "further_falls": _numbers(slipped.further_fall)}


def verdict_words(collapse: pd.DataFrame) -> str:
    """`verdict_values` in words (templates/claims.j2, `verdict`)."""
    return say("claims.verdict", verdict_values(collapse))


def timing_values(down: pd.DataFrame) -> dict:
    """Where the fall starts and where half of the held fall is lost, over the seeds that anti-grok
    (the rows of `collapse_table` that collapse): {n_collapsed, t_collapse, t_half_fall}, the steps by seed."""
    return {"n_collapsed": len(down), "t_collapse": _steps_of(down.t_collapse),
            "t_half_fall": _steps_of(down.t_half_fall)}


def timing_words(down: pd.DataFrame) -> str:
    """`timing_values` in words (templates/claims.j2, `timing`)."""
    return say("claims.timing", timing_values(down))


def weight_decay_values(wd0: pd.DataFrame, wd001: pd.DataFrame) -> dict:
    """What weight decay 0.01 does to the held fall, the whole fall and the training fit, from the two
    runs' `collapse_table`s: {held_fall, fall, high_train, n_held, n_seeds}. `held_fall` and `fall` give
    each run's mean ('wd0', 'wd001') and whether it is `smaller` with weight decay; `n_held` counts the
    seeds whose smoothed train accuracy stays at or above `high_train` to the end, `n_seeds` all seeds."""
    def compared(column):
        means = {key: float(table[column].mean()) for key, table in (("wd0", wd0), ("wd001", wd001))}
        return {**means, "smaller": means["wd001"] < means["wd0"]}

    return {"held_fall": compared("held_fall"), "fall": compared("fall"), "high_train": HIGH_TRAIN_ACCURACY,
            "n_held": {"wd0": int(wd0.train_held.sum()), "wd001": int(wd001.train_held.sum())},
            "n_seeds": {"wd0": len(wd0), "wd001": len(wd001)}}


def weight_decay_words(wd0: pd.DataFrame, wd001: pd.DataFrame) -> str:
    """`weight_decay_values` in words (templates/claims.j2, `weight_decay`)."""
    return say("claims.weight_decay", weight_decay_values(wd0, wd001))


def _collapsed_leads(fc1: pd.DataFrame, collapse: pd.DataFrame) -> pd.Series:
    """FC1's lead of its alpha crossing over the start of the fall, in the seeds that anti-grok."""
    return fc1.lead_steps[collapse.collapsed.reindex(fc1.index).fillna(False).astype(bool)]


def crossing_values(fc1: pd.DataFrame, collapse: pd.DataFrame) -> dict:
    """When FC1 alpha settles below 2, against the start of the fall where the seed collapsed, from
    FC1's rows of `alpha_crossing_table` and the `collapse_table`: {line, n_seeds, t_below, leads}, the
    steps from which alpha stays below `line` in the seeds where it does, and the leads over the start
    of the fall in the seeds that also anti-grok (positive: alpha crossed first), both by seed."""
    return {"line": ALPHA_LINE, "n_seeds": len(fc1), "t_below": _steps_of(fc1.t_below_2),
            "leads": _steps_of(_collapsed_leads(fc1, collapse))}


def crossing_words(fc1: pd.DataFrame, collapse: pd.DataFrame) -> str:
    """`crossing_values` in words (templates/claims.j2, `crossing`)."""
    return say("claims.crossing", crossing_values(fc1, collapse))


def _traps_by_peak(result: RunResult, layer: str) -> float:
    """The most traps `layer` carries up to and including its seed's test peak, over seeds."""
    most = []
    for seed, phases in seed_phases(result).items():
        mine = result.layers[(result.layers.seed == seed) & (result.layers.layer == layer)]
        until = phases.t_peak if phases.t_peak is not None else phases.t_end
        most.append(float(mine[mine.step <= until].traps.max()))
    return max(most)


def smoothed_end(result: RunResult, column: str) -> pd.Series:
    """Each seed's smoothed `column` at its last checkpoint (`grokutils.phases.smooth`)."""
    return pd.Series({seed: phase_rule.smooth(frame.step.values, frame[column].values)[-1]
                      for seed, frame in result.curves.sort_values("step").groupby("seed")}, dtype=float)


def edges_values(result: RunResult) -> dict:
    """The right edge of each phase on the run's mean curves (`Phases.edge_steps`: the end of
    pre-grokking, the test peak, the last checkpoint with the fit held in anti-grokking; None where
    not reached), the papers' steps for them (`phases.PAPER_EDGES`) and the run's last step. In words:
    templates/claims.j2, `edges`."""
    edges = phase_rule.find_phases(result.curves).edge_steps()
    return {"ours": edges, "papers": phase_rule.PAPER_EDGES, "last": int(result.curves.step.max())}


def _run_claims(result: RunResult, key: str, collapse: pd.DataFrame) -> dict[str, str]:
    """The shared numbers of one run, keys prefixed with `key` (wd0, wd001); `collapse` is its
    `collapse_table`."""
    from grokutils import fits, paper

    crossing = alpha_crossing_table(result)
    onset = trap_onset_table(result)
    down = collapse[collapse.collapsed]
    fc1 = crossing.xs("fc1", level="layer")
    fitted = fits.fixed_tail_alpha(result)
    last = fitted[fitted.step == fitted.step.max()]
    peaks = {seed: p.t_peak for seed, p in seed_phases(result).items()}
    at_peak = fitted[(fitted.layer == "fc1") & (fitted.step == fitted.seed.map(peaks))]
    verdict = verdict_values(collapse)
    out = {"n_seeds": str(len(collapse)), "n_collapsed": str(int(collapse.collapsed.sum())),
           "fall": paper.mean_sd(collapse.fall, ".3f"), "held_fall": paper.mean_sd(collapse.held_fall, ".3f"),
           "further_fall": paper.mean_sd(collapse.further_fall, ".3f"),
           "n_slipped": str(int(collapse.t_slip.notna().sum())),
           "t_collapse": steps(down.t_collapse.tolist()), "t_half_fall": steps(down.t_half_fall.tolist()),
           "peak_test": paper.mean_sd(collapse.peak_test_accuracy, ".3f"),
           "held_test": paper.mean_sd(collapse.held_test_accuracy, ".3f"),
           "final_test": paper.mean_sd(collapse.final_test_accuracy, ".3f"),
           "final_train": paper.mean_sd(smoothed_end(result, "train_accuracy"), ".3f"),
           "lead_fc1": listed(_collapsed_leads(fc1, collapse).tolist(), "+,.0f"),
           "n_fc1_below_2": str(int(fc1.t_below_2.notna().sum())),
           "alpha_peak_fc1": paper.mean_sd(fc1["alpha_grokking"], ".2f"),
           "traps_before_fc1": f"{onset.xs('fc1', level='layer').max_traps_before_collapse.max():g}",
           "traps_by_peak_fc1": f"{_traps_by_peak(result, 'fc1'):g}",
           "lowest_train": say("claims.lowest_train", verdict), "verdict_words": say("claims.verdict", verdict),
           "fc1_crossing_words": crossing_words(fc1, collapse),
           "edges_words": say("claims.edges", edges_values(result)),
           "timing_words": timing_words(down),
           "first_trap_fc1": steps(onset.xs("fc1", level="layer").first_step_with_trap.tolist()),
           "traps_end_fc1": paper.mean_sd(_at_last_step(result, "fc1", "traps"), ".1f"),
           "traps_end_fc2": paper.mean_sd(_at_last_step(result, "fc2", "traps"), ".1f")}
    for layer in ("fc1", "fc2", "average"):
        out[f"alpha_end_{layer}"] = paper.mean_sd(_at_last_step(result, layer), ".2f")
    out["fc1_tail_peak"] = paper.mean_sd(at_peak.tail_size, ".2f")  # at each seed's test peak
    out["fc1_n_wide_peak"] = str(int(at_peak.wide_tail.sum()))
    for column in ("alpha_top10", "alpha_top25"):
        out[f"fc1_{column}_peak"] = paper.mean_sd(at_peak[column], ".2f")
    out["fc1_peak_words"] = say("claims.fc1_peak", fc1_peak_values(at_peak))
    for layer in ("fc1", "fc2"):
        mine = last[last.layer == layer]
        out[f"{layer}_tail_end"] = paper.mean_sd(mine.tail_size, ".2f")
        for column in ("alpha", "alpha_top10", "alpha_top25"):
            out[f"{layer}_{column}_end"] = paper.mean_sd(mine[column], ".2f")
            out[f"{layer}_{column}_n_below_2"] = str(int((mine[column] < ALPHA_LINE).sum()))
        out[f"{layer}_n_wide_end"] = str(int(mine.wide_tail.sum()))
        out[f"{layer}_sensitivity"] = sensitivity_words(
            {column: int((mine[column] < ALPHA_LINE).sum()) for column in ("alpha", "alpha_top10", "alpha_top25")},
            len(mine))
    return {f"{key}_{name}": text for name, text in out.items()}


def _control_measures(wd0: RunResult, wd001: RunResult) -> dict[str, dict]:
    """The signals `control_values` compares, per run ('wd0', 'wd001'): the mean fixed-tail (top 25%)
    alpha of FC1 and FC2 at the last step ('end_alpha', by layer), the mean FC1 alpha at the test peak
    ('peak_alpha') and the most FC1 traps by the peak ('peak_traps')."""
    from grokutils import fits

    def end_alpha(result, layer):
        fitted = fits.fixed_tail_alpha(result, layers=(layer,))
        return float(fitted[fitted.step == fitted.step.max()].alpha_top25.mean())

    runs = {"wd0": wd0, "wd001": wd001}
    return {"end_alpha": {key: {layer: end_alpha(result, layer) for layer in ("fc1", "fc2")}
                          for key, result in runs.items()},
            "peak_alpha": {key: float(alpha_crossing_table(result).xs("fc1", level="layer")["alpha_grokking"].mean())
                           for key, result in runs.items()},
            "peak_traps": {key: _traps_by_peak(result, "fc1") for key, result in runs.items()}}


def control_values(falls: dict[str, float], end_alpha: dict[str, dict[str, float]], peak_alpha: dict[str, float],
                   peak_traps: dict[str, float]) -> dict:
    """The control against the WD = 0 run: which falls further, and whether that run has the lower
    fixed-tail alphas at the end, the lower FC1 alpha at its peak and the more FC1 traps by its peak,
    as the papers' reading of the signals expects. Every argument is by run ('wd0', 'wd001'): `falls`
    the mean held fall (from `collapse_table`), the others as `_control_measures` returns them.

    Returns {deeper, deeper_fall, other_fall, heavier, deeper_heavier_in_both, lower_peak_alpha,
    more_peak_traps}: `deeper` is the run that falls further ('wd0' on a tie); `heavier` lists by run
    the layers ('FC1', 'FC2') that end with the lower fixed-tail alpha (a tie counts for 'wd0'); the
    flags say whether the deeper run has the heavier tail in both layers, the lower alpha at its peak
    and the more traps by its peak."""
    deeper = "wd0" if falls["wd0"] >= falls["wd001"] else "wd001"
    other = "wd001" if deeper == "wd0" else "wd0"
    lower = {layer for layer in ("fc1", "fc2") if end_alpha["wd001"][layer] < end_alpha["wd0"][layer]}
    heavier = {"wd0": sorted(layer.upper() for layer in {"fc1", "fc2"} - lower),
               "wd001": sorted(layer.upper() for layer in lower)}
    return {"deeper": deeper, "deeper_fall": falls[deeper], "other_fall": falls[other], "heavier": heavier,
            "deeper_heavier_in_both": len(heavier[deeper]) == 2,
            "lower_peak_alpha": peak_alpha[deeper] < peak_alpha[other],
            "more_peak_traps": peak_traps[deeper] > peak_traps[other]}


def fc1_peak_values(at_peak: pd.DataFrame) -> dict:
    """Whether FC1's mean alpha at the test peak is below 2 by each fit, from the rows of
    `fits.fixed_tail_alpha` at each seed's peak: {line, below}, `below` by fit ('alpha',
    'alpha_top10', 'alpha_top25')."""
    return {"line": ALPHA_LINE,
            "below": {column: bool(at_peak[column].mean() < ALPHA_LINE)
                      for column in ("alpha", "alpha_top10", "alpha_top25")}}


def separation_values(evaluation: pd.DataFrame, best: str, run: str = "WD = 0", control: str = "WD = 0.01") -> dict:
    """Whether any alarm rule tells `run` (the run without weight decay) from `control`, from
    `alarm_eval.evaluate` (by `alarm_eval.separation`), with the firing steps of the rule `best` on both:
    {n_rules, apart, best, fires_run, fires_control}. `apart` lists the rules that separate the runs;
    the firing steps are by seed, None where the rule never fired."""
    from grokutils import alarm_eval

    separation = alarm_eval.separation(evaluation, run, control)
    fires = evaluation.xs(best, level="rule").fires
    return {"n_rules": len(separation), "apart": list(separation.index[separation.separates == "yes"]),
            "best": best, **{key: [None if pd.isna(step) else int(step) for step in fires.xs(label, level="run")]
                             for key, label in (("fires_run", run), ("fires_control", control))}}


def separation_words(evaluation: pd.DataFrame, best: str, run: str = "WD = 0", control: str = "WD = 0.01") -> str:
    """`separation_values` in words (templates/claims.j2, `separation`)."""
    return say("claims.separation", separation_values(evaluation, best, run, control))


def alarm_lead_values(evaluation: pd.DataFrame, best: str) -> dict:
    """How many of the rule `best`'s hits came before the fall began, from `alarm_eval.evaluate`:
    {n_hits, n_early}."""
    hits = evaluation.xs(best, level="rule").query("outcome == 'hit'")
    return {"n_hits": len(hits), "n_early": int((hits.lead_steps > 0).sum())}


def shared_claims(wd0: RunResult, wd001: RunResult) -> pd.Series:
    """Every number that more than one chapter states (collapse counts, falls, leads, alpha and traps
    at the end, the fit diagnostics, the alarm evaluation), as text: the one table chapters glue from."""
    from grokutils import alarm_eval, fits, paper

    collapse = {"wd0": collapse_table(wd0), "wd001": collapse_table(wd001)}  # computed once, read thrice
    shared = {**_run_claims(wd0, "wd0", collapse["wd0"]), **_run_claims(wd001, "wd001", collapse["wd001"])}
    control = control_values({key: float(table.held_fall.mean()) for key, table in collapse.items()},
                             **_control_measures(wd0, wd001))
    shared["control_tail_words"] = say("claims.control_tails", control)
    shared["control_signal_words"] = say("claims.control_signals", control)
    shared["wd_effect_words"] = weight_decay_words(collapse["wd0"], collapse["wd001"])
    runs = {"WD = 0": wd0, "WD = 0.01": wd001}
    evaluation = alarm_eval.evaluate(runs, {label: fits.fixed_tail_alpha(run) for label, run in runs.items()})
    table = alarm_eval.summary(evaluation)
    monitor = table.iloc[0]
    recommendation = alarm_eval.recommendation_values(table)
    best = recommendation["best"]
    shared.update({"alarm_recommendation": say("alarm_eval.recommendation", recommendation), "alarm_best_rule": best,
                   "alarm_best_hits": str(recommendation["hits"]),
                   "alarm_best_false": str(recommendation["false_alarms"]),
                   "alarm_collapsing_seeds": str(recommendation["collapsing"]),
                   "alarm_seeds": str(recommendation["seeds"]),
                   "alarm_best_leads": table.loc[best, "lead over the fall's start (steps)"],
                   "alarm_best_half_leads": table.loc[best, "lead over half the fall (steps)"],
                   "alarm_monitor_hits": str(monitor.hit), "alarm_monitor_false": str(monitor["false alarm"]),
                   "phase_rule": phase_rule.rule_text()})
    shared["alarm_lead_words"] = say("claims.alarm_lead", alarm_lead_values(evaluation, best))
    shared["alarm_separation_words"] = separation_words(evaluation, best)
    for layer in ("fc1", "fc2", "average"):
        shared[f"paper_alpha_end_{layer}"] = paper.format_value(*paper.TABLE1_ALPHA[layer]["anti-grokking"])
    for layer in ("fc1", "fc2"):
        shared[f"paper_traps_end_{layer}"] = paper.format_value(*paper.TABLE2_TRAPS[0.0][layer]["anti-grokking"])
    shared["paper_final_test"] = f"{paper.COLLAPSE_TEST_ACCURACY:g}"
    return pd.Series(shared, name="value")

"""The papers' MLP claims checked per seed on a finished run, whatever the outcome.

    collapse_table(result)      claim 1: does test accuracy collapse while train accuracy stays high
    alpha_crossing_table(result) claim 2: alpha at the phase edges; does it cross 2, and before the collapse
    trap_onset_table(result)    claim 3: no traps before the collapse, some after
    measure_turn_table(result)  claim 4: do the other progress measures mark the collapse
    summarize(table, columns)   mean +- sd over seeds of a per-seed table
    shared_claims(wd0, wd001)   the numbers several chapters state, computed once (glued from here)

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
from grokutils.mlp import with_average_alpha, with_fc1_entropy
from grokutils.phases import Phases
from grokutils.prose import say
from grokutils.store import RunResult

ALPHA_LINE = 2.0  # HTSR: alpha < 2 marks a very heavy-tailed, over-correlated layer
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
        steps = bool((values == values.round()).all() and values.abs().max() >= 1000)  # step counts: 12,345
        spec, sd_spec = (",.0f", ",.0f") if steps else (".4g", ".2g")
        return f"{values.mean():{spec}}" if len(values) < 2 else f"{values.mean():{spec}} ± {values.std():{sd_spec}}"

    grouped = numeric.groupby(level=by) if by else numeric.groupby(lambda _: "all seeds")
    return grouped.agg(mean_sd)


def _steps_text(values) -> str:
    """'38,430 to 47,884' (or one step, or 'never') for a set of steps."""
    steps = sorted({int(v) for v in values if pd.notna(v)})
    return "never" if not steps else f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,} to {steps[-1]:,}"


def _list_text(values, spec: str = "+,.0f") -> str:
    """'a, b and c' for a few numbers ('none' for no number)."""
    words = [f"{v:{spec}}" for v in values if pd.notna(v)]
    return "none" if not words else words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _at_last_step(result: RunResult, layer: str, column: str = "alpha"):
    """`column` of `layer` at the run's last step, one value per seed (FC1-FC2 average as 'average')."""
    frame = with_average_alpha(result.layers)
    last = frame[(frame.layer == layer) & (frame.step == frame.step.max())]
    return last.set_index("seed")[column].astype(float)


def sensitivity_words(n_below: dict[str, int], n_seeds: int) -> str:
    """Whether 'alpha < 2' survives the fixed-tail check, in words, from how many seeds end below 2
    with WeightWatcher's fit ('alpha') and with the fixed tails ('alpha_top10', 'alpha_top25')."""
    most = {name: count > n_seeds / 2 for name, count in n_below.items()}
    fixed = [name for name in ("alpha_top10", "alpha_top25") if name in most]
    held = [name.replace("alpha_top", "top ") + "%" for name in fixed if most[name]]
    lost = [name.replace("alpha_top", "top ") + "%" for name in fixed if not most[name]]
    if most["alpha"]:
        if not lost:
            return "ends below 2 in most seeds, and still does with either fixed tail: it survives the check"
        if not held:
            return "ends below 2 in most seeds, but with neither fixed tail: it does not survive the check"
        return (f"ends below 2 in most seeds, and still does with the {' and '.join(held)} tail but not with the "
                f"{' and '.join(lost)} tail: it survives the check only in part")
    if held:
        return (f"does not end below 2 in most seeds by WeightWatcher's fit, but does with the {' and '.join(held)} "
                "tail: the fit, not the spectrum, keeps it above 2")
    return "does not end below 2 in most seeds, with any of the three fits"


def _seeds(count: int) -> str:
    return f"{count} seed{'' if count == 1 else 's'}"


def verdict_words(collapse: pd.DataFrame) -> str:
    """How many seeds anti-grok by the phase rule and by how much, and how many then lose their
    training fit and fall further, in words (from `collapse_table`; every value smoothed)."""
    n, drop, held = len(collapse), phase_rule.COLLAPSE_DROP, HIGH_TRAIN_ACCURACY
    down, fitted = collapse[collapse.collapsed], collapse[collapse.t_fit.notna()]
    words = [f"{len(down)} of {n} seeds anti-grok by the rule (a fall of at least {drop:g} with train accuracy held "
             f"at {held:g})" + (f", by {_list_text(down.held_fall, '.3f')}" if len(down) else "")]
    short = fitted[~fitted.collapsed]
    if len(short):
        words.append(f"{_seeds(len(short))} {'falls' if len(short) == 1 else 'fall'} less than {drop:g} with train "
                     f"held ({_list_text(short.held_fall, '.3f')})")
    slipped = fitted[fitted.t_slip.notna()]
    if len(slipped):
        one = len(slipped) == 1
        words.append(f"{len(slipped)} of {n} then {'loses its' if one else 'lose their'} training fit (smoothed train "
                     f"accuracy down to {slipped.lowest_train.min():.3f}) and {'falls' if one else 'fall'} "
                     f"{_list_text(slipped.further_fall, '.3f')} more")
    elif len(fitted):
        words.append(f"train accuracy stays at or above {held:g} to the end in every seed that fits")
    if len(fitted) < n:
        words.append(f"{_seeds(n - len(fitted))} never {'fits' if n - len(fitted) == 1 else 'fit'} the training set")
    return "; ".join(words)


def timing_words(down: pd.DataFrame) -> str:
    """Where the fall starts and where half of the held fall is lost, over the seeds that anti-grok."""
    if down.empty:
        return "no seed anti-groks by the rule, so no start of a fall is dated"
    return (f"in the {_seeds(len(down))} that anti-grok the fall starts (the smoothed curve leaves its peak region "
            f"for the rest of the stretch with train held) at {_step_words(down.t_collapse)}, and half of the fall "
            f"with train held is lost by {_step_words(down.t_half_fall)}")


def _step_words(values) -> str:
    """'step 1,000' or 'steps 1,000 to 2,000'."""
    text = _steps_text(values)
    return f"{'steps' if ' to ' in text else 'step'} {text}"


def weight_decay_words(wd0: pd.DataFrame, wd001: pd.DataFrame) -> str:
    """What weight decay 0.01 does to the held fall, the whole fall and the training fit, from the two
    runs' `collapse_table`s."""
    held = {key: float(table.held_fall.mean()) for key, table in (("wd0", wd0), ("wd001", wd001))}
    whole = {key: float(table.fall.mean()) for key, table in (("wd0", wd0), ("wd001", wd001))}

    def compared(values, noun):
        word = "smaller" if values["wd001"] < values["wd0"] else "no smaller"
        return f"makes the mean {noun} {word} ({values['wd001']:.3f} against {values['wd0']:.3f} without it)"

    return (f"weight decay {compared(held, 'fall with train held')} and {compared(whole, 'whole fall')}, and "
            f"smoothed train accuracy stays at or above {HIGH_TRAIN_ACCURACY:g} to the end in "
            f"{int(wd001.train_held.sum())} of {len(wd001)} seeds with it against {int(wd0.train_held.sum())} of "
            f"{len(wd0)} without")


def crossing_words(fc1: pd.DataFrame, collapse: pd.DataFrame) -> str:
    """When FC1 alpha settles below 2, against the start of the fall where the seed collapsed."""
    below = fc1.t_below_2.dropna()
    if below.empty:
        return f"never settles below {ALPHA_LINE:g} for good"
    collapsed = collapse.collapsed.reindex(fc1.index).fillna(False).astype(bool)
    leads = fc1.lead_steps[collapsed].dropna()
    words = (f"settles below {ALPHA_LINE:g} in {len(below)} of {len(fc1)} seeds, at steps {_list_text(below, ',.0f')} "
             "(by seed)")
    if leads.empty:
        return words + ", with no counted collapse to lead"
    return words + (f", with leads of {_list_text(leads)} steps over the start of the fall of the seeds that "
                    "anti-grok (negative: after it)")


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


def _run_claims(result: RunResult, key: str, collapse: pd.DataFrame) -> dict[str, str]:
    """The shared numbers of one run, keys prefixed with `key` (wd0, wd001); `collapse` is its
    `collapse_table`."""
    from grokutils import fits, paper

    crossing = alpha_crossing_table(result)
    onset = trap_onset_table(result)
    down = collapse[collapse.collapsed]
    fc1 = crossing.xs("fc1", level="layer")
    leads = fc1.lead_steps[collapse.collapsed.reindex(fc1.index).fillna(False).astype(bool)]
    fitted = fits.fixed_tail_alpha(result)
    last = fitted[fitted.step == fitted.step.max()]
    peaks = {seed: p.t_peak for seed, p in seed_phases(result).items()}
    at_peak = fitted[(fitted.layer == "fc1") & (fitted.step == fitted.seed.map(peaks))]
    out = {"n_seeds": str(len(collapse)), "n_collapsed": str(int(collapse.collapsed.sum())),
           "fall": paper.mean_sd(collapse.fall, ".3f"), "held_fall": paper.mean_sd(collapse.held_fall, ".3f"),
           "further_fall": paper.mean_sd(collapse.further_fall, ".3f"),
           "n_slipped": str(int(collapse.t_slip.notna().sum())),
           "t_collapse": _steps_text(down.t_collapse), "t_half_fall": _steps_text(down.t_half_fall),
           "peak_test": paper.mean_sd(collapse.peak_test_accuracy, ".3f"),
           "held_test": paper.mean_sd(collapse.held_test_accuracy, ".3f"),
           "final_test": paper.mean_sd(collapse.final_test_accuracy, ".3f"),
           "final_train": paper.mean_sd(smoothed_end(result, "train_accuracy"), ".3f"),
           "lead_fc1": _list_text(leads), "n_fc1_below_2": str(int(fc1.t_below_2.notna().sum())),
           "alpha_peak_fc1": paper.mean_sd(fc1["alpha_grokking"], ".2f"),
           "traps_before_fc1": f"{onset.xs('fc1', level='layer').max_traps_before_collapse.max():g}",
           "traps_by_peak_fc1": f"{_traps_by_peak(result, 'fc1'):g}",
           "lowest_train": "not below the bar" if collapse.lowest_train.isna().all() else
           f"{collapse.lowest_train.min():.3f}",
           "verdict_words": verdict_words(collapse), "fc1_crossing_words": crossing_words(fc1, collapse),
           "timing_words": timing_words(down),
           "first_trap_fc1": _steps_text(onset.xs("fc1", level="layer").first_step_with_trap),
           "traps_end_fc1": paper.mean_sd(_at_last_step(result, "fc1", "traps"), ".1f"),
           "traps_end_fc2": paper.mean_sd(_at_last_step(result, "fc2", "traps"), ".1f")}
    for layer in ("fc1", "fc2", "average"):
        out[f"alpha_end_{layer}"] = paper.mean_sd(_at_last_step(result, layer), ".2f")
    out["fc1_tail_peak"] = paper.mean_sd(at_peak.tail_size, ".2f")  # at each seed's test peak
    out["fc1_n_wide_peak"] = str(int(at_peak.wide_tail.sum()))
    for column in ("alpha_top10", "alpha_top25"):
        out[f"fc1_{column}_peak"] = paper.mean_sd(at_peak[column], ".2f")
    below = {column: bool(at_peak[column].mean() < ALPHA_LINE) for column in ("alpha", "alpha_top10", "alpha_top25")}
    out["fc1_peak_words"] = (
        "WeightWatcher's FC1 alpha is not below 2 at the peak" if not below["alpha"] else
        "an FC1 alpha below 2 at the peak holds with fixed tails too" if below["alpha_top10"] and below["alpha_top25"]
        else "an FC1 alpha below 2 at the peak is a property of the wide fit, not of the tail")
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


def _other(key: str) -> str:
    return "wd001" if key == "wd0" else "wd0"


def _comparison_words(wd0: RunResult, wd001: RunResult, falls: dict[str, float]) -> dict[str, str]:
    """Sentences comparing the control with the WD = 0 run: which falls further (mean smoothed fall), and
    whether that run has the lower fixed-tail alphas at the end, the lower FC1 alpha at its peak and the
    more FC1 traps by its peak, as the papers' reading of the signals expects. `falls`: the mean
    held fall (the anti-grokking depth) of each run ('wd0', 'wd001'), from its `collapse_table`."""
    from grokutils import fits

    def end_mean(result, layer):
        fitted = fits.fixed_tail_alpha(result, layers=(layer,))
        return float(fitted[fitted.step == fitted.step.max()].alpha_top25.mean())

    deeper = "wd0" if falls["wd0"] >= falls["wd001"] else "wd001"
    names = {"wd0": "the run without weight decay", "wd001": "the control"}
    deeper_name = (f"{names[deeper]}, which falls further with train held ({falls[deeper]:.3f} against "
                   f"{falls[_other(deeper)]:.3f})")
    lower = {layer for layer in ("fc1", "fc2") if end_mean(wd001, layer) < end_mean(wd0, layer)}
    heavier = {"wd001": lower, "wd0": {"fc1", "fc2"} - lower}
    layers_of = {key: " and ".join(sorted(layer.upper() for layer in value)) for key, value in heavier.items()}
    tails = ("with a fixed tail, " + " and ".join(
        f"{names[key]}'s {layers_of[key]} end{'s' if len(heavier[key]) == 1 else ''} with the lower alpha"
        for key in ("wd0", "wd001") if heavier[key]) + " (the heavier tail)")
    further = f"falls further with train held ({falls[deeper]:.3f} against {falls[_other(deeper)]:.3f})"
    tails += (f", and that run {further}, as the papers' reading expects" if heavier[deeper] == {"fc1", "fc2"} else
              f", while {names[deeper]} {further}")
    peak = {key: float(alpha_crossing_table(result).xs("fc1", level="layer")["alpha_grokking"].mean())
            for key, result in (("wd0", wd0), ("wd001", wd001))}
    traps = {key: _traps_by_peak(result, "fc1") for key, result in (("wd0", wd0), ("wd001", wd001))}
    lower_peak = peak[deeper] < peak[_other(deeper)]
    more_traps = traps[deeper] > traps[_other(deeper)]
    signals = (f"{deeper_name}, has the lower FC1 alpha at its peak and the more FC1 traps by its peak, as the "
               "papers' reading expects" if lower_peak and more_traps else
               f"{deeper_name}, has neither the lower FC1 alpha at its peak nor the more FC1 traps by its peak, so "
               "these signals do not single out the deeper fall" if not lower_peak and not more_traps else
               f"of the two signals at the peak, only {'FC1 alpha' if lower_peak else 'the FC1 trap count'} points at "
               f"{deeper_name}")
    return {"control_tail_words": tails, "control_signal_words": signals}


def _step_words_text(text: str) -> str:
    """'step 1,000', 'steps 1,000 to 2,000', or the text as it is ('never', '...; never in 1')."""
    if text.startswith("never"):
        return "no step (never)"
    return f"{'steps' if ' to ' in text.split(';')[0] else 'step'} {text}"


def separation_words(separation: pd.DataFrame, best: str) -> str:
    """Whether any rule tells the run without weight decay from the control (`alarm_eval.separation`),
    with the firing steps of the rule `best` on both, in words."""
    apart = list(separation.index[separation.separates == "yes"])
    row = separation.loc[best]
    firing = (f"'{best}' fires at {_step_words_text(row['fires on WD = 0'])} without weight decay and at "
              f"{_step_words_text(row['fires on WD = 0.01'])} with it")
    if not apart:
        return ("no rule tested fires on every seed of the run without weight decay before any seed of the control: "
                + firing)
    return (f"{len(apart)} of {len(separation)} rules fire on every seed of the run without weight decay before any "
            f"seed of the control ({'; '.join(repr(name) for name in apart)}); {firing}")


def shared_claims(wd0: RunResult, wd001: RunResult) -> pd.Series:
    """Every number that more than one chapter states (collapse counts, falls, leads, alpha and traps
    at the end, the fit diagnostics, the alarm evaluation), as text: the one table chapters glue from."""
    from grokutils import alarm_eval, fits, paper

    collapse = {"wd0": collapse_table(wd0), "wd001": collapse_table(wd001)}  # computed once, read thrice
    shared = {**_run_claims(wd0, "wd0", collapse["wd0"]), **_run_claims(wd001, "wd001", collapse["wd001"])}
    shared.update(_comparison_words(wd0, wd001, {key: float(table.held_fall.mean())
                                                 for key, table in collapse.items()}))
    shared["wd_effect_words"] = weight_decay_words(collapse["wd0"], collapse["wd001"])
    runs = {"WD = 0": wd0, "WD = 0.01": wd001}
    evaluation = alarm_eval.evaluate(runs, {label: fits.fixed_tail_alpha(run) for label, run in runs.items()})
    table = alarm_eval.summary(evaluation)
    monitor = table.iloc[0]
    best = (table.hit - table["false alarm"]).idxmax()
    shared.update({"alarm_recommendation": alarm_eval.recommendation(table), "alarm_best_rule": best,
                   "alarm_best_hits": str(table.loc[best, "hit"]),
                   "alarm_best_false": str(table.loc[best, "false alarm"]),
                   "alarm_collapsing_seeds": str(table.loc[best, "collapsing seeds"]),
                   "alarm_seeds": str(table.loc[best, "seeds"]),
                   "alarm_best_leads": table.loc[best, "lead over the fall's start (steps)"],
                   "alarm_best_half_leads": table.loc[best, "lead over half the fall (steps)"],
                   "alarm_monitor_hits": str(monitor.hit), "alarm_monitor_false": str(monitor["false alarm"]),
                   "phase_rule": phase_rule.rule_text()})
    hits = evaluation.xs(best, level="rule").query("outcome == 'hit'")
    shared["alarm_lead_words"] = (f"{int((hits.lead_steps > 0).sum())} of its {len(hits)} hits came before the fall "
                                  "began" if len(hits) else "it has no hit to time")
    shared["alarm_separation_words"] = separation_words(alarm_eval.separation(evaluation, "WD = 0", "WD = 0.01"), best)
    for layer in ("fc1", "fc2", "average"):
        shared[f"paper_alpha_end_{layer}"] = paper.format_value(*paper.TABLE1_ALPHA[layer]["anti-grokking"])
    for layer in ("fc1", "fc2"):
        shared[f"paper_traps_end_{layer}"] = paper.format_value(*paper.TABLE2_TRAPS[0.0][layer]["anti-grokking"])
    shared["paper_final_test"] = f"{paper.COLLAPSE_TEST_ACCURACY:g}"
    return pd.Series(shared, name="value")

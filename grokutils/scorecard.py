"""The reproduction scorecard: each quantitative claim of the papers against our results.

Every row is computed from finished runs, never typed: the paper's value (`grokutils.paper`,
with its table or section), ours, the tolerance that row used and the verdict. For the MLP,
ours is given twice: the runs of the build's profile read at their own phase edges ('own edges'),
and runs at paper scale read at the papers' steps ('paper scale'). One rule for every row, `RULE` below.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from grokutils import paper
from grokutils.fits import with_fit_diagnostics
from grokutils.mlp import with_average_alpha
from grokutils.phases import (
    COLLAPSE_DROP,
    HIGH_TRAIN,
    SCALES,
    claim_steps,
    collapse_table,
    find_phases,
    smoothed_curves,
)
from grokutils.store import RunResult

SD_FLOOR = {"alpha": 0.25, "traps": 1.0, "sigma_mp": 0.01, "ks": 0.01, "accuracy": 0.02}
MAX_RELATIVE_TOLERANCE = 0.5  # no tolerance wider than half the paper's value
VERDICTS = ("reproduced", "partly", "not reproduced", "not run yet")
COUNTED = ("yes", "context", "derived")  # a row counts, or is shown as context (it cannot fail) or as derived
RULE = (
    "**Value claims** (alpha, sigma_mp, KS statistic, accuracy, non-zero trap counts): *reproduced* when our "
    "mean over seeds lies within the tolerance of the paper's value. The tolerance is twice the combined "
    "spread, sqrt(paper sd² + our seed-to-seed sd²), with the spread floored at "
    + ", ".join(f"{v:g} for {k}" for k, v in SD_FLOOR.items())
    + f", and capped at {MAX_RELATIVE_TOLERANCE:.0%} of the paper's value (no row passes a value half or "
    "double the paper's). *Partly* when it lies outside but the direction holds: the change from the previous "
    "phase has the paper's sign (for a non-zero trap count: traps are present in most seeds). Otherwise *not "
    "reproduced*; a claim about the first phase has no direction, so it is reproduced or not. "
    "**Count claims** (the paper reports 0 traps): reproduced when most seeds have 0, otherwise not. "
    "**Phase claims** (Figure 1, Appendix C): judged per seed by the phase rule of `grokutils.phases`; a "
    f"seed collapses when it anti-groks, a fall of at least {COLLAPSE_DROP:g} with train accuracy held at "
    f"{HIGH_TRAIN:g}. "
    "In the own-edges column both runs are read alike at their own phase edges (anti-grokking at its last "
    "checkpoint with the fit held); a run that peaks but has no anti-grokking phase is read at its last "
    "step there, as the papers read theirs at 1e7 steps. An anti-grokking row also shows the value at the "
    "run's last step. *Not run yet*: no such run is stored, or it does not reach the step or phase the "
    "claim is about. Each claim is scored once: Table 4's trap column repeats Table 2's FC1 row and is not "
    "scored again; rows that cannot fail in these runs (train accuracy reaching 100%, sigma_mp of a "
    "shuffled matrix before training has moved it) are shown as *context*, and the FC1-FC2 average alpha as *derived*; "
    "neither is counted. Where papers (a) and (b) differ, (b)'s value is scored and (a)'s shown. "
    "An alpha verdict that rests on a fit whose tail covers more than half of the spectrum is flagged.")


def tolerance(paper_mean: float, paper_sd: float | None, our_sd: float, floor: float) -> float:
    """Twice the combined spread (at least `floor`), capped at MAX_RELATIVE_TOLERANCE of the paper's value."""
    spread = max(float(np.hypot(paper_sd or 0.0, 0.0 if not np.isfinite(our_sd) else our_sd)), floor)
    cap = MAX_RELATIVE_TOLERANCE * abs(paper_mean) if paper_mean else np.inf
    return float(min(2 * spread, cap))


def value_verdict(ours: float, paper_mean: float, tol: float, direction_holds: bool | None) -> str:
    """Reproduced within `tol`; partly outside it if the direction holds; not reproduced otherwise."""
    if ours is None or not np.isfinite(ours):
        return "not run yet"
    if abs(ours - paper_mean) <= tol:
        return "reproduced"
    return "partly" if direction_holds else "not reproduced"


def count_verdict(per_seed: np.ndarray, paper_mean: float, tol: float) -> str:
    """A trap count: 0 in the paper needs 0 in most seeds; a non-zero count needs traps in most seeds."""
    per_seed = np.asarray(per_seed, dtype=float)
    if len(per_seed) == 0 or np.isnan(per_seed).all():
        return "not run yet"
    if paper_mean == 0:
        return "reproduced" if np.mean(per_seed == 0) > 0.5 else "not reproduced"
    if np.mean(per_seed > 0) <= 0.5:
        return "not reproduced"
    return "reproduced" if abs(np.nanmean(per_seed) - paper_mean) <= tol else "partly"


def claim_edges(result: RunResult, scale: str) -> dict[str, int | None]:
    """Phase -> the checkpoint a claim about that phase is read at (`grokutils.phases.claim_steps`).
    At its own edges, a run that peaks but does not anti-grok is read at its last step for anti-grokking (the
    papers read their runs, the control included, at their last step, 1e7)."""
    edges = claim_steps(result.curves, scale)
    if scale == "own edges" and edges["anti-grokking"] is None and edges["grokking"] is not None:
        edges["anti-grokking"] = int(result.curves.step.max())
    return edges


def _sign_holds(ours_now: float, ours_before: float, paper_now: float, paper_before: float) -> bool | None:
    """Whether our change from the previous phase has the paper's sign (None: no previous phase or no change)."""
    if paper_now == paper_before or not np.isfinite(ours_before):
        return None
    return bool(np.sign(ours_now - ours_before) == np.sign(paper_now - paper_before))


def _row(source: str, claim: str, paper_text: str, ours_text: str, tol_text: str, verdict: str,
         flagged: bool = False, counted: str = "yes") -> dict:
    return {"source": source, "claim": claim, "paper": paper_text, "ours": ours_text, "tolerance": tol_text,
            "verdict": verdict, "flagged": flagged, "counted": counted}


def _per_seed(frame: pd.DataFrame, layer: str, step: int | None, column: str) -> pd.Series:
    """`column` of `layer` at checkpoint `step`, one value per seed (empty if not reached)."""
    if step is None:
        return pd.Series(dtype=float)
    at = frame[(frame.layer == layer) & (frame.step == step)]
    return at.set_index("seed")[column].astype(float)


def _layer_frame(result: RunResult) -> pd.DataFrame:
    """Layers with the FC1-FC2 average and the wide-tail flag (the average is flagged if either layer is)."""
    frame = with_fit_diagnostics(result.layers)
    averaged = with_average_alpha(frame)
    flags = frame[frame.layer.isin(("fc1", "fc2"))].groupby(["seed", "step"]).wide_tail.any()
    is_average = averaged.layer == "average"
    keys = list(zip(averaged.seed[is_average], averaged.step[is_average]))
    averaged.loc[is_average, "wide_tail"] = [bool(flags.get(key, False)) for key in keys]
    averaged["traps"] = averaged["traps"].astype(float)
    return averaged


def _layer_claims(result: RunResult, column: str, table: dict, source: str, edges: dict,
                  paper_a: dict | None = None) -> list[dict]:
    """Claims on a per-layer column (alpha or traps), each phase read at `edges[phase]`; an anti-grokking
    row also shows the value at the last step. `paper_a`: (layer, phase) -> paper (a)'s value where it
    differs from the one scored. The FC1-FC2 average is a derived row."""
    frame, rows, last = _layer_frame(result), [], int(result.curves.step.max())
    for layer, by_phase in table.items():
        before = None
        for phase, (mean, sd) in by_phase.items():
            step = edges.get(phase)
            values = _per_seed(frame, layer, step, column)
            ours, our_sd = (values.mean(), values.std() if len(values) > 1 else 0.0) if len(values) else (np.nan, 0)
            tol = tolerance(mean, sd, our_sd, SD_FLOOR[column])
            flags = _per_seed(frame, layer, step, "wide_tail") if column == "alpha" else pd.Series(dtype=float)
            flagged = bool(len(flags) and flags.astype(bool).any())
            if column == "traps":
                verdict = count_verdict(values.values, mean, tol)
            else:
                holds = None if before is None else _sign_holds(ours, before[0], mean, before[1])
                verdict = value_verdict(ours, mean, tol, holds)
            note = f"; wide tail in {int(flags.astype(bool).sum())}/{len(flags)} seeds" if flagged else ""
            ours_text = "-" if not np.isfinite(ours) else f"{paper.mean_sd(values)} (step {step:,}{note})"
            if phase == "anti-grokking" and np.isfinite(ours) and step != last:
                ours_text += f"; last step: {paper.mean_sd(_per_seed(frame, layer, last, column))} (step {last:,})"
            tol_text = "0 in most seeds" if column == "traps" and mean == 0 else f"± {tol:.2g}"
            paper_text = paper.format_value(mean, sd)
            if paper_a and (layer, phase) in paper_a:
                paper_text += f" (b); {paper_a[layer, phase]:g} (a)"
            rows.append(_row(source, f"{column} {layer}, {phase}", paper_text, ours_text, tol_text, verdict, flagged,
                             "derived" if layer == "average" else "yes"))
            before = (ours, mean)
    return rows


def _phase_claims(wd0: RunResult, wd001: RunResult | None, scale: str) -> list[dict]:
    """Figure 1's narrative and Appendix C's control, judged by the phase rule (per seed where it says so).

    At paper scale the step ranges of paper (a)'s Figure 1 caption are checked too;
    at its own edges, only that each event happens (it is read on its own clock).
    """
    phases, paper_scale = find_phases(wd0.curves), scale == "paper scale"
    last, fit, peak = phases.t_end, phases.t_fit, phases.t_peak
    reached = (lambda needed: last >= needed) if paper_scale else (lambda needed: True)
    in_range = (lambda value, span: value is not None and span[0] <= value <= span[1]) if paper_scale else \
        (lambda value, span: value is not None)
    rows = []

    def add(claim, paper_text, ours, tol, verdict, needed, source="Fig 1 (a)", counted="yes"):
        done = reached(needed)
        rows.append(_row(source, claim, paper_text, ours if done else "-", tol, verdict if done else "not run yet",
                         counted=counted))

    add("train accuracy reaches 100%", "saturates between 1e4 and 1e5 steps",
        f"step {fit:,}" if fit is not None else f"not by step {last:,}", "as stated",
        "not reproduced" if fit is None else "reproduced" if in_range(fit, paper.FIT_STEPS) else "partly", 10**5,
        counted="context")
    rise = phases.peak_test_accuracy - float(smoothed_curves(wd0.curves).test_accuracy.get(fit, np.nan)) \
        if fit is not None else np.nan
    grokked = bool(np.isfinite(rise) and rise >= COLLAPSE_DROP)
    add("test accuracy rises after the fit and peaks", "peaks near 1e6 steps",
        f"rise {rise:.3f} to {phases.peak_test_accuracy:.3f} at step {peak:,}" if grokked else "no rise after the fit",
        f"rise ≥ {COLLAPSE_DROP:g}", "not reproduced" if not grokked else "reproduced"
        if in_range(peak, paper.PEAK_STEPS) else "partly", 10**6)
    table = collapse_table(wd0.curves)
    n_down, n, held = int(table.collapsed.sum()), len(table), table.held_test_accuracy
    tol = tolerance(paper.COLLAPSE_TEST_ACCURACY, None, held.std() if n > 1 else 0.0, SD_FLOOR["accuracy"])
    slipped = table[table.t_slip.notna()]
    after = (f"; then {len(slipped)} lose the fit (train down to {slipped.lowest_train.min():.3f}) and end at "
             f"{paper.mean_sd(table.final_test_accuracy, '.3f')}") if len(slipped) else ""
    add("WD = 0: test accuracy collapses, train accuracy held", f"collapses (to {paper.COLLAPSE_TEST_ACCURACY:g})",
        f"{n_down} of {n} seeds anti-grok, by {paper.mean_sd(table.held_fall, '.3f')}, to "
        f"{paper.mean_sd(held, '.3f')} with train held{after}",
        f"most seeds anti-grok; test with train held ± {tol:.2g}", "not reproduced" if n_down <= n / 2 else
        "reproduced" if abs(held.mean() - paper.COLLAPSE_TEST_ACCURACY) <= tol else "partly", 10**7)
    if wd001 is not None:
        control = collapse_table(wd001.curves)
        n_down, n = int(control.collapsed.sum()), len(control)
        add("WD = 0.01: no collapse (test accuracy plateaus)", "dips slightly, then plateaus",
            f"{n_down} of {n} seeds anti-grok (falls with train held {paper.mean_sd(control.held_fall, '.3f')}); "
            f"smoothed end {paper.mean_sd(control.final_test_accuracy, '.3f')}", "most seeds do not anti-grok",
            "reproduced" if n - n_down > n / 2 else "not reproduced", 10**7, source="Appendix C (a)")
    return rows


KS_COLUMNS = ("sigma_mp", "ks")  # Table 4's columns scored (its trap column repeats Table 2, its p-values are ~1)


def _ks_claims(result: RunResult, edges: dict) -> list[dict]:
    """Table 4: sigma_mp and the KS statistic of FC1's W_rand, each phase read at `edges[phase]`."""
    from grokutils import traps

    last = int(result.curves.step.max())
    steps = [step for step in edges.values() if step is not None]
    picked = result.layers[result.layers.step.isin(steps + ([last] if edges.get("anti-grokking") else []))]
    refit = traps.refit_run(dataclasses.replace(result, layers=picked), layers=("fc1",)) if steps else None
    rows = []
    for column in KS_COLUMNS:
        before = None
        for phase, reported in paper.TABLE4_KS.items():
            at = refit[refit.step == edges[phase]] if edges[phase] is not None else pd.DataFrame()
            values = at[column].astype(float) if len(at) else pd.Series(dtype=float)
            ours = float(values.mean()) if len(values) else np.nan
            tol = tolerance(reported[column], None, values.std() if len(values) > 1 else 0.0, SD_FLOOR[column])
            holds = None if before is None else _sign_holds(ours, before[0], reported[column], before[1])
            ours_text = "-" if np.isnan(ours) else f"{paper.mean_sd(values, '.4g')} (step {edges[phase]:,})"
            if phase == "anti-grokking" and np.isfinite(ours) and edges[phase] != last:
                ours_text += f"; last step: {paper.mean_sd(refit[refit.step == last][column], '.4g')} (step {last:,})"
            rows.append(_row("Table 4 (a)", f"FC1 W_rand {column}, {phase}", f"{reported[column]:g}", ours_text,
                             f"± {tol:.2g}", value_verdict(ours, reported[column], tol, holds),
                             counted="context" if (column, phase) == ("sigma_mp", "pre-grokking") else "yes"))
            before = (ours, reported[column])
    return rows


def _claims(wd0: RunResult, wd001: RunResult | None, scale: str) -> list[dict]:
    """Every MLP claim of one scale, ours and the verdict."""
    if wd0.config.weight_decay != 0:
        raise ValueError(f"wd0 must be a weight_decay=0 run, got weight_decay={wd0.config.weight_decay}")
    edges = claim_edges(wd0, scale)
    rows = _phase_claims(wd0, wd001, scale)
    rows += _layer_claims(wd0, "alpha", paper.TABLE1_ALPHA, "Table 1 (a, b)", edges)
    differs = {(layer, phase): value for (wd, layer, phase), value in paper.TABLE2_TRAPS_PAPER_A.items() if wd == 0}
    rows += _layer_claims(wd0, "traps", paper.TABLE2_TRAPS[0.0], "Table 2 (a, b), WD = 0", edges, differs)
    rows += _ks_claims(wd0, edges)
    if wd001 is not None:
        rows += _layer_claims(wd001, "traps", paper.TABLE2_TRAPS[0.01], "Table 2 (a, b), WD > 0",
                              claim_edges(wd001, scale))
    return rows


PER_SCALE = ("ours", "tolerance", "verdict", "flagged")


def mlp_scorecard(ours: tuple[RunResult, RunResult | None] | None,
                  paper_scale: tuple[RunResult, RunResult | None] | None = None) -> pd.DataFrame:
    """Figure 1, Appendix C, Tables 1, 2 and 4: the paper's value, and per scale ours, tolerance, verdict, flag.

    Each argument is (WD = 0 run, WD = 0.01 run or None), or None where no such run is
    stored: its columns then say *not run yet*. `ours` (the build's runs) are read at the phase-rule
    edges, paper-scale runs at the papers' steps (`claim_edges`).
    """
    if ours is None and paper_scale is None:
        raise ValueError("mlp_scorecard needs at least one of ours or paper_scale runs, got neither")
    cards = {scale: pd.DataFrame(_claims(*runs, scale)) for scale, runs in zip(SCALES, (ours, paper_scale))
             if runs is not None}
    keys = ["source", "claim", "paper", "counted"]
    card = next(iter(cards.values()))[keys].copy()
    for scale in SCALES:
        scored = cards[scale].set_index(["source", "claim"])[list(PER_SCALE)] if scale in cards else None
        merged = card.join(scored, on=["source", "claim"]) if scored is not None else None
        for column, empty in zip(PER_SCALE, ("-", "-", "not run yet", False)):
            card[f"{column}, {scale}"] = merged[column].fillna(empty) if merged is not None else empty
    return card


def _modadd_values(result: RunResult, step: int | None) -> dict[str, pd.Series]:
    """Per seed at `step`: test accuracy, mean alpha and mean traps over the analyzed matrices."""
    if step is None:
        return {"test": pd.Series(dtype=float), "alpha": pd.Series(dtype=float), "traps": pd.Series(dtype=float)}
    curves, layers = result.curves[result.curves.step == step], result.layers[result.layers.step == step]
    return {"test": curves.set_index("seed").test_accuracy.astype(float),
            "alpha": layers.groupby("seed").alpha.mean().astype(float),
            "traps": layers.astype({"traps": float}).groupby("seed").traps.mean()}


def modadd_scorecard(result: RunResult) -> pd.DataFrame:
    """Tables 5-7 of paper (b): test accuracy, mean alpha and mean traps per phase, by `RULE`.

    The paper gives no step edges for this experiment, so each phase is read at our own edge
    (`grokutils.phases`); a phase the run did not reach is 'not run yet'.
    """
    edges = claim_steps(result.curves, "own edges")
    reported = {"test": paper.MODADD_TABLE5_ACCURACY["test"], "alpha": paper.MODADD_TABLE6_ALPHA["mean"],
                "traps": paper.MODADD_TABLE7_TRAPS["mean"]}
    labels = {"test": ("Table 5 (b)", "test accuracy", "accuracy"),
              "alpha": ("Table 6 (b)", "mean alpha of the 8 matrices", "alpha"),
              "traps": ("Table 7 (b)", "mean traps of the 8 matrices", "traps")}
    values = {phase: _modadd_values(result, step) for phase, step in edges.items()}
    rows = []
    for quantity, (source, words, kind) in labels.items():
        before = None
        for phase, step in edges.items():
            mean, sd = reported[quantity][phase]
            per_seed = values[phase][quantity]
            ours = float(per_seed.mean()) if len(per_seed) else np.nan
            tol = tolerance(mean, sd, per_seed.std() if len(per_seed) > 1 else 0.0, SD_FLOOR[kind])
            if kind == "traps":
                verdict = count_verdict(per_seed.values, mean, tol)
            else:
                holds = None if before is None else _sign_holds(ours, before[0], mean, before[1])
                verdict = value_verdict(ours, mean, tol, holds)
            rows.append(_row(source, f"{words}, {phase}", paper.format_value(mean, sd),
                             "-" if np.isnan(ours) else f"{paper.mean_sd(per_seed, '.3g')} (step {step:,})",
                             "0 in most seeds" if kind == "traps" and mean == 0 else f"± {tol:.2g}", verdict))
            before = (ours, mean)
    return pd.DataFrame(rows).drop(columns="flagged")


def verdict_counts(card: pd.DataFrame, column: str = "verdict") -> pd.Series:
    """How many counted claims got each verdict in `column` (all four verdicts listed, zeros included;
    context and derived rows are left out)."""
    counted = card[card.counted == "yes"] if "counted" in card else card
    return counted[column].value_counts().reindex(list(VERDICTS), fill_value=0)


def flagged_counts(card: pd.DataFrame, scale: str = "own edges") -> pd.Series:
    """Per verdict, how many of the claims resting on a wide-tail fit got it."""
    flagged = card[card[f"flagged, {scale}"].astype(bool)]
    return verdict_counts(flagged, f"verdict, {scale}")

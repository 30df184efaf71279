"""The reproduction scorecard: each quantitative claim of the papers against our results.

Every row is computed from finished runs, never typed: the paper's value (`grokutils.paper`,
with its table or section), ours, the tolerance that row used and the verdict. For the MLP,
ours is given twice: in the accelerated protocol (read at our own phase edges) and at paper
scale (read at the papers' steps). One rule for every row, `RULE` below.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from grokutils import paper
from grokutils.fits import with_fit_diagnostics
from grokutils.measures import with_average_alpha
from grokutils.phases import COLLAPSE_DROP, PEAK_BAND, SCALES, claim_steps, find_phases, seed_phases, smoothed_curves
from grokutils.store import RunResult

SD_FLOOR = {"alpha": 0.25, "traps": 1.0, "sigma_mp": 0.01, "ks": 0.01, "accuracy": 0.02}
MAX_RELATIVE_TOLERANCE = 0.5  # no tolerance wider than half the paper's value
VERDICTS = ("reproduced", "partly", "not reproduced", "not run yet")
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
    "**Phase claims** (Figure 1, Appendix C): judged per seed by the phase rule of `grokutils.phases`. "
    "Accelerated runs are read at their own phase edges; the WD = 0.01 control's last row (the papers' "
    "1e7 steps, the end of a run that does not collapse) at its last step. "
    "*Not run yet*: no such run is stored, or it does not reach the step or phase the claim is about. "
    "Each claim is scored once (Table 4's trap column repeats Table 2's FC1 row and is not scored again); "
    "an alpha verdict that rests on a fit whose tail covers more than half of the spectrum is flagged.")


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
    """Phase -> the checkpoint a claim about that phase is read at (`grokutils.phases.claim_steps`)."""
    return claim_steps(result.curves, scale)


def _sign_holds(ours_now: float, ours_before: float, paper_now: float, paper_before: float) -> bool | None:
    """Whether our change from the previous phase has the paper's sign (None: no previous phase or no change)."""
    if paper_now == paper_before or not np.isfinite(ours_before):
        return None
    return bool(np.sign(ours_now - ours_before) == np.sign(paper_now - paper_before))


def _row(source: str, claim: str, paper_text: str, ours_text: str, tol_text: str, verdict: str,
         flagged: bool = False) -> dict:
    return {"source": source, "claim": claim, "paper": paper_text, "ours": ours_text, "tolerance": tol_text,
            "verdict": verdict, "flagged": flagged}


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


def _layer_claims(result: RunResult, column: str, table: dict, source: str, edges: dict) -> list[dict]:
    """Claims on a per-layer column (alpha or traps), each phase read at `edges[phase]`."""
    frame, rows = _layer_frame(result), []
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
            tol_text = "0 in most seeds" if column == "traps" and mean == 0 else f"± {tol:.2g}"
            rows.append(_row(source, f"{column} {layer}, {phase}", paper.format_value(mean, sd), ours_text,
                             tol_text, verdict, flagged))
            before = (ours, mean)
    return rows


def _seed_collapses(result: RunResult) -> tuple[int, int, pd.Series]:
    """(seeds collapsed by the phase rule, seeds, smoothed final test accuracy per seed)."""
    by_seed = seed_phases(result.curves)
    finals = pd.Series({seed: p.final_test_accuracy for seed, p in by_seed.items()}, dtype=float)
    return sum(p.collapsed for p in by_seed.values()), len(by_seed), finals


def _phase_claims(wd0: RunResult, wd001: RunResult | None, scale: str) -> list[dict]:
    """Figure 1's narrative and Appendix C's control, judged by the phase rule (per seed where it says so).

    At paper scale the step ranges of paper (a)'s Figure 1 caption are checked too;
    accelerated, only that each event happens (its steps are on another clock).
    """
    phases, paper_scale = find_phases(wd0.curves), scale == "paper scale"
    last, fit, peak = phases.t_end, phases.t_fit, phases.t_peak
    reached = (lambda needed: last >= needed) if paper_scale else (lambda needed: True)
    in_range = (lambda value, span: value is not None and span[0] <= value <= span[1]) if paper_scale else \
        (lambda value, span: value is not None)
    rows = []

    def add(claim, paper_text, ours, tol, verdict, needed, source="Fig 1 (a)"):
        done = reached(needed)
        rows.append(_row(source, claim, paper_text, ours if done else "-", tol, verdict if done else "not run yet"))

    add("train accuracy reaches 100%", "saturates between 1e4 and 1e5 steps",
        f"step {fit:,}" if fit is not None else f"not by step {last:,}", "as stated",
        "not reproduced" if fit is None else "reproduced" if in_range(fit, paper.FIT_STEPS) else "partly", 10**5)
    rise = phases.peak_test_accuracy - float(smoothed_curves(wd0.curves).test_accuracy.get(fit, np.nan)) \
        if fit is not None else np.nan
    left_peak = phases.final_test_accuracy < phases.peak_test_accuracy - PEAK_BAND
    grokked = bool(np.isfinite(rise) and rise >= COLLAPSE_DROP)
    add("test accuracy rises after the fit, peaks, then leaves its peak", "peaks near 1e6 steps",
        f"rise {rise:.3f} to {phases.peak_test_accuracy:.3f} at step {peak:,}; end {phases.final_test_accuracy:.3f}"
        if grokked else "no rise after the fit", f"rise ≥ {COLLAPSE_DROP:g}, end below the {PEAK_BAND:g} band",
        "not reproduced" if not grokked else "reproduced" if left_peak and in_range(peak, paper.PEAK_STEPS)
        else "partly", 10**6)
    n_down, n, finals = _seed_collapses(wd0)
    tol = tolerance(paper.COLLAPSE_TEST_ACCURACY, None, finals.std() if n > 1 else 0.0, SD_FLOOR["accuracy"])
    most = n_down > n / 2
    add("WD = 0: test accuracy collapses, train accuracy held", f"collapses (to {paper.COLLAPSE_TEST_ACCURACY:g})",
        f"{n_down} of {n} seeds collapse; smoothed end {paper.mean_sd(finals, '.3f')}",
        f"most seeds collapse; end ± {tol:.2g}", "not reproduced" if not most else "reproduced"
        if abs(finals.mean() - paper.COLLAPSE_TEST_ACCURACY) <= tol else "partly", 10**7)
    if wd001 is not None:
        n_down, n, finals = _seed_collapses(wd001)
        add("WD = 0.01: no collapse (test accuracy plateaus)", "dips slightly, then plateaus",
            f"{n_down} of {n} seeds collapse; smoothed end {paper.mean_sd(finals, '.3f')}",
            "most seeds do not collapse",
            "reproduced" if n - n_down > n / 2 else "not reproduced", 10**7, source="Appendix C (a)")
    return rows


KS_COLUMNS = ("sigma_mp", "ks")  # Table 4's columns scored (its trap column repeats Table 2, its p-values are ~1)


def _ks_claims(result: RunResult, edges: dict) -> list[dict]:
    """Table 4: sigma_mp and the KS statistic of FC1's W_rand, each phase read at `edges[phase]`."""
    from grokutils import traps

    steps = [step for step in edges.values() if step is not None]
    picked = result.layers[result.layers.step.isin(steps)]
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
            rows.append(_row("Table 4 (a)", f"FC1 W_rand {column}, {phase}", f"{reported[column]:g}",
                             "-" if np.isnan(ours) else f"{paper.mean_sd(values, '.4g')} (step {edges[phase]:,})",
                             f"± {tol:.2g}", value_verdict(ours, reported[column], tol, holds)))
            before = (ours, reported[column])
    return rows


def _claims(wd0: RunResult, wd001: RunResult | None, scale: str) -> list[dict]:
    """Every MLP claim of one scale, ours and the verdict."""
    if wd0.config.weight_decay != 0:
        raise ValueError(f"wd0 must be a weight_decay=0 run, got weight_decay={wd0.config.weight_decay}")
    edges = claim_edges(wd0, scale)
    rows = _phase_claims(wd0, wd001, scale)
    rows += _layer_claims(wd0, "alpha", paper.TABLE1_ALPHA, "Table 1 (a)", edges)
    rows += _layer_claims(wd0, "traps", paper.TABLE2_TRAPS[0.0], "Table 2 (a), WD = 0", edges)
    rows += _ks_claims(wd0, edges)
    if wd001 is not None:
        rows += _layer_claims(wd001, "traps", paper.TABLE2_TRAPS[0.01], "Table 2 (a), WD > 0",
                              control_edges(wd001, scale))
    return rows


def control_edges(result: RunResult, scale: str) -> dict[str, int | None]:
    """The control's steps: as `claim_edges`, but its 'anti-grokking' row (the papers' 1e7 steps, the end
    of their control run, which does not collapse) is read at our last step once the run has peaked."""
    edges = claim_edges(result, scale)
    if scale == "accelerated" and edges["anti-grokking"] is None and edges["grokking"] is not None:
        edges["anti-grokking"] = int(result.curves.step.max())
    return edges


PER_SCALE = ("ours", "tolerance", "verdict", "flagged")


def mlp_scorecard(accelerated: tuple[RunResult, RunResult | None] | None,
                  paper_scale: tuple[RunResult, RunResult | None] | None = None) -> pd.DataFrame:
    """Figure 1, Appendix C, Tables 1, 2 and 4: the paper's value, and per scale ours, tolerance, verdict, flag.

    Each argument is (WD = 0 run, WD = 0.01 run or None), or None where no such run is
    stored: its columns then say *not run yet*. Accelerated runs are read at the phase-rule
    edges, paper-scale runs at the papers' steps (`claim_edges`).
    """
    if accelerated is None and paper_scale is None:
        raise ValueError("mlp_scorecard needs at least one of accelerated or paper_scale runs, got neither")
    cards = {scale: pd.DataFrame(_claims(*runs, scale)) for scale, runs in zip(SCALES, (accelerated, paper_scale))
             if runs is not None}
    keys = ["source", "claim", "paper"]
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
    edges = claim_steps(result.curves, "accelerated")
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
    """How many claims got each verdict in `column` (all four verdicts listed, zeros included)."""
    return card[column].value_counts().reindex(list(VERDICTS), fill_value=0)


def flagged_counts(card: pd.DataFrame, scale: str = "accelerated") -> pd.Series:
    """Per verdict, how many of the claims resting on a wide-tail fit got it."""
    flagged = card[card[f"flagged, {scale}"].astype(bool)]
    return verdict_counts(flagged, f"verdict, {scale}")

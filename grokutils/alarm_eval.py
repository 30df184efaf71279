"""The HTSR alarm as a detector: candidate data-free rules scored on every stored run.

A rule reads only per-layer measures of the weights (alpha, traps, and the fixed-tail alpha of
`grokutils.fits`) at each checkpoint of one seed and fires at one step, or never. It is
judged against that seed's phases (`grokutils.phases`, the one phase rule):

A seed *collapses* when it anti-groks by that rule: a fall of at least 0.05 from its
smoothed test peak with smoothed train accuracy still held at 0.99 (a further fall after
train slips is not needed and not counted).

* **hit**: the seed collapses, and the rule fires after its peak region begins and before
  half of the held fall is lost (t_peak_start <= fire <= t_half_fall);
* **miss**: the seed collapses and the rule fires after half of the fall, or never;
* **false alarm**: the rule fires in a seed that does not collapse, or before the peak
  region begins (a warning with nothing yet to warn of);
* **quiet**: a seed without a collapse in which the rule never fires (a correct silence).

Two leads per hit: t_collapse - fire (positive when the rule fired before the smoothed test
curve left its peak region) and t_half_fall - fire (how long before half of the fall was
lost). `separation` asks whether a rule tells a run apart from its control: whether it fires
earlier on every seed of the one than on any seed of the other. `RULES` lists the
candidates; `evaluate` scores them on runs, `summary` counts per rule, and `recommendation_values`
says what the counts support, if anything (`recommendation` in words).

`first_alarms` and `lead_times` read the monitor's own rule (`grokutils.tools.alarm_log`) off
any tidy table with step, layer, alpha and traps columns: a monitor log, or a stored run's
`layers`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grokutils.htsr import ALPHA_LINE
from grokutils.phases import seed_phases, with_int_steps
from grokutils.prose import fired, lead_range, say
from grokutils.store import RunResult
from grokutils.tools.alarm_log import alarm_reasons

PERSIST = 3  # checkpoints in a row a condition must hold before a persistent rule fires
EARLY_SHARE = 0.2  # a seed's early trap level: its most traps over the first 20% of checkpoints
TRAP_RISE = 2  # traps above the early level that count as a rise
SLOPE_DECADES = 0.5  # the rate rule compares alpha with its value this many decades of steps earlier
SLOPE_LIMIT = -1.0  # ... and fires when alpha falls faster than this per decade
OUTCOMES = ("hit", "miss", "false alarm", "quiet")


@dataclass(frozen=True)
class Rule:
    """A named data-free alarm rule: a per-checkpoint condition and how many checkpoints in a row it needs."""

    name: str
    condition: Callable[[pd.DataFrame], pd.Series]  # wide per-seed table (index: step) -> bool per step
    persist: int = 1


def wide_table(layers: pd.DataFrame, fits: pd.DataFrame | None = None) -> pd.DataFrame:
    """One seed's measures, one row per step: alpha_fc1, alpha_fc2, alpha_average, traps_fc1, traps_fc2
    (and alpha_top10_fc1 when `fits` is given)."""
    mine = layers[layers.layer.isin(("fc1", "fc2"))]
    table = mine.pivot_table(index="step", columns="layer", values=["alpha", "traps"], aggfunc="first")
    table.columns = [f"{value}_{layer}" for value, layer in table.columns]
    table = table.astype(float).sort_index()
    table["alpha_average"] = table[["alpha_fc1", "alpha_fc2"]].mean(axis=1, skipna=False)
    if fits is not None and "alpha_top10" in fits:
        top = fits[fits.layer == "fc1"].set_index("step").alpha_top10
        table["alpha_top10_fc1"] = top.reindex(table.index)
    return table


def _early_rise(table: pd.DataFrame, column: str) -> pd.Series:
    """Whether `column` exceeds its early level (most over the first EARLY_SHARE of checkpoints) by TRAP_RISE."""
    early = table[column].iloc[:max(1, int(np.ceil(EARLY_SHARE * len(table))))].max()
    return table[column] >= early + TRAP_RISE


def _alpha_slope(table: pd.DataFrame, column: str = "alpha_fc1") -> pd.Series:
    """Change of `column` per decade of steps over the last SLOPE_DECADES (NaN where no earlier checkpoint)."""
    logs = np.log10(table.index.values + 1.0)
    values = table[column].values
    slope = np.full(len(values), np.nan)
    for i, at in enumerate(logs):
        earlier = np.flatnonzero(logs <= at - SLOPE_DECADES)
        if len(earlier):
            j = earlier[-1]
            slope[i] = (values[i] - values[j]) / (at - logs[j])
    return pd.Series(slope, index=table.index)


RULES = (
    Rule("Former monitor default: alpha < 2 or any trap, FC1 or FC2",
         lambda t: (t[["alpha_fc1", "alpha_fc2"]] < 2).any(axis=1) | (t[["traps_fc1", "traps_fc2"]] > 0).any(axis=1)),
    Rule("any trap in FC1 or FC2", lambda t: (t[["traps_fc1", "traps_fc2"]] > 0).any(axis=1)),
    Rule("FC1 or FC2 alpha < 2", lambda t: (t[["alpha_fc1", "alpha_fc2"]] < 2).any(axis=1)),
    Rule(f"FC1 alpha < 2, {PERSIST} checkpoints", lambda t: t.alpha_fc1 < 2, PERSIST),
    Rule(f"average alpha < 2, {PERSIST} checkpoints", lambda t: t.alpha_average < 2, PERSIST),
    Rule(f"FC1 traps >= early level + {TRAP_RISE}, {PERSIST} checkpoints",
         lambda t: _early_rise(t, "traps_fc1"), PERSIST),
    Rule(f"FC1 alpha falling > {-SLOPE_LIMIT:g} per decade, {PERSIST} checkpoints",
         lambda t: _alpha_slope(t) < SLOPE_LIMIT, PERSIST),
    Rule(f"FC1 alpha < 2 and FC1 traps risen, {PERSIST} checkpoints",
         lambda t: (t.alpha_fc1 < 2) & _early_rise(t, "traps_fc1"), PERSIST),
    Rule(f"FC1 top-10% alpha < 2, {PERSIST} checkpoints",
         lambda t: t.get("alpha_top10_fc1", pd.Series(np.nan, index=t.index)) < 2, PERSIST),
)


def first_firing(condition: pd.Series, persist: int = 1) -> int | None:
    """The first step at which `condition` has held for `persist` checkpoints in a row (None: never)."""
    held = condition.fillna(False).astype(bool).values
    run = 0
    for step, value in zip(condition.index, held):
        run = run + 1 if value else 0
        if run >= persist:
            return int(step)
    return None


def outcome(fire: int | None, phases) -> str:
    """hit, miss, false alarm or quiet, for one rule on one seed (see the module docstring)."""
    if not phases.collapsed:
        return "quiet" if fire is None else "false alarm"
    if fire is None:
        return "miss"
    if phases.t_peak_start is None or fire < phases.t_peak_start:
        return "false alarm"
    return "hit" if fire <= phases.t_half_fall else "miss"


def evaluate(runs: Mapping[str, RunResult], fits: Mapping[str, pd.DataFrame] | None = None,
             rules=RULES) -> pd.DataFrame:
    """One row per (run, seed, rule): the seed's phase events, the firing step, the outcome, the lead."""
    rows = []
    for label, result in runs.items():
        for seed, phases in seed_phases(result.curves).items():
            layers = result.layers[result.layers.seed == seed]
            run_fits = fits.get(label) if fits else None
            table = wide_table(layers, run_fits[run_fits.seed == seed] if run_fits is not None else None)
            for rule in rules:
                fire = first_firing(rule.condition(table), rule.persist)
                timed = fire is not None and phases.collapsed
                rows.append({"run": label, "seed": seed, "rule": rule.name, "collapsed": phases.collapsed,
                             "t_peak_start": phases.t_peak_start, "t_collapse": phases.t_collapse,
                             "t_half_fall": phases.t_half_fall, "fires": fire, "outcome": outcome(fire, phases),
                             "lead_steps": phases.t_collapse - fire if timed else None,
                             "lead_half_steps": phases.t_half_fall - fire if timed else None})
    table = with_int_steps(pd.DataFrame(rows),
                           ("t_peak_start", "t_collapse", "t_half_fall", "fires", "lead_steps", "lead_half_steps"))
    return table.set_index(["rule", "run", "seed"])


def summary(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Per rule: the collapsing seeds, hits, misses, false alarms and quiet seeds, and the range of the
    hits' leads over the start of the fall and over its half-way point."""
    rows = []
    for rule, mine in evaluation.groupby(level="rule", sort=False):
        counts = mine.outcome.value_counts()
        hits = mine[mine.outcome == "hit"]
        rows.append({"rule": rule, "collapsing seeds": int(mine.collapsed.sum()),
                     **{outcome_name: int(counts.get(outcome_name, 0)) for outcome_name in OUTCOMES},
                     "seeds": len(mine), "lead over the fall's start (steps)": lead_range(hits.lead_steps.tolist()),
                     "lead over half the fall (steps)": lead_range(hits.lead_half_steps.tolist())})
    return pd.DataFrame(rows).set_index("rule")


def separation(evaluation: pd.DataFrame, run: str, control: str) -> pd.DataFrame:
    """Per rule: the firing steps on the seeds of `run` and of `control`, and whether the rule separates
    them (it fires on every seed of `run`, each time before it fires on any seed of `control`; a rule
    that never fires on the control separates if it fires on every seed of `run`)."""
    rows = []
    for rule, mine in evaluation.groupby(level="rule", sort=False):
        fires = {label: mine.xs(label, level="run").fires for label in (run, control)}
        ours, theirs = fires[run], fires[control].dropna()
        apart = bool(ours.notna().all() and (theirs.empty or ours.max() < theirs.min()))
        rows.append({"rule": rule, **{f"fires on {label}": fired(values.tolist()) for label, values in fires.items()},
                     "separates": "yes" if apart else "no"})
    return pd.DataFrame(rows).set_index("rule")


def recommendation_values(table: pd.DataFrame) -> dict:
    """What the summary supports, as values: {supported, best, hits, collapsing, false_alarms, seeds,
    all_collapse}. `supported` lists the rules that warn of every collapse in time without a false alarm;
    `best` is the rule with the most hits less false alarms (the first such rule on a tie), with its
    counts; `all_collapse` is True when every seed collapses, so no rule was tested for staying quiet."""
    perfect = table[(table.hit == table["collapsing seeds"]) & (table["false alarm"] == 0)
                    & (table["collapsing seeds"] > 0)]
    best = (table.hit - table["false alarm"]).idxmax()
    return {"supported": list(perfect.index), "best": best, "hits": int(table.loc[best, "hit"]),
            "collapsing": int(table.loc[best, "collapsing seeds"]),
            "false_alarms": int(table.loc[best, "false alarm"]), "seeds": int(table.loc[best, "seeds"]),
            "all_collapse": not bool((table.seeds > table["collapsing seeds"]).any())}


def recommendation(table: pd.DataFrame) -> str:
    """`recommendation_values` in words (templates/alarm_eval.j2, `recommendation`)."""
    return say("alarm_eval.recommendation", recommendation_values(table))


def stored_runs(results_dir) -> dict[str, RunResult]:
    """Every finished MLP run in a results folder, by its folder name. The rules read the MLP's
    layers FC1 and FC2, so modular-addition runs are left out; the name keeps its hash, which
    tells apart runs whose names agree (a float32 and a float64 run of the same length)."""
    from pathlib import Path

    from grokutils.config import MLPConfig
    from grokutils.store import load_if_finished

    found = {}
    for folder in sorted(Path(results_dir).iterdir()):
        if not folder.name.startswith("mlp-") or not folder.is_dir() or folder.suffix in (".partial", ".staging"):
            continue
        result = load_if_finished(folder, MLPConfig)
        if result is not None:
            found[folder.name] = result
    return found


def first_alarms(layers: pd.DataFrame, watched: Sequence[str] | None = None,
                 alpha_threshold: float = ALPHA_LINE, max_traps: int = 0) -> pd.DataFrame:
    """Per seed (if the table has one), the first alarming step among the watched layers.

    Reads any tidy table with step, layer, alpha and traps columns: a monitor log or the
    `layers` table of a stored run. Columns: first_alarm (step or NA), layer, reason.
    """
    missing = {"step", "layer", "alpha", "traps"} - set(layers.columns)
    if missing:
        raise ValueError(f"layers table lacks columns {sorted(missing)}; has {list(layers.columns)}")
    table = layers if "seed" in layers else layers.assign(seed=0)
    if watched is not None:
        table = table[table.layer.isin(watched)]
    table = table.assign(reason=alarm_reasons(table, alpha_threshold, max_traps)).sort_values(["seed", "step", "layer"])
    seeds = sorted((layers if "seed" in layers else table).seed.unique())
    alarmed = table[table.reason != ""].groupby("seed").first()  # sorted: the earliest step
    return pd.DataFrame({"first_alarm": pd.array([alarmed.step.get(s) for s in seeds], dtype="Int64"),
                         "layer": [alarmed.layer.get(s, "") for s in seeds],
                         "reason": [alarmed.reason.get(s, "") for s in seeds]},
                        index=pd.Index(seeds, name="seed"))


def lead_times(layers: pd.DataFrame, curves: pd.DataFrame, watched: Sequence[str] = ("fc1", "fc2"),
               alpha_threshold: float = ALPHA_LINE, max_traps: int = 0) -> pd.DataFrame:
    """Per seed of a stored run: first alarm, start of the collapse (`grokutils.phases`), lead, verdict."""
    table = first_alarms(layers, watched, alpha_threshold, max_traps)
    by_seed = seed_phases(curves if "seed" in curves else curves.assign(seed=0))
    collapse = {seed: by_seed[seed].t_collapse if seed in by_seed else None for seed in table.index}
    table["t_collapse"] = pd.array([collapse[seed] for seed in table.index], dtype="Int64")
    table["lead_steps"] = table["t_collapse"] - table["first_alarm"]
    table["verdict"] = [_verdict(alarm, fall) for alarm, fall in zip(table.first_alarm, table.t_collapse)]
    return table


def _verdict(alarm, collapse) -> str:
    """Words for one (first alarm, collapse) pair of steps, either possibly missing."""
    if pd.isna(alarm):
        return "no alarm, no collapse within the run" if pd.isna(collapse) else "missed: collapse without alarm"
    if pd.isna(collapse):
        return "false alarm: no collapse within the run"
    return "alarm before collapse" if alarm <= collapse else "late: alarm after collapse"

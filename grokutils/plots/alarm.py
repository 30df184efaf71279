"""Figures and post-hoc reading of the HTSR alarm (chapter 07): monitor logs and stored runs.

`first_alarms` and `lead_times` read any tidy table with step, layer, alpha and traps
columns (a `grokutils.tools.monitor` log, or the `layers` table of a stored run) with the
monitor's alarm rule (`grokutils.tools.alarm_log.alarm_reasons`); `log_figure` draws a
monitor log and `run_alarm_figure` a stored run, each seed's first alarm and test-accuracy
collapse marked.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from grokutils.phases import seed_phases
from grokutils.plots.common import stamp_protocol, step_axis
from grokutils.tools.alarm_log import ALPHA_THRESHOLD, alarm_reasons


def first_alarms(layers: pd.DataFrame, watched: Sequence[str] | None = None,
                 alpha_threshold: float = ALPHA_THRESHOLD, max_traps: int = 0) -> pd.DataFrame:
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
               alpha_threshold: float = ALPHA_THRESHOLD, max_traps: int = 0) -> pd.DataFrame:
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


def log_figure(table: pd.DataFrame, alpha_threshold: float = ALPHA_THRESHOLD):
    """Alpha (top) and traps (bottom) per layer against steps, alarms marked: a monitor log."""
    fig, (alpha_ax, traps_ax) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    for layer, rows in table.groupby("layer", sort=False):
        line, = alpha_ax.plot(rows.step, rows.alpha, marker=".", label=f"{layer}")
        traps_ax.plot(rows.step, rows.traps.astype(float), marker=".", color=line.get_color())
        alarmed = rows[rows.alarm.astype(bool)]
        alpha_ax.plot(alarmed.step, alarmed.alpha, "x", color="red", ms=8, lw=0)
    alpha_ax.axhline(alpha_threshold, color="k", ls="--", lw=1)
    alpha_ax.set_ylabel("HTSR alpha")
    alpha_ax.legend(title="layer\n(x: alarm)", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _step_axes(alpha_ax, traps_ax)
    fig.tight_layout()
    return fig


def _step_axes(*axes) -> None:
    """Shared x axis in steps (symlog, step 0 shown, nothing left of it); whole-number traps."""
    step_axis(axes[-1])
    traps_ax = axes[1]
    traps_ax.set_ylabel("correlation traps")
    traps_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    traps_ax.set_ylim(bottom=-0.2, top=max(1.2, traps_ax.get_ylim()[1]))


def run_alarm_figure(result, watched: Sequence[str] = ("fc1", "fc2"), alpha_threshold: float = ALPHA_THRESHOLD,
                     max_traps: int = 0, title: str = ""):
    """A stored run: alpha and traps of the watched layers and test accuracy per seed, with
    each seed's first alarm (red dashed) and test-accuracy collapse (black dotted) marked."""
    table = lead_times(result.layers, result.curves, watched, alpha_threshold, max_traps)
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 6.5))
    layers = result.layers[result.layers.layer.isin(watched)]
    for (seed, layer), rows in layers.groupby(["seed", "layer"]):
        style = dict(color=f"C{list(watched).index(layer)}", ls="-" if seed == 0 else "--", lw=1)
        axes[0].plot(rows.step, rows.alpha, label=f"{layer}, seed {seed}", **style)
        axes[1].plot(rows.step, rows.traps.astype(float), **style)
    for seed, rows in result.curves.groupby("seed"):
        axes[2].plot(rows.step, rows.test_accuracy, color="gray", ls="-" if seed == 0 else "--", lw=1)
    for seed, row in table.iterrows():
        for ax in axes:
            if not pd.isna(row.first_alarm):
                ax.axvline(max(int(row.first_alarm), 1), color="red", ls="--", lw=1)
            if not pd.isna(row.t_collapse):
                ax.axvline(max(int(row.t_collapse), 1), color="k", ls=":", lw=1)
    axes[0].axhline(alpha_threshold, color="k", ls="--", lw=1)
    axes[0].set_ylabel("HTSR alpha")
    axes[0].legend(fontsize=7, ncol=2)
    axes[2].set_ylabel("test accuracy")
    _step_axes(*axes)
    axes[0].set_title(title)
    return stamp_protocol(fig, result.config)


OUTCOME_COLOURS = {"hit": "tab:green", "miss": "tab:orange", "false alarm": "tab:red", "quiet": "tab:gray"}


def detector_figure(evaluation: pd.DataFrame, columns: int = 3):
    """One panel per rule of `grokutils.alarm_eval.evaluate`: per run and seed, the hit window (peak region
    start to half of the fall, grey bar) and where the rule fired, coloured by its outcome."""
    rules = list(dict.fromkeys(evaluation.index.get_level_values("rule")))
    rows = -(-len(rules) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 0.35 * 12 * rows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, rule in zip(axes.flat, rules):
        mine = evaluation.xs(rule, level="rule").reset_index()
        for y, row in enumerate(mine.itertuples()):
            if row.collapsed:
                ax.plot([max(int(row.t_peak_start), 1), int(row.t_half_fall)], [y, y], color="lightgray", lw=5,
                        solid_capstyle="butt")
            if not pd.isna(row.fires):
                ax.plot(max(int(row.fires), 1), y, "o", color=OUTCOME_COLOURS[row.outcome], ms=5)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([f"{run[:24]} s{seed}" for run, seed in zip(mine.run, mine.seed)], fontsize=6)
        ax.set_title(rule, fontsize=8)
        step_axis(ax)
    for ax in axes.flat[len(rules):]:
        ax.set_visible(False)
    steps = [int(evaluation[column].max()) for column in ("t_half_fall", "fires") if evaluation[column].notna().any()]
    last = max(steps, default=1)
    axes.flat[0].set_xlim(0, last * 1.5)  # shared: every firing and hit window in view
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=o) for o, c in OUTCOME_COLOURS.items()
               if o != "quiet"] + [plt.Line2D([], [], color="lightgray", lw=5, label="hit window")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig

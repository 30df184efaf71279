"""Figures of the HTSR alarm: `log_figure` draws a monitor log, `run_alarm_figure` a stored run
with each seed's first alarm and test-accuracy collapse marked (`grokutils.alarm_eval.lead_times`),
and `detector_figure` the rules' evaluation."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from grokutils.alarm_eval import lead_times
from grokutils.htsr import ALPHA_LINE
from grokutils.plots.common import BOOK_WIDTH_IN, stamp_protocol, step_axis


def log_figure(table: pd.DataFrame, alpha_threshold: float = ALPHA_LINE):
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


def run_alarm_figure(result, watched: Sequence[str] = ("fc1", "fc2"), alpha_threshold: float = ALPHA_LINE,
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


def detector_figure(evaluation: pd.DataFrame, columns: int = 2):
    """One panel per rule of `grokutils.alarm_eval.evaluate`: per run and seed, the hit window (peak region
    start to half of the fall, grey bar) and where the rule fired, coloured by its outcome."""
    rules = list(dict.fromkeys(evaluation.index.get_level_values("rule")))
    rows = -(-len(rules) // columns)
    lines = len(evaluation.xs(rules[0], level="rule"))  # one per run and seed
    fig, axes = plt.subplots(rows, columns, figsize=(BOOK_WIDTH_IN, (0.3 * lines + 0.6) * rows), sharex=True,
                             sharey=True, squeeze=False)
    for ax, rule in zip(axes.flat, rules):
        mine = evaluation.xs(rule, level="rule").reset_index()
        for y, row in enumerate(mine.itertuples()):
            if row.collapsed:
                ax.plot([max(int(row.t_peak_start), 1), int(row.t_half_fall)], [y, y], color="lightgray", lw=5,
                        solid_capstyle="butt")
            if not pd.isna(row.fires):
                ax.plot(max(int(row.fires), 1), y, "o", color=OUTCOME_COLOURS[row.outcome], ms=5)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels([f"{run[:24]} s{seed}" for run, seed in zip(mine.run, mine.seed)], fontsize=7)
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

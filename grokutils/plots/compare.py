"""The comparison figure of the accelerated-protocol chapter: two runs that differ in one setting,
and their per-seed difference."""
from __future__ import annotations

import matplotlib.pyplot as plt

from grokutils import compare, paper
from grokutils.phases import PAPER_EDGES
from grokutils.plots.common import stamp_protocol, step_axis
from grokutils.store import RunResult


def paired_figure(run_a: RunResult, run_b: RunResult, labels: tuple[str, str],
                  column: str = "test_accuracy") -> plt.Figure:
    """Top: each run's mean ± sd over seeds; bottom: the per-seed difference a - b, mean ± sd."""
    table = compare.paired_curve(run_a, run_b, column)
    where = f"at the {len(table)} shared checkpoints"
    return pair_figure(table, labels, column, run_a.config, where)


def length_figure(short: RunResult, long: RunResult, labels: tuple[str, str],
                  column: str = "test_accuracy") -> plt.Figure:
    """`paired_figure` of a short and a long run at the short run's checkpoints (`compare.length_pair`)."""
    table = compare.length_pair(short, long, column)
    where = f"at the {len(table)} checkpoints of the shorter run"
    return pair_figure(table, labels, column, long.config, where)


def pair_figure(table, labels: tuple[str, str], column: str, config, where: str) -> plt.Figure:
    """Draw a `compare.paired_curve`-shaped table: the two means ± sd, then their difference."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(2, 1))
    for which, label, style in (("a", labels[0], "-"), ("b", labels[1], "-.")):
        mean, sd = table[f"mean {which}"], table[f"sd {which}"].fillna(0.0)
        line, = top.plot(table.index, mean, style, label=label)
        top.fill_between(table.index, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
    top.set_ylabel(column.replace("_", " "))
    top.legend(loc="lower right", fontsize=8)
    sd = table["sd of difference"].fillna(0.0)
    bottom.plot(table.index, table["difference"], color="k")
    bottom.fill_between(table.index, table["difference"] - sd, table["difference"] + sd, color="k", alpha=0.15, lw=0)
    bottom.axhline(0.0, color="gray", lw=0.8)
    bottom.set_ylabel(f"{labels[0]} - {labels[1]}")
    step_axis(bottom)
    top.set_title(f"{column.replace('_', ' ')}, {int(table.seeds.iloc[0])} seeds, {where}", fontsize=10)
    return stamp_protocol(fig, config)


CLOCK_STYLES = ("-", "--", "-.", ":")  # one line style per protocol in `clock_figure`
TRAIN_FLOOR = 0.8  # the lower end of `clock_figure`'s train-accuracy panel, where a slip shows


def clock_figure(runs: dict[str, RunResult]) -> plt.Figure:
    """Mean test accuracy ± sd over seeds (top) and mean train accuracy (bottom, from `TRAIN_FLOOR`)
    against the papers' clock (`compare.paper_clock`), with the papers' phase edges (paper (a),
    Tables 1, 2 and 4) and their collapse level (Figure 1). One colour per weight decay, one line
    style per protocol (`paper.protocol_name`), so that each weight decay's protocols pair up."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(2, 1))
    protocols = list(dict.fromkeys(paper.protocol_name(run.config) for run in runs.values()))
    decays = list(dict.fromkeys(run.config.weight_decay for run in runs.values()))
    for label, run in runs.items():
        style = CLOCK_STYLES[protocols.index(paper.protocol_name(run.config)) % len(CLOCK_STYLES)]
        colour = f"C{decays.index(run.config.weight_decay) % 10}"
        stats = run.curves.groupby("step")[["test_accuracy", "train_accuracy"]].agg(["mean", "std"]).fillna(0.0)
        clock = compare.paper_clock(stats.index.to_numpy(float), run.config.lr)
        test, sd = stats[("test_accuracy", "mean")], stats[("test_accuracy", "std")]
        top.plot(clock, test, style, color=colour, label=label)
        top.fill_between(clock, test - sd, test + sd, color=colour, alpha=0.2, lw=0)
        bottom.plot(clock, stats[("train_accuracy", "mean")], style, color=colour)
    for ax in (top, bottom):
        for edge in PAPER_EDGES.values():
            ax.axvline(edge, color="gray", lw=0.8, ls=":")
    for phase, edge in PAPER_EDGES.items():
        top.text(edge, 0.03, f"papers' end of {phase} ", fontsize=7, color="dimgray", va="bottom", ha="right",
                 rotation=90)
    top.axhline(paper.COLLAPSE_TEST_ACCURACY, color="gray", lw=0.8, ls="--", label="papers' level at 1e7 steps")
    top.set_ylabel("test accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("train accuracy")
    bottom.set_ylim(TRAIN_FLOOR, 1.005)
    step_axis(bottom, linthresh=10)
    bottom.set_xlabel(f"steps at the papers' learning rate {compare.PAPER_LR:g} (our steps x our lr / theirs)")
    return stamp_protocol(fig, [run.config for run in runs.values()])

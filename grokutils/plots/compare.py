"""Chapter 08's comparison figure: two runs that differ in one setting, and their per-seed difference."""
from __future__ import annotations

import matplotlib.pyplot as plt

from grokutils import compare
from grokutils.plots.common import stamp_protocol, step_axis
from grokutils.store import RunResult


def paired_figure(run_a: RunResult, run_b: RunResult, labels: tuple[str, str],
                  column: str = "test_accuracy") -> plt.Figure:
    """Top: each run's mean ± sd over seeds; bottom: the per-seed difference a - b, mean ± sd."""
    table = compare.paired_curve(run_a, run_b, column)
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
    title = f"{column.replace('_', ' ')}, {int(table.seeds.iloc[0])} seeds, at the {len(table)} shared checkpoints"
    top.set_title(title, fontsize=10)
    return stamp_protocol(fig, run_a.config)

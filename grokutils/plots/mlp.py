"""The MLP figures and tables of the papers, drawn from a finished run (notebooks 01, 02).

Every function takes a `RunResult` (and its `Phases`) and returns a figure or a table; the
notebooks only call, show and explain.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from grokutils import paper
from grokutils.fits import WIDE_TAIL, with_fit_diagnostics
from grokutils.mlp import with_average_alpha, with_fc1_entropy
from grokutils.phases import HIGH_TRAIN, PEAK_BAND, Phases, paper_edge_steps, shade_phases, smoothed_curves
from grokutils.plots.common import BOOK_WIDTH_IN, band, stamp_protocol, step_axis
from grokutils.store import RunResult


def accuracy_figure(result: RunResult, phases: Phases) -> plt.Figure:
    """Figure 1: train and test accuracy against steps, phases shaded, with the smoothed mean test
    curve the phase rule reads, its peak band and the edges it found (`grokutils.phases`)."""
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    band(ax, result.curves, "train_accuracy", "train")
    band(ax, result.curves, "test_accuracy", "test")
    smoothed = smoothed_curves(result.curves).test_accuracy
    ax.plot(smoothed.index, smoothed.values, color="k", lw=1.2, label="test, smoothed (phase rule)")
    if phases.t_peak is not None:
        ax.axhspan(phases.peak_test_accuracy - PEAK_BAND, phases.peak_test_accuracy, color="k", alpha=0.08, lw=0,
                   label=f"peak band ({PEAK_BAND:g})")
    edges = ((phases.t_peak_start, ":", "peak region starts"), (phases.t_collapse, "--", "fall starts"),
             (phases.t_half_fall, "-.", "half of the held fall"),
             (phases.t_slip, (0, (5, 1, 1, 1, 1, 1)), f"train slips below {HIGH_TRAIN:g}"))
    for step, style, label in edges:
        if step is not None:
            ax.axvline(max(step, 1), color="k", ls=style, lw=1, label=label)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    step_axis(ax)
    ax.legend(loc="upper left", fontsize=7)
    return stamp_protocol(fig, result.config)




def alpha_figure(result: RunResult, phases: Phases, layers=("fc1", "fc2", "average")) -> plt.Figure:
    """Figures 5 and 11: alpha per layer and averaged (mean +- sd), alpha = 2 line, test accuracy."""
    frame = with_average_alpha(result.layers)
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    for layer in layers:
        band(ax, frame[frame.layer == layer], "alpha", f"alpha {layer}", lw=2 if layer == "average" else 1)
    ax.axhline(2.0, color="k", ls="--", lw=1, label="alpha = 2")
    ax.set_ylabel("HTSR alpha")
    step_axis(ax)
    twin = ax.twinx()
    band(twin, result.curves, "test_accuracy", "test accuracy", color="gray", ls=":")
    twin.set_ylabel("test accuracy")
    twin.set_ylim(0, 1.02)
    twin.grid(False)
    ax.legend(loc="upper right", fontsize=8)
    return stamp_protocol(fig, result.config)


def traps_figure(result: RunResult, phases: Phases) -> plt.Figure:
    """Figure 4: correlation traps per layer and averaged over FC1, FC2, against steps."""
    frame = with_average_alpha(result.layers)
    frame["traps"] = frame["traps"].astype(float)
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    for layer in ("fc1", "fc2", "average"):
        band(ax, frame[frame.layer == layer], "traps", f"traps {layer}", lw=2 if layer == "average" else 1)
    ax.set_ylabel("correlation traps (rand_num_spikes)")
    step_axis(ax)
    ax.legend(loc="upper left", fontsize=8)
    return stamp_protocol(fig, result.config)


PROGRESS_MEASURES = {
    "activation_sparsity": "activation sparsity",
    "abs_weight_entropy_fc1": "|w| entropy (FC1)",
    "lcc_paper": "circuit complexity (paper text)",
    "lcc_notebook": "circuit complexity (authors' notebook)",
    "l2_norm": "l2 weight norm",
    "test_accuracy": "test accuracy",
}




def progress_measures_figure(result: RunResult, phases: Phases) -> plt.Figure:
    """Figure 6: the competing progress measures and the l2 norm against steps."""
    frame = with_fc1_entropy(result)
    fig, axes = plt.subplots(3, 2, figsize=(BOOK_WIDTH_IN, 7.5), sharex=True)
    for ax, (column, title) in zip(axes.flat, PROGRESS_MEASURES.items()):
        shade_phases(ax, phases)
        band(ax, frame, column, title)
        ax.set_title(title, fontsize=9)
        step_axis(ax)
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def phase_edge_table(result: RunResult, phases: Phases, column: str, layers: tuple[str, ...],
                     paper_values: dict) -> pd.DataFrame:
    """`column` per layer at our phase edges and at the papers' 1e5/1e6/1e7, beside the paper's.

    Beside each alpha of a fitted layer: the fitted tail's share of the spectrum (`grokutils.fits`),
    marked 'wide' when it exceeds one half.
    """
    frame = with_average_alpha(with_fit_diagnostics(result.layers))
    ours, fixed = phases.edge_steps(), paper_edge_steps(frame.step.unique())
    rows = []
    for layer in layers:
        for phase in paper.PHASES:
            row = {"layer": layer, "phase": phase, "paper": paper.format_value(*paper_values[layer][phase])}
            for label, edges in (("ours, our edge", ours), ("ours, paper's edge", fixed)):
                step = edges.get(phase)
                at = frame[(frame.layer == layer) & (frame.step == step)] if step is not None else frame.iloc[:0]
                tail = at.tail_size.astype(float).mean() if column == "alpha" and layer != "average" else None
                note = "" if tail is None or pd.isna(tail) else \
                    f"; tail {tail:.2f}{' wide' if tail > WIDE_TAIL else ''}"
                row[label] = "not reached" if step is None else f"{paper.mean_sd(at[column])} (step {step:,}{note})"
            rows.append(row)
    return pd.DataFrame(rows).set_index(["layer", "phase"])


def alpha_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 1: alpha of FC1, FC2 and their average per phase, ours beside the paper's."""
    return phase_edge_table(result, phases, "alpha", ("fc1", "fc2", "average"), paper.TABLE1_ALPHA)


def traps_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 2: correlation traps of FC1 and FC2 per phase, ours beside the paper's."""
    paper_values = paper.TABLE2_TRAPS[0.0 if result.config.weight_decay == 0 else 0.01]
    return phase_edge_table(result, phases, "traps", ("fc1", "fc2"), paper_values)




def compare_runs(accuracy_ax: plt.Axes, alpha_ax: plt.Axes, result: RunResult, label: str) -> None:
    """Add one run's mean test accuracy and FC1-FC2 average alpha to two shared axes."""
    band(accuracy_ax, result.curves, "test_accuracy", label)
    averaged = with_average_alpha(result.layers)
    band(alpha_ax, averaged[averaged.layer == "average"], "alpha", label)
    accuracy_ax.set_ylabel("test accuracy")
    alpha_ax.set_ylabel("average alpha (FC1, FC2)")
    alpha_ax.axhline(2.0, color="k", ls="--", lw=1)
    for ax in (accuracy_ax, alpha_ax):
        step_axis(ax)
        ax.legend(fontsize=8)


def comparison_table(runs: dict[str, RunResult]) -> pd.DataFrame:
    """Peak and final test accuracy of the smoothed mean curve (as the phase rule reads it, `find_phases`),
    final alpha, traps and l2 norm of several runs, side by side."""
    from grokutils.phases import find_phases

    table = {}
    for label, result in runs.items():
        phases = find_phases(result.curves)
        averaged = with_average_alpha(result.layers)
        last = averaged[averaged.step == averaged.step.max()]
        table[label] = {
            "peak test accuracy, smoothed": round(phases.peak_test_accuracy, 4),
            "step of peak": phases.t_peak,
            "final test accuracy, smoothed": round(phases.final_test_accuracy, 4),
            "final average alpha": round(float(last[last.layer == "average"].alpha.mean()), 3),
            "final traps FC1": round(float(last[last.layer == "fc1"].traps.astype(float).mean()), 2),
            "final l2 norm": round(float(result.curves[result.curves.step == averaged.step.max()].l2_norm.mean()), 2),
        }
    return pd.DataFrame(table)

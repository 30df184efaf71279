"""The MLP figures and tables of the papers, drawn from a finished run (notebooks 01, 02).

Every function takes a `RunResult` (and its `Phases`) and returns a figure or a table; the
notebooks only call, show and explain.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from grokutils import paper
from grokutils.phases import PAPER_EDGES, Phases, shade_phases
from grokutils.results import RunResult

AVERAGED_LAYERS = ("fc1", "fc2")  # the papers' average alpha is over FC1 and FC2 (paper (b) 4.1)


def _log_steps(ax: plt.Axes) -> None:
    """x axis in steps, log scale with step 0 shown (symlog, linear below 1)."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("optimizer step")


def _band(ax: plt.Axes, frame: pd.DataFrame, column: str, label: str, **style) -> None:
    """Mean over seeds as a line, +- one sd as a band."""
    stats = frame.groupby("step")[column].agg(["mean", "std"]).fillna({"std": 0.0})
    line, = ax.plot(stats.index, stats["mean"], label=label, **style)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                    color=line.get_color(), alpha=0.2, lw=0)


def stamp_protocol(fig: plt.Figure, config) -> plt.Figure:
    """Write the run's protocol, and how it differs from the papers', in small print under a figure."""
    fig.text(0.01, 0.002, paper.protocol_short(config), fontsize=7, color="dimgray", ha="left", va="bottom")
    fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, 0.16))
    return fig


def accuracy_figure(result: RunResult, phases: Phases) -> plt.Figure:
    """Figure 1: train and test accuracy against steps, phases shaded."""
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    _band(ax, result.curves, "train_accuracy", "train")
    _band(ax, result.curves, "test_accuracy", "test")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    _log_steps(ax)
    ax.legend(loc="lower right", fontsize=8)
    return stamp_protocol(fig, result.config)


def with_average_alpha(layers: pd.DataFrame) -> pd.DataFrame:
    """Layer rows plus one 'average' row per (seed, step): mean alpha and traps of FC1, FC2."""
    averaged = (layers[layers.layer.isin(AVERAGED_LAYERS)]
                .groupby(["seed", "step"])[["alpha", "traps"]].mean().reset_index().assign(layer="average"))
    return pd.concat([layers, averaged], ignore_index=True)


def alpha_figure(result: RunResult, phases: Phases, layers=("fc1", "fc2", "average")) -> plt.Figure:
    """Figures 5 and 11: alpha per layer and averaged (mean +- sd), alpha = 2 line, test accuracy."""
    frame = with_average_alpha(result.layers)
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    for layer in layers:
        _band(ax, frame[frame.layer == layer], "alpha", f"alpha {layer}", lw=2 if layer == "average" else 1)
    ax.axhline(2.0, color="k", ls="--", lw=1, label="alpha = 2")
    ax.set_ylabel("HTSR alpha")
    _log_steps(ax)
    twin = ax.twinx()
    _band(twin, result.curves, "test_accuracy", "test accuracy", color="gray", ls=":")
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
        _band(ax, frame[frame.layer == layer], "traps", f"traps {layer}", lw=2 if layer == "average" else 1)
    ax.set_ylabel("correlation traps (rand_num_spikes)")
    _log_steps(ax)
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


def with_fc1_entropy(result: RunResult) -> pd.DataFrame:
    """The curves plus FC1's absolute weight entropy (the authors' notebook uses FC1 only)."""
    fc1 = result.layers[result.layers.layer == "fc1"][["seed", "step", "abs_weight_entropy"]]
    return result.curves.merge(fc1.rename(columns={"abs_weight_entropy": "abs_weight_entropy_fc1"}),
                               on=["seed", "step"])


def progress_measures_figure(result: RunResult, phases: Phases) -> plt.Figure:
    """Figure 6: the competing progress measures and the l2 norm against steps."""
    frame = with_fc1_entropy(result)
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.5), sharex=True)
    for ax, (column, title) in zip(axes.flat, PROGRESS_MEASURES.items()):
        shade_phases(ax, phases)
        _band(ax, frame, column, title)
        ax.set_title(title, fontsize=9)
        _log_steps(ax)
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def _nearest_step(steps: np.ndarray, target: int) -> int | None:
    """The last checkpoint at or before `target`; None if the run ends before it."""
    if target > steps.max():
        return None
    return int(steps[steps <= target].max())


def _mean_sd(values: pd.Series) -> str:
    """'m ± s' over seeds (just 'm' for one seed)."""
    values = values.astype(float)
    if values.isna().all():
        return "fit failed"
    mean = values.mean()
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {values.std():.2f}"


def phase_edge_table(result: RunResult, phases: Phases, column: str, layers: tuple[str, ...],
                     paper_values: dict) -> pd.DataFrame:
    """`column` per layer at our phase edges and at the papers' 1e5/1e6/1e7, beside the paper's."""
    frame = with_average_alpha(result.layers)
    steps = np.sort(frame.step.unique())
    ours, fixed = phases.right_edges(), {n: _nearest_step(steps, t) for n, t in PAPER_EDGES.items()}
    rows = []
    for layer in layers:
        for phase in paper.PHASES:
            row = {"layer": layer, "phase": phase, "paper": paper.format_value(*paper_values[layer][phase])}
            for label, edges in (("ours, our edge", ours), ("ours, paper's edge", fixed)):
                step = edges.get(phase)
                values = frame[(frame.layer == layer) & (frame.step == step)][column] if step is not None else None
                row[label] = "not reached" if step is None else f"{_mean_sd(values)} (step {step:,})"
            rows.append(row)
    return pd.DataFrame(rows).set_index(["layer", "phase"])


def alpha_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 1: alpha of FC1, FC2 and their average per phase, ours beside the paper's."""
    return phase_edge_table(result, phases, "alpha", ("fc1", "fc2", "average"), paper.TABLE1_ALPHA)


def traps_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 2: correlation traps of FC1 and FC2 per phase, ours beside the paper's."""
    paper_values = paper.TABLE2_TRAPS[0.0 if result.config.weight_decay == 0 else 0.01]
    return phase_edge_table(result, phases, "traps", ("fc1", "fc2"), paper_values)


def run_summary(result: RunResult) -> pd.Series:
    """What a reader needs to trust a run: its config, data, device, versions and timings."""
    meta = result.meta
    finished = {seed: status["status"] for seed, status in meta["status"].items()}
    return pd.Series({
        "results folder": result.path.name,
        "seeds": f"{result.config.n_seeds} ({', '.join(f'{s}: {v}' for s, v in finished.items())})",
        "steps per seed": f"{result.config.steps:,}",
        "checkpoints measured": result.curves.groupby("seed").size().iloc[0],
        "data": meta["data_source"],
        "train_x sha256": meta["data_fingerprint"]["train_x"][:16],
        "test_x sha256": meta["data_fingerprint"]["test_x"][:16],
        "device": meta["device"],
        "training time (s)": meta["timings"]["train_s"],
        "measuring time, summed over workers (s)": meta["timings"]["measure_s"],
        "wall time (s)": meta["timings"]["wall_s"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    }, name="value")


def compare_runs(accuracy_ax: plt.Axes, alpha_ax: plt.Axes, result: RunResult, label: str) -> None:
    """Add one run's mean test accuracy and FC1-FC2 average alpha to two shared axes."""
    _band(accuracy_ax, result.curves, "test_accuracy", label)
    averaged = with_average_alpha(result.layers)
    _band(alpha_ax, averaged[averaged.layer == "average"], "alpha", label)
    accuracy_ax.set_ylabel("test accuracy")
    alpha_ax.set_ylabel("average alpha (FC1, FC2)")
    alpha_ax.axhline(2.0, color="k", ls="--", lw=1)
    for ax in (accuracy_ax, alpha_ax):
        _log_steps(ax)
        ax.legend(fontsize=8)


def comparison_table(runs: dict[str, RunResult]) -> pd.DataFrame:
    """Peak and final test accuracy, final alpha and traps of several runs, side by side."""
    table = {}
    for label, result in runs.items():
        mean = result.curves.groupby("step").test_accuracy.mean()
        averaged = with_average_alpha(result.layers)
        last = averaged[averaged.step == averaged.step.max()]
        table[label] = {
            "peak test accuracy": round(float(mean.max()), 4),
            "step of peak": int(mean.idxmax()),
            "final test accuracy": round(float(mean.iloc[-1]), 4),
            "final average alpha": round(float(last[last.layer == "average"].alpha.mean()), 3),
            "final traps FC1": round(float(last[last.layer == "fc1"].traps.astype(float).mean()), 2),
            "final l2 norm": round(float(result.curves[result.curves.step == averaged.step.max()].l2_norm.mean()), 2),
        }
    return pd.DataFrame(table)

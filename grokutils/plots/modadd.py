"""The modular-addition figures (paper (b) Appendix H: Figures 8, 9, 16-18) and the
collapse search's curves, drawn from a finished run; the numbers they show come from
`grokutils.modadd_analysis`."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from grokutils import paper, transformer
from grokutils.config import ModAddConfig
from grokutils.modadd_analysis import changed_settings, dft_energies
from grokutils.phases import PHASE_COLOURS, Phases, shade_phases
from grokutils.plots.common import BOOK_WIDTH_IN, step_axis
from grokutils.spectra import mp_density, powerlaw_density, trap_threshold
from grokutils.store import RunResult


def _per_layer_lines(ax: plt.Axes, layers: pd.DataFrame, column: str) -> None:
    """One line per analyzed layer: its mean over seeds against steps."""
    means = layers.astype({column: float}).groupby(["layer", "step"])[column].mean()
    for layer in transformer.ANALYZED:
        if layer in means.index.get_level_values(0):
            ax.plot(means[layer].index, means[layer].values, label=layer, lw=1.2)


def layers_and_accuracy_figure(result: RunResult, phases: Phases, column: str, ylabel: str) -> plt.Figure:
    """Figure 8 (column 'traps') and its alpha twin: per-layer curves above, accuracy below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(BOOK_WIDTH_IN, 6), sharex=True, height_ratios=(3, 2))
    for ax in (top, bottom):
        shade_phases(ax, phases)
    _per_layer_lines(top, result.layers, column)
    top.set_ylabel(ylabel)
    top.legend(fontsize=7, ncol=4, loc="upper left")
    accuracy = result.curves.groupby("step")[["train_accuracy", "test_accuracy"]].mean()
    bottom.plot(accuracy.index, accuracy.train_accuracy, label="train")
    bottom.plot(accuracy.index, accuracy.test_accuracy, label="test")
    bottom.set_ylabel("accuracy")
    bottom.set_ylim(0, 1.02)
    bottom.legend(fontsize=8, loc="center left")
    step_axis(bottom)
    fig.tight_layout()
    return fig


def esd_figure(result: RunResult, phases: Phases, layer: str = "embed", seed: int = 0) -> plt.Figure:
    """Figures 9 and 18: per phase, the ESD of X(W) with its power-law fit (log-log, top) and
    the ESD of X(W_rand), rescaled as WeightWatcher fits it, with the MP fit and its edge (bottom)."""
    present = {phase: step for phase, step in phases.edge_steps().items() if step is not None}
    fig, axes = plt.subplots(2, len(present), figsize=(3.8 * len(present), 6.4), squeeze=False)
    for col, (phase, step) in enumerate(present.items()):
        row = result.layers.query("seed == @seed and step == @step and layer == @layer").iloc[0]
        evals = result.array(seed, step, layer, "evals").astype(float)
        evals = evals[evals > 1e-12 * evals.max()]
        bins = np.geomspace(evals.min(), evals.max(), 30)
        top = axes[0, col]
        top.hist(evals, bins=bins, density=True, color="tab:blue", alpha=0.6, label="ESD of X(W)")
        if np.isfinite(row.alpha):
            grid = np.geomspace(row.xmin, evals.max(), 50)
            tail = float((evals >= row.xmin).mean())
            top.plot(grid, tail * powerlaw_density(grid, row.alpha, row.xmin, None), "r-",
                     label=f"PL fit, alpha = {row.alpha:.2f}")
        top.set_xscale("log"), top.set_yscale("log")
        top.set_title(f"{phase}, step {step:,}", fontsize=9)
        top.legend(fontsize=7)
        _rand_panel(axes[1, col], result.array(seed, step, layer, "rand_evals").astype(float), row)
    axes[0, 0].set_ylabel(f"{layer}: density")
    axes[1, 0].set_ylabel(f"{layer} shuffled: density")
    fig.tight_layout()
    return fig


def _rand_panel(ax: plt.Axes, rand_evals: np.ndarray, row: pd.Series) -> None:
    """Histogram of the rescaled W_rand ESD, its MP fit, and the trap threshold.

    WeightWatcher counts traps on its own shuffle (`traps`, in the title); the histogram
    shows ours (`grokutils.measures.shuffled`), an independent draw of the same kind.
    """
    scaled = rand_evals * len(rand_evals) / rand_evals.sum()  # WeightWatcher rescales to mean 1
    ax.hist(scaled, bins=40, density=True, color="mediumorchid", alpha=0.6, label="ESD of X(W_rand)")
    q, m = max(row.N, row.M) / min(row.N, row.M), int(min(row.N, row.M))
    if row.rand_sigma_mp > 0:
        grid = np.linspace(1e-3, scaled.max() * 1.05, 400)
        ax.plot(grid, mp_density(grid, q, row.rand_sigma_mp), "k-",
                label=f"MP fit, sigma = {row.rand_sigma_mp:.3f}")
        threshold = trap_threshold(row.rand_sigma_mp, q, m)
        ax.axvline(threshold, color="k", ls="--", lw=1, label="lambda_plus + TW")
        beyond = int((scaled > threshold).sum())
        ax.set_title(f"traps: {row.traps} (WeightWatcher), {beyond} here", fontsize=9)
    ax.set_xlabel("eigenvalue (rescaled)")
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)


def dft_figure(result: RunResult, phases: Phases, seed: int = 0) -> plt.Figure:
    """Figures 16 and 17: token-DFT energy against frequency, one line per phase, paper's frequencies marked."""
    present = {phase: step for phase, step in phases.edge_steps().items() if step is not None}
    fig, axes = plt.subplots(3, 1, figsize=(BOOK_WIDTH_IN, 7.5), sharex=True)
    for phase, step in present.items():
        for ax, (matrix, energy) in zip(axes, dft_energies(result, seed, step).items()):
            ax.plot(np.arange(len(energy)), energy, lw=1, color=PHASE_COLOURS[phase], label=f"{phase} ({step:,})")
            ax.set_ylabel(f"{matrix}\nenergy fraction", fontsize=8)
    for ax in axes:
        for frequency in paper.MODADD_TABLE10_FREQUENCIES:
            ax.axvline(frequency, color="gray", ls=":", lw=0.8)
    axes[0].legend(fontsize=7, loc="upper center")
    axes[-1].set_xlabel("frequency k (dotted: the paper's 6, 16, 49, 64, 97, 107)")
    fig.tight_layout()
    return fig


def kernel_figure(result: RunResult, phases: Phases, seed: int = 0) -> plt.Figure:
    """The rule kernel k(Delta) on test pairs per phase (left) and its power spectrum (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(BOOK_WIDTH_IN, 3.4))
    for phase, step in phases.edge_steps().items():
        if step is None:
            continue
        kernel = result.array(seed, step, "logits", "kernel_test").astype(float)
        style = dict(color=PHASE_COLOURS[phase], lw=1, label=f"{phase} ({step:,})")
        left.plot(np.arange(len(kernel)), kernel, **style)
        right.plot(np.arange(len(kernel)), transformer.kernel_spectrum(kernel), **style)
    left.set_xlabel("Delta = z - (x + y) mod p")
    left.set_ylabel("k(Delta): mean centered logit")
    right.set_xlabel("frequency")
    right.set_ylabel("power fraction")
    left.legend(fontsize=7)
    fig.tight_layout()
    return fig


def search_figure(base: ModAddConfig, runs: list[RunResult]) -> plt.Figure:
    """The search's curves: one panel per run, train and test accuracy (raw, and test smoothed as
    the phase rule reads it) against steps, titled by what the run changed."""
    from grokutils.phases import smoothed_curves

    columns = min(2, len(runs))  # two panels a row: the book shows them at near full size
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(BOOK_WIDTH_IN, 3.0 * rows), squeeze=False, sharey=True)
    for ax, result in zip(axes.flat, runs):
        accuracy = result.curves.groupby("step")[["train_accuracy", "test_accuracy"]].mean()
        ax.plot(accuracy.index, accuracy.train_accuracy, label="train", lw=1)
        ax.plot(accuracy.index, accuracy.test_accuracy, label="test", lw=1)
        ax.plot(accuracy.index, smoothed_curves(result.curves).test_accuracy, color="k", lw=0.8, label="test, smoothed")
        changed = textwrap.fill(changed_settings(base, result.config), 42)
        ax.set_title(f"{changed}\n{result.config.steps:,} steps", fontsize=8)
        ax.set_ylim(0, 1.02)
        step_axis(ax)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel("accuracy")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig

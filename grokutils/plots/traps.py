"""The correlation-trap figures and tables (papers' Figures 2-4, Tables 2 and 4),
and the spectrum panels (ESD with its power-law or MP fit) that the prototype and alarm chapters reuse."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, NullFormatter, ScalarFormatter

from grokutils.paper import mean_sd
from grokutils.phases import shade_phases
from grokutils.plots.common import BOOK_WIDTH_IN, stamp_protocol, step_axis
from grokutils.spectra import powerlaw_density
from grokutils.traps import MPFit, fit_rand_spectrum


def plot_mp_fit(ax: plt.Axes, fit: MPFit, title: str = "") -> None:
    """ESD of W_rand over log10(eigenvalue), raw units, its MP fit, lambda_plus, + TW margin, traps.

    A log axis keeps traps orders of magnitude beyond the bulk in view; the histogram and
    the MP curve are both densities of log10(lambda), so they are comparable by eye.
    """
    raw = fit.evals / fit.scale
    logs = np.log10(raw[raw > 0])
    bins = np.linspace(logs.min(), max(logs.max(), np.log10(fit.threshold / fit.scale)) + 0.05, 60)
    ax.hist(logs, bins=bins, density=True, color="mediumorchid", alpha=0.45, label="ESD of W_rand")
    x = np.geomspace(max(fit.lambda_minus, 1e-6 * fit.lambda_plus), fit.lambda_plus, 400)[1:-1]
    ax.plot(np.log10(x / fit.scale), fit.density(x) * x * np.log(10), color="red", lw=1.5,
            label=f"MP fit, sigma_mp={fit.sigma_mp:.3f}")
    ax.axvline(np.log10(fit.lambda_plus / fit.scale), color="red", ls=":", lw=1, label="lambda_plus")
    ax.axvline(np.log10(fit.threshold / fit.scale), color="red", ls="--", lw=1, label="lambda_plus + TW")
    if fit.traps:
        ax.plot(np.log10(fit.trap_evals / fit.scale), np.full(fit.traps, ax.get_ylim()[1] * 0.06), "v",
                color="black", ms=7, label=f"{fit.traps} trap(s)")
    ax.set_xlabel("log10 eigenvalue of X(W_rand)")
    ax.set_ylabel("density of log10")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def plot_powerlaw_fit(ax: plt.Axes, evals: np.ndarray, alpha: float, xmin: float, xmax: float | None,
                      title: str = "") -> None:
    """ESD of W on log-log axes, the power-law fit of its tail, xmin and xmax marked."""
    positive = np.sort(evals[evals > 0])
    bins = np.geomspace(positive.min(), positive.max() * 1.05, 40)
    ax.hist(positive, bins=bins, density=True, color="tab:blue", alpha=0.5, label="ESD of W")
    if np.isfinite(alpha):
        top = xmax if xmax and np.isfinite(xmax) else np.inf
        tail_fraction = np.mean((positive >= xmin) & (positive <= top))  # the share the fit describes
        x = np.geomspace(xmin, xmax if xmax and np.isfinite(xmax) else positive.max(), 100)
        ax.plot(x, tail_fraction * powerlaw_density(x, alpha, xmin, xmax), color="red", lw=1.5,
                label=f"PL fit, alpha={alpha:.2f}")
        ax.axvline(xmin, color="purple", ls="--", lw=1, label="xmin")
        if xmax and np.isfinite(xmax):
            ax.axvline(xmax, color="gray", ls=":", lw=1, label="xmax")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("eigenvalue of X(W)")
    ax.set_ylabel("density")
    ax.set_title(title + ("" if np.isfinite(alpha) else " (PL fit failed)"), fontsize=9)
    ax.legend(fontsize=7)


def checkpoints_to_show(result, phases) -> dict[int, str]:
    """Step -> label: the start, the right edge of each phase reached, best test, the end."""
    best = result.curves.groupby("step").test_accuracy.mean().idxmax()
    labelled = [(0, "init"), *((step, f"end of {name}") for name, step in phases.right_edges().items()),
                (int(best), "best test"), (phases.t_end, "final")]
    shown: dict[int, str] = {}
    for step, label in labelled:
        shown[int(step)] = f"{shown[int(step)]} = {label}" if int(step) in shown else label
    return dict(sorted(shown.items()))


def esd_grid_figure(result, seed: int, steps: Mapping[int, str], layers: tuple[str, ...] = ("fc1", "fc2"),
                    with_w: bool = True) -> plt.Figure:
    """Figures 2 and 3 per checkpoint and layer: ESD of W with its PL fit (if `with_w`), ESD of
    W_rand with its MP fit, edge, TW margin and traps."""
    per_layer = 2 if with_w else 1
    fig, axes = plt.subplots(len(steps), per_layer * len(layers), squeeze=False,
                             figsize=(BOOK_WIDTH_IN / 2 * per_layer * len(layers), 3.2 * len(steps)))
    table = result.layers.set_index(["seed", "step", "layer"])
    for row, (step, label) in enumerate(steps.items()):
        for col, layer in enumerate(layers):
            fields = table.loc[(seed, step, layer)]
            if with_w:
                evals = result.array(seed, step, layer, "evals").astype(np.float64)
                plot_powerlaw_fit(axes[row, per_layer * col], evals, fields.alpha, fields.xmin, fields.xmax,
                                  title=f"{layer}: W, step {step:,}\n{label}")
            rand_evals = result.array(seed, step, layer, "rand_evals").astype(np.float64)
            plot_mp_fit(axes[row, per_layer * col + per_layer - 1],
                        fit_rand_spectrum(rand_evals, (int(fields.N), int(fields.M))),
                        title=f"{layer}: W_rand, step {step:,}\n{label}")
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def trap_example_steps(refit: pd.DataFrame, phases, seed: int) -> dict[int, str]:
    """Figure 3's checkpoints: right before the collapse and the last one; without a collapse,
    the checkpoint whose largest W_rand eigenvalue came closest to the threshold."""
    mine = refit[refit.seed == seed]
    if mine.empty:
        raise ValueError(f"no refitted spectra for seed {seed}; seeds: {sorted(refit.seed.unique())}")
    if phases.t_collapse is not None:
        before = int(mine.step[mine.step < phases.t_collapse].max())
        return {before: "right before the collapse", int(mine.step.max()): "end of training"}
    closest = mine.sort_values("max_over_threshold", kind="stable").iloc[-1]
    return {int(closest.step): f"no collapse in this run: closest to a trap ({closest.layer})"}


def largest_eigenvalue_figure(refit: pd.DataFrame, phases) -> plt.Figure:
    """Largest eigenvalue of X(W_rand) over the trap threshold, per layer, against steps."""
    fig, ax = plt.subplots()
    shade_phases(ax, phases)
    for layer, frame in refit.groupby("layer"):
        stats = frame.groupby("step").max_over_threshold.agg(["mean", "min", "max"])
        line, = ax.plot(stats.index, stats["mean"], label=layer)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="threshold (traps above)")
    step_axis(ax)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    low, high = ax.get_ylim()
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.1f") if high / low < 10 else NullFormatter())
    ax.set_ylabel("lambda_max(W_rand) / (lambda_plus + TW)")
    ax.legend(fontsize=8)
    return fig


KS_COLUMNS = {"sigma_mp": ".3f", "ks": ".4f", "p_value": ".3g", "traps": ".1f"}  # Table 4, with formats


def ks_table(refit: pd.DataFrame, edges: Mapping[str, int | None], paper_values: Mapping[str, dict],
             layer: str = "fc1") -> pd.DataFrame:
    """Table 4: sigma_mp, KS statistic, p-value and traps of `layer` at each phase's edge step."""
    rows = []
    for phase, reported in paper_values.items():
        step = edges.get(phase)
        frame = refit[(refit.layer == layer) & (refit.step == step)]
        row = {"phase": phase, "step": "not reached" if step is None or frame.empty else f"{step:,}"}
        for column, spec in KS_COLUMNS.items():
            row[f"{column} (ours)"] = "not reached" if frame.empty else mean_sd(frame[column], spec)
            row[f"{column} (paper)"] = f"{reported[column]:{spec.replace('f', 'g') if column == 'traps' else spec}}"
        row["traps (weightwatcher, run)"] = "not reached" if frame.empty else mean_sd(frame.traps_weightwatcher, ".1f")
        rows.append(row)
    return pd.DataFrame(rows).set_index("phase")


def trap_count_table(refit: pd.DataFrame, edges: Mapping[str, int | None], paper_values: Mapping[str, dict],
                     layers: tuple[str, ...] = ("fc1", "fc2")) -> pd.DataFrame:
    """Table 2: traps per layer at each phase's edge step, mean ± sd over seeds, two counts."""
    rows = []
    for layer in layers:
        for phase, reported in paper_values[layer].items():
            step = edges.get(phase)
            frame = refit[(refit.layer == layer) & (refit.step == step)]
            reached = step is not None and len(frame) > 0
            rows.append({"layer": layer, "phase": phase, "step": f"{step:,}" if reached else "not reached",
                         "weightwatcher (run)": (mean_sd(frame.traps_weightwatcher, ".1f") if reached
                                                 else "not reached"),
                         "ours (stored shuffle)": mean_sd(frame.traps, ".1f") if reached else "not reached",
                         "paper": reported[0] if reported[1] is None else f"{reported[0]:g} ± {reported[1]:g}"})
    return pd.DataFrame(rows).set_index(["layer", "phase"])

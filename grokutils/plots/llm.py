"""Per-matrix HTSR alpha of a large language model (paper (b) Figure 10)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from grokutils.htsr import ALPHA_LINE
from grokutils.tools.llm import ALPHA_HIGH


def plot_alpha_histogram(table: pd.DataFrame, ax=None, bins: int = 30, label: str | None = None):
    """Histogram of alpha with warning lines at 2 and 6 (paper (b) Figure 10); returns the Axes."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3.5))[1]
    alpha = table["alpha"].dropna()
    ax.hist(alpha, bins=bins, color="tab:blue", alpha=0.8, label=label or f"{len(alpha)} matrices")
    for bound in (ALPHA_LINE, ALPHA_HIGH):
        ax.axvline(bound, color="tab:red", linestyle="--", linewidth=1.2)
    ax.set(xlabel=r"HTSR $\alpha$", ylabel="matrices")
    ax.legend(frameon=False)
    return ax


def plot_alpha_by_depth(table: pd.DataFrame, ax=None):
    """Alpha of every matrix inside the blocks against block index, by kind, median per block."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3.5))[1]
    in_blocks = table.dropna(subset=["block", "alpha"])
    for (kind, rows), marker in zip(in_blocks.groupby("kind"), "osD^v<>"):
        ax.scatter(rows["block"].astype(int), rows["alpha"], s=18, marker=marker, alpha=0.7, label=kind)
    median = in_blocks.groupby("block")["alpha"].median()
    ax.plot(median.index.astype(int), median.to_numpy(), color="black", linewidth=1.5, label="median")
    for bound in (ALPHA_LINE, ALPHA_HIGH):
        ax.axhline(bound, color="tab:red", linestyle="--", linewidth=1.0)
    ax.set(xlabel="block (depth)", ylabel=r"HTSR $\alpha$")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax

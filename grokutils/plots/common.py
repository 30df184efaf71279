"""What every figure shares: the notebooks' `setup()`, the step axis, mean +- sd bands, the protocol stamp."""
from __future__ import annotations

import logging
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from grokutils import paper

# Set (to "1") in the environment of kernels that no frontend shows: `grokutils.tools.execute`
# (papermill, `make book`) and the nbval tests set it. There, interactive widgets draw a static
# figure instead: their messages can leave nbclient waiting for a reply the kernel has already
# sent, until the cell's time limit (nbclient issue 312; our issue 35).
BATCH_VARIABLE = "GROKUTILS_BATCH"


def in_batch() -> bool:
    """Whether this kernel runs without a frontend (`BATCH_VARIABLE` set): no live widgets."""
    return os.environ.get(BATCH_VARIABLE, "") not in ("", "0")


def setup(level: int = logging.WARNING) -> None:
    """Notebook-wide settings, applied visibly: plot style, figure resolution, logging."""
    import matplotlib_inline.backend_inline

    matplotlib_inline.backend_inline.set_matplotlib_formats("png")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (7, 4),
                         "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def digit_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int = 10) -> plt.Figure:
    """A grid of the first `per_class` digits of each class: one row per class."""
    classes = sorted(set(labels.tolist()))
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.6, len(classes) * 0.6))
    for row, digit in enumerate(classes):
        examples = images[labels == digit][:per_class]  # (per_class, 784)
        for col, ax in enumerate(axes[row]):
            ax.imshow(examples[col].reshape(28, 28).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        axes[row, 0].set_ylabel(str(digit), rotation=0, labelpad=10, va="center")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def image_28(ax: plt.Axes, vector: np.ndarray, title: str = "", cmap: str = "RdBu_r") -> None:
    """Show a 784-vector as a 28x28 image, colour scale symmetric about zero."""
    vector = np.asarray(vector).reshape(28, 28)
    limit = float(np.abs(vector).max()) or 1.0
    ax.imshow(vector, cmap=cmap, vmin=-limit, vmax=limit)
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    ax.set_title(title, fontsize=9)


STAMP_MARGIN_INCHES = 0.7  # below the lowest axes: its tick labels and x label, then the protocol stamp


def step_axis(ax: plt.Axes, linthresh: float = 1) -> None:
    """x axis in optimizer steps: log scale that still shows step 0 (symlog, linear below `linthresh`)."""
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xlim(left=0)
    ax.set_xlabel("optimizer step")


def band(ax: plt.Axes, frame: pd.DataFrame, column: str, label: str, **style) -> None:
    """Mean over seeds as a line, +- one sd as a band."""
    stats = frame.groupby("step")[column].agg(["mean", "std"]).fillna({"std": 0.0})
    line, = ax.plot(stats.index, stats["mean"], label=label, **style)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                    color=line.get_color(), alpha=0.2, lw=0)


def stamp_protocol(fig: plt.Figure, config) -> plt.Figure:
    """Write the run's protocol, and how it differs from the papers', in small print under a figure."""
    fig.text(0.01, 0.002, paper.protocol_short(config), fontsize=7, color="dimgray", ha="left", va="bottom")
    fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, STAMP_MARGIN_INCHES / fig.get_figheight()))
    return fig

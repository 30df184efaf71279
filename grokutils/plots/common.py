"""What every figure shares: the notebooks' `setup()`, the step axis, mean +- sd bands, the protocol stamp."""
from __future__ import annotations

import json
import logging
import os

import matplotlib.pyplot as plt
import matplotlib.text
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


# The widest a cell's output is shown in the built book (sphinx-book-theme, a window of 1,440 px,
# both sidebars open; tests/test_book.py measures it): a wider figure is shrunk to it.
BOOK_OUTPUT_WIDTH_PX = 768
BOOK_WIDTH_IN = 7.6  # a figure this wide or narrower is shown at its own size (at 100 dpi)
MIN_TEXT_PX = 9.0  # the smallest text a figure may show at that width
# The PNG text chunk in which every figure a notebook shows records its smallest text (`setup`):
# JSON with "points", "dpi" and "text". The book test reads it back from the built book's images.
TEXT_RECORD_KEY = "grokutils-smallest-text"


def smallest_text(fig: plt.Figure) -> tuple[float, str]:
    """The font size in points of `fig`'s smallest visible text (tick labels, legends, titles,
    the protocol stamp), and that text; (inf, "") for a figure without text."""
    fig.draw_without_rendering()  # creates the tick labels
    texts = [text for text in fig.findobj(matplotlib.text.Text)
             if text.get_visible() and text.get_text().strip() and text.get_window_extent().width > 0]
    if not texts:
        return float("inf"), ""
    text = min(texts, key=lambda text: text.get_fontsize())
    return text.get_fontsize(), text.get_text()


def book_scale(fig: plt.Figure) -> float:
    """How much the book shrinks `fig`: 1, or less for a figure wider than BOOK_OUTPUT_WIDTH_PX."""
    return min(1.0, BOOK_OUTPUT_WIDTH_PX / (fig.get_figwidth() * fig.dpi))


def shown_text_px(points: float, dpi: float, scale: float) -> float:
    """How tall text of `points` is on screen in an image drawn at `dpi` and shown `scale` times its size."""
    return points * dpi / 72 * scale


def legible(fig: plt.Figure) -> plt.Figure:
    """Enlarge every text of `fig` that the book would show under MIN_TEXT_PX to that size
    (tick labels included); larger text is left as it is."""
    fig.draw_without_rendering()
    smallest_pt = MIN_TEXT_PX / shown_text_px(1, fig.dpi, book_scale(fig))
    for text in fig.findobj(matplotlib.text.Text):
        if text.get_fontsize() < smallest_pt:
            text.set_fontsize(smallest_pt)
    for ax in fig.axes:  # tick labels made at later draws take their axis' size, not the Text's
        for axis in (ax.xaxis, ax.yaxis):
            for which, labels in (("major", axis.get_ticklabels()), ("minor", axis.get_ticklabels(minor=True))):
                if any(label.get_fontsize() < smallest_pt for label in labels):
                    axis.set_tick_params(which=which, labelsize=smallest_pt)
    return fig


def figure_png(fig: plt.Figure) -> str:
    """How a notebook shows a figure (`setup`): made `legible`, drawn as a base64 PNG cropped
    to its content, its smallest text recorded under TEXT_RECORD_KEY."""
    from IPython.core.pylabtools import print_figure

    points, text = smallest_text(legible(fig))
    record = json.dumps({"points": points, "dpi": fig.dpi, "text": text[:80]})
    return print_figure(fig, "png", base64=True, metadata={TEXT_RECORD_KEY: record})


def setup(level: int = logging.WARNING) -> None:
    """Notebook-wide settings, applied visibly: plot style, figure resolution, logging; every
    figure shown afterwards goes through `figure_png` (no text under MIN_TEXT_PX in the book)."""
    import matplotlib_inline.backend_inline
    from IPython import get_ipython

    matplotlib_inline.backend_inline.set_matplotlib_formats("png")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (7, 4),
                         "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(plt.Figure, figure_png)


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
STAMP_LINE_INCHES = 1.2 * 7 / 72  # each further line of a stamp: 7-pt text at 1.2 line spacing


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
    """Write the run's protocol, and how it differs from the papers', in small print under a
    figure; the figure's text enlarged where the book would show it too small (`legible`). A list
    of configs stamps one line per distinct protocol, for a figure that sets protocols side by side."""
    configs = config if isinstance(config, (list, tuple)) else [config]
    lines = list(dict.fromkeys(paper.protocol_short(one) for one in configs))
    stamp = fig.text(0.01, 0.002, "\n".join(lines), fontsize=7, color="dimgray", ha="left", va="bottom")
    legible(fig)
    extra_lines = (len(lines) - 1) * STAMP_LINE_INCHES
    margin = (STAMP_MARGIN_INCHES + extra_lines) * stamp.get_fontsize() / 7  # grows with the stamp's font and lines
    fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, margin / fig.get_figheight()))
    return fig

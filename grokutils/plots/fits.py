"""Fit diagnostics beside alpha: tail size, xmin and the fixed-tail sensitivity check."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from grokutils.fits import ALPHA_LINE, WIDE_TAIL
from grokutils.phases import Phases, shade_phases
from grokutils.plots.common import BOOK_WIDTH_IN, band, stamp_protocol, step_axis

ALPHA_COLUMNS = {"alpha": "WeightWatcher (xmin by KS)", "alpha_top10": "top 10% of eigenvalues",
                 "alpha_top25": "top 25% of eigenvalues"}


def fit_diagnostics_figure(fits: pd.DataFrame, phases: Phases, config, layers=("fc1", "fc2")) -> plt.Figure:
    """Per layer: alpha three ways (left) and the fitted tail's size and xmin (right), mean +- sd over seeds.

    `fits` is `grokutils.fits.fixed_tail_alpha(result)`.
    """
    fig, axes = plt.subplots(len(layers), 2, figsize=(BOOK_WIDTH_IN, 3.2 * len(layers)), sharex=True, squeeze=False)
    for row, layer in enumerate(layers):
        mine = fits[fits.layer == layer]
        left, right = axes[row]
        for ax in (left, right):
            shade_phases(ax, phases)
        for column, label in ALPHA_COLUMNS.items():
            if column in mine:
                band(left, mine, column, label, lw=2 if column == "alpha" else 1)
        left.axhline(ALPHA_LINE, color="k", ls="--", lw=1)
        left.set_ylabel(f"{layer}: alpha")
        band(right, mine, "tail_size", "tail size (fitted / all)", color="tab:purple")
        right.axhline(WIDE_TAIL, color="tab:purple", ls=":", lw=1, label=f"flag: tail > {WIDE_TAIL:g}")
        right.set_ylim(0, 1.02)
        right.set_ylabel(f"{layer}: tail size")
        twin = right.twinx()
        band(twin, mine, "xmin", "xmin", color="tab:brown", ls="--")
        twin.set_yscale("log")
        twin.set_ylabel("xmin (eigenvalue)")
        twin.grid(False)
        for ax in (left, right):
            step_axis(ax)
        if row == 0:
            left.legend(fontsize=7, loc="upper right")
            right.legend(handles=right.get_lines()[:2] + twin.get_lines()[:1], fontsize=7, loc="upper left")
    fig.tight_layout()
    return stamp_protocol(fig, config)

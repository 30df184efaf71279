"""Phase boundaries derived from the curves: pre-grokking, grokking, anti-grokking.

The rule, applied to the mean train and test accuracy over seeds:

* pre-grokking runs from step 0 to `t_fit`, the first checkpoint where train accuracy
  reaches `fit_level` (the network has memorized the training set, test accuracy is low);
* grokking runs from `t_fit` to `t_peak`, the checkpoint of highest test accuracy;
* anti-grokking starts at `t_collapse`, the first checkpoint after the peak where test
  accuracy has fallen more than `collapse_drop` below the peak, and runs to the end.
  Without such a checkpoint there is no anti-grokking phase in the run.

If train accuracy never reaches `fit_level`, the whole run is pre-grokking. The right edges
of the phases (t_fit, t_peak, last step) are where the tables read their values, next to
the papers' fixed edges 1e5, 1e6 and 1e7.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAPER_EDGES = {"pre-grokking": 100_000, "grokking": 1_000_000, "anti-grokking": 10_000_000}
PHASE_COLOURS = {"pre-grokking": "tab:blue", "grokking": "tab:green", "anti-grokking": "tab:red"}


@dataclass(frozen=True)
class Phases:
    """Phase edges in steps; None where a phase was not reached."""

    t_fit: int | None  # end of pre-grokking
    t_peak: int | None  # end of grokking: best mean test accuracy
    t_collapse: int | None  # start of anti-grokking
    t_end: int  # last step
    peak_test_accuracy: float
    final_test_accuracy: float

    def spans(self) -> dict[str, tuple[int, int]]:
        """Phase name -> (first step, last step), for the phases present."""
        if self.t_fit is None:
            return {"pre-grokking": (0, self.t_end)}
        spans = {"pre-grokking": (0, self.t_fit), "grokking": (self.t_fit, self.t_peak)}
        if self.t_collapse is not None:
            spans["anti-grokking"] = (self.t_collapse, self.t_end)
        return spans

    def table(self) -> pd.Series:
        """The edges and accuracies for display; 'not reached' where a phase is absent."""
        values = dataclasses.asdict(self)
        return pd.Series({name: "not reached" if value is None else
                          (f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
                          for name, value in values.items()}, name="value")

    def right_edges(self) -> dict[str, int]:
        """Phase name -> the step whose values the tables report for it."""
        return {name: (self.t_end if name == "anti-grokking" else end) for name, (_, end) in self.spans().items()}


def find_phases(curves: pd.DataFrame, fit_level: float = 1.0, collapse_drop: float = 0.05) -> Phases:
    """Apply the documented rule to curves with columns seed, step, train/test_accuracy."""
    if curves.empty:
        raise ValueError("curves is empty: no checkpoint was measured")
    mean = curves.groupby("step")[["train_accuracy", "test_accuracy"]].mean().sort_index()
    fitted = mean.index[mean.train_accuracy >= fit_level]
    t_end = int(mean.index.max())
    final = float(mean.test_accuracy.iloc[-1])
    if len(fitted) == 0:
        return Phases(None, None, None, t_end, float(mean.test_accuracy.max()), final)
    t_fit = int(fitted[0])
    after_fit = mean.loc[t_fit:]
    t_peak = int(after_fit.test_accuracy.idxmax())
    peak = float(after_fit.test_accuracy.max())
    fallen = mean.loc[t_peak:].index[mean.loc[t_peak:].test_accuracy < peak - collapse_drop]
    t_collapse = int(fallen[0]) if len(fallen) else None
    return Phases(t_fit, t_peak, t_collapse, t_end, peak, final)


def shade_phases(ax, phases: Phases, alpha: float = 0.12) -> None:
    """Shade the phases on an axis whose x is steps (symlog scale, so step 0 is drawn)."""
    for name, (start, end) in phases.spans().items():
        ax.axvspan(start, end, color=PHASE_COLOURS[name], alpha=alpha, lw=0, label=name)


def paper_edge_steps(steps: np.ndarray) -> dict[str, int | None]:
    """Phase -> the last checkpoint at or before the papers' edge (1e5, 1e6, 1e7); None past the run."""
    steps = np.sort(np.asarray(steps))
    return {phase: (int(steps[steps <= edge].max()) if edge <= steps.max() else None)
            for phase, edge in PAPER_EDGES.items()}

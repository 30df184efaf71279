"""Phase boundaries derived from the curves, noise-aware: pre-grokking, grokking, anti-grokking,
and the stretch where the training fit is lost.

The one rule every chapter uses, applied to one seed's curves or to the mean over seeds:

1. **Smoothing.** Train and test accuracy are smoothed by a centred moving median on the
   log-step axis: the value at a checkpoint is the median of all checkpoints whose
   log10(step + 1) lies within `SMOOTHING_DECADES` / 2 of its own (0.2 decades in all, about
   four checkpoints of a 100-checkpoint log-spaced run; fewer at the run's two ends). A
   one-checkpoint spike or dip does not survive it; a fall that lasts does. Every accuracy
   this module reports (peaks, falls, minima) is a smoothed one.
2. **Pre-grokking** runs from step 0 to `t_fit`, the first checkpoint where smoothed train
   accuracy reaches `FIT_LEVEL` (1.0: the training set is memorized).
3. **Grokking** runs from `t_fit` to `t_peak`, the checkpoint of highest smoothed test
   accuracy at or after `t_fit`. The *peak region* is the stretch of checkpoints around it
   where smoothed test accuracy stays within `PEAK_BAND` (0.02) of that maximum:
   `t_peak_start` is its first checkpoint.
4. **The fall is split where the training fit slips.** `t_slip` is the first checkpoint after
   the peak where smoothed train accuracy is below `HIGH_TRAIN` (0.99); `t_held_end` is the
   checkpoint before it, or the last step if train never slips. The *held fall* is the
   smoothed peak minus smoothed test accuracy at `t_held_end`: what the model loses with its
   training set still fitted. The *further fall* is what it loses after that, to the end,
   with `lowest_train` the lowest smoothed train accuracy from the slip on.
5. **Anti-grokking** is the papers' phenomenon: a held fall of at least `COLLAPSE_DROP`
   (0.05). Read at `t_held_end`, the fall must last until then (a dip that recovers while
   train is held does not count). The phase starts at `t_collapse`, the first checkpoint from
   which the curve stays out of the peak region up to `t_held_end`, and ends at `t_held_end`.
   `t_drop` is the first checkpoint from which it stays `COLLAPSE_DROP` below the peak up to
   there; `t_half_fall`, the first where half of the held fall is lost.
6. **Fit lost**: from `t_slip` to the end, if train slips after the peak. It is reported
   beside the phases, never counted as anti-grokking.

If train accuracy never reaches `FIT_LEVEL`, the whole run is pre-grokking. The step that
stands for each phase in every table (`Phases.edge_steps`) is its right edge: `t_fit`,
`t_peak` and `t_held_end` (the last step with the fit held); `claim_steps` gives those or the
papers' fixed 1e5, 1e6 and 1e7 steps. `Phases.verdict` states both parts of a fall once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grokutils.prose import say

PHASES = ("pre-grokking", "grokking", "anti-grokking")
PAPER_EDGES = {"pre-grokking": 100_000, "grokking": 1_000_000, "anti-grokking": 10_000_000}
PHASE_COLOURS = {"pre-grokking": "tab:blue", "grokking": "tab:green", "anti-grokking": "tab:red"}
FIT_LOST = "fit lost"  # the stretch after the slip, shaded beside the phases
FIT_LOST_COLOUR = "tab:gray"

SMOOTHING_DECADES = 0.2  # width of the moving-median window on log10(step + 1)
FIT_LEVEL = 1.0  # smoothed train accuracy that ends pre-grokking
PEAK_BAND = 0.02  # the peak region: smoothed test accuracy within this of its maximum
COLLAPSE_DROP = 0.05  # anti-grokking: a held fall of at least this much
HIGH_TRAIN = 0.99  # the training fit is held while smoothed train accuracy is at least this
SCALES = ("own edges", "paper scale")  # where claims are read: each run's own phase edges, or the papers' steps


def smooth(steps, values, decades: float = SMOOTHING_DECADES) -> np.ndarray:
    """Centred moving median of `values` over a window of `decades` on log10(step + 1)."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if steps.shape != values.shape:
        raise ValueError(f"steps and values must have one shape, got {steps.shape} and {values.shape}")
    logs = np.log10(steps + 1.0)
    half = decades / 2
    return np.array([np.nanmedian(values[np.abs(logs - at) <= half + 1e-12]) for at in logs])


@dataclass(frozen=True)
class Phases:
    """Phase edges in steps (None where not reached) and the smoothed accuracies they rest on."""

    t_fit: int | None  # end of pre-grokking: smoothed train accuracy reaches FIT_LEVEL
    t_peak: int | None  # end of grokking: highest smoothed test accuracy
    t_collapse: int | None  # start of anti-grokking: out of the peak region from here to t_held_end
    t_end: int  # last step
    peak_test_accuracy: float  # smoothed, at t_peak (over the whole run if it never fits)
    final_test_accuracy: float  # smoothed, at the last step
    t_peak_start: int | None = None  # first checkpoint of the peak region
    t_drop: int | None = None  # from here to t_held_end, smoothed test stays COLLAPSE_DROP below the peak
    t_half_fall: int | None = None  # first checkpoint with half of the held fall lost
    t_held_end: int | None = None  # last checkpoint with the fit held after the peak (t_end if it never slips)
    held_test_accuracy: float = float("nan")  # smoothed test accuracy at t_held_end
    t_slip: int | None = None  # first checkpoint after the peak with smoothed train below HIGH_TRAIN
    lowest_train: float = float("nan")  # lowest smoothed train accuracy from t_slip on (nan without a slip)

    @property
    def train_held(self) -> bool:
        """True if smoothed train accuracy stays at or above HIGH_TRAIN from the peak to the end."""
        return self.t_fit is not None and self.t_slip is None

    @property
    def fall(self) -> float:
        """The whole fall: smoothed peak minus smoothed final test accuracy."""
        return self.peak_test_accuracy - self.final_test_accuracy

    @property
    def held_fall(self) -> float:
        """The anti-grokking depth: smoothed peak minus smoothed test accuracy at t_held_end (0 unfitted)."""
        return 0.0 if self.t_held_end is None else self.peak_test_accuracy - self.held_test_accuracy

    @property
    def further_fall(self) -> float:
        """What is lost after the slip: test at t_held_end minus test at the end (0 without a slip)."""
        return 0.0 if self.t_slip is None else self.held_test_accuracy - self.final_test_accuracy

    @property
    def collapsed(self) -> bool:
        """True if the run anti-groks by the rule: a held fall of at least COLLAPSE_DROP."""
        return self.t_collapse is not None

    def spans(self) -> dict[str, tuple[int, int]]:
        """Phase name -> (first step, last step), for the phases present, then FIT_LOST if train slipped."""
        if self.t_fit is None:
            return {"pre-grokking": (0, self.t_end)}
        spans = {"pre-grokking": (0, self.t_fit), "grokking": (self.t_fit, self.t_peak)}
        if self.t_collapse is not None:
            spans["anti-grokking"] = (self.t_collapse, self.t_held_end)
        if self.t_slip is not None:
            spans[FIT_LOST] = (self.t_slip, self.t_end)
        return spans

    def edge_steps(self) -> dict[str, int | None]:
        """Every phase -> the step whose values stand for it (its right edge); None where not reached."""
        spans = self.spans()
        return {name: spans[name][1] if name in spans else None for name in PHASES}

    def right_edges(self) -> dict[str, int]:
        """Phase name -> the step whose values the tables report for it, for the phases present."""
        return {name: step for name, step in self.edge_steps().items() if step is not None}

    def verdict_values(self) -> dict:
        """What the seed's verdict states: the edges, both parts of the fall, whether it anti-groks by
        the rule (`collapsed`) and the rule's bar (`drop`)."""
        return {**dataclasses.asdict(self), "collapsed": self.collapsed, "held_fall": self.held_fall,
                "further_fall": self.further_fall, "drop": COLLAPSE_DROP}

    def verdict(self) -> str:
        """Both parts of the fall in one clause (templates/phases.j2, `verdict`): the one wording every
        table and chapter uses."""
        return say("phases.verdict", self.verdict_values())

    def table(self) -> pd.Series:
        """The edges and accuracies for display; 'not reached' where a phase is absent."""
        values = {**dataclasses.asdict(self), "held_fall": self.held_fall, "further_fall": self.further_fall,
                  "fall": self.fall, "train_held": self.train_held}
        return pd.Series({name: "not reached" if value is None else str(value) if isinstance(value, bool) else
                          (f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
                          for name, value in values.items()}, name="value")


def _first_from_which(steps: np.ndarray, condition: np.ndarray) -> int | None:
    """First step from which `condition` holds through the last step; None if it fails at the end."""
    if not condition[-1]:
        return None
    failing = np.flatnonzero(~condition)
    return int(steps[failing[-1] + 1]) if len(failing) else int(steps[0])


def phases_of_curve(steps, train, test) -> Phases:
    """The rule of this module on one curve (one seed, or a mean over seeds), ordered by step."""
    order = np.argsort(np.asarray(steps))
    steps = np.asarray(steps)[order].astype(np.int64)
    train, test = smooth(steps, np.asarray(train)[order]), smooth(steps, np.asarray(test)[order])
    t_end = int(steps[-1])
    fitted = np.flatnonzero(train >= FIT_LEVEL - 1e-12)
    if len(fitted) == 0:
        return Phases(None, None, None, t_end, float(np.nanmax(test)), float(test[-1]))
    start = fitted[0]
    i_peak = start + int(np.nanargmax(test[start:]))
    peak = float(test[i_peak])
    in_band = test >= peak - PEAK_BAND
    i_first = i_peak  # walk back to the start of the peak region (not before t_fit)
    while i_first > start and in_band[i_first - 1]:
        i_first -= 1
    slipped = np.flatnonzero(train[i_peak:] < HIGH_TRAIN)
    i_slip = i_peak + int(slipped[0]) if len(slipped) else None
    i_held = len(steps) - 1 if i_slip is None else max(i_peak, i_slip - 1)
    held = slice(i_peak, i_held + 1)
    t_collapse = t_drop = t_half = None
    if peak - test[i_held] >= COLLAPSE_DROP:
        t_collapse = _first_from_which(steps[held], ~in_band[held])
        t_drop = _first_from_which(steps[held], test[held] <= peak - COLLAPSE_DROP)
        t_half = int(steps[held][np.flatnonzero(test[held] <= peak - (peak - test[i_held]) / 2)[0]])
    return Phases(int(steps[start]), int(steps[i_peak]), t_collapse, t_end, peak, float(test[-1]),
                  t_peak_start=int(steps[i_first]), t_drop=t_drop, t_half_fall=t_half, t_held_end=int(steps[i_held]),
                  held_test_accuracy=float(test[i_held]), t_slip=None if i_slip is None else int(steps[i_slip]),
                  lowest_train=float("nan") if i_slip is None else float(np.nanmin(train[i_slip:])))


def best_raw_step(curves: pd.DataFrame) -> int:
    """The first step of highest raw test accuracy in `curves` (one seed): the 'best' checkpoint whose
    weights a run keeps (`grokutils.engine.key_steps`), and a curve's peak where it never fits the
    training set (then the phase rule has no smoothed peak, `Phases.t_peak`)."""
    return int(curves.loc[curves.test_accuracy.idxmax(), "step"])


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean train and test accuracy over seeds, one row per step (index: step)."""
    if curves.empty:
        raise ValueError("curves is empty: no checkpoint was measured")
    return curves.groupby("step")[["train_accuracy", "test_accuracy"]].mean().sort_index()


def find_phases(curves: pd.DataFrame) -> Phases:
    """The phases of the mean over seeds of curves with columns seed, step, train/test_accuracy."""
    mean = mean_curves(curves)
    return phases_of_curve(mean.index.values, mean.train_accuracy.values, mean.test_accuracy.values)


def seed_phases(curves: pd.DataFrame) -> dict[int, Phases]:
    """The phases of each seed on its own."""
    if curves.empty:
        raise ValueError("curves is empty: no checkpoint was measured")
    return {int(seed): find_phases(frame) for seed, frame in curves.groupby("seed")}


def smoothed_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The smoothed mean train and test accuracy that `find_phases` reads (index: step)."""
    mean = mean_curves(curves)
    return pd.DataFrame({column: smooth(mean.index.values, mean[column].values) for column in mean.columns},
                        index=mean.index)


def with_int_steps(table: pd.DataFrame, columns) -> pd.DataFrame:
    """`columns` of `table` as nullable integer steps (a phase not reached is <NA>, not NaN), in place."""
    for column in columns:
        table[column] = pd.array(table[column].tolist(), dtype="Int64")
    return table


STEP_COLUMNS = ("t_fit", "t_peak_start", "t_peak", "t_collapse", "t_drop", "t_half_fall", "t_held_end", "t_slip")


def collapse_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per seed: its phase edges, the smoothed peak, the held fall (the anti-grokking depth),
    the further fall after the slip with the lowest train accuracy, whether it anti-groks, and its verdict."""
    rows = []
    for seed, phases in seed_phases(curves).items():
        rows.append({"seed": seed, **{column: getattr(phases, column) for column in STEP_COLUMNS},
                     "peak_test_accuracy": phases.peak_test_accuracy,
                     "held_test_accuracy": phases.held_test_accuracy,
                     "final_test_accuracy": phases.final_test_accuracy, "held_fall": phases.held_fall,
                     "further_fall": phases.further_fall, "fall": phases.fall, "lowest_train": phases.lowest_train,
                     "train_held": phases.train_held, "collapsed": phases.collapsed, "verdict": phases.verdict()})
    return with_int_steps(pd.DataFrame(rows).set_index("seed"), STEP_COLUMNS)


def paper_edge_steps(steps: np.ndarray) -> dict[str, int | None]:
    """Phase -> the last checkpoint at or before the papers' edge (1e5, 1e6, 1e7); None past the run."""
    steps = np.sort(np.asarray(steps))
    return {phase: (int(steps[steps <= edge].max()) if edge <= steps.max() else None)
            for phase, edge in PAPER_EDGES.items()}


def claim_steps(curves: pd.DataFrame, scale: str = "own edges") -> dict[str, int | None]:
    """Phase -> the checkpoint a claim about that phase is read at; None if not reached.

    'paper scale': the last checkpoint at or before the papers' 1e5, 1e6 and 1e7 steps.
    'own edges': each phase at its own right edge, found by this module's rule on the mean curves
    (`Phases.edge_steps`): a run at another learning rate runs another clock, and even at the
    papers' the phases need not fall at their steps.
    """
    if scale == "paper scale":
        return paper_edge_steps(curves.step.unique())
    if scale != "own edges":
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return find_phases(curves).edge_steps()


def shade_phases(ax, phases: Phases, alpha: float = 0.12) -> None:
    """Shade the phases, and the stretch with the fit lost, on an axis whose x is steps (symlog scale,
    so step 0 is drawn)."""
    for name, (start, end) in phases.spans().items():
        ax.axvspan(start, end, color=PHASE_COLOURS.get(name, FIT_LOST_COLOUR), alpha=alpha, lw=0, label=name)


def rule_text() -> str:
    """The phase rule in one sentence, with its constants, for a chapter's prose."""
    return (f"test and train accuracy smoothed by a moving median over {SMOOTHING_DECADES:g} decades of steps; "
            f"pre-grokking until smoothed train accuracy reaches {FIT_LEVEL:g}; grokking until the smoothed "
            f"test peak, whose region is where the curve stays within {PEAK_BAND:g} of it; the fall after the "
            f"peak split where smoothed train accuracy first drops below {HIGH_TRAIN:g}; anti-grokking when the "
            f"part before that slip (or to the end, if train never slips) is at least {COLLAPSE_DROP:g}, from where "
            "the curve leaves the peak region to the last checkpoint with the fit held; what is lost after the "
            "slip is reported as a further fall, with the training fit lost")

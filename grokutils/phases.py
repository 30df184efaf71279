"""Phase boundaries derived from the curves, noise-aware: pre-grokking, grokking, anti-grokking.

The one rule every chapter uses, applied to one seed's curves or to the mean over seeds:

1. **Smoothing.** Train and test accuracy are smoothed by a centred moving median on the
   log-step axis: the value at a checkpoint is the median of all checkpoints whose
   log10(step + 1) lies within `SMOOTHING_DECADES` / 2 of its own (0.2 decades in all, about
   four checkpoints of a 100-checkpoint log-spaced run; fewer at the run's two ends). A
   one-checkpoint spike or dip does not survive it; a fall that lasts does.
2. **Pre-grokking** runs from step 0 to `t_fit`, the first checkpoint where smoothed train
   accuracy reaches `FIT_LEVEL` (1.0: the training set is memorized).
3. **Grokking** runs from `t_fit` to `t_peak`, the checkpoint of highest smoothed test
   accuracy at or after `t_fit`. The *peak region* is the stretch of checkpoints around it
   where smoothed test accuracy stays within `PEAK_BAND` (0.02) of that maximum:
   `t_peak_start` is its first checkpoint, and the curve leaves it for good after its last.
4. **Anti-grokking** needs a *sustained* fall with the training set still fitted: smoothed
   test accuracy at the last checkpoint is at least `COLLAPSE_DROP` (0.05) below the smoothed
   peak, so that the curve has fallen by that much and stays down to the end, and smoothed
   train accuracy stays at or above `HIGH_TRAIN` (0.99) from the peak to the end. The phase
   starts at `t_collapse`, the first checkpoint after the curve has left the peak region for
   good (where the fall begins), and runs to the end. `t_drop` is the first checkpoint from
   which the smoothed curve stays `COLLAPSE_DROP` below the peak; `t_half_fall`, the first
   where it has lost half of its final fall (`fall`, smoothed peak minus smoothed end).

If train accuracy never reaches `FIT_LEVEL`, the whole run is pre-grokking. The step that
stands for each phase in every table (`Phases.edge_steps`) is its right edge: `t_fit`,
`t_peak`, and the last step if the run collapsed; `claim_steps` gives those or the papers'
fixed 1e5, 1e6 and 1e7 steps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

PHASES = ("pre-grokking", "grokking", "anti-grokking")
PAPER_EDGES = {"pre-grokking": 100_000, "grokking": 1_000_000, "anti-grokking": 10_000_000}
PHASE_COLOURS = {"pre-grokking": "tab:blue", "grokking": "tab:green", "anti-grokking": "tab:red"}

SMOOTHING_DECADES = 0.2  # width of the moving-median window on log10(step + 1)
FIT_LEVEL = 1.0  # smoothed train accuracy that ends pre-grokking
PEAK_BAND = 0.02  # the peak region: smoothed test accuracy within this of its maximum
COLLAPSE_DROP = 0.05  # a collapse: smoothed test accuracy ends at least this far below its peak
HIGH_TRAIN = 0.99  # ... while smoothed train accuracy stays at least this from the peak on
SCALES = ("accelerated", "paper scale")  # where claims are read: our own edges, or the papers' steps


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
    t_collapse: int | None  # start of anti-grokking: the curve has left the peak region for good
    t_end: int  # last step
    peak_test_accuracy: float  # smoothed, at t_peak (over the whole run if it never fits)
    final_test_accuracy: float  # smoothed, at the last step
    t_peak_start: int | None = None  # first checkpoint of the peak region
    t_drop: int | None = None  # from here on, smoothed test accuracy stays COLLAPSE_DROP below the peak
    t_half_fall: int | None = None  # first checkpoint with half of the final fall lost
    train_held: bool = False  # smoothed train accuracy >= HIGH_TRAIN from the peak to the end

    @property
    def fall(self) -> float:
        """Smoothed peak minus smoothed final test accuracy."""
        return self.peak_test_accuracy - self.final_test_accuracy

    @property
    def collapsed(self) -> bool:
        """True if the run has an anti-grokking phase by the rule."""
        return self.t_collapse is not None

    def spans(self) -> dict[str, tuple[int, int]]:
        """Phase name -> (first step, last step), for the phases present."""
        if self.t_fit is None:
            return {"pre-grokking": (0, self.t_end)}
        spans = {"pre-grokking": (0, self.t_fit), "grokking": (self.t_fit, self.t_peak)}
        if self.t_collapse is not None:
            spans["anti-grokking"] = (self.t_collapse, self.t_end)
        return spans

    def edge_steps(self) -> dict[str, int | None]:
        """Every phase -> the step whose values stand for it (its right edge); None where not reached."""
        spans = self.spans()
        return {name: (None if name not in spans else self.t_end if name == "anti-grokking" else spans[name][1])
                for name in PHASES}

    def right_edges(self) -> dict[str, int]:
        """Phase name -> the step whose values the tables report for it, for the phases present."""
        return {name: step for name, step in self.edge_steps().items() if step is not None}

    def table(self) -> pd.Series:
        """The edges and accuracies for display; 'not reached' where a phase is absent."""
        values = {**dataclasses.asdict(self), "fall": self.fall}
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
    peak, final = float(test[i_peak]), float(test[-1])
    in_band = test >= peak - PEAK_BAND
    i_first = i_peak  # walk back to the start of the peak region (not before t_fit)
    while i_first > start and in_band[i_first - 1]:
        i_first -= 1
    after = slice(i_peak, None)
    train_held = bool(np.all(train[after] >= HIGH_TRAIN))
    t_collapse = t_drop = t_half = None
    if peak - final >= COLLAPSE_DROP and train_held:
        t_collapse = _first_from_which(steps[after], ~in_band[after])
        t_drop = _first_from_which(steps[after], test[after] <= peak - COLLAPSE_DROP)
        t_half = int(steps[after][np.flatnonzero(test[after] <= peak - (peak - final) / 2)[0]])
    return Phases(int(steps[start]), int(steps[i_peak]), t_collapse, t_end, peak, final,
                  t_peak_start=int(steps[i_first]), t_drop=t_drop, t_half_fall=t_half, train_held=train_held)


@dataclass(frozen=True)
class FallSplit:
    """One curve's fall from its smoothed test peak, split where smoothed train accuracy first
    drops below HIGH_TRAIN after the peak (`split_fall`). All accuracies smoothed."""

    t_peak: int | None  # the smoothed test peak at or after t_fit; None if the curve never fits
    peak: float
    t_held_end: int | None  # last checkpoint before the slip (the last step if train never slips)
    held_fall: float  # peak minus test at t_held_end: the fall with the training set still fitted
    t_slip: int | None  # first checkpoint after the peak with train below HIGH_TRAIN; None: held to the end
    further_fall: float  # test at t_held_end minus test at the end: the fall after the slip (0 without one)
    lowest_train: float  # lowest train accuracy from the slip on (nan without a slip)
    final: float  # test at the last step

    @property
    def anti_groks(self) -> bool:
        """The papers' anti-grokking: a fall of at least COLLAPSE_DROP with train held."""
        return self.held_fall >= COLLAPSE_DROP

    def verdict(self) -> str:
        """Both parts of the fall in one clause."""
        if self.t_peak is None:
            return "never fits its training set"
        if self.anti_groks:
            words = (f"anti-groks by {self.held_fall:.3f} with train held (steps {self.t_peak:,} to "
                     f"{self.t_held_end:,})")
        else:
            words = f"falls {self.held_fall:.3f} with train held, under the {COLLAPSE_DROP:g} bar"
        if self.t_slip is not None:
            words += (f", then loses its training fit from step {self.t_slip:,} (train down to "
                      f"{self.lowest_train:.3f}) and falls {self.further_fall:.3f} more")
        return words


def split_fall(steps, train, test) -> FallSplit:
    """Split one curve's fall (one seed, or a mean) at the first checkpoint after the test peak
    where smoothed train accuracy is below HIGH_TRAIN. The part before is the anti-grokking
    depth, read at the last checkpoint before that slip (a fall that lasts until train slips);
    the part after, the further fall to the end, with the lowest train accuracy it reaches.
    Peak and smoothing as in `phases_of_curve`."""
    order = np.argsort(np.asarray(steps))
    steps = np.asarray(steps)[order].astype(np.int64)
    train, test = smooth(steps, np.asarray(train)[order]), smooth(steps, np.asarray(test)[order])
    fitted = np.flatnonzero(train >= FIT_LEVEL - 1e-12)
    if len(fitted) == 0:
        return FallSplit(None, float(np.nanmax(test)), None, 0.0, None, 0.0, float("nan"), float(test[-1]))
    i_peak = fitted[0] + int(np.nanargmax(test[fitted[0]:]))
    slipped = np.flatnonzero(train[i_peak:] < HIGH_TRAIN)
    i_slip = i_peak + int(slipped[0]) if len(slipped) else None
    i_held = len(steps) - 1 if i_slip is None else max(i_peak, i_slip - 1)
    peak, held, final = float(test[i_peak]), float(test[i_held]), float(test[-1])
    return FallSplit(int(steps[i_peak]), peak, int(steps[i_held]), peak - held,
                     None if i_slip is None else int(steps[i_slip]), 0.0 if i_slip is None else held - final,
                     float("nan") if i_slip is None else float(np.nanmin(train[i_slip:])), final)


def fall_split_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per seed: `split_fall` of its curves, and its verdict."""
    rows = []
    for seed, frame in curves.sort_values("step").groupby("seed"):
        split = split_fall(frame.step.values, frame.train_accuracy.values, frame.test_accuracy.values)
        rows.append({"seed": int(seed), **dataclasses.asdict(split), "anti_groks": split.anti_groks,
                     "verdict": split.verdict()})
    table = pd.DataFrame(rows).set_index("seed")
    for column in ("t_peak", "t_held_end", "t_slip"):
        table[column] = pd.array(table[column].tolist(), dtype="Int64")
    return table


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


def collapse_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per seed: its phase edges, smoothed peak, end and fall, whether train held, collapsed."""
    rows = []
    for seed, phases in seed_phases(curves).items():
        rows.append({"seed": seed, "t_fit": phases.t_fit, "t_peak_start": phases.t_peak_start, "t_peak": phases.t_peak,
                     "t_collapse": phases.t_collapse, "t_half_fall": phases.t_half_fall, "t_drop": phases.t_drop,
                     "peak_test_accuracy": phases.peak_test_accuracy,
                     "final_test_accuracy": phases.final_test_accuracy, "fall": phases.fall,
                     "train_held": phases.train_held, "collapsed": phases.collapsed})
    table = pd.DataFrame(rows).set_index("seed")
    for column in ("t_fit", "t_peak_start", "t_peak", "t_collapse", "t_half_fall", "t_drop"):
        table[column] = pd.array(table[column].tolist(), dtype="Int64")
    return table


def paper_edge_steps(steps: np.ndarray) -> dict[str, int | None]:
    """Phase -> the last checkpoint at or before the papers' edge (1e5, 1e6, 1e7); None past the run."""
    steps = np.sort(np.asarray(steps))
    return {phase: (int(steps[steps <= edge].max()) if edge <= steps.max() else None)
            for phase, edge in PAPER_EDGES.items()}


def claim_steps(curves: pd.DataFrame, scale: str = "accelerated") -> dict[str, int | None]:
    """Phase -> the checkpoint a claim about that phase is read at; None if not reached.

    'paper scale': the last checkpoint at or before the papers' 1e5, 1e6 and 1e7 steps.
    'accelerated': another learning rate runs another clock, so each phase is read at its
    own right edge by this module's rule on the mean curves (`Phases.edge_steps`).
    """
    if scale == "paper scale":
        return paper_edge_steps(curves.step.unique())
    if scale != "accelerated":
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return find_phases(curves).edge_steps()


def shade_phases(ax, phases: Phases, alpha: float = 0.12) -> None:
    """Shade the phases on an axis whose x is steps (symlog scale, so step 0 is drawn)."""
    for name, (start, end) in phases.spans().items():
        ax.axvspan(start, end, color=PHASE_COLOURS[name], alpha=alpha, lw=0, label=name)


def rule_text() -> str:
    """The phase rule in one sentence, with its constants, for a chapter's prose."""
    return (f"test and train accuracy smoothed by a moving median over {SMOOTHING_DECADES:g} decades of steps; "
            f"pre-grokking until smoothed train accuracy reaches {FIT_LEVEL:g}; grokking until the smoothed "
            f"test peak, whose region is where the curve stays within {PEAK_BAND:g} of it; anti-grokking only "
            f"if smoothed test accuracy ends at least {COLLAPSE_DROP:g} below its peak (a fall that stays down to "
            f"the end) with smoothed train accuracy at or above {HIGH_TRAIN:g} after the peak, starting where the "
            "curve leaves the peak region for good")

"""A data-free early-warning monitor for any PyTorch training run: HTSR alpha and traps.

The papers read two signals in the weights alone as a warning of generalization collapse:
a layer's power-law exponent alpha falling below 2, and correlation traps appearing
(Prakash and Martin, arXiv 2506.04434 and 2602.02859). `Monitor` watches them in a running
training loop:

    monitor = Monitor(model, total_steps=10_000, log_path="htsr_log.csv")
    for step in range(1, 10_001):
        ...                                   # forward, backward, optimizer.step()
        monitor.step(step)                    # the one added line
        if monitor.should_stop:               # optional: stop on the first alarm
            break
    monitor.close()                           # or: with Monitor(...) as monitor: ...

How it works and what it promises:

* `step(n)` is called with the number of optimizer steps done (call `step(0)` before the
  first one to record the initialization). When `n` reaches the next step of the schedule
  (log-spaced over `total_steps` by default, `grokutils.train.log_spaced_steps`), the weights
  of every analyzed layer are copied to CPU float64 numpy arrays, and that copy is analyzed
  by `grokutils.htsr.analyze_matrices` in a background worker; training goes on at once.
  At most `max_pending` copies wait for the worker; beyond that `step` waits for the oldest
  (memory stays bounded and the log holds every scheduled step).
* Analyzed layers: every `nn.Linear` and every `nn.Conv1d/2d/3d` (transposed convolutions
  are skipped), whose weight matrix has a shorter side of 10 to 15,000 (the eigenvalue counts
  WeightWatcher analyzes by default; a 10-class output layer is in, a 2-class one is not;
  a layer with fewer than 100 eigenvalues has its trap count pooled over 5 shuffles, see
  `grokutils.htsr`). A convolution weight (out, in, k...) is unfolded to the matrix
  (out, in * prod(k)) that it applies to each input patch (im2col). This is NOT what
  WeightWatcher does with Conv2d layers (it slices the kernel into k_h * k_w matrices of
  shape (out, in) and pools their eigenvalues), so conv alphas differ from `ww.analyze`;
  Linear layers match it exactly. Pass `layers=[...]` to choose layers by module name.
* An alarm is a layer with alpha < `alpha_threshold` (2) or more than `max_traps` (0)
  traps. A failed power-law fit (alpha NaN) raises no alpha alarm. The monitor then issues
  an `AlarmWarning` (once per layer and kind of alarm, on the training thread, at the first
  `step` call after the analysis finished), sets `monitor.should_stop`, and, with
  `raise_on_alarm=True`, raises `AlarmStop` from that `step` call.
* Every analyzed (step, layer) is one row of a tidy log (`monitor.log`), written atomically
  (temporary file, then rename) to `log_path` (`.csv` or `.parquet`) after each analysis.
* A worker that fails never stops training: an analysis that raises, or a worker process
  that dies, is logged with `logging` and recorded in the log's `error` column; a dead
  worker process is replaced (up to `MAX_WORKER_RESTARTS` times, then monitoring stops).
* `worker="process"` (default) analyzes in a spawned process: training keeps its own
  numpy random state and Python's GIL. `worker="thread"` starts faster but reseeds numpy's
  global generator (WeightWatcher shuffles with it) inside the training process.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from grokutils.figures import stamp_protocol
from grokutils.htsr import analyze_matrices, import_weightwatcher
from grokutils.measures import shuffle_seed
from grokutils.train import log_spaced_steps

log = logging.getLogger(__name__)

ALPHA_THRESHOLD = 2.0  # HTSR: alpha < 2 reads as an over-fitted, very heavy-tailed layer
MAX_WORKER_RESTARTS = 3  # dead worker processes replaced before monitoring gives up
LOG_SUFFIXES = (".csv", ".parquet")
MIN_SIDE, MAX_SIDE = 10, 15_000  # weightwatcher skips matrices with fewer / more eigenvalues
# The first columns of the log, in this order; the analyzer's other columns follow.
LOG_COLUMNS = ["step", "layer", "rows", "cols", "alpha", "traps", "alarm", "reason", "error"]
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class AlarmWarning(UserWarning):
    """A layer's alpha fell below the threshold or correlation traps appeared."""


class AlarmStop(RuntimeError):
    """Raised by `Monitor.step` on an alarm when the monitor was made with raise_on_alarm=True."""

    def __init__(self, message: str, alarms: pd.DataFrame):
        super().__init__(message)
        self.alarms = alarms  # the log rows that alarmed


def as_matrix(tensor: torch.Tensor) -> torch.Tensor | None:
    """The analyzed 2-D view of a weight: 2-D as is, conv (out, in, k...) as (out, in*prod(k)).

    None if it is not floating point, not at least 2-D, or has a shorter side outside
    [MIN_SIDE, MAX_SIDE] (WeightWatcher's default min_evals and max_evals).
    """
    if not tensor.is_floating_point() or tensor.ndim < 2:
        return None
    matrix = tensor if tensor.ndim == 2 else tensor.reshape(tensor.shape[0], -1)
    return matrix if MIN_SIDE <= min(matrix.shape) <= MAX_SIDE else None


def analyzed_modules(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """Module name -> module for the Linear and Conv layers analyzed (all, or those named)."""
    found = {name: module for name, module in model.named_modules()
             if isinstance(module, (nn.Linear, *CONV_TYPES)) and as_matrix(module.weight) is not None}
    if layers is None:
        if not found:
            raise ValueError(f"the model has no nn.Linear or nn.Conv1d/2d/3d layer whose shorter side is "
                             f"between {MIN_SIDE} and {MAX_SIDE}")
        return found
    unknown = [name for name in layers if name not in found]
    if unknown or not layers:
        raise ValueError(f"layers must name analyzable Linear/Conv modules, got {list(layers)!r}; "
                         f"available: {sorted(found)}")
    return {name: found[name] for name in layers}


def snapshot(modules: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """Copies of the analyzed weights as CPU float64 numpy matrices (training may go on)."""
    with torch.no_grad():
        return {name: as_matrix(module.weight.detach()).to("cpu", torch.float64, copy=True).numpy()
                for name, module in modules.items()}


def analyze_snapshot(step: int, matrices: dict[str, np.ndarray], seed: int,
                     analyzer: Callable = analyze_matrices, analyze_kwargs: dict | None = None) -> pd.DataFrame:
    """Run in the worker: the analyzer's rows for one snapshot, with step and matrix shape."""
    frame = analyzer(matrices, seed=shuffle_seed(seed, step), **(analyze_kwargs or {}))
    frame = frame.rename_axis("layer").reset_index()
    shapes = {name: matrix.shape for name, matrix in matrices.items()}
    frame.insert(0, "step", step)
    frame["rows"] = [shapes[name][0] for name in frame.layer]
    frame["cols"] = [shapes[name][1] for name in frame.layer]
    return frame


def alarm_reasons(frame: pd.DataFrame, alpha_threshold: float = ALPHA_THRESHOLD,
                  max_traps: int = 0) -> pd.Series:
    """Per row, why it alarms ('alpha 1.83 < 2', '3 traps', both joined by '; ') or ''."""
    alpha = pd.to_numeric(frame["alpha"], errors="coerce")
    traps = pd.to_numeric(frame["traps"], errors="coerce")
    low_alpha = (alpha < alpha_threshold).fillna(False)
    trapped = (traps > max_traps).fillna(False)
    reasons = []
    for a, t, is_low, is_trapped in zip(alpha, traps, low_alpha, trapped):
        parts = ([f"alpha {a:.2f} < {alpha_threshold:g}"] if is_low else []) + \
                ([f"{int(t)} trap{'s' if t != 1 else ''}"] if is_trapped else [])
        reasons.append("; ".join(parts))
    return pd.Series(reasons, index=frame.index, dtype=object)


def error_rows(step: int, matrices: dict[str, np.ndarray], error: str) -> pd.DataFrame:
    """Log rows recording that the analysis of one snapshot failed."""
    return pd.DataFrame({"step": step, "layer": list(matrices),
                         "rows": [m.shape[0] for m in matrices.values()],
                         "cols": [m.shape[1] for m in matrices.values()],
                         "alpha": np.nan, "traps": pd.array([pd.NA] * len(matrices), dtype="Int64"),
                         "error": error})


def tidy_log(frames: Iterable[pd.DataFrame], alpha_threshold: float = ALPHA_THRESHOLD,
             max_traps: int = 0) -> pd.DataFrame:
    """One row per (step, layer), LOG_COLUMNS first, with the alarm flag and its reason."""
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame({column: [] for column in LOG_COLUMNS})
    table = pd.concat(frames, ignore_index=True)
    table["traps"] = pd.to_numeric(table["traps"], errors="coerce").astype("Int64")
    table["error"] = table["error"].fillna("") if "error" in table else ""
    table["reason"] = alarm_reasons(table, alpha_threshold, max_traps)
    table["alarm"] = table["reason"] != ""
    others = [column for column in table.columns if column not in LOG_COLUMNS]
    return table[LOG_COLUMNS + others].sort_values(["step"], kind="stable").reset_index(drop=True)


def write_log(table: pd.DataFrame, path: Path) -> None:
    """Write the log as CSV or Parquet (by suffix) into a temporary file, then rename it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        table.to_parquet(temporary, index=False)
    else:
        table.to_csv(temporary, index=False)
    os.replace(temporary, path)


def read_log(path: Path | str) -> pd.DataFrame:
    """A monitor log written by `write_log` (CSV or Parquet)."""
    path = Path(path)
    if path.suffix not in LOG_SUFFIXES:
        raise ValueError(f"log must end in one of {LOG_SUFFIXES}, got {path.name!r}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    text_columns = ("layer", "reason", "error")  # read as written: '' stays '', a layer 'NA' stays 'NA'
    numeric = [column for column in pd.read_csv(path, nrows=0).columns if column not in text_columns]
    table = pd.read_csv(path, dtype={column: str for column in text_columns}, keep_default_na=False,
                        na_values={column: [""] for column in numeric})
    table["traps"] = table["traps"].astype("Int64")
    return table


def _stacklevel_outside_module() -> int:
    """The warnings stacklevel, seen from its caller, of the first frame outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _lost(future: Future) -> bool:
    """True for a future that will never get its result: unfinished, cancelled or broken."""
    return not future.done() or future.cancelled() or isinstance(future.exception(), BrokenProcessPool)


def _worker_init() -> None:
    """Worker process: one thread for torch and WeightWatcher imported once, up front."""
    torch.set_num_threads(1)
    import_weightwatcher()


@dataclass(eq=False)  # compared by identity: fields hold arrays
class _Pending:
    """One snapshot being analyzed."""

    step: int
    matrices: dict[str, np.ndarray]
    future: Future
    executor: Executor


class Monitor:
    """Watch alpha and traps of a model's Linear/Conv layers while it trains (module docstring)."""

    def __init__(self, model: nn.Module, total_steps: int | None = None, *,
                 steps: Iterable[int] | None = None, n_checkpoints: int = 40,
                 log_path: Path | str | None = None, layers: Sequence[str] | None = None,
                 alpha_threshold: float = ALPHA_THRESHOLD, max_traps: int = 0,
                 raise_on_alarm: bool = False, worker: str = "process", max_pending: int = 4,
                 seed: int = 0, analyzer: Callable = analyze_matrices, analyze_kwargs: dict | None = None):
        """Args:
            total_steps: analyze at `log_spaced_steps(total_steps, n_checkpoints)`; or give
                `steps`, the exact steps to analyze.
            log_path: where the log is written (.csv or .parquet); None keeps it in memory.
            layers: module names to analyze; None analyzes every Linear and Conv layer.
            seed: with the step, seeds the W_rand shuffle (`grokutils.measures.shuffle_seed`).
            analyzer: called in the worker as `analyzer(matrices, seed=..., **analyze_kwargs)`;
                must return one row per matrix, indexed by name, with alpha and traps columns
                (process worker: it must be importable, i.e. defined at module level).
        """
        self.schedule = _schedule(total_steps, steps, n_checkpoints)
        self.log_path = _check_log_path(log_path)
        if worker not in ("process", "thread"):
            raise ValueError(f"worker must be 'process' or 'thread', got {worker!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        if not isinstance(max_traps, int) or max_traps < 0:
            raise ValueError(f"max_traps must be a non-negative integer, got {max_traps!r}")
        self.modules = analyzed_modules(model, layers)
        self.alpha_threshold, self.max_traps, self.raise_on_alarm = alpha_threshold, max_traps, raise_on_alarm
        self.worker, self.max_pending, self.seed = worker, max_pending, seed
        self.analyzer, self.analyze_kwargs = analyzer, dict(analyze_kwargs or {})
        self.should_stop = False  # True once any layer has alarmed
        self._next = 0  # index of the next scheduled step
        self._pending: deque[_Pending] = deque()
        self._frames: list[pd.DataFrame] = []
        self._warned: set[tuple[str, str]] = set()  # (layer, 'alpha' | 'trap') already warned
        self._stop: AlarmStop | None = None  # prepared by an alarm, raised by the next step()
        self._raised = False  # raise_on_alarm raises once; later alarms only warn
        self._executor: Executor | None = None
        self._restarts = 0
        self._disabled = False
        if worker == "thread":
            import_weightwatcher()  # here, not in the thread: its import swaps sys.stdout

    # ---- the training-loop API -------------------------------------------------------
    def step(self, step: int) -> None:
        """Call after optimizer step `step`: snapshot if scheduled; report finished analyses."""
        self._collect(block=False)
        due = False
        while self._next < len(self.schedule) and self.schedule[self._next] <= step:
            self._next, due = self._next + 1, True
        if due and not self._disabled:
            while len(self._pending) >= self.max_pending:  # bounded memory: wait for the oldest
                self._collect_one(self._pending.popleft())
            self._submit(step, snapshot(self.modules))
        self._raise_if_asked()

    def close(self) -> pd.DataFrame:
        """Wait for the analyses still running, write the log, stop the worker; returns the log."""
        self._collect(block=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return self.log

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def log(self) -> pd.DataFrame:
        """One row per analyzed (step, layer): alpha, traps, alarm, reason, error, fit details."""
        return tidy_log(self._frames, self.alpha_threshold, self.max_traps)

    @property
    def alarms(self) -> pd.DataFrame:
        """The rows of the log that alarmed."""
        table = self.log
        return table[table.alarm].reset_index(drop=True)

    # ---- the worker ----------------------------------------------------------------------
    def _new_executor(self) -> Executor:
        """A one-worker pool: a spawned process (default) or a thread."""
        if self.worker == "thread":
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-monitor")
        return ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_worker_init)

    def _submit(self, step: int, matrices: dict[str, np.ndarray]) -> None:
        """Hand one snapshot to the worker; a broken pool is replaced first."""
        while not self._disabled:
            if self._executor is None:
                self._executor = self._new_executor()
            try:
                future = self._executor.submit(analyze_snapshot, step, matrices, self.seed,
                                               self.analyzer, self.analyze_kwargs)
            except RuntimeError as err:  # BrokenProcessPool: the worker died since the last call
                self._worker_died(self._executor, err)
                continue
            self._pending.append(_Pending(step, matrices, future, self._executor))
            return
        self._record(error_rows(step, matrices, f"not analyzed: monitoring stopped after {self._restarts} "
                                                f"worker deaths"))

    def _collect(self, block: bool) -> None:
        """Record every finished analysis, in schedule order; with block, wait for all."""
        while self._pending and (block or self._pending[0].future.done()):
            self._collect_one(self._pending.popleft())

    def _collect_one(self, pending: _Pending) -> None:
        """Record one analysis: its rows, or error rows if it raised or its worker died."""
        try:
            frame = pending.future.result()
        except BrokenProcessPool as err:
            if pending.executor is self._executor:
                self._worker_died(pending.executor, err, culprit=pending)
            else:  # lost with a worker already replaced: analyze it again
                self._submit(pending.step, pending.matrices)
            return
        except Exception as err:  # noqa: BLE001 - a failed analysis must not stop training
            log.error("HTSR analysis of step %d failed: %s: %s", pending.step, type(err).__name__, err)
            frame = error_rows(pending.step, pending.matrices, f"{type(err).__name__}: {err}")
        self._record(frame)

    def _worker_died(self, executor: Executor, err: BaseException, culprit: _Pending | None = None) -> None:
        """Replace a dead worker process; the snapshot it was analyzing gets error rows, the
        ones queued behind it go to the new worker. Give up after MAX_WORKER_RESTARTS deaths."""
        log.error("HTSR monitor worker died (%s); training goes on", err)
        executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self._restarts += 1
        if self._restarts > MAX_WORKER_RESTARTS:
            self._disabled = True
            log.error("HTSR monitor: %d worker deaths, no further analyses", self._restarts)
        lost = [p for p in self._pending if p.executor is executor and _lost(p.future)]
        self._pending = deque(p for p in self._pending if p not in lost)
        if culprit is None and lost:
            culprit = lost.pop(0)  # one worker: the oldest unfinished snapshot was being analyzed
        if culprit is not None:
            self._record(error_rows(culprit.step, culprit.matrices, f"worker died: {err}"))
        for pending in lost:
            self._submit(pending.step, pending.matrices)

    # ---- alarms and the log -----------------------------------------------------------
    def _record(self, frame: pd.DataFrame) -> None:
        """Keep one step's rows, raise the alarms they hold, rewrite the log file."""
        self._frames.append(frame)
        rows = tidy_log([frame], self.alpha_threshold, self.max_traps)
        self._alarm(rows[rows.alarm])
        if self.log_path is not None:
            try:
                write_log(self.log, self.log_path)
            except OSError as err:  # a full disk must not stop training either
                log.error("HTSR monitor could not write %s: %s", self.log_path.name, err)

    def _alarm(self, alarms: pd.DataFrame) -> None:
        """Warn once per (layer, kind of alarm); set should_stop; prepare AlarmStop if asked."""
        if alarms.empty:
            return
        self.should_stop = True
        for row in alarms.itertuples():
            kinds = {kind for kind in ("alpha", "trap") if kind in row.reason}
            if kinds - {kind for layer, kind in self._warned if layer == row.layer}:
                self._warned |= {(row.layer, kind) for kind in kinds}
                warnings.warn(AlarmWarning(f"step {row.step}: layer {row.layer!r}: {row.reason}"),
                              stacklevel=_stacklevel_outside_module())
        if self.raise_on_alarm and not self._raised and self._stop is None:
            first = alarms.iloc[0]
            self._stop = AlarmStop(f"HTSR alarm at step {first.step}, layer {first.layer!r}: {first.reason}",
                                   alarms.reset_index(drop=True))

    def _raise_if_asked(self) -> None:
        """Raise the AlarmStop prepared by an alarm (once)."""
        if self._stop is not None:
            stop, self._stop, self._raised = self._stop, None, True
            raise stop


def _schedule(total_steps: int | None, steps: Iterable[int] | None, n_checkpoints: int) -> list[int]:
    """The sorted steps to analyze, from total_steps (log-spaced) or given explicitly."""
    if (total_steps is None) == (steps is None):
        raise ValueError(f"give exactly one of total_steps or steps, got total_steps={total_steps!r}, "
                         f"steps={'None' if steps is None else 'a list'}")
    if steps is not None:
        steps = sorted({int(step) for step in steps})
        if not steps or steps[0] < 0:
            raise ValueError(f"steps must be non-negative integers, at least one, got {steps!r}")
        return steps
    for name, value in (("total_steps", total_steps), ("n_checkpoints", n_checkpoints)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return log_spaced_steps(int(total_steps), int(n_checkpoints))


def _check_log_path(log_path: Path | str | None) -> Path | None:
    """The log path, if given: a .csv or .parquet file in an existing folder."""
    if log_path is None:
        return None
    path = Path(log_path)
    if path.suffix not in LOG_SUFFIXES:
        raise ValueError(f"log_path must end in one of {LOG_SUFFIXES}, got {path.name!r}")
    if not path.parent.is_dir():
        raise ValueError(f"log_path's folder does not exist: {path.parent.name!r}")
    return path


def first_alarms(layers: pd.DataFrame, watched: Sequence[str] | None = None,
                 alpha_threshold: float = ALPHA_THRESHOLD, max_traps: int = 0) -> pd.DataFrame:
    """Per seed (if the table has one), the first alarming step among the watched layers.

    Reads any tidy table with step, layer, alpha and traps columns: a monitor log or the
    `layers` table of a stored run. Columns: first_alarm (step or NA), layer, reason.
    """
    missing = {"step", "layer", "alpha", "traps"} - set(layers.columns)
    if missing:
        raise ValueError(f"layers table lacks columns {sorted(missing)}; has {list(layers.columns)}")
    table = layers if "seed" in layers else layers.assign(seed=0)
    if watched is not None:
        table = table[table.layer.isin(watched)]
    table = table.assign(reason=alarm_reasons(table, alpha_threshold, max_traps)).sort_values(["seed", "step", "layer"])
    seeds = sorted((layers if "seed" in layers else table).seed.unique())
    alarmed = table[table.reason != ""].groupby("seed").first()  # sorted: the earliest step
    return pd.DataFrame({"first_alarm": pd.array([alarmed.step.get(s) for s in seeds], dtype="Int64"),
                         "layer": [alarmed.layer.get(s, "") for s in seeds],
                         "reason": [alarmed.reason.get(s, "") for s in seeds]},
                        index=pd.Index(seeds, name="seed"))


def lead_times(layers: pd.DataFrame, curves: pd.DataFrame, watched: Sequence[str] = ("fc1", "fc2"),
               alpha_threshold: float = ALPHA_THRESHOLD, max_traps: int = 0,
               collapse_drop: float = 0.05) -> pd.DataFrame:
    """Per seed of a stored run: first alarm, test-accuracy collapse (find_phases), lead, verdict."""
    from grokutils.phases import find_phases

    table = first_alarms(layers, watched, alpha_threshold, max_traps)
    collapse = {seed: find_phases(curves[curves.seed == seed], collapse_drop=collapse_drop).t_collapse
                for seed in table.index}
    table["t_collapse"] = pd.array([collapse[seed] for seed in table.index], dtype="Int64")
    table["lead_steps"] = table["t_collapse"] - table["first_alarm"]
    table["verdict"] = [_verdict(alarm, fall) for alarm, fall in zip(table.first_alarm, table.t_collapse)]
    return table


def _verdict(alarm, collapse) -> str:
    """Words for one (first alarm, collapse) pair of steps, either possibly missing."""
    if pd.isna(alarm):
        return "no alarm, no collapse within the run" if pd.isna(collapse) else "missed: collapse without alarm"
    if pd.isna(collapse):
        return "false alarm: no collapse within the run"
    return "alarm before collapse" if alarm <= collapse else "late: alarm after collapse"


def log_figure(table: pd.DataFrame, alpha_threshold: float = ALPHA_THRESHOLD):
    """Alpha (top) and traps (bottom) per layer against steps, alarms marked: a monitor log."""
    import matplotlib.pyplot as plt

    fig, (alpha_ax, traps_ax) = plt.subplots(2, 1, sharex=True, figsize=(7, 5))
    for layer, rows in table.groupby("layer", sort=False):
        line, = alpha_ax.plot(rows.step, rows.alpha, marker=".", label=f"{layer}")
        traps_ax.plot(rows.step, rows.traps.astype(float), marker=".", color=line.get_color())
        alarmed = rows[rows.alarm.astype(bool)]
        alpha_ax.plot(alarmed.step, alarmed.alpha, "x", color="red", ms=8, lw=0)
    alpha_ax.axhline(alpha_threshold, color="k", ls="--", lw=1)
    alpha_ax.set_ylabel("HTSR alpha")
    alpha_ax.legend(title="layer\n(x: alarm)", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _step_axes(alpha_ax, traps_ax)
    fig.tight_layout()
    return fig


def _step_axes(*axes) -> None:
    """Shared x axis in steps (symlog, step 0 shown, nothing left of it); whole-number traps."""
    from matplotlib.ticker import MaxNLocator

    axes[-1].set_xscale("symlog", linthresh=1)
    axes[-1].set_xlim(left=0)
    axes[-1].set_xlabel("optimizer step")
    traps_ax = axes[1]
    traps_ax.set_ylabel("correlation traps")
    traps_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    traps_ax.set_ylim(bottom=-0.2, top=max(1.2, traps_ax.get_ylim()[1]))


def run_alarm_figure(result, watched: Sequence[str] = ("fc1", "fc2"), alpha_threshold: float = ALPHA_THRESHOLD,
                     max_traps: int = 0, title: str = ""):
    """A stored run: alpha and traps of the watched layers and test accuracy per seed, with
    each seed's first alarm (red dashed) and test-accuracy collapse (black dotted) marked."""
    import matplotlib.pyplot as plt

    table = lead_times(result.layers, result.curves, watched, alpha_threshold, max_traps)
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(7, 6.5))
    layers = result.layers[result.layers.layer.isin(watched)]
    for (seed, layer), rows in layers.groupby(["seed", "layer"]):
        style = dict(color=f"C{list(watched).index(layer)}", ls="-" if seed == 0 else "--", lw=1)
        axes[0].plot(rows.step, rows.alpha, label=f"{layer}, seed {seed}", **style)
        axes[1].plot(rows.step, rows.traps.astype(float), **style)
    for seed, rows in result.curves.groupby("seed"):
        axes[2].plot(rows.step, rows.test_accuracy, color="gray", ls="-" if seed == 0 else "--", lw=1)
    for seed, row in table.iterrows():
        for ax in axes:
            if not pd.isna(row.first_alarm):
                ax.axvline(max(int(row.first_alarm), 1), color="red", ls="--", lw=1)
            if not pd.isna(row.t_collapse):
                ax.axvline(max(int(row.t_collapse), 1), color="k", ls=":", lw=1)
    axes[0].axhline(alpha_threshold, color="k", ls="--", lw=1)
    axes[0].set_ylabel("HTSR alpha")
    axes[0].legend(fontsize=7, ncol=2)
    axes[2].set_ylabel("test accuracy")
    _step_axes(*axes)
    axes[0].set_title(title)
    return stamp_protocol(fig, result.config)

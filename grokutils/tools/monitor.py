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
  (log-spaced over `total_steps` by default, `grokutils.config.log_spaced_steps`), the weights
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
* An alarm is a layer with alpha < `alpha_threshold` (2), or with NaN or Inf weights, or,
  only if `max_traps` is set, with more than `max_traps` traps. The alarm chapter
  (`grokutils.alarm_eval`) scores this default and other rules on the stored runs; read its
  tables before trusting an alarm. On the accelerated 1e6-step MLP runs (3 seeds each, WD 0
  and 0.01; every seed anti-grokked) alpha < 2 in FC1 or FC2 warned every seed after its
  test peak and before half of its fall, but fired earlier on the weight-decay control than
  on the run without it, so it does not tell a deeper fall from a shallower one; a trap count
  alarmed on every seed from the first steps, so traps are logged but do not alarm by
  default. Treat an alarm as "look at the test curve now", not as a forecast. NaN or Inf
  weights are checked on the training thread at each scheduled step; such a layer is not
  analyzed, the others are. A failed power-law fit (alpha NaN) raises
  no alpha alarm. The monitor then issues
  an `AlarmWarning` (once per layer and kind of alarm, on the training thread, at the first
  `step` call after the analysis finished), sets `monitor.should_stop`, and, with
  `raise_on_alarm=True`, raises `AlarmStop` from that `step` call.
* Every analyzed (step, layer) is one row of a tidy log (`monitor.log`), written atomically
  (temporary file, then rename) to `log_path` (`.csv` or `.parquet`) after each analysis;
  `read_log` reads it back (format and alarm rule: `grokutils.tools.alarm_log`; figures and
  lead times over stored runs: `grokutils.plots.alarm`).
* A worker that fails never stops training: an analysis that raises, or a worker process
  that dies, is logged with `logging` and recorded in the log's `error` column; a dead
  worker process is replaced (up to `MAX_WORKER_RESTARTS` times, then monitoring stops).
* `worker="process"` (default) analyzes in a Python program of its own
  (`grokutils.tools.monitor_worker`): training keeps its own numpy random state and Python's
  GIL, and the worker never imports the training script, so a script needs no
  `if __name__ == "__main__":` guard (a `multiprocessing` worker would run an unguarded script's
  training again). A custom `analyzer` must then be importable from a module. `worker="thread"`
  starts faster but reseeds numpy's global generator (WeightWatcher shuffles with it) inside the
  training process.
"""
from __future__ import annotations

import logging
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from grokutils.config import log_spaced_steps
from grokutils.htsr import ALPHA_LINE, analyze_matrices, import_weightwatcher
from grokutils.measures import shuffle_seed
from grokutils.tools.alarm_log import (
    LOG_SUFFIXES,
    NONFINITE_REASON,
    error_rows,
    nonfinite_rows,
    tidy_log,
    write_log,
)
from grokutils.tools.alarm_log import read_log as read_log  # re-exported: the reader of the monitor's log
from grokutils.tools.monitor_worker import ProgramExecutor

log = logging.getLogger(__name__)

MAX_WORKER_RESTARTS = 3  # dead worker processes replaced before monitoring gives up
MIN_SIDE, MAX_SIDE = 10, 15_000  # weightwatcher skips matrices with fewer / more eigenvalues
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
    else:
        unknown = [name for name in layers if name not in found]
        if unknown or not layers:
            raise ValueError(f"layers must name analyzable Linear/Conv modules, got {list(layers)!r}; "
                             f"available: {sorted(found)}")
        found = {name: found[name] for name in layers}
    on_meta = [name for name, module in found.items() if module.weight.is_meta]
    if on_meta:  # a model built on the meta device has shapes but no values to analyze
        raise ValueError(f"layers {on_meta} have weights on the 'meta' device (no values); load or "
                         f"initialize the model's weights before attaching the monitor")
    return found


def snapshot(modules: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """Copies of the analyzed weights as CPU float64 numpy matrices (training may go on)."""
    with torch.no_grad():
        return {name: as_matrix(module.weight.detach()).to("cpu", torch.float64, copy=True).numpy()
                for name, module in modules.items()}


def analyze_snapshot(step: int, matrices: dict[str, np.ndarray], seed: int,
                     analyzer: Callable = analyze_matrices, analyze_kwargs: dict | None = None) -> pd.DataFrame:
    """Run in the worker: the analyzer's rows for one snapshot, with step and matrix shape.

    Each matrix is analyzed alone, its W_rand shuffle seeded with `shuffle_seed(seed, step)`:
    its trap count depends on it and the seed only, not on which other matrices are watched
    (weightwatcher draws every shuffle from one global generator, in order; issue 32). The
    stored MLP runs analyze fc1, fc2, fc3 together under that seed, so a matrix analyzed first
    there (fc1) gets its stored count back here, and the later ones a fresh draw."""
    frame = pd.concat([analyzer({name: matrix}, seed=shuffle_seed(seed, step), **(analyze_kwargs or {}))
                       for name, matrix in matrices.items()])
    frame = frame.rename_axis("layer").reset_index()
    shapes = {name: matrix.shape for name, matrix in matrices.items()}
    frame.insert(0, "step", step)
    frame["rows"] = [shapes[name][0] for name in frame.layer]
    frame["cols"] = [shapes[name][1] for name in frame.layer]
    return frame


def _stacklevel_outside_module() -> int:
    """The warnings stacklevel, seen from its caller, of the first frame outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _lost(future: Future) -> bool:
    """True for a future that will never get its result: unfinished, cancelled or broken."""
    return not future.done() or future.cancelled() or isinstance(future.exception(), BrokenProcessPool)




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
                 alpha_threshold: float = ALPHA_LINE, max_traps: int | None = None,
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
        if max_traps is not None and (not isinstance(max_traps, int) or isinstance(max_traps, bool) or max_traps < 0):
            raise ValueError(f"max_traps must be None (traps do not alarm) or a non-negative integer, "
                             f"got {max_traps!r}")
        self.modules = analyzed_modules(model, layers)
        self.alpha_threshold, self.max_traps, self.raise_on_alarm = alpha_threshold, max_traps, raise_on_alarm
        self.worker, self.max_pending, self.seed = worker, max_pending, seed
        self.analyzer, self.analyze_kwargs = analyzer, dict(analyze_kwargs or {})
        self.should_stop = False  # True once any layer has alarmed
        self._next = 0  # index of the next scheduled step
        self._pending: deque[_Pending] = deque()
        self._frames: list[pd.DataFrame] = []
        self._warned: set[tuple[str, str]] = set()  # (layer, 'alpha' | 'trap' | 'nonfinite') already warned
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
        if due:
            matrices = snapshot(self.modules)
            nonfinite = {name: m for name, m in matrices.items() if not np.isfinite(m).all()}
            if nonfinite:  # the loudest alarm: raised now, on the training thread
                self._record(nonfinite_rows(step, nonfinite))
            healthy = {name: m for name, m in matrices.items() if name not in nonfinite}
            if healthy and not self._disabled:
                while len(self._pending) >= self.max_pending:  # bounded memory: wait for the oldest
                    self._collect_one(self._pending.popleft())
                self._submit(step, healthy)
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
        """A one-worker pool: a program of its own (default: never imports the training script) or a thread."""
        if self.worker == "thread":
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="htsr-monitor")
        return ProgramExecutor()

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
            kinds = {kind for kind, mark in (("alpha", "alpha"), ("trap", "trap"), ("nonfinite", NONFINITE_REASON))
                     if mark in row.reason}
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

"""One engine for both experiments: train every seed, measure every checkpoint, store the run.

    if __name__ == "__main__":                                # needed in a script: see below
        result = run(MLPConfig(steps=10_000, n_seeds=2))      # or a ModAddConfig
        result = load_if_stored(config)                      # never trains: None if not stored

A finished run is loaded from the results store (`grokutils.store`), not recomputed. An
interrupted one resumes: training from each seed's last checkpoint, measuring from the first
unmeasured checkpoint. Checkpoints are measured in worker processes while training goes on
(`n_workers`: None, one per core beyond the training one; 0, in this process at each
checkpoint). What differs between the experiments comes from their task (`grokutils.tasks`).

The workers are spawned: each imports the main script, so a script calls `run` under
`if __name__ == "__main__":` (a notebook needs nothing). Without it `run` fails at once and
says so (`grokutils.workers`). Workers exit when their parent dies, even by kill -9.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from grokutils import __version__, store, train, workers
from grokutils.config import is_int, resolve_device
from grokutils.htsr import import_weightwatcher
from grokutils.paths import RESULTS_DIR
from grokutils.phases import best_raw_step
from grokutils.store import RunResult, array_key
from grokutils.tasks import task_of
from grokutils.train import weights_path

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_workers() -> int:
    """One measuring worker per core beyond the one that trains."""
    return max(1, (os.cpu_count() or 2) - 1)


def load_if_stored(config, results_dir: Path | str = RESULTS_DIR) -> RunResult | None:
    """The finished run of `config` if the results store holds it, else None (nothing is trained)."""
    return store.load_if_finished(store.run_dir(config, Path(results_dir)), type(config))


def run(config, results_dir: Path | str = RESULTS_DIR, device: str = "auto", n_workers: int | None = None,
        progress: bool = True, threads: int | None = None) -> RunResult:
    """The finished results of `config`: loaded if stored, else trained, measured and stored.

    `threads`: the training process's torch threads on the CPU (None: the cores the measuring
    workers leave free). Bad arguments fail before any work. A second process on the same
    config waits for the first, then loads its result (`store.load_or_compute`).
    """
    workers.refuse_in_spawned_import("engine.run")
    task = task_of(config)
    final = store.run_dir(config, Path(results_dir))
    stored = store.load_if_finished(final, task.config_class)
    if stored is not None:
        return stored
    n_workers = default_workers() if n_workers is None else n_workers
    if not is_int(n_workers) or n_workers < 0:
        raise ValueError(f"n_workers must be a non-negative integer or None, got {n_workers!r}")
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    torch_device = resolve_device(device)
    return store.load_or_compute(final, task.config_class,
                                 lambda: _compute(config, final, torch_device, n_workers, progress, threads))


def _compute(config, final: Path, device: torch.device, n_workers: int, progress: bool,
             threads: int | None = None) -> RunResult:
    """Train, measure and store `config` into `final`; the caller holds the run's lock."""
    task, work = task_of(config), store.partial_dir(final)
    data = task.data(config)
    started, timings = time.time(), {"train_s": 0.0, "measure_s": 0.0}
    seed_dirs = {seed: work / f"seed{seed}" for seed in range(config.n_seeds)}
    pruner = WeightsPruner(config.checkpoint_steps)
    with (_measuring_pool(n_workers) as pool, _threads(device, n_workers, threads), _flush_denormals(),
          _worker_death_explained()):
        jobs: list[Future] = []

        def submit(seed: int, step: int, path: Path) -> None:
            out = measures_path(path.parent.parent, step)
            if not out.exists():
                jobs.append(pool.submit(measure_to_file, config, seed, step, path, out))
            pruner.prune(path.parent.parent)

        for seed, seed_dir in seed_dirs.items():
            (seed_dir / "measures").mkdir(parents=True, exist_ok=True)
            for step in config.checkpoint_steps:  # resume: saved but not yet measured
                check_checkpoint_files(seed_dir, step)
                if weights_path(seed_dir, step).exists():
                    submit(seed, step, weights_path(seed_dir, step))
        tic = time.perf_counter()
        statuses = train.train_seeds(task, config, seed_dirs, data, device, on_checkpoint=submit, progress=progress,
                                     progress_file=work / "progress.json")
        timings["train_s"] += time.perf_counter() - tic
        for job in tqdm(jobs, desc="measuring", disable=not progress, unit="ckpt"):
            timings["measure_s"] += job.result()
    timings["wall_s"] = time.time() - started
    _assemble(config, work, final, statuses, timings, task.describe(config, data), data, device)
    shutil.rmtree(work)
    return store.load_run(final, task.config_class)


# --- measuring: worker processes, one thread each ---------------------------------------------


def measure_to_file(config, seed: int, step: int, weights_file: Path, out_file: Path) -> float:
    """Measure one checkpoint and write its rows and arrays atomically; returns seconds taken."""
    start = time.perf_counter()
    model_row, layer_rows, arrays = task_of(config).measure_checkpoint(load_file(weights_file), config, seed, step)
    rows = json.dumps({"model": model_row, "layers": layer_rows}, default=float)
    buffer = io.BytesIO()
    np.savez(buffer, rows=np.array(rows), **arrays)
    store.atomic_write_bytes(out_file, buffer.getvalue())
    return time.perf_counter() - start


def measures_path(seed_dir: Path, step: int) -> Path:
    """Where one checkpoint's measures are kept until the run is assembled."""
    return seed_dir / "measures" / f"step_{step:09d}.npz"


def readable_measures(path: Path) -> bool:
    """Whether a checkpoint's measures file loads: its rows and every array."""
    try:
        with np.load(path) as saved:
            json.loads(str(saved["rows"]))["model"]
            for key in saved.files:
                saved[key]
    except Exception:  # truncated, garbage, a missing key: all mean the same here
        return False
    return True


def check_checkpoint_files(seed_dir: Path, step: int) -> None:
    """Before a run resumes, one checkpoint's files in its `.partial` folder.

    An unreadable measures file is measured again from its weights, or, where the weights are
    no longer kept, set aside as `*.unreadable` with a WARNING (the run's tables then lack that
    checkpoint of that seed). Unreadable weights waiting to be measured stop the run at once with
    `DamagedStateError` naming the file and what to do, not after training.
    """
    measures, weights = measures_path(seed_dir, step), weights_path(seed_dir, step)
    if measures.exists() and not readable_measures(measures):
        if weights.exists():
            log.warning("%s cannot be read; measuring that checkpoint again", measures)
            measures.unlink()
        else:
            aside = measures.with_name(measures.name + ".unreadable")
            os.replace(measures, aside)
            log.warning("%s cannot be read and its weights are not kept: set aside as %s; the run's tables "
                        "will lack step %d of %s", measures, aside.name, step, seed_dir.name)
    if weights.exists() and not measures.exists():
        try:
            load_file(weights)
        except Exception as err:
            raise train.DamagedStateError(
                f"{weights}: checkpoint weights waiting to be measured cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}). Delete it, and the run goes on without that checkpoint's measures; "
                f"or delete {seed_dir.name}/state.pt too, to train that seed again from step 0.") from err


class WeightsPruner:
    """Deletes a seed's checkpoint weights that the finished run will not keep, once measured.

    The stored run keeps the weights of step 0, of the first step of highest test accuracy and
    of the last step (`key_steps`); the `.partial` folder of a long run would otherwise hold
    every checkpoint's weights until the end. Kept: step 0, the best measured step so far, every
    unmeasured checkpoint and the latest saved one. Test accuracies are read once per file.
    """

    def __init__(self, checkpoint_steps: list[int]):
        self.checkpoint_steps = checkpoint_steps
        self.accuracy: dict[tuple[Path, int], float] = {}

    def prune(self, seed_dir: Path) -> None:
        """Delete what `seed_dir` no longer needs."""
        saved = [step for step in self.checkpoint_steps if weights_path(seed_dir, step).exists()]
        measured = [step for step in saved if self._test_accuracy(seed_dir, step) is not None]
        if not measured:
            return
        best = max(measured, key=lambda step: (self.accuracy[(seed_dir, step)], -step))  # the first maximum
        for step in set(measured) - {0, best, saved[-1]}:
            weights_path(seed_dir, step).unlink(missing_ok=True)

    def _test_accuracy(self, seed_dir: Path, step: int) -> float | None:
        """The measured test accuracy of one checkpoint, or None while it is not measured."""
        key = (seed_dir, step)
        if key not in self.accuracy:
            path = measures_path(seed_dir, step)
            if not path.exists():
                return None
            with np.load(path) as saved:
                self.accuracy[key] = float(json.loads(str(saved["rows"]))["model"]["test_accuracy"])
        return self.accuracy[key]




def _one_blas_thread():
    """Load every BLAS the measures use (numpy's, scipy's via weightwatcher), then limit each to
    one thread; a context manager that restores the limits. For measuring in this process.

    threadpoolctl only reaches libraries already loaded, hence the imports first. Measured
    on the 2-core build machine under load: one modular-addition checkpoint took 3.7 s with
    one BLAS thread and 19 s with the default threads.
    """
    import scipy.linalg  # noqa: F401  (its own OpenBLAS)
    from threadpoolctl import threadpool_limits

    import_weightwatcher()
    return threadpool_limits(limits=1)


class _InlinePool:
    """A stand-in for the process pool that measures in this process, at once (n_workers = 0)."""

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, function: Callable, *args) -> Future:
        """Run `function(*args)` now, with BLAS on one thread."""
        future: Future = Future()
        with _one_blas_thread():
            future.set_result(function(*args))
        return future


def _measuring_pool(n_workers: int):
    """`n_workers` spawned processes (fork after torch's thread pools start can deadlock), or inline."""
    if n_workers == 0:
        return _InlinePool()
    return ProcessPoolExecutor(n_workers, get_context("spawn"), initializer=workers.worker_init)


@contextlib.contextmanager
def _worker_death_explained() -> Iterator[None]:
    """A measuring worker that died (its traceback is above it in stderr) stops the run with
    what to check; the run's `.partial` folder is kept, and a rerun resumes from it."""
    try:
        yield
    except BrokenProcessPool as err:
        raise RuntimeError(f"a measuring worker process died (killed for memory, or see its error above); "
                           f"the run resumes when started again. In a script, "
                           f"{workers.MAIN_GUARD_ADVICE}") from err


@contextlib.contextmanager
def _threads(device: torch.device, n_workers: int, threads: int | None = None) -> Iterator[None]:
    """Training gets `threads`, or the cores the workers leave free, each worker one thread
    (oversubscribed cores slow everything down tenfold). Spawned workers inherit the environment,
    so their BLAS starts with one thread. Both settings are restored afterwards."""
    saved_env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    saved_threads = torch.get_num_threads()
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    if device.type == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - n_workers))
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value



@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """Train with denormal floats flushed to zero on the CPU, then switch flushing off again (torch's
    default). A model whose float32 loss has underflowed (a grokked transformer without weight decay
    reaches a train loss of exactly 0) fills its softmax and gradients with denormals, and x86 cores
    compute on those about ten times slower: measured here, 957 against 100 ms per step on the same
    state. Flushing changes only magnitudes below 1.2e-38 (float32) or 2.2e-308 (float64)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)

# --- assembly: per-checkpoint files -> one stored run -----------------------------------------


def collect_measures(config, work: Path, statuses: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read every checkpoint's measures into the two tables and one array dict."""
    curve_rows, layer_rows, arrays = [], [], {}
    for seed in range(config.n_seeds):
        for step in config.checkpoint_steps:
            path = measures_path(work / f"seed{seed}", step)
            if step > statuses[seed]["step"] or not path.exists():
                continue
            with np.load(path) as saved:
                rows = json.loads(str(saved["rows"]))
                for key in saved.files:
                    if key != "rows":
                        layer, what = key.split("/")
                        arrays[array_key(seed, step, layer, what)] = saved[key].astype(np.float32)
            curve_rows.append({"seed": seed, "step": step, **rows["model"]})
            layer_rows += [{"seed": seed, "step": step, **row} for row in rows["layers"]]
    return pd.DataFrame(curve_rows), pd.DataFrame(layer_rows), arrays


def key_steps(curves: pd.DataFrame, seed: int) -> dict[str, int]:
    """init (step 0), best (`grokutils.phases.best_raw_step`) and final steps of a seed."""
    mine = curves[curves.seed == seed]
    return {"init": 0, "best": best_raw_step(mine), "final": int(mine.step.max())}


def _assemble(config, work: Path, final: Path, statuses: dict, timings: dict, described: str, data,
              device: torch.device) -> None:
    """Turn the per-checkpoint files into the run's tables, arrays, key weights and metadata."""
    curves, layers, arrays = collect_measures(config, work, statuses)
    kept, weights = {}, {}
    for seed in range(config.n_seeds):
        kept[seed] = key_steps(curves, seed)
        for which, step in kept[seed].items():
            for name, tensor in load_file(weights_path(work / f"seed{seed}", step)).items():
                weights[f"seed{seed}/{which}/{name}"] = tensor.float()  # float32: compact, plots only
    meta = {
        "config_hash": store.config_hash(config),
        "status": {str(seed): status for seed, status in statuses.items()},
        "key_steps": {str(seed): steps for seed, steps in kept.items()},
        "data_source": described,
        "data_fingerprint": data.fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "timings": {name: round(value, 1) for name, value in timings.items()},
        "versions": package_versions(),
    }
    store.write_run(final, config, curves, layers, arrays, weights, meta)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    import numpy
    import pandas
    import scipy

    return {"grokutils": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "pandas": pandas.__version__,
            "weightwatcher": import_weightwatcher().__version__}

"""Run an MLP experiment end to end: train every seed, measure every checkpoint, store.

    result = run_experiment(MLPConfig(steps=10_000, n_seeds=2))

A finished run is loaded from the results store, not recomputed. An interrupted one resumes:
training from its last checkpoint, measuring from the first unmeasured checkpoint.
Checkpoints are measured in worker processes while training goes on.
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
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from grokutils import __version__, results
from grokutils.fast import train_seeds
from grokutils.measures import cached_mnist, measure_checkpoint
from grokutils.paths import RESULTS_DIR
from grokutils.results import RunResult, array_key
from grokutils.train import MLPConfig, resolve_device, weights_path

log = logging.getLogger(__name__)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_init() -> None:
    """Each measuring worker uses one thread, so workers and training share the cores."""
    torch.set_num_threads(1)


@contextlib.contextmanager
def _one_thread_each(device: torch.device) -> Iterator[None]:
    """Training and each worker get one thread; oversubscribed cores slow everything 10x.

    Spawned workers inherit the environment, so BLAS in them starts with one thread too.
    Both settings are restored afterwards.
    """
    saved_env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    saved_threads = torch.get_num_threads()
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    if device.type == "cpu":
        torch.set_num_threads(1)  # this MLP is too small to gain from more
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure_to_file(config: MLPConfig, seed: int, step: int, weights_file: Path, out_file: Path) -> float:
    """Measure one checkpoint and write its rows and arrays atomically; returns seconds taken."""
    start = time.perf_counter()
    model_row, layer_rows, arrays = measure_checkpoint(load_file(weights_file), config, seed, step)
    rows = json.dumps({"model": model_row, "layers": layer_rows}, default=float)
    buffer = io.BytesIO()
    np.savez(buffer, rows=np.array(rows), **arrays)
    results.atomic_write_bytes(out_file, buffer.getvalue())
    return time.perf_counter() - start


def measures_path(seed_dir: Path, step: int) -> Path:
    """Where one checkpoint's measures are kept until the run is assembled."""
    return seed_dir / "measures" / f"step_{step:09d}.npz"


def default_workers() -> int:
    """One worker per core beyond the one that trains."""
    return max(1, (os.cpu_count() or 2) - 1)


def load_if_stored(config: MLPConfig, results_dir: Path | str = RESULTS_DIR) -> RunResult | None:
    """The finished run of `config` if the results store holds it, else None (nothing is trained)."""
    return results.load_if_finished(results.run_dir(config, Path(results_dir)), MLPConfig)


def run_experiment(config: MLPConfig, results_dir: Path | str = RESULTS_DIR, device: str = "auto",
                   n_workers: int | None = None, progress: bool = True) -> RunResult:
    """The finished results of `config`: loaded if stored, else trained, measured and stored.

    A second process on the same config waits for the first, then loads its result
    (`results.load_or_compute`).
    """
    final = results.run_dir(config, Path(results_dir))
    stored = results.load_if_finished(final, MLPConfig)
    if stored is not None:
        return stored
    torch_device = resolve_device(device)  # fails on a bad device before any work
    return results.load_or_compute(final, MLPConfig,
                                   lambda: _compute(config, final, torch_device, n_workers, progress))


def _compute(config: MLPConfig, final: Path, torch_device: torch.device, n_workers: int | None,
             progress: bool) -> RunResult:
    """Train, measure and store `config` into `final`; the caller holds the run's lock."""
    work = results.partial_dir(final)
    work.mkdir(parents=True, exist_ok=True)
    data = cached_mnist(config.n_per_class, config.data_seed, config.data_source)
    started, statuses, timings = time.time(), {}, {"train_s": 0.0, "measure_s": 0.0}
    context = get_context("spawn")  # fork after torch's thread pools start can deadlock
    with _one_thread_each(torch_device), \
            ProcessPoolExecutor(n_workers or default_workers(), context, initializer=_worker_init) as pool:
        jobs: list[Future] = []

        def submit(seed: int, step: int, path: Path) -> None:
            out = measures_path(path.parent.parent, step)
            if not out.exists():
                jobs.append(pool.submit(measure_to_file, config, seed, step, path, out))

        seed_dirs = {seed: work / f"seed{seed}" for seed in range(config.n_seeds)}
        for seed, seed_dir in seed_dirs.items():
            (seed_dir / "measures").mkdir(parents=True, exist_ok=True)
            for step in config.checkpoint_steps:  # resume: saved but not yet measured
                if weights_path(seed_dir, step).exists():
                    submit(seed, step, weights_path(seed_dir, step))
        tic = time.perf_counter()  # all seeds as one batched model (CUDA graphs on a GPU)
        statuses.update(train_seeds(config, seed_dirs, data.train_x, data.train_y, torch_device,
                                    on_checkpoint=submit, progress=progress))
        timings["train_s"] += time.perf_counter() - tic
        for job in tqdm(jobs, desc="measuring", disable=not progress, unit="ckpt"):
            timings["measure_s"] += job.result()
    timings["wall_s"] = time.time() - started
    _assemble(config, work, final, statuses, timings, data, torch_device)
    shutil.rmtree(work)
    return results.load_run(final, MLPConfig)


def collect_measures(config: MLPConfig, work: Path, statuses: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read every checkpoint's measures into the two tables and one array dict."""
    curve_rows, layer_rows, arrays = [], [], {}
    for seed in range(config.n_seeds):
        for step in config.checkpoint_steps:
            path = measures_path(work / f"seed{seed}", step)
            if step > statuses[seed]["step"] or not path.exists():
                continue
            with np.load(path) as stored:
                rows = json.loads(str(stored["rows"]))
                for key in stored.files:
                    if key != "rows":
                        layer, what = key.split("/")
                        arrays[array_key(seed, step, layer, what)] = stored[key].astype(np.float32)
            curve_rows.append({"seed": seed, "step": step, **rows["model"]})
            layer_rows += [{"seed": seed, "step": step, **row} for row in rows["layers"]]
    return pd.DataFrame(curve_rows), pd.DataFrame(layer_rows), arrays


def key_steps(curves: pd.DataFrame, seed: int) -> dict[str, int]:
    """init (step 0), best (first step of highest test accuracy) and final steps of a seed."""
    mine = curves[curves.seed == seed]
    best = int(mine.loc[mine.test_accuracy.idxmax(), "step"])
    return {"init": 0, "best": best, "final": int(mine.step.max())}


def _assemble(config, work: Path, final: Path, statuses: dict, timings: dict, data, device) -> None:
    """Turn the per-checkpoint files into the run's tables, arrays and key weights."""
    curves, layers, arrays = collect_measures(config, work, statuses)
    kept, weights = {}, {}
    for seed in range(config.n_seeds):
        kept[seed] = key_steps(curves, seed)
        for which, step in kept[seed].items():
            for name, tensor in load_file(weights_path(work / f"seed{seed}", step)).items():
                weights[f"seed{seed}/{which}/{name}"] = tensor.float()  # float32: compact, plots only
    meta = {
        "config_hash": results.config_hash(config),
        "status": {str(seed): status for seed, status in statuses.items()},
        "key_steps": {str(seed): steps for seed, steps in kept.items()},
        "data_source": data.source,
        "data_fingerprint": data.fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "timings": {name: round(value, 1) for name, value in timings.items()},
        "versions": package_versions(),
    }
    results.write_run(final, config, curves, layers, arrays, weights, meta)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers."""
    import numpy
    import pandas
    import scipy

    from grokutils.htsr import import_weightwatcher

    return {"grokutils": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "pandas": pandas.__version__,
            "weightwatcher": import_weightwatcher().__version__}

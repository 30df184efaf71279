"""The one training loop: the seeds of any task, resumable, with checkpoints at log-spaced steps.

`train_seeds(task, config, seed_dirs, data, device)` trains the seeds of either experiment
(`grokutils.tasks` says what differs: the MLP's seeds train together as one batched module,
a transformer seed alone) with the optimizer the task builds, and writes for each seed:

    seed_dir/weights/step_000001234.safetensors   the weights at each checkpoint step
    seed_dir/state.pt                             model, optimizer, step and status, for resuming

Both are written atomically, weights first. Between checkpoints, which lie hours apart late in
a long run, the state is saved again every `SAVE_EVERY_S` seconds of wall time, so a run killed
at any moment resumes from at most that long ago, and computes the same bits as if it had not
stopped (every batch is a pure function of seed and step). A progress file, if asked for, records
(time, step) samples for `grokutils.tools.status`.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from grokutils.store import atomic_write_bytes

log = logging.getLogger(__name__)
FINITE_CHECK_EVERY = 100  # steps between checks for a NaN/Inf loss (each check syncs a GPU)
SAVE_EVERY_S = 600.0  # wall seconds between saves of the training state between checkpoints
PROGRESS_EVERY_S = 60.0  # wall seconds between (time, step) samples in the progress file
CLOCK_EVERY = 500  # steps between looks at the clock (a multiple of FINITE_CHECK_EVERY: no extra syncs)
PROGRESS_SAMPLES = 200  # samples the progress file keeps (the latest)


@functools.lru_cache(maxsize=64)
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
    loss = loss_of()  # a scalar, or one loss per seed of a batched model (their sum's gradient is each seed's own)
    (loss.sum() if loss.dim() else loss).backward()
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


class DamagedStateError(RuntimeError):
    """A file of a run's `.partial` folder cannot be read; the message names it and the fix."""


def load_state(seed_dir: Path, device: torch.device | str = "cpu") -> dict | None:
    """The saved training state of a seed, or None if it has none yet; an unreadable one raises
    `DamagedStateError` naming the file and what to do."""
    path = Path(seed_dir) / "state.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location=device)
        if not isinstance(state, dict) or not {"model", "optimizer", "step", "status"} <= set(state):
            raise ValueError("not a training state {model, optimizer, step, status}")
    except Exception as err:  # truncated, garbage, or another kind of file: torch's own message misleads
        raise DamagedStateError(
            f"{path}: the saved training state cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}). "
            f"Restore it from a copy (a long run's snapshot in longruns/snapshots/), or delete it to train "
            f"this seed again from step 0; its measured checkpoints are kept.") from err
    return state


def save_checkpoint(seed_dir: Path, state: dict, on_checkpoint: Callable[[int, Path], None]) -> None:
    """The weights of `state["step"]`, then the whole state; then `on_checkpoint(step, path)`."""
    path = weights_path(seed_dir, state["step"])
    save_atomic(state["model"], path, as_safetensors=True)
    save_state(seed_dir, state)
    on_checkpoint(state["step"], path)


def progress_bar(total: int, initial: int, label: str, progress: bool) -> tqdm:
    """The training progress bar (steps), quiet when `progress` is False."""
    return tqdm(total=total, initial=initial, desc=label, disable=not progress, unit="step", unit_scale=True,
                mininterval=1.0, smoothing=0.05)


class SeedGroup:
    """Seeds of one task that train together from one common step: model, optimizer, train set.

        group = SeedGroup(task, config, [0, 1, 2], data, device)   # step 0; or states=[state.pt dicts]
        group.run(1_000)                                            # updates; group.step, group.diverged
        group.seed_state(0, "running")                              # what seed 0's state.pt holds

    The task builds one model for the group (the MLP: all seeds as one batched module; the
    transformer: one seed) and says how a seed's state is cut out of it and put back.
    `diverged` maps seed -> the first checked step with a non-finite loss, checked every
    FINITE_CHECK_EVERY steps and at the end of each `run`.
    """

    def __init__(self, task, config, seeds: list[int], data, device: torch.device, states: list[dict] | None = None):
        self.task, self.config, self.seeds, self.device = task, config, list(seeds), device
        self.model, self.optimizer = task.model_and_optimizer(config, self.seeds, device)
        self.step = 0
        if states is not None:
            if len({int(state["step"]) for state in states}) != 1:
                raise ValueError(f"saved states must share one step to train together, got steps "
                                 f"{sorted(int(state['step']) for state in states)}")
            task.load_states(self.model, self.optimizer, states)
            self.step = int(states[0]["step"])
        self.train_set = task.train_set(config, data, device)
        self.diverged: dict[int, int] = {}

    @property
    def live(self) -> list[int]:
        """The seeds that have not diverged."""
        return [seed for seed in self.seeds if seed not in self.diverged]

    def run(self, n_steps: int, bar: tqdm | None = None) -> None:
        """Take `n_steps` updates, or fewer if every seed has diverged."""
        target = self.step + n_steps
        while self.step < target:
            losses = self.task.step(self.config, self.seeds, self.step, self.model, self.optimizer, self.train_set)
            self.step += 1
            if self.step % FINITE_CHECK_EVERY == 0 or self.step == target:
                if bar is not None:
                    bar.update(self.step - bar.n)
                finite = torch.isfinite(losses).tolist()
                for seed, ok in zip(self.seeds, finite):
                    if not ok:
                        self.diverged.setdefault(seed, self.step)
                if not self.live:
                    return

    def seed_state(self, seed: int, status: str, step: int | None = None) -> dict:
        """Seed `seed` as `state.pt` holds it: {model, optimizer, step, status} of a one-seed loop."""
        model, optimizer = self.task.seed_state(self.model, self.optimizer, self.seeds.index(seed), self.config)
        return {"model": model, "optimizer": optimizer, "step": self.step if step is None else step, "status": status}


class ProgressFile:
    """(wall time, step) samples of the training process, written atomically every
    PROGRESS_EVERY_S to `path` (nothing if `path` is None), for `grokutils.tools.status`.

    {"pid", "host", "total_steps", "seeds", "started": [time, step], "samples": [[time, step], ...]}:
    the samples of this process only (a restart begins a new list), the latest PROGRESS_SAMPLES.
    """

    def __init__(self, path: Path | None, total_steps: int):
        self.path, self.total_steps = (None if path is None else Path(path)), total_steps
        self.samples: list[list[float]] = []
        self.started: list[float] | None = None
        self.last = -math.inf

    def sample(self, seeds: list[int], step: int, force: bool = False) -> None:
        """Record `step` now if PROGRESS_EVERY_S has passed since the last sample (or `force`)."""
        now = time.time()
        if self.path is None or (not force and now - self.last < PROGRESS_EVERY_S):
            return
        self.last = now
        self.started = self.started or [now, step]
        self.samples = [*self.samples, [round(now, 1), step]][-PROGRESS_SAMPLES:]
        record = {"pid": os.getpid(), "host": os.uname().nodename, "total_steps": self.total_steps,
                  "seeds": seeds, "started": self.started, "samples": self.samples}
        atomic_write_bytes(self.path, (json.dumps(record) + "\n").encode())


def read_progress(path: Path) -> dict | None:
    """A progress file's record, or None if there is none or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def train_seeds(task, config, seed_dirs: dict[int, Path], data, device: torch.device,
                on_checkpoint: Callable[[int, int, Path], None] = lambda seed, step, path: None,
                progress: bool = True, progress_file: Path | None = None) -> dict[int, dict]:
    """Train every seed in `seed_dirs` (seed -> folder) to `config.steps`, resuming each from
    its `state.pt`: seeds saved at one step train together (in groups of `task.group_size`).

    Saves the weights at every checkpoint step (then calls `on_checkpoint(seed, step, path)`)
    and the training state after them, and the state again every SAVE_EVERY_S seconds between
    them. A seed whose loss turns non-finite stops there: its state says "diverged", and it is
    not restarted. `progress_file`: where to record progress samples (`ProgressFile`).
    Returns {seed: {"status": "finished" | "diverged", "step": last step}}.
    """
    statuses, groups = {}, {}
    for seed, seed_dir in seed_dirs.items():
        (Path(seed_dir) / "weights").mkdir(parents=True, exist_ok=True)
        saved = load_state(Path(seed_dir))
        if saved is not None and saved["status"] in ("diverged", "finished"):
            statuses[seed] = {"status": saved["status"], "step": int(saved["step"])}
        else:  # a fresh seed (None: no state yet) or one to resume
            groups.setdefault(-1 if saved is None else int(saved["step"]), {})[seed] = saved
    recorder = ProgressFile(progress_file, config.steps)
    for _, members in sorted(groups.items()):
        seeds = sorted(members)
        size = task.group_size or len(seeds)
        for first in range(0, len(seeds), size):
            part = seeds[first:first + size]
            states = None if members[part[0]] is None else [members[seed] for seed in part]
            statuses.update(_train_group(task, config, part, states, seed_dirs, data, device, on_checkpoint,
                                         progress, recorder))
    return {seed: statuses[seed] for seed in seed_dirs}


def next_stop(step: int, target: int) -> int:
    """The next step at which the loop looks at the clock: a multiple of CLOCK_EVERY, or `target`."""
    return min(target, (step // CLOCK_EVERY + 1) * CLOCK_EVERY)


def _train_group(task, config, seeds: list[int], states: list[dict] | None, seed_dirs: dict, data,
                 device: torch.device, on_checkpoint: Callable, progress: bool,
                 recorder: ProgressFile) -> dict[int, dict]:
    """Train one group of seeds from its common step (fresh if `states` is None) to the end."""
    group, statuses = SeedGroup(task, config, seeds, data, device, states), {}
    saved_at = time.monotonic()

    def save_live(status: str, at_checkpoint: bool) -> None:
        nonlocal saved_at
        for seed in group.live:
            state = group.seed_state(seed, status)
            if at_checkpoint:
                save_checkpoint(Path(seed_dirs[seed]), state, lambda step, path: on_checkpoint(seed, step, path))
            else:
                save_state(Path(seed_dirs[seed]), state)
        saved_at = time.monotonic()

    if states is None:
        save_live("running", at_checkpoint=True)
    label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    bar = progress_bar(config.steps, group.step, label, progress)
    recorder.sample(seeds, group.step, force=True)
    for target in [t for t in config.checkpoint_steps if t > group.step]:
        while group.step < target and group.live:
            group.run(next_stop(group.step, target) - group.step, bar)
            _record_divergences(group, seed_dirs, statuses)
            recorder.sample(seeds, group.step)
            if group.step < target and time.monotonic() - saved_at >= SAVE_EVERY_S:
                save_live("running", at_checkpoint=False)  # between checkpoints: resume from here
        if not group.live:
            break
        save_live("running", at_checkpoint=True)
    bar.close()
    recorder.sample(seeds, group.step, force=True)
    for seed in group.live:
        save_state(Path(seed_dirs[seed]), group.seed_state(seed, "finished"))
        statuses[seed] = {"status": "finished", "step": group.step}
    return statuses


def _record_divergences(group: SeedGroup, seed_dirs: dict, statuses: dict) -> None:
    """Save the state of each seed that diverged since the last call as "diverged", at its step."""
    for seed in [s for s in group.diverged if s not in statuses]:
        step = group.diverged[seed]
        log.warning("seed %d: non-finite loss by step %d; run stopped", seed, step)
        save_state(Path(seed_dirs[seed]), group.seed_state(seed, "diverged", step))
        statuses[seed] = {"status": "diverged", "step": step}


def train_seed(task, config, seed: int, data, seed_dir: Path, device: torch.device,
               on_checkpoint: Callable[[int, Path], None] = lambda step, path: None, progress: bool = True) -> dict:
    """`train_seeds` for one seed, `on_checkpoint(step, path)`: {"status": ..., "step": ...}."""
    return train_seeds(task, config, {seed: Path(seed_dir)}, data, device,
                       lambda _, step, path: on_checkpoint(step, path), progress)[seed]

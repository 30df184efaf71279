"""What differs between the two experiments, behind the one interface that the loop and the engine call.

A task, for its config class, knows:

* `data(config)`: the data set (loaded once per process), and `describe(config, data)` for a run's metadata;
* `group_size`: how many seeds train together as one model (None: all of them);
* `model_and_optimizer(config, seeds, device)`: the initial model of a group of seeds and its optimizer;
* `seed_state(model, optimizer, index, config)` and `load_states(model, optimizer, states)`: one
  seed's (model, optimizer) state dicts as a one-seed loop saves them, and a group's put back;
* `train_set(config, data, device)` and `step(config, seeds, step, model, optimizer, train_set)`:
  the batch, learning rate and loss of one update (`grokutils.train.train_step` applies it),
  returning one loss per seed;
* `measure_checkpoint(state, config, seed, step)`: every measure of one checkpoint.

    task = task_of(config)   # MLP for an MLPConfig, MODADD for a ModAddConfig
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grokutils import batched, measures, modadd
from grokutils.config import MLPConfig, ModAddConfig
from grokutils.models import DTYPES, N_CLASSES
from grokutils.train import epoch_rows, train_step
from grokutils.transformer import make_transformer


def batch_indices(config: MLPConfig, seed: int, step: int, n_train: int) -> torch.Tensor:
    """Rows of the MLP batch of `step` (with the authors' first-epoch replay if the config asks)."""
    return epoch_rows(seed, step, n_train, config.batch_size, config.replay_first_epoch)


def mlp_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y_onehot: torch.Tensor) -> torch.Tensor:
    """One update of a plain `MLP` on the MSE between outputs and one-hot targets (the papers' loss)."""
    return train_step(model, optimizer, lambda: F.mse_loss(model(x), y_onehot))


def default_compile(device: torch.device, dtype: str) -> bool:
    """Whether the MLP's loss is compiled: on CUDA always (with CUDA graphs), on the CPU in float32
    only (fused element-wise code; in float64 the eager loss computes the plain loop's bits)."""
    return device.type == "cuda" or dtype == "float32"


@dataclass(frozen=True)
class Task:
    """One experiment, as the loop and the engine see it (the module docstring lists the fields)."""

    config_class: type
    group_size: int | None
    data: Callable
    describe: Callable
    model_and_optimizer: Callable
    seed_state: Callable
    load_states: Callable
    train_set: Callable
    step: Callable
    measure_checkpoint: Callable


def _mlp_model_and_optimizer(config: MLPConfig, seeds: list[int], device: torch.device):
    model = batched.BatchedMLP.initial(config, seeds).to(device)
    model.compile_wanted = default_compile(device, config.dtype)  # at the first step (`_mlp_step`)
    return model, batched.make_optimizer(config, model.parameters())


def _mlp_seed_state(model, optimizer, index: int, config: MLPConfig) -> tuple[dict, dict]:
    return batched.seed_states(model, optimizer, index, batched.plain_parameter_groups(config))


def _mlp_train_set(config: MLPConfig, data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, one-hot y) on the device; `data` is the loaded data or a (train_x, train_y) pair."""
    x, y = data if isinstance(data, tuple) else (data.train_x, data.train_y)
    return x.to(device, DTYPES[config.dtype]), F.one_hot(y, N_CLASSES).to(device, DTYPES[config.dtype])


def _mlp_step(config: MLPConfig, seeds: list[int], step: int, model, optimizer, train_set) -> torch.Tensor:
    x, y_onehot = train_set
    rows = torch.stack([batch_indices(config, seed, step, len(x)) for seed in seeds]).to(x.device)  # (S, B)
    if model.compile_wanted:
        model.compile_wanted = False
        model.compile_losses(x, y_onehot, rows, mode="reduce-overhead" if x.device.type == "cuda" else None)
    if model.compiled is not None and x.device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may be overwritten
    return train_step(model, optimizer, lambda: model.losses(x, y_onehot, rows))


def _modadd_model_and_optimizer(config: ModAddConfig, seeds: list[int], device: torch.device):
    (seed,) = seeds  # group_size 1
    model = make_transformer(seed, config.p, config.dtype)
    if config.init_from:
        model.load_state_dict(modadd.initial_weights(config, seed))
    model = model.to(device)
    return model, modadd.make_optimizer(config, model.parameters())


def _modadd_step(config: ModAddConfig, seeds: list[int], step: int, model, optimizer, train_set) -> torch.Tensor:
    batch, loss_of = train_set, modadd.loss_function(config)
    if config.batch_size:
        rows = epoch_rows(seeds[0], step, len(batch.labels), config.batch_size)
        batch = batch.subset(rows.to(batch.a.device))
    return train_step(model, optimizer, lambda: loss_of(batch, model), modadd.learning_rate(config, step)).reshape(1)


def _load_one_state(model, optimizer, states: list[dict]) -> None:
    (state,) = states
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


# The papers' 784-200-200-10 MLP on 1,000 MNIST digits, MSE on one-hot targets.
# All seeds as one batched module (`grokutils.batched`), any `torch.optim` optimizer the config names.
MLP = Task(MLPConfig, group_size=None,
           data=lambda config: measures.cached_mnist(config.n_per_class, config.data_seed, config.data_source),
           describe=lambda config, data: data.source,
           model_and_optimizer=_mlp_model_and_optimizer, seed_state=_mlp_seed_state,
           load_states=batched.load_seed_states, train_set=_mlp_train_set, step=_mlp_step,
           measure_checkpoint=measures.measure_checkpoint)
# A one-layer transformer on (a + b) mod p, cross-entropy at the last position (Nanda et al.).
MODADD = Task(ModAddConfig, group_size=1,
              data=lambda config: modadd.cached_data(config.p, config.train_fraction, config.data_seed),
              describe=lambda config, data: (f"all {config.p}x{config.p} pairs, {len(data.train_idx)} for training "
                                             f"(seed {config.data_seed})"),
              model_and_optimizer=_modadd_model_and_optimizer,
              seed_state=lambda model, optimizer, index, config: (model.state_dict(), optimizer.state_dict()),
              load_states=_load_one_state,
              train_set=lambda config, data, device: modadd.split_batch(data, "train").to(device),
              step=_modadd_step, measure_checkpoint=modadd.measure_checkpoint)
TASKS = {MLPConfig: MLP, ModAddConfig: MODADD}


def task_of(config):
    """The task of a config (by its class)."""
    if type(config) not in TASKS:
        raise TypeError(f"config must be one of {[c.__name__ for c in TASKS]}, got {type(config).__name__}")
    return TASKS[type(config)]

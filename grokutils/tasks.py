"""The one interface through which the loop and the engine train and measure either experiment.

    task = task_of(config)   # grokutils.mlp.MLP for an MLPConfig, grokutils.modadd.MODADD for a ModAddConfig

Each experiment's module defines its task (`grokutils.mlp.MLPTask`, `grokutils.modadd.ModAddTask`);
`Task` names what both provide.
"""
from __future__ import annotations

from typing import Protocol

import torch

from grokutils.config import MLPConfig, ModAddConfig
from grokutils.mlp import MLP
from grokutils.modadd import MODADD


class Task(Protocol):
    """One experiment as `grokutils.train` and `grokutils.engine` see it."""

    config_class: type  # its config dataclass
    group_size: int | None  # how many seeds train together as one model (None: all of them)

    def data(self, config):
        """The data set, loaded once per process."""

    def describe(self, config, data) -> str:
        """The data, in a few words for a run's metadata."""

    def model_and_optimizer(self, config, seeds: list[int], device: torch.device) -> tuple:
        """The initial model of a group of seeds, and its optimizer."""

    def seed_state(self, model, optimizer, index: int, config) -> tuple[dict, dict]:
        """Seed `index`'s (model, optimizer) state dicts, as a one-seed loop saves them."""

    def load_states(self, model, optimizer, states: list[dict]) -> None:
        """Put a group's saved `{model, optimizer}` states back, one per seed."""

    def train_set(self, config, data, device: torch.device):
        """The training examples on the device, as `step` reads them."""

    def step(self, config, seeds: list[int], step: int, model, optimizer, train_set) -> torch.Tensor:
        """One update of the group (batch, learning rate, loss; `grokutils.train.train_step`): a loss per seed."""

    def measure_checkpoint(self, state: dict, config, seed: int, step: int) -> tuple[dict, list[dict], dict]:
        """Every measure of one checkpoint: (model row, layer rows, arrays)."""


TASKS: dict[type, Task] = {MLPConfig: MLP, ModAddConfig: MODADD}


def task_of(config) -> Task:
    """The task of a config (by its class)."""
    if type(config) not in TASKS:
        raise TypeError(f"config must be one of {[c.__name__ for c in TASKS]}, got {type(config).__name__}")
    return TASKS[type(config)]

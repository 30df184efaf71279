"""The MLP's S seeds as one PyTorch module, trained by any `torch.optim` optimizer.

    model = BatchedMLP.initial(config, seeds=[0, 1, 2])      # seed s: make_mlp(s, ...) weights
    losses = model.losses(x, y_onehot, rows)                  # (S,): each seed's MSE on its own batch
    losses.sum().backward()                                   # each seed's gradient is its own

Every parameter has a leading seed dimension: fc1.weight is (S, 200, 784), and the layers
are `torch.baddbmm`, one kernel for all seeds. The loss of the group is the sum of the seeds'
losses, so seed s's gradient is that of its own loss; an optimizer that works element-wise
(SGD, Adam, AdamW) then updates each seed as S separate optimizers would. On the CPU in
float64, with the single-tensor AdamW, seed s here and a plain `make_mlp(s)` loop compute the
same bits (tests/test_batched.py).

A seed's slice is saved as the plain model's `state_dict` and the plain optimizer's
(`seed_states`), so checkpoints are the files a one-seed loop writes; `load_seed_states`
stacks them back.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from grokutils.config import MLPConfig
from grokutils.models import make_mlp

log = logging.getLogger(__name__)


class BatchedLinear(nn.Module):
    """S linear layers: weight (S, out, in), bias (S, out); (S, B, in) -> (S, B, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))  # nn.Linear's addmm


class BatchedMLP(nn.Module):
    """The papers' 784-200-200-10 MLP for S seeds at once, parameters named as in `MLP`."""

    def __init__(self, states: list[dict[str, torch.Tensor]]):
        super().__init__()
        for layer in ("fc1", "fc2", "fc3"):
            setattr(self, layer, BatchedLinear(*(torch.stack([state[f"{layer}.{kind}"] for state in states])
                                                 for kind in ("weight", "bias"))))
        self.compiled = None  # torch.compile of `_losses`, set by `compile_losses`
        self.compile_wanted = False  # whether the training step should call `compile_losses` first

    @classmethod
    def initial(cls, config: MLPConfig, seeds: list[int]) -> BatchedMLP:
        """Step 0: `make_mlp(seed, init_scale, dtype)` for each seed."""
        return cls([make_mlp(seed, config.init_scale, config.dtype).state_dict() for seed in seeds])

    @property
    def n_seeds(self) -> int:
        return self.fc1.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (S, B, 784) -> (S, B, 10)
        return self.fc3(self.fc2(self.fc1(x).relu()).relu())

    def _losses(self, x: torch.Tensor, y_onehot: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(S,) MSE of each seed on its rows (S, B) of x (n, 784) and y_onehot (n, 10): `F.mse_loss` per seed."""
        difference = self(x[rows]) - y_onehot[rows]
        return (difference * difference).mean((1, 2))

    def losses(self, x: torch.Tensor, y_onehot: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`_losses`, compiled if `compile_losses` succeeded."""
        return (self.compiled or self._losses)(x, y_onehot, rows)

    def compile_losses(self, x: torch.Tensor, y_onehot: torch.Tensor, rows: torch.Tensor,
                       mode: str | None = None) -> bool:
        """Use `torch.compile` of `_losses` (`mode` "reduce-overhead" on CUDA: CUDA graphs), after
        one trial forward and backward on these inputs, whose gradients are then cleared; if
        compiling fails, keep the eager loss and say so in one WARNING. Returns whether compiled."""
        try:
            compiled = torch.compile(self._losses, dynamic=False, fullgraph=True, mode=mode)
            compiled(x, y_onehot, rows).sum().backward()
            self.compiled = compiled
        except Exception as err:  # no C++ compiler, no triton, an unsupported op: the eager loss is right
            log.warning("torch.compile failed (%s: %s); using the eager loss", type(err).__name__, err)
        self.zero_grad(set_to_none=True)
        return self.compiled is not None

    def seed_weights(self, index: int) -> dict[str, torch.Tensor]:
        """The `MLP.state_dict()` of seed `index` (fresh CPU tensors)."""
        return {name: tensor[index].detach().cpu().clone() for name, tensor in self.state_dict().items()}


def seed_states(model: BatchedMLP, optimizer: torch.optim.Optimizer, index: int,
                param_groups: list[dict]) -> tuple[dict, dict]:
    """Seed `index` as (model state_dict, optimizer state_dict) of a plain one-seed loop.

    Per-parameter tensors of the optimizer's state (moments, momentum) are sliced at the seed;
    shared scalars (AdamW's step count) are copied. `param_groups` are the plain ones
    (`plain_parameter_groups`), so the file does not depend on fused or foreach.
    """
    parameters = list(model.parameters())
    state = {}
    for i, parameter in enumerate(parameters):
        entry = optimizer.state.get(parameter, {})
        if entry:
            state[i] = {key: (value[index] if _per_seed(value, parameter) else value).detach().cpu().clone()
                        for key, value in entry.items()}
    return model.seed_weights(index), {"state": state, "param_groups": param_groups}


def load_seed_states(model: BatchedMLP, optimizer: torch.optim.Optimizer, saved: list[dict]) -> None:
    """Load one `{model, optimizer}` state per seed (all at one step) into the batched model and optimizer."""
    if len(saved) != model.n_seeds:
        raise ValueError(f"{len(saved)} saved states for a model of {model.n_seeds} seeds")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.stack([entry["model"][name] for entry in saved]))
    per_seed = [entry["optimizer"]["state"] for entry in saved]
    if not per_seed[0]:  # saved before the first update: nothing to load
        return
    stacked = {}
    for i, parameter in enumerate(model.parameters()):
        stacked[i] = {}
        for key, value in per_seed[0][i].items():
            if torch.is_tensor(value) and value.shape == parameter.shape[1:]:  # a seed's slice: stack them
                stacked[i][key] = torch.stack([state[i][key] for state in per_seed])
            else:
                stacked[i][key] = value
    optimizer.load_state_dict({"state": stacked, "param_groups": optimizer.state_dict()["param_groups"]})


def _per_seed(value, parameter: torch.Tensor) -> bool:
    """Whether an optimizer state entry has the parameter's shape (then it has a seed dimension)."""
    return torch.is_tensor(value) and value.shape == parameter.shape

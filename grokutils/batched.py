"""The MLP's S seeds as one batched model: flat parameter rows, their AdamW state, the step.

Every parameter of seed s is row s of an (S, P) buffer, P = 199,210 for 784-200-200-10; the
layers are (S, out, in) views of it. `make_step` writes out forward, MSE, backward and AdamW
with `torch.baddbmm`/`torch.bmm` and in-place updates, the same arithmetic as the
single-tensor `torch.optim.AdamW` that `grokutils.train.train_seed` runs; `grokutils.fast`
drives it (chunks of steps, CUDA graphs, checkpoints).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from grokutils.config import MLPConfig
from grokutils.models import MLP, make_mlp
from grokutils.train import epoch_order

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as train_seed uses them


EPS = 1e-8




def parameter_layout() -> list[tuple[str, tuple[int, ...]]]:
    """The MLP's parameters in `state_dict` order: [(name, shape)], built without touching RNG."""
    with torch.device("meta"):
        return [(name, tuple(tensor.shape)) for name, tensor in MLP().state_dict().items()]


def _offsets(layout: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...], int, int]]:
    """[(name, shape, start, end)] of each parameter in a flat row."""
    spans, start = [], 0
    for name, shape in layout:
        size = int(torch.Size(shape).numel())
        spans.append((name, shape, start, start + size))
        start += size
    return spans


SPANS = _offsets(parameter_layout())


N_PARAMETERS = SPANS[-1][3]  # P = 199,210 for 784-200-200-10


def flatten(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One seed's tensors (model state or Adam moments, keyed by name) as a flat (P,) row."""
    return torch.cat([state[name].reshape(-1) for name, _, _, _ in SPANS])


def unflatten(row: torch.Tensor) -> dict[str, torch.Tensor]:
    """A flat (P,) row as {name: tensor} with the model's shapes (fresh, unshared storage)."""
    return {name: row[start:end].view(shape).clone() for name, shape, start, end in SPANS}


def layer_views(flat: torch.Tensor) -> list[torch.Tensor]:
    """(S, P) -> [W1 (S, 200, 784), b1 (S, 200), W2, b2, W3 (S, 10, 200), b3 (S, 10)], views."""
    return [flat[:, start:end].view(flat.shape[0], *shape) for _, shape, start, end in SPANS]


@dataclass
class BatchedState:
    """Parameters and AdamW moments of S seeds, each (S, P), all at the same step."""

    params: torch.Tensor  # (S, P)
    exp_avg: torch.Tensor  # (S, P), AdamW first moment
    exp_avg_sq: torch.Tensor  # (S, P), AdamW second moment
    step: int  # optimizer steps taken so far (the same for every seed)

    @classmethod
    def initial(cls, config: MLPConfig, seeds: list[int]) -> BatchedState:
        """Step 0: `make_mlp(seed, ...)` weights for each seed, zero moments (on the CPU)."""
        params = torch.stack([flatten(make_mlp(seed, config.init_scale, config.dtype).state_dict())
                              for seed in seeds])
        return cls(params, torch.zeros_like(params), torch.zeros_like(params), 0)

    @classmethod
    def from_saved(cls, saved: list[dict]) -> BatchedState:
        """Stack `state.pt` dicts (model, optimizer, step) saved at one common step."""
        steps = {int(entry["step"]) for entry in saved}
        if len(steps) != 1:
            raise ValueError(f"saved states must share one step to be batched, got steps {sorted(steps)}")
        params = torch.stack([flatten(entry["model"]) for entry in saved])
        moments = [_saved_moments(entry["optimizer"], params[0]) for entry in saved]
        return cls(params, torch.stack([m for m, _ in moments]), torch.stack([v for _, v in moments]),
                   steps.pop())

    def to(self, device: torch.device) -> BatchedState:
        """The same state on `device`."""
        moved = (tensor.to(device) for tensor in (self.params, self.exp_avg, self.exp_avg_sq))
        return BatchedState(*moved, self.step)

    def seed_state(self, index: int, config: MLPConfig, status: str, step: int | None = None) -> dict:
        """Row `index` as the `state.pt` dict `train_seed` writes: model, optimizer, step, status."""
        step = self.step if step is None else step
        rows = [tensor[index].detach().cpu() for tensor in (self.params, self.exp_avg, self.exp_avg_sq)]
        model, exp_avg, exp_avg_sq = (unflatten(row) for row in rows)
        return {"model": model, "optimizer": optimizer_state_dict(config, step, exp_avg, exp_avg_sq),
                "step": step, "status": status}


def _saved_moments(optimizer_state: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (P,) exp_avg and exp_avg_sq from an AdamW `state_dict` (zeros before the first step)."""
    per_parameter = optimizer_state["state"]
    if not per_parameter:
        return torch.zeros_like(like), torch.zeros_like(like)
    names = [name for name, _, _, _ in SPANS]
    return tuple(flatten({name: per_parameter[i][key] for i, name in enumerate(names)})
                 for key in ("exp_avg", "exp_avg_sq"))


def optimizer_state_dict(config: MLPConfig, step: int, exp_avg: dict, exp_avg_sq: dict) -> dict:
    """What `torch.optim.AdamW(model.parameters(), lr, weight_decay).state_dict()` holds at `step`."""
    with torch.device("meta"):
        template = torch.optim.AdamW(MLP().parameters(), lr=config.lr, weight_decay=config.weight_decay)
    saved = template.state_dict()
    if step > 0:  # AdamW keeps `step` as a float32 CPU scalar tensor per parameter
        saved["state"] = {i: {"step": torch.tensor(float(step), dtype=torch.float32),
                              "exp_avg": exp_avg[name], "exp_avg_sq": exp_avg_sq[name]}
                          for i, (name, _, _, _) in enumerate(SPANS)}
    return saved


def make_step(config: MLPConfig) -> Callable[..., torch.Tensor]:
    """The batched training step: forward, MSE, written-out backward and AdamW, in place.

    `step(params, exp_avg, exp_avg_sq, x, y_onehot, rows, scalars) -> loss (S,)` where rows
    (S, B) are the batch rows of each seed and scalars[0:2] = (-lr / bias_correction1,
    sqrt(bias_correction2)) of this step, as `torch.optim.AdamW` computes them in Python.
    """
    lr, weight_decay = config.lr, config.weight_decay
    beta1, beta2 = BETAS

    def step(params, exp_avg, exp_avg_sq, x, y_onehot, rows, scalars):
        w1, b1, w2, b2, w3, b3 = layer_views(params)
        xb, yb = x[rows], y_onehot[rows]  # (S, B, 784), (S, B, 10)
        h1 = torch.baddbmm(b1.unsqueeze(1), xb, w1.transpose(1, 2)).relu()  # (S, B, 200): nn.Linear's addmm
        h2 = torch.baddbmm(b2.unsqueeze(1), h1, w2.transpose(1, 2)).relu()  # (S, B, 200)
        out = torch.baddbmm(b3.unsqueeze(1), h2, w3.transpose(1, 2))  # (S, B, 10)
        diff = out - yb
        loss = (diff * diff).mean((1, 2))  # (S,), F.mse_loss per seed
        g3 = diff * (2.0 / (rows.shape[1] * y_onehot.shape[1]))  # mse_loss backward: 2 / numel
        g2 = torch.where(h2 <= 0, 0.0, torch.bmm(g3, w3))  # threshold_backward of the ReLU
        g1 = torch.where(h1 <= 0, 0.0, torch.bmm(g2, w2))
        grad = torch.cat([torch.bmm(g1.transpose(1, 2), xb).flatten(1), g1.sum(1),
                          torch.bmm(g2.transpose(1, 2), h1).flatten(1), g2.sum(1),
                          torch.bmm(g3.transpose(1, 2), h2).flatten(1), g3.sum(1)], dim=1)  # (S, P)
        if weight_decay != 0:
            params.mul_(1 - lr * weight_decay)  # decoupled weight decay
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / scalars[1]).add_(EPS)
        params.add_(exp_avg.mul(scalars[0]).div_(denom))  # = addcdiv_(exp_avg, denom, value=-step_size)
        return loss

    return step


def adam_scalars(config: MLPConfig, first_step: int, n: int) -> list[tuple[float, float]]:
    """(-step_size, sqrt(bias_correction2)) of steps first_step .. first_step + n - 1 (1-based).

    The same Python float arithmetic as the single-tensor `torch.optim.AdamW`.
    """
    beta1, beta2 = BETAS
    values = []
    for step in range(first_step, first_step + n):
        bias_correction1, bias_correction2 = 1 - beta1 ** float(step), 1 - beta2 ** float(step)
        values.append((-(config.lr / bias_correction1), bias_correction2 ** 0.5))
        if bias_correction1 == 1.0 and bias_correction2 == 1.0:  # saturated: constant from here on
            values += [values[-1]] * (first_step + n - 1 - step)
            break
    return values


def evenly_batched(config: MLPConfig, n_train: int) -> bool:
    """Whether every batch is full (the batched trainer needs static shapes)."""
    return n_train % config.batch_size == 0


def chunk_rows(config: MLPConfig, seeds: list[int], start: int, n: int, n_train: int) -> torch.Tensor:
    """Batch rows of steps start .. start + n - 1 for every seed: (n, S, B), = `batch_indices`."""
    if not evenly_batched(config, n_train):
        raise ValueError(f"batch_size={config.batch_size} must divide the {n_train} training rows")
    per_epoch = n_train // config.batch_size
    first, last = start // per_epoch, (start + n - 1) // per_epoch
    offset = (start - first * per_epoch) * config.batch_size
    per_seed = []
    for seed in seeds:
        epochs = [0 if config.replay_first_epoch else epoch for epoch in range(first, last + 1)]
        order = torch.cat([epoch_order(seed, epoch, n_train) for epoch in epochs])
        per_seed.append(order[offset:offset + n * config.batch_size].view(n, config.batch_size))
    return torch.stack(per_seed, dim=1)

"""The MLP experiment (Table 3 of the papers): the 784-200-200-10 MLP on 1,000 MNIST digits, MSE on
one-hot targets, all seeds trained as one batched module (`grokutils.batched`).

Everything the MLP has and modular addition has not lives here: its data cache, optimizer,
batch order and step, the measures of a whole model (accuracy, loss, l2 norm, activation
sparsity, local circuit complexity) and the per-layer tables only its chapters read. `MLP`
is its `grokutils.tasks.Task`, what the loop and the engine call:

    from grokutils.mlp import MLP
    model, optimizer = MLP.model_and_optimizer(config, seeds=[0, 1, 2], device=torch.device("cpu"))

The per-matrix HTSR measures are shared with modular addition (`grokutils.measures`).
"""
from __future__ import annotations

import copy
import functools

import pandas as pd
import torch
import torch.nn.functional as F

from grokutils import batched
from grokutils.config import MLP_OPTIMIZERS, MLPConfig
from grokutils.data import load_mnist
from grokutils.measures import layer_measures, shuffle_seed
from grokutils.models import DTYPES, N_CLASSES, make_mlp, weight_matrices
from grokutils.models import MLP as PlainMLP
from grokutils.train import epoch_rows, train_step

SPARSITY_BATCH = 200  # the authors' notebook measures sparsity on one batch of 200 images
LCC_DROPOUT_REPEATS = 5  # draws averaged in the notebook variant of circuit complexity
AVERAGED_LAYERS = ("fc1", "fc2")  # the papers' average alpha is over FC1 and FC2 (paper (b) 4.1)

# --- data, optimizer, step ------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def cached_mnist(n_per_class: int, data_seed: int, data_source: str):
    """The data, loaded once per (worker) process."""
    return load_mnist(n_per_class=n_per_class, seed=data_seed, data_source=data_source)


def make_optimizer(config: MLPConfig, parameters, plain: bool = False) -> torch.optim.Optimizer:
    """The config's optimizer (`config.optimizer`) at its lr and weight decay, other settings
    PyTorch's defaults (AdamW, Adam: betas (0.9, 0.999), eps 1e-8; SGD: no momentum; Adam's
    weight decay is an L2 term in the gradient, AdamW's is decoupled).

    Unless `plain`, Adam and AdamW use PyTorch's fused kernel where it pays: on CUDA and in
    float32 (one pass over each parameter instead of about ten, rounding differs slightly);
    in float64 on the CPU its single-tensor code, which `torch.optim` uses there by default.
    """
    parameters = list(parameters)
    options = {"lr": config.lr, "weight_decay": config.weight_decay}
    if not plain and config.optimizer in ("adam", "adamw"):
        fused = parameters[0].device.type == "cuda" or parameters[0].dtype == torch.float32
        options.update({"fused": True} if fused else {"foreach": False})
    return MLP_OPTIMIZERS[config.optimizer](parameters, **options)


def plain_parameter_groups(config: MLPConfig) -> list[dict]:
    """The `param_groups` of the config's optimizer over one plain `MLP`, without implementation
    flags: what a one-seed loop saves."""
    return copy.deepcopy(_plain_parameter_groups(config))


@functools.lru_cache(maxsize=8)
def _plain_parameter_groups(config: MLPConfig) -> list[dict]:
    with torch.device("meta"):
        return make_optimizer(config, PlainMLP().to(DTYPES[config.dtype]).parameters(),
                              plain=True).state_dict()["param_groups"]


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


# --- the measures of a whole model -----------------------------------------------------------


def _kl_rows(logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || softmax(perturbed)) per example: (B,)."""
    log_p, log_q = F.log_softmax(logits, dim=1), F.log_softmax(perturbed_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def circuit_complexity_paper(model, x: torch.Tensor, drop_fraction: float, seed: int) -> float:
    """Paper text: sum over examples of KL(f_W(x) || f_W'(x)), W' = W with a random 10% zeroed."""
    generator = torch.Generator().manual_seed(seed)
    perturbed = {name: tensor * (torch.rand(tensor.shape, generator=generator) >= drop_fraction)
                 if name.endswith("weight") else tensor
                 for name, tensor in model.state_dict().items()}
    logits = model(x)
    perturbed_logits = torch.func.functional_call(model, perturbed, (x,))
    return float(_kl_rows(logits, perturbed_logits).sum())


def circuit_complexity_notebook(model, x: torch.Tensor, dropout_p: float, seed: int) -> float:
    """Our reading of the authors' notebook: dropout p on the hidden activations, mean KL."""
    generator = torch.Generator().manual_seed(seed)
    logits = model(x)

    def dropped(h: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(h.shape, generator=generator) >= dropout_p).to(h.dtype)
        return h * keep / (1 - dropout_p)

    values = []
    for _ in range(LCC_DROPOUT_REPEATS):
        h2 = torch.relu(model.fc2(dropped(model.hidden1(x))))
        values.append(_kl_rows(logits, model.fc3(dropped(h2))).mean())
    return float(torch.stack(values).mean())


def model_measures(state: dict[str, torch.Tensor], config, seed: int, step: int) -> dict:
    """Accuracy, loss, l2 norm, sparsity and circuit complexity of one checkpoint."""
    data = cached_mnist(config.n_per_class, config.data_seed, config.data_source)
    model = make_mlp(seed=0, init_scale=1.0, dtype=config.dtype)
    model.load_state_dict(state)
    dtype = model.fc1.weight.dtype  # the data are float64; a float32 model sees them in float32
    train_x, test_x = data.train_x.to(dtype), data.test_x.to(dtype)
    row = {}
    with torch.no_grad():
        for split, x, y in (("train", train_x, data.train_y), ("test", test_x, data.test_y)):
            outputs = model(x)
            row[f"{split}_accuracy"] = float((outputs.argmax(1) == y).double().mean())
            row[f"{split}_loss"] = float(F.mse_loss(outputs, F.one_hot(y, N_CLASSES).to(outputs.dtype)))
        row["l2_norm"] = float(torch.sqrt(sum((w**2).sum() for w in weight_matrices(model).values())))
        hidden = model.hidden1(train_x[:SPARSITY_BATCH])
        row["activation_sparsity"] = float((hidden < config.sparsity_tau).double().mean())
        row["lcc_paper"] = circuit_complexity_paper(model, train_x, config.lcc_drop_fraction,
                                                    shuffle_seed(seed, step))
        row["lcc_notebook"] = circuit_complexity_notebook(model, train_x, config.lcc_dropout_p,
                                                          shuffle_seed(seed, step))
    return row


def measure_checkpoint(state: dict[str, torch.Tensor], config, seed: int, step: int) -> tuple[dict, list[dict], dict]:
    """All measures of one checkpoint: (model row, layer rows, arrays)."""
    weights = {name: w.detach().cpu().double().numpy() for name, w in weight_matrices(state).items()}
    layer_rows, arrays = layer_measures(weights, seed, step)
    return model_measures(state, config, seed, step), layer_rows, arrays


# --- tables the MLP chapters read ------------------------------------------------------------


def with_average_alpha(layers: pd.DataFrame) -> pd.DataFrame:
    """Layer rows plus one 'average' row per (seed, step): mean alpha and traps of FC1, FC2."""
    averaged = (layers[layers.layer.isin(AVERAGED_LAYERS)]
                .groupby(["seed", "step"])[["alpha", "traps"]].mean().reset_index().assign(layer="average"))
    return pd.concat([layers, averaged], ignore_index=True)


def with_fc1_entropy(result) -> pd.DataFrame:
    """The curves plus FC1's absolute weight entropy (the authors' notebook uses FC1 only)."""
    fc1 = result.layers[result.layers.layer == "fc1"][["seed", "step", "abs_weight_entropy"]]
    return result.curves.merge(fc1.rename(columns={"abs_weight_entropy": "abs_weight_entropy_fc1"}),
                               on=["seed", "step"])


# --- the task ----------------------------------------------------------------------------------


class MLPTask:
    """The MLP as `grokutils.tasks.Task`: all seeds of a run train together as one batched module."""

    config_class = MLPConfig
    group_size = None  # every seed in one group

    def data(self, config: MLPConfig):
        return cached_mnist(config.n_per_class, config.data_seed, config.data_source)

    def describe(self, config: MLPConfig, data) -> str:
        return data.source

    def model_and_optimizer(self, config: MLPConfig, seeds: list[int], device: torch.device):
        model = batched.BatchedMLP.initial(config, seeds).to(device)
        model.compile_wanted = default_compile(device, config.dtype)  # at the first step
        return model, make_optimizer(config, model.parameters())

    def seed_state(self, model, optimizer, index: int, config: MLPConfig) -> tuple[dict, dict]:
        return batched.seed_states(model, optimizer, index, plain_parameter_groups(config))

    def load_states(self, model, optimizer, states: list[dict]) -> None:
        batched.load_seed_states(model, optimizer, states)

    def train_set(self, config: MLPConfig, data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, one-hot y) on the device; `data` is the loaded data or a (train_x, train_y) pair."""
        x, y = data if isinstance(data, tuple) else (data.train_x, data.train_y)
        return x.to(device, DTYPES[config.dtype]), F.one_hot(y, N_CLASSES).to(device, DTYPES[config.dtype])

    def step(self, config: MLPConfig, seeds: list[int], step: int, model, optimizer, train_set) -> torch.Tensor:
        x, y_onehot = train_set
        rows = torch.stack([batch_indices(config, seed, step, len(x)) for seed in seeds]).to(x.device)  # (S, B)
        if model.compile_wanted:
            model.compile_wanted = False
            model.compile_losses(x, y_onehot, rows, mode="reduce-overhead" if x.device.type == "cuda" else None)
        if model.compiled is not None and x.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs may be overwritten
        return train_step(model, optimizer, lambda: model.losses(x, y_onehot, rows))

    def measure_checkpoint(self, state: dict[str, torch.Tensor], config: MLPConfig, seed: int,
                           step: int) -> tuple[dict, list[dict], dict]:
        return measure_checkpoint(state, config, seed, step)


MLP = MLPTask()

"""Modular addition (paper (b) Appendix H): the data, optimizer, schedule, loss, measures and task.

    result = engine.run(ModAddConfig(steps=20_000))   # config: grokutils.config; loop: grokutils.train

The papers give no optimizer, schedule or data split for this experiment. The defaults are
those of Nanda et al. (2023): AdamW, lr 1e-3, betas (0.9, 0.98), weight decay 1.0 on every
parameter, a 10-step linear warm-up, full-batch steps on a random 30% of the 12,769 pairs,
cross-entropy at the last position, float32. Every one is a field of `ModAddConfig`, so a
search over them is a list of configs (`search_configs`), each cached in the results store.

Each checkpoint is measured in a worker process while training goes on: accuracy and loss,
HTSR alpha and correlation traps of the eight analyzed matrices (W_Q, W_K, W_V analyzed as
128 x 128 matrices holding all four heads: a single head's 32 x 128 block has only 32
eigenvalues, too few for a tail fit and pooled five-fold by WeightWatcher), their spectra,
and the Fourier readouts of `grokutils.transformer`. Its tables are in
`grokutils.modadd_analysis`, its figures in `grokutils.plots.modadd`.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from grokutils import transformer
from grokutils.config import ModAddConfig, resolve_init_from
from grokutils.data import ModularAdditionData, modular_addition_data
from grokutils.measures import layer_measures
from grokutils.train import epoch_rows, train_step
from grokutils.transformer import FullBatch, make_transformer

log = logging.getLogger(__name__)

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


def make_optimizer(config: ModAddConfig, parameters) -> torch.optim.AdamW:
    """AdamW over `parameters` with the config's settings; with `step_impl="lean"` PyTorch's fused
    AdamW (one kernel for all parameters), else its default multi-tensor one. The same call as the
    MLP's `grokutils.mlp.make_optimizer(config, parameters)`."""
    fused = {"fused": True} if config.step_impl == "lean" else {}
    return torch.optim.AdamW(parameters, lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps, weight_decay=config.weight_decay, **fused)


def learning_rate(config: ModAddConfig, step: int) -> float:
    """The lr of update `step` (0-based): linear warm-up from 0, as Nanda et al.'s LambdaLR."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(step / config.warmup_steps, 1.0)


def loss_function(config: ModAddConfig) -> Callable[[FullBatch, torch.nn.Module], torch.Tensor]:
    """The training loss of `config.step_impl`: all four give the same value up to round-off."""
    return {"fast": FullBatch.loss, "reference": FullBatch.reference_loss,
            "compiled": compiled_loss, "lean": lean_loss}[config.step_impl]


_COMPILED: dict[str, Callable] = {}


def _compiled(name: str, eager: Callable, batch: FullBatch, model: torch.nn.Module) -> torch.Tensor:
    """`eager(batch, model)` under `torch.compile`, compiled on first use in each process; where
    compiling or running it fails, the eager loss, with one warning."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(eager, dynamic=False)
    try:
        return _COMPILED[name](batch, model)
    except Exception as err:  # noqa: BLE001 - any compiler failure: fall back, say so once
        if _COMPILED[name] is eager:
            raise
        log.warning("torch.compile of the modular-addition loss %r failed (%s: %s); using the eager loss",
                    name, type(err).__name__, err)
        _COMPILED[name] = eager
        return eager(batch, model)


def compiled_loss(batch: FullBatch, model: torch.nn.Module) -> torch.Tensor:
    """`FullBatch.loss` under `torch.compile` (forward and backward fused by Inductor)."""
    return _compiled("loss", FullBatch.loss, batch, model)


def lean_loss(batch: FullBatch, model: torch.nn.Module) -> torch.Tensor:
    """`FullBatch.lean_loss` under `torch.compile` (`step_impl="lean"`)."""
    return _compiled("lean", FullBatch.lean_loss, batch, model)


def initial_weights(config: ModAddConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seed `seed`'s weights kept by the finished run that `config.init_from` names ('RUN:WHICH',
    RUN a folder in results/ or a path), in the config's dtype; the two must share the data.

    Only weights are kept by a finished run, so the optimizer starts afresh (zero moments)."""
    from grokutils import store
    from grokutils.paths import RESULTS_DIR

    name, which = config.init_from.rsplit(":", 1)
    folder = Path(name) if "/" in name else RESULTS_DIR / name
    source = store.load_run(folder, ModAddConfig)  # refuses a folder that is missing or not sealed
    shared = ("p", "train_fraction", "data_seed")
    if any(getattr(source.config, field) != getattr(config, field) for field in shared):
        raise ValueError(f"init_from {config.init_from!r}: its run has "
                         f"{ {field: getattr(source.config, field) for field in shared} }, this config "
                         f"{ {field: getattr(config, field) for field in shared} }; they must share the data")
    if seed >= source.config.n_seeds:
        raise ValueError(f"init_from {config.init_from!r} has seeds 0..{source.config.n_seeds - 1}, not seed {seed}")
    dtype = transformer.DTYPES[config.dtype]
    return {key: value.to(dtype) for key, value in source.weights(seed, which).items()}


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


# --- the collapse search ------------------------------------------------------------------


def search_configs(base: ModAddConfig, overrides: list[dict]) -> list[ModAddConfig]:
    """One config per dict of field overrides (one seed each); unknown fields are refused, and
    `init_from: "main:WHICH"` starts from `base`'s own run (`grokutils.config.resolve_init_from`)."""
    fields = {field.name for field in dataclasses.fields(ModAddConfig)}
    configs = []
    for override in overrides:
        unknown = set(override) - fields
        if unknown:
            raise ValueError(f"search entry {override} sets unknown fields {sorted(unknown)}; known: {sorted(fields)}")
        resolved = {**override, "init_from": resolve_init_from(override.get("init_from", ""), base)}
        configs.append(dataclasses.replace(base, **{"n_seeds": 1, **resolved}))
    return configs


# --- the task ----------------------------------------------------------------------------------


class ModAddTask:
    """Modular addition as `grokutils.tasks.Task`: one transformer per seed (groups of one)."""

    config_class = ModAddConfig
    group_size = 1

    def data(self, config: ModAddConfig) -> ModularAdditionData:
        return cached_data(config.p, config.train_fraction, config.data_seed)

    def describe(self, config: ModAddConfig, data: ModularAdditionData) -> str:
        return f"all {config.p}x{config.p} pairs, {len(data.train_idx)} for training (seed {config.data_seed})"

    def model_and_optimizer(self, config: ModAddConfig, seeds: list[int], device: torch.device):
        (seed,) = seeds
        model = make_transformer(seed, config.p, config.dtype)
        if config.init_from:
            model.load_state_dict(initial_weights(config, seed))
        model = model.to(device)
        return model, make_optimizer(config, model.parameters())

    def seed_state(self, model, optimizer, index: int, config: ModAddConfig) -> tuple[dict, dict]:
        return model.state_dict(), optimizer.state_dict()

    def load_states(self, model, optimizer, states: list[dict]) -> None:
        (state,) = states
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    def train_set(self, config: ModAddConfig, data: ModularAdditionData, device: torch.device) -> FullBatch:
        return split_batch(data, "train").to(device)

    def step(self, config: ModAddConfig, seeds: list[int], step: int, model, optimizer,
             train_set: FullBatch) -> torch.Tensor:
        """One update (a mini-batch if the config has a batch size, else the whole train set); (1,) loss."""
        batch, loss_of = train_set, loss_function(config)
        if config.batch_size:
            rows = epoch_rows(seeds[0], step, len(batch.labels), config.batch_size)
            batch = batch.subset(rows.to(batch.a.device))
        return train_step(model, optimizer, lambda: loss_of(batch, model), learning_rate(config, step)).reshape(1)

    def measure_checkpoint(self, state: dict[str, torch.Tensor], config: ModAddConfig, seed: int,
                           step: int) -> tuple[dict, list[dict], dict]:
        return measure_checkpoint(state, config, seed, step)


MODADD = ModAddTask()

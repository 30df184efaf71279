"""The measures computed at every checkpoint: HTSR metrics per layer and progress measures.

Per layer: WeightWatcher alpha and fit fields, correlation traps (`rand_num_spikes`) with
the authors' `analyze(...)` call, the MP sigma and bulk edge of W_rand, the Frobenius norm
and the absolute weight entropy; our own eigenvalues of X(W) and X(W_rand) and the top
right singular vector, kept as arrays. Per model: train and test accuracy and loss, the l2
norm, activation sparsity, and the local circuit complexity in two named variants.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from grokutils import htsr
from grokutils.data import load_mnist
from grokutils.models import LAYERS, N_CLASSES, make_mlp, weight_matrices

SPARSITY_BATCH = 200  # the authors' notebook measures sparsity on one batch of 200 images
LCC_DROPOUT_REPEATS = 5  # draws averaged in the notebook variant of circuit complexity


def shuffle_seed(seed: int, step: int) -> int:
    """The numpy seed of the W_rand shuffle at (run seed, step): fixed, distinct per checkpoint."""
    return (seed * 1_000_003 + step) % 2**32


@functools.lru_cache(maxsize=4)
def cached_mnist(n_per_class: int, data_seed: int, data_source: str):
    """The data, loaded once per (worker) process."""
    return load_mnist(n_per_class=n_per_class, seed=data_seed, data_source=data_source)


def spectrum(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W (squared singular values, weightwatcher's scale), ascending."""
    return np.sort(np.linalg.svd(matrix, compute_uv=False) ** 2)


def shuffled(matrix: np.ndarray, seed: int) -> np.ndarray:
    """W_rand: the entries of W permuted at random (seeded), same shape."""
    flat = matrix.ravel().copy()
    np.random.default_rng(seed).shuffle(flat)
    return flat.reshape(matrix.shape)


def top_right_vector(matrix: np.ndarray) -> np.ndarray:
    """v1, the top right singular vector of W (input space), sign fixed: largest |entry| > 0."""
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    v1 = vt[0]
    return v1 * np.sign(v1[np.argmax(np.abs(v1))])


def spectrum_and_top_vector(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`spectrum(matrix)` and `top_right_vector(matrix)` from one SVD."""
    _, singular_values, vt = np.linalg.svd(matrix, full_matrices=False)
    v1 = vt[0]
    return np.sort(singular_values**2), v1 * np.sign(v1[np.argmax(np.abs(v1))])


def abs_weight_entropy(matrix: np.ndarray) -> float:
    """H = -sum |w| log |w| over the non-zero entries."""
    magnitudes = np.abs(matrix[matrix != 0])
    return float(-(magnitudes * np.log(magnitudes)).sum())


def layer_measures(weights: dict[str, np.ndarray], seed: int, step: int) -> tuple[list[dict], dict]:
    """One row per layer (HTSR fit, traps, norms, entropy) and the arrays to keep."""
    ww = htsr.analyze_matrices(weights, seed=shuffle_seed(seed, step), **htsr.CHECKPOINT_ANALYZE_KWARGS)
    rows, arrays = [], {}
    for name, matrix in weights.items():
        row = {"layer": name, **ww.loc[name].to_dict()}
        row["frobenius_norm"] = float(np.linalg.norm(matrix))
        row["abs_weight_entropy"] = abs_weight_entropy(matrix)
        rows.append(row)
        arrays[f"{name}/evals"], arrays[f"{name}/v1"] = spectrum_and_top_vector(matrix)
        arrays[f"{name}/rand_evals"] = spectrum(shuffled(matrix, shuffle_seed(seed, step)))
    return rows, arrays


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


__all__ = ["LAYERS", "measure_checkpoint", "model_measures", "layer_measures", "spectrum", "shuffled",
           "top_right_vector", "abs_weight_entropy", "shuffle_seed"]


AVERAGED_LAYERS = ("fc1", "fc2")  # the papers' average alpha is over FC1 and FC2 (paper (b) 4.1)


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

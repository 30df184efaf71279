"""The measures of a weight matrix that both experiments keep at every checkpoint.

`layer_measures`, per matrix: WeightWatcher alpha and fit fields, correlation traps
(`rand_num_spikes`) with the authors' `analyze(...)` call, the MP sigma and bulk edge of
W_rand, the Frobenius norm and the absolute weight entropy; our own eigenvalues of X(W) and
X(W_rand) and the top right singular vector, kept as arrays. The measures of a whole model
are each experiment's own: `grokutils.mlp.model_measures`, `grokutils.modadd.model_measures`.
"""
from __future__ import annotations

import numpy as np

from grokutils import htsr


def shuffle_seed(seed: int, step: int) -> int:
    """The numpy seed of the W_rand shuffle at (run seed, step): fixed, distinct per checkpoint."""
    return (seed * 1_000_003 + step) % 2**32


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

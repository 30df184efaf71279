"""Correlation traps: the MP fit to the ESD of W_rand, its bulk edge, the Tracy-Widom margin.

A correlation trap is an eigenvalue of X(W_rand) = W_rand^T W_rand, W_rand the entries of W
shuffled, that lies beyond the Marchenko-Pastur (MP) bulk edge lambda_plus of the best MP fit
plus a Tracy-Widom (TW) margin. This module recomputes what weightwatcher 0.7.5.5 reports as
`rand_num_spikes`, `rand_sigma_mp` and `rand_bulk_max`, following its procedure step by step
(`WeightWatcher.mp_fit` and `RMT_Util.fit_density_with_range`):

1. rescale the eigenvalues so that their mean is 1 (`Wscale**2 = n / sum(evals)`);
2. estimate their density with a linear-kernel KDE (bandwidth 0.1) on 1,000 points of
   [0, max + 0.5], and drop the points where that density is below 0.01;
3. choose sigma on a grid from 0.05 to 2 times sigma_max (the sigma whose MP edge is the
   largest eigenvalue), step 0.01 times sigma_max, minimizing the summed squared gap between
   the MP density and the KDE; a sigma whose edges do not bracket the KDE's mode, or whose
   upper edge lies past the KDE's support, scores a fixed penalty; then polish the best grid
   point with Nelder-Mead (scipy's `brute` with its default `finish=fmin`);
4. for a square W (Q = 1) step 3 fits weightwatcher's quarter-circle law to the singular
   values sqrt(evals) instead, without the penalty;
5. lambda_plus = (sigma (1 + 1/sqrt(Q)))^2, TW = Q^(-1/2) lambda_plus^(2/3) M^(-2/3), and a
   trap is an eigenvalue above lambda_plus + sqrt(TW) (weightwatcher adds the square root of
   the TW scale, a wider margin than the TW fluctuation scale itself).

weightwatcher refits a KDE for every trial sigma (1-2 s per layer); the KDE does not depend
on sigma, so we compute it once and score the whole grid at once (milliseconds per layer).

It also holds the KS test of the rescaled ESD against the fitted MP law (paper (b) Table 4),
weightwatcher's shuffles replayed from the same seed, and the detector's validation cases:
Gaussian matrices, planted rank-one spikes and single large entries about the BBP threshold.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, stats

from grokutils.htsr import POOLED_BELOW_N_EVALS
from grokutils.spectra import (
    bbp_outlier_ratio,
    bbp_threshold,
    gaussian_matrix,
    linear_kde,
    mp_cdf,
    mp_density,
    mp_edges,
    sides,
    trap_threshold,
)

KDE_POINTS = 1000  # KDE evaluated on this many points of [0, max + KDE_PAD]
KDE_PAD = 0.5
KDE_FLOOR = 0.01  # grid points with KDE density at or below this are left out of the fit
PENALTY = 1000.0  # residual per point of a sigma whose MP edges do not fit the KDE
SIGMA_GRID = (0.05, 2.0, 0.01)  # start, stop, step, in units of sigma_max
POOLED_BELOW = POOLED_BELOW_N_EVALS  # weightwatcher pools shuffles of matrices with fewer eigenvalues ...
POOLED_REPLICAS = 5  # ... this many of them


@dataclass(frozen=True)
class MPFit:
    """An MP fit to one ESD, in weightwatcher's rescaled units (mean eigenvalue 1)."""

    q: float  # aspect ratio Q = N / M >= 1
    m: int  # M, the smaller side of W
    scale: float  # the eigenvalues were multiplied by this: n / sum(evals) (Wscale^2)
    sigma_mp: float  # fitted MP scale (weightwatcher's rand_sigma_mp)
    evals: np.ndarray = field(repr=False, compare=False)  # rescaled, ascending

    @property
    def lambda_plus(self) -> float:
        """MP bulk edge (sigma (1 + 1/sqrt(Q)))^2."""
        return float(mp_edges(self.q, self.sigma_mp)[1])

    @property
    def lambda_minus(self) -> float:
        """MP lower edge (sigma (1 - 1/sqrt(Q)))^2."""
        return float(mp_edges(self.q, self.sigma_mp)[0])

    @property
    def threshold(self) -> float:
        """lambda_plus + TW margin (`spectra.trap_threshold`): eigenvalues above it are traps."""
        return trap_threshold(self.sigma_mp, self.q, self.m)

    @property
    def trap_evals(self) -> np.ndarray:
        """The rescaled eigenvalues beyond the threshold."""
        return self.evals[self.evals > self.threshold]

    @property
    def traps(self) -> int:
        """Number of correlation traps."""
        return int(len(self.trap_evals))

    def density(self, x: np.ndarray) -> np.ndarray:
        """The fitted MP density at rescaled eigenvalues x (0 outside the bulk)."""
        return mp_density(np.asarray(x, dtype=float), self.q, self.sigma_mp)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The fitted MP distribution function at rescaled eigenvalues x."""
        return mp_cdf(np.asarray(x, dtype=float), self.q, self.sigma_mp)


def _quarter_circle(x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """weightwatcher's quarter-circle law for singular values: sqrt(4 - x^2) / (pi sigma^2)."""
    return np.sqrt(np.clip(4 - x**2, 0, None)) / (np.pi * sigma**2)


def _fit_residuals(sigmas: np.ndarray, x: np.ndarray, kde: np.ndarray, q: float) -> np.ndarray:
    """Sum of squared (law - KDE) over the kept points x, one value per sigma."""
    sigmas = np.atleast_1d(np.asarray(sigmas, dtype=float))[:, None]  # (k, 1)
    if q == 1:
        return ((_quarter_circle(x[None, :], sigmas) - kde) ** 2).sum(axis=1)
    lo, hi = (sigmas * (1 - 1 / np.sqrt(q))) ** 2, (sigmas * (1 + 1 / np.sqrt(q))) ** 2
    law = np.zeros((len(sigmas), len(x)))
    for row, sigma in enumerate(sigmas[:, 0]):
        law[row] = mp_density(x, q, sigma)
    mode = x[np.argmax(kde)]
    penalized = ((hi < mode) | (hi > x.max()) | (lo > mode))[:, 0]
    scores = ((law - kde) ** 2).sum(axis=1)
    scores[penalized] = PENALTY**2 * len(x)
    return scores


def _check_spectrum(evals: np.ndarray, n: int, m: int) -> np.ndarray:
    """Validate an ESD and the shape it came from; return it as a sorted float64 array."""
    evals = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    if len(evals) < 2 or not np.isfinite(evals).all() or evals.min() < 0 or evals.sum() <= 0:
        raise ValueError(f"evals must hold >= 2 finite non-negative values with a positive sum, "
                         f"got {len(evals)} values in [{evals.min() if len(evals) else None}, "
                         f"{evals.max() if len(evals) else None}]")
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer)) and n >= m >= 1):
        raise ValueError(f"n and m must be integers with n >= m >= 1 (the long and short sides of W), got {n}, {m}")
    return evals


def fit_mp(evals: np.ndarray, n: int, m: int) -> MPFit:
    """Fit an MP law to an ESD as weightwatcher 0.7.5.5 does; n >= m are the sides of W."""
    evals = _check_spectrum(evals, n, m)
    q = n / m
    scale = len(evals) / evals.sum()  # Wscale^2: mean eigenvalue 1 after rescaling
    rescaled = evals * scale
    sigma_max = np.sqrt(rescaled.max()) / (1 + 1 / np.sqrt(q))  # MP edge at the largest eigenvalue
    values = np.sqrt(rescaled) if q == 1 else rescaled
    grid = np.linspace(0, values.max() + KDE_PAD, KDE_POINTS)
    kde = linear_kde(values, grid)
    kept = kde > KDE_FLOOR
    x, kde = grid[kept], kde[kept]
    start, stop, step = (sigma_max * factor for factor in SIGMA_GRID)
    sigmas = np.mgrid[slice(start, stop, step)]  # the grid scipy's brute builds
    best = sigmas[np.argmin(_fit_residuals(sigmas, x, kde, q))]
    polished = optimize.fmin(lambda s: _fit_residuals(s, x, kde, q)[0], best, disp=False)
    return MPFit(q=q, m=int(m), scale=float(scale), sigma_mp=float(polished[0]), evals=rescaled)


def ks_test(fit: MPFit) -> tuple[float, float]:
    """One-sample KS test of the rescaled ESD against the fitted MP law: (statistic, p-value)."""
    result = stats.kstest(fit.evals, fit.cdf)
    return float(result.statistic), float(result.pvalue)


def fit_summary(fit: MPFit) -> dict:
    """The numbers of one fit, in rescaled units, as a table row."""
    ks, p_value = ks_test(fit)
    return {"n_evals": len(fit.evals), "Q": fit.q, "sigma_mp": fit.sigma_mp,
            "lambda_plus": fit.lambda_plus, "threshold": fit.threshold,
            "lambda_max": float(fit.evals.max()), "traps": fit.traps, "ks": ks, "p_value": p_value}


def fit_rand_spectrum(rand_evals: np.ndarray, shape: tuple[int, int]) -> MPFit:
    """The MP fit of a stored ESD of W_rand, W of `shape` (pooled shuffles allowed)."""
    return fit_mp(rand_evals, *sides(shape))


def shuffled_spectrum(matrix: np.ndarray, generator: np.random.RandomState, replicas: int) -> np.ndarray:
    """Eigenvalues of X(W_rand) over `replicas` shuffles drawn from `generator`, pooled, ascending."""
    n_evals = min(matrix.shape)
    pooled = []
    for _ in range(replicas):
        flat = np.array(matrix, dtype=np.float64).ravel()  # row-major, as W.flatten()
        generator.shuffle(flat)
        singular = np.sort(np.linalg.svd(flat.reshape(matrix.shape), compute_uv=False))[-n_evals:]
        pooled.append(singular**2)
    return np.sort(np.concatenate(pooled))


def ww_shuffled_spectra(matrices: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The ESDs of W_rand that `htsr.analyze_matrices(matrices, seed=seed)` fits, replayed.

    weightwatcher seeds nothing itself; `analyze_matrices` seeds numpy's global generator, then
    weightwatcher takes, layer after layer, `replicas` shuffles for the fit (5 pooled below 100
    eigenvalues, else 1) and one more for its `rand_distance` column. We draw the same stream.
    """
    generator = np.random.RandomState(seed)  # the stream np.random.seed(seed) gives
    spectra = {}
    for name, matrix in matrices.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        replicas = POOLED_REPLICAS if min(matrix.shape) < POOLED_BELOW else 1
        spectra[name] = shuffled_spectrum(matrix, generator, replicas)
        generator.shuffle(matrix.ravel().copy())  # the extra shuffle weightwatcher draws (rand_distance)
    return spectra


def detect_traps(matrices: Mapping[str, np.ndarray], seed: int) -> pd.DataFrame:
    """Our trap count per matrix on weightwatcher's shuffles (same seed): one row per matrix."""
    if not matrices:
        raise ValueError("matrices must hold at least one 2-D matrix, got an empty mapping")
    rows = {}
    for name, rand_evals in ww_shuffled_spectra(matrices, seed).items():
        shape = np.shape(matrices[name])
        fit = fit_rand_spectrum(rand_evals, shape)
        rows[name] = {"N": sides(shape)[0], "M": sides(shape)[1], "pooled": len(rand_evals) > min(shape),
                      **fit_summary(fit), "lambda_plus_raw": fit.lambda_plus / fit.scale,
                      "threshold_raw": fit.threshold / fit.scale, "lambda_max_raw": float(rand_evals.max())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("layer")


def compare_with_weightwatcher(matrices: Mapping[str, np.ndarray], seed: int) -> pd.DataFrame:
    """Our traps, sigma_mp and lambda_plus beside weightwatcher's on the same shuffles."""
    from grokutils.htsr import analyze_matrices

    ours = detect_traps(matrices, seed)
    theirs = analyze_matrices(matrices, seed=seed, vectors=False, detX=False)
    table = pd.DataFrame({
        "traps (ours)": ours["traps"].astype(int),
        "traps (weightwatcher)": theirs["traps"].astype(int),
        "sigma_mp (ours)": ours["sigma_mp"], "sigma_mp (weightwatcher)": theirs["rand_sigma_mp"],
        "lambda_plus (ours)": ours["lambda_plus_raw"], "lambda_plus (weightwatcher)": theirs["rand_bulk_max"],
        "pooled shuffles": ours["pooled"],
    })
    table["agree"] = table["traps (ours)"] == table["traps (weightwatcher)"]
    return table


# --- validation cases -----------------------------------------------------------------------


def detection_strength(shape: tuple[int, int]) -> float:
    """Spike strength, in units of the BBP threshold, whose predicted outlier reaches the trap
    threshold lambda_plus + TW (sigma_mp = 1): weaker spikes leave the bulk but are not counted."""
    n, m = sides(shape)
    fit = MPFit(q=n / m, m=m, scale=1.0, sigma_mp=1.0, evals=np.ones(1))
    target = fit.threshold / fit.lambda_plus
    theta_c = bbp_threshold(shape)
    return float(optimize.brentq(lambda f: bbp_outlier_ratio(shape, f * theta_c) - target, 1.0, 10.0))


def plant_rank_one(matrix: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """matrix + strength u v^T, u and v random unit vectors (a spread-out rank-one spike)."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=matrix.shape[0]), rng.normal(size=matrix.shape[1])
    return matrix + strength * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))


def plant_large_entry(matrix: np.ndarray, value: float, seed: int) -> np.ndarray:
    """matrix with one random entry set to `value` (a rank-one spike e_i e_j^T that survives shuffling)."""
    rng = np.random.default_rng(seed)
    planted = np.array(matrix, dtype=np.float64)
    planted[rng.integers(matrix.shape[0]), rng.integers(matrix.shape[1])] = value
    return planted


def false_positive_draws(shape: tuple[int, int], n_draws: int, seed: int = 0) -> pd.DataFrame:
    """Trap counts of W_rand for `n_draws` Gaussian matrices of `shape`: one row per draw."""
    if n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws}")
    rows = []
    for draw in range(n_draws):
        matrix = gaussian_matrix(shape, seed=seed + draw)
        fit = fit_rand_spectrum(ww_shuffled_spectra({"W": matrix}, seed + draw)["W"], shape)
        rows.append({"draw": draw, "traps": fit.traps, "sigma_mp": fit.sigma_mp,
                     "lambda_max / threshold": float(fit.evals.max() / fit.threshold)})
    return pd.DataFrame(rows)


def spike_detection(shape: tuple[int, int], strengths: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Traps found for spikes of each strength (in BBP units): rank-one in W, large entry in W_rand."""
    theta_c = bbp_threshold(shape)
    rows = []
    for strength in np.asarray(strengths, dtype=float):
        noise = gaussian_matrix(shape, seed=seed)
        spread = plant_rank_one(noise, strength * theta_c, seed=seed + 1)
        entry = plant_large_entry(noise, strength * theta_c, seed=seed + 1)
        rows.append({
            "strength / BBP threshold": strength,
            "rank-one: ESD of W": fit_mp(np.linalg.svd(spread, compute_uv=False) ** 2, *sides(shape)).traps,
            "rank-one: ESD of W_rand": fit_rand_spectrum(ww_shuffled_spectra({"W": spread}, seed)["W"], shape).traps,
            "large entry: ESD of W_rand": fit_rand_spectrum(ww_shuffled_spectra({"W": entry}, seed)["W"], shape).traps,
        })
    return pd.DataFrame(rows).set_index("strength / BBP threshold")



# --- a finished run: refits of the stored spectra ---------------------------------------------

def refit_run(result, layers: tuple[str, ...] = ("fc1", "fc2", "fc3")) -> pd.DataFrame:
    """Our MP fit of every stored ESD of W_rand: one row per (seed, step, layer), raw units.

    The results store keeps one shuffle per checkpoint (`measures.shuffled`, not the shuffle
    weightwatcher drew for the `traps` column, and never pooled), so counts may differ from
    weightwatcher's near the threshold and for FC3 (10 eigenvalues, pooled 5x by weightwatcher).
    """
    rows = []
    for record in result.layers[result.layers.layer.isin(layers)].itertuples():
        rand_evals = result.array(record.seed, record.step, record.layer, "rand_evals").astype(np.float64)
        fit = fit_rand_spectrum(rand_evals, (int(record.N), int(record.M)))
        summary = fit_summary(fit)
        rows.append({"seed": record.seed, "step": record.step, "layer": record.layer,
                     "sigma_mp": fit.sigma_mp, "ks": summary["ks"], "p_value": summary["p_value"],
                     "traps": fit.traps, "traps_weightwatcher": int(record.traps),
                     "lambda_plus": fit.lambda_plus / fit.scale, "threshold": fit.threshold / fit.scale,
                     "lambda_max_rand": float(rand_evals.max()),
                     "max_over_threshold": float(fit.evals.max() / fit.threshold)})
    return pd.DataFrame(rows)

"""Random-matrix laws the measures and figures use: Marchenko-Pastur, power law, the trap
threshold (MP edge + Tracy-Widom margin, as weightwatcher 0.7.5.5 adds it), the BBP transition.

Eigenvalues are those of X(W) = W^T W; Q = N / M >= 1 is the aspect ratio of W (N x M).
"""
from __future__ import annotations

import numpy as np

KDE_BANDWIDTH = 0.1  # bandwidth of the linear-kernel KDE (weightwatcher's bw)
CDF_POINTS = 4001  # grid of the numerical MP CDF


def mp_edges(q: float, sigma: float) -> tuple[float, float]:
    """lambda_minus and lambda_plus of the MP law with ratio q and scale sigma."""
    return (sigma * (1 - 1 / np.sqrt(q))) ** 2, (sigma * (1 + 1 / np.sqrt(q))) ** 2


def tw_margin(q: float, lambda_plus: float, m: int) -> float:
    """sqrt(TW), TW = Q^(-1/2) lambda_plus^(2/3) M^(-2/3): the margin weightwatcher adds to the edge."""
    return float(np.sqrt(q ** -0.5 * lambda_plus ** (2 / 3) * m ** (-2 / 3)))


def trap_threshold(sigma_mp: float, q: float, m: int) -> float:
    """lambda_plus of the MP fit plus weightwatcher's Tracy-Widom margin, in the units of its
    fit (eigenvalues rescaled to mean 1): eigenvalues beyond it are traps.

    weightwatcher's `rand_bulk_max` column is lambda_plus converted back to raw units; the
    rescaling factor, n / sum(eigenvalues) = n / ||W||_F^2, is the same for W and W_rand.
    """
    lambda_plus = mp_edges(q, sigma_mp)[1]
    return lambda_plus + tw_margin(q, lambda_plus, m)


def mp_density(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """MP density of the eigenvalues of W^T W / N-type matrices, ratio Q, scale sigma."""
    lo, hi = mp_edges(q, sigma)
    inside = (x > lo) & (x < hi) & (x > 0)
    out = np.zeros_like(x, dtype=float)
    xi = x[inside]
    out[inside] = q * np.sqrt((hi - xi) * (xi - lo)) / (2 * np.pi * sigma**2 * xi)
    return out


def mp_cdf(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """MP distribution function, integrated numerically in nu = sqrt(lambda) (smooth there)."""
    lo, hi = mp_edges(q, sigma)
    nu = np.linspace(np.sqrt(lo), np.sqrt(hi), CDF_POINTS)
    density_nu = 2 * nu * mp_density(nu**2, q, sigma)  # density of nu = sqrt(lambda)
    cumulative = np.concatenate([[0.0], np.cumsum((density_nu[1:] + density_nu[:-1]) / 2 * np.diff(nu))])
    cumulative /= cumulative[-1]
    return np.interp(np.sqrt(np.clip(x, 0, None)), nu, cumulative, left=0.0, right=1.0)


def linear_kde(values: np.ndarray, grid: np.ndarray, bandwidth: float = KDE_BANDWIDTH) -> np.ndarray:
    """Kernel density with the linear (triangular) kernel of half-width `bandwidth`."""
    distance = np.abs(grid[:, None] - values[None, :]) / bandwidth  # (points, n)
    return np.clip(1 - distance, 0, None).sum(axis=1) / (len(values) * bandwidth)


def gaussian_matrix(shape: tuple[int, int], seed: int, sigma: float = 1.0) -> np.ndarray:
    """A matrix of i.i.d. N(0, sigma^2) entries."""
    sides(shape)
    return np.random.default_rng(seed).normal(0.0, sigma, size=shape)


def bbp_threshold(shape: tuple[int, int], sigma: float = 1.0) -> float:
    """Strength theta above which theta u v^T (unit u, v) pops out of a Gaussian matrix's bulk.

    For W = G + theta u v^T, G with i.i.d. N(0, sigma^2) entries and sides N >= M, the top
    singular value leaves the bulk edge sigma (sqrt N + sqrt M) when theta > sigma (N M)^(1/4)
    (Benaych-Georges and Nadakuditi 2012; the rectangular BBP transition).
    """
    n, m = sides(shape)
    return float(sigma * (n * m) ** 0.25)


def bbp_outlier_ratio(shape: tuple[int, int], strength: float, sigma: float = 1.0) -> float:
    """Predicted top eigenvalue of X(G + theta u v^T) over the bulk edge, for large N and M.

    With c = M / N and t = theta / (sigma sqrt N): sqrt((1 + t^2)(c + t^2)) / t is the top
    singular value over sigma sqrt N above the transition (t > c^(1/4)), 1 + sqrt(c) the
    edge; below the transition the top eigenvalue sticks to the edge (ratio 1).
    """
    n, m = sides(shape)
    c, t = m / n, strength / (sigma * np.sqrt(n))
    if t <= c**0.25:
        return 1.0
    return float((1 + t**2) * (c + t**2) / t**2 / (1 + np.sqrt(c)) ** 2)


def powerlaw_density(x: np.ndarray, alpha: float, xmin: float, xmax: float | None) -> np.ndarray:
    """Power-law density x^-alpha on [xmin, xmax] (xmax None or NaN: unbounded), normalized."""
    top = np.inf if xmax is None or not np.isfinite(xmax) else xmax
    norm = (alpha - 1) / (xmin ** (1 - alpha) - (0.0 if np.isinf(top) else top ** (1 - alpha)))
    return np.where((x >= xmin) & (x <= top), norm * x ** (-alpha), 0.0)


def sides(shape: tuple[int, ...]) -> tuple[int, int]:
    """(N, M): the long and the short side of a 2-D shape."""
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"expected a 2-D shape with positive sides, got {tuple(shape)}")
    return int(max(shape)), int(min(shape))

"""WeightWatcher (HTSR) analysis of weight matrices, with its known pitfalls handled.

Pitfalls of weightwatcher 0.7.x that this module takes care of:

* it casts torch weights to float32 (CPU) or float16 (CUDA) before the SVD; we pass a
  dict of float64 numpy arrays, which it analyzes in float64;
* `randomize=True` shuffles with the global, unseeded `np.random`; we seed it per call;
* a failed power-law fit reports alpha = -1; we turn it into NaN (never averaged in);
* matrices with fewer than 100 eigenvalues are shuffled 5 times and the spectra pooled, so
  their trap counts can be inflated up to 5x; we flag those rows (`rand_pooled`);
* `import weightwatcher` sets the root logger to INFO and silences warnings process-wide;
  we import and run it with the caller's logging and warning filters restored afterwards.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from types import ModuleType

import numpy as np
import pandas as pd

# The call of the authors' public notebook (WeightWatcher-Examples, Grokking-MNIST.ipynb):
# traps come from `randomize=True`.
AUTHORS_ANALYZE_KWARGS: dict = dict(
    vectors=True, detX=True, plot=False, fix_fingers="clip_xmax", randomize=True
)
# What we run at every checkpoint: the authors' call without the eigenvector localization
# (vectors) and determinant (detX) extras. They feed none of the columns kept below (tested:
# equal kept columns on trained weights) and take over half of the time of a checkpoint.
CHECKPOINT_ANALYZE_KWARGS: dict = {**AUTHORS_ANALYZE_KWARGS, "vectors": False, "detX": False}
# weightwatcher pools 5 shuffles below this many eigenvalues (apply_random_esd).
ALPHA_LINE = 2.0  # alpha below 2 reads as a very heavy-tailed, over-correlated layer (HTSR)
POOLED_BELOW_N_EVALS = 100
# Columns we keep from weightwatcher's per-layer frame, renamed to what they are.
KEPT_COLUMNS = {
    "alpha": "alpha",  # power-law exponent of the ESD tail
    "alpha_weighted": "alpha_weighted",  # alpha * log10(lambda_max)
    "D": "ks_distance",  # KS distance of the power-law fit
    "xmin": "xmin",  # start of the fitted tail
    "xmax": "xmax",  # end of the fitted tail (clip_xmax)
    "num_pl_spikes": "num_pl_spikes",  # eigenvalues in the fitted tail
    "lambda_max": "lambda_max",  # largest eigenvalue of X = W^T W / N
    "log_norm": "log_norm",
    "log_spectral_norm": "log_spectral_norm",
    "stable_rank": "stable_rank",
    "num_evals": "num_evals",
    "N": "N",
    "M": "M",
    "rand_num_spikes": "traps",  # eigenvalues of X(W_rand) beyond the MP edge + TW margin
    "rand_sigma_mp": "rand_sigma_mp",  # fitted MP scale of W_rand
    "rand_bulk_max": "rand_bulk_max",  # lambda_plus, the MP bulk edge of W_rand
    "max_rand_eval": "max_rand_eval",  # largest eigenvalue of X(W_rand)
    "rand_distance": "rand_distance",  # JS distance between ESD(W) and ESD(W_rand)
}


@contextlib.contextmanager
def _restore_logging_and_warnings() -> Iterator[None]:
    """Undo what weightwatcher does to the root logger and the warning filters."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    filters = list(warnings.filters)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
        warnings.filters[:] = filters


def import_weightwatcher() -> ModuleType:
    """Import weightwatcher without its process-wide logging and warnings side effects."""
    previously_disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its import logs SVD-backend notices at WARNING
    try:
        with _restore_logging_and_warnings(), contextlib.redirect_stdout(io.StringIO()):
            import weightwatcher  # also prints a CUDA notice on CPU machines

            logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    finally:
        logging.disable(previously_disabled)
    return weightwatcher


def worker_init() -> None:
    """A measuring worker process: one thread for torch (its BLAS: the environment's), and
    WeightWatcher imported once, up front (the engine's and the monitor's workers)."""
    import torch

    torch.set_num_threads(1)
    import_weightwatcher()


def _as_float64_state_dict(matrices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names and shapes; return `{name.weight: float64 array}` for weightwatcher."""
    if not matrices:
        raise ValueError("matrices must hold at least one 2-D matrix, got an empty mapping")
    state = {}
    for name, matrix in matrices.items():
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2 or min(array.shape) < 2:
            raise ValueError(f"matrix {name!r} must be 2-D with both sides >= 2, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"matrix {name!r} holds NaN or Inf values")
        key = name if name.endswith(".weight") else f"{name}.weight"
        state[key] = np.ascontiguousarray(array)
    return state


def analyze_matrices(
    matrices: Mapping[str, np.ndarray], *, seed: int = 0, **analyze_kwargs
) -> pd.DataFrame:
    """Run weightwatcher on named 2-D matrices in float64; one row per matrix.

    Args:
        matrices: name -> matrix (any orientation); names become the index.
        seed: seeds numpy's global generator that weightwatcher shuffles W_rand with.
        analyze_kwargs: passed to `WeightWatcher.analyze`; defaults to the authors' call.
    """
    state = _as_float64_state_dict(matrices)
    kwargs = {**AUTHORS_ANALYZE_KWARGS, **analyze_kwargs}
    ww = import_weightwatcher()
    with _restore_logging_and_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # its empty-slice means on failed fits
        np.random.seed(seed)  # weightwatcher shuffles with the global generator
        frame = ww.WeightWatcher(model=state).analyze(**kwargs)
    return _tidy_frame(frame, names=list(matrices))


def _tidy_frame(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Keep the documented columns, alpha = -1 as NaN, pooled shuffles flagged."""
    if len(frame) != len(names):
        raise RuntimeError(f"weightwatcher analyzed {len(frame)} of {len(names)} matrices")
    kept = {src: dst for src, dst in KEPT_COLUMNS.items() if src in frame.columns}
    tidy = frame[list(kept)].rename(columns=kept).reset_index(drop=True)
    tidy.index = pd.Index(names, name="layer")
    tidy = tidy.apply(pd.to_numeric, errors="coerce")  # None -> NaN (xmax of a failed fit)
    tidy["fit_failed"] = ~(tidy["alpha"] > 0)
    tidy.loc[tidy["fit_failed"], "alpha"] = np.nan
    if "traps" in tidy:
        tidy["traps"] = tidy["traps"].astype("Int64")
        tidy["rand_pooled"] = tidy["num_evals"] < POOLED_BELOW_N_EVALS
    return tidy

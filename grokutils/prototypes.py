"""Prototype memorization (paper (b) Appendix G): what the MLP's dominant directions look like.

Per layer, the thin SVD W = U S V^T (torch orientation: W1 is (200, 784), rows are hidden
units, columns are pixels). The top right singular vector v1 of W1 lives in pixel space and
is shown as a 28 x 28 image; the top right singular vectors of W2 and W3 live in the hidden
spaces and are carried back to pixels through the layers below, v2^T W1 and v3^T W2 W1
(linear back-projection, the ReLUs ignored). We read the paper's "v2 of W2" and "v3 of W3"
as the top right singular vector of each layer. The "tail vector" is the top left singular
vector u1 of W1 (one coordinate per hidden unit, the direction of its largest eigenvalue);
the rows of W1 at its largest |coordinates| are the hidden units that carry the tail.

Also the weight histograms with their extremes (Figure 14), lambda_max of X(W) and X(W_rand)
against the MP edge, and an explorer over the logged checkpoints (a widget for JupyterLab,
and the same panels as a static figure for the book).
"""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from grokutils import traps
from grokutils.measures import shuffle_seed
from grokutils.plots import traps as trap_plots
from grokutils.plots.common import BOOK_WIDTH_IN, image_28, in_batch, stamp_protocol, step_axis

LAYERS = ("fc1", "fc2", "fc3")
CHECKPOINTS = ("init", "best", "final")  # the checkpoints whose weights the results store keeps
PROTOTYPES = ("v1 of W1", "v2ᵀ W1", "v3ᵀ W2 W1")


def weight_arrays(state: Mapping) -> dict[str, np.ndarray]:
    """{fc1: W1 (200, 784), fc2: W2 (200, 200), fc3: W3 (10, 200)} as float64 arrays."""
    missing = [f"{name}.weight" for name in LAYERS if f"{name}.weight" not in state]
    if missing:
        raise KeyError(f"state dict lacks {missing}; it has {sorted(state)}")
    return {name: np.asarray(state[f"{name}.weight"], dtype=np.float64) for name in LAYERS}


def top_singular_vectors(matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(u1, s1, v1) of the thin SVD, signs fixed so that v1's largest |entry| is positive."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    sign = np.sign(vt[0][np.argmax(np.abs(vt[0]))]) or 1.0
    return u[:, 0] * sign, float(s[0]), vt[0] * sign


def prototype_vectors(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The three 784-pixel prototypes: v1 of W1, v2^T W1 and v3^T W2 W1."""
    w1, w2, w3 = (np.asarray(weights[name], dtype=np.float64) for name in LAYERS)
    if w1.shape[1] != 784 or w2.shape[1] != w1.shape[0] or w3.shape[1] != w2.shape[0]:
        raise ValueError(f"expected W1 (h1, 784), W2 (h2, h1), W3 (c, h2); got {w1.shape}, {w2.shape}, {w3.shape}")
    v1, v2, v3 = (top_singular_vectors(w)[2] for w in (w1, w2, w3))
    return dict(zip(PROTOTYPES, (v1, v2 @ w1, v3 @ w2 @ w1)))


def tail_rows(w1: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Indices and rows of W1 at the k largest |coordinates| of the tail vector u1, largest first."""
    if not 1 <= k <= w1.shape[0]:
        raise ValueError(f"k must be between 1 and {w1.shape[0]} (rows of W1), got {k}")
    u1 = top_singular_vectors(w1)[0]
    order = np.argsort(-np.abs(u1), kind="stable")[:k]
    return order, w1[order]


def key_weights(result, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{init, best, final} -> weight arrays of one seed, as the results store keeps them."""
    return {which: weight_arrays({k: v.double().numpy() for k, v in result.weights(seed, which).items()})
            for which in CHECKPOINTS}


def _checkpoint_label(result, seed: int, which: str) -> str:
    """'best (step 1,234)'."""
    return f"{which} (step {result.key_steps[seed][which]:,})"


def prototype_figure(result, seed: int) -> plt.Figure:
    """Figure 7 and its extension: the three prototypes at the init, best and final checkpoints."""
    weights = key_weights(result, seed)
    fig, axes = plt.subplots(len(CHECKPOINTS), len(PROTOTYPES), figsize=(2.4 * len(PROTOTYPES), 2.5 * len(CHECKPOINTS)))
    for row, which in enumerate(CHECKPOINTS):
        for col, (name, vector) in enumerate(prototype_vectors(weights[which]).items()):
            image_28(axes[row, col], vector, title=f"{name}\n{_checkpoint_label(result, seed, which)}")
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def tail_rows_figure(result, seed: int, k: int = 10) -> plt.Figure:
    """Figure 15: the k rows of W1 with the largest tail-vector coordinates, per checkpoint."""
    weights = key_weights(result, seed)
    fig, axes = plt.subplots(len(CHECKPOINTS), k, figsize=(BOOK_WIDTH_IN, 1.2 * len(CHECKPOINTS)), squeeze=False)
    for row, which in enumerate(CHECKPOINTS):
        indices, rows = tail_rows(weights[which]["fc1"], k)
        for col, (index, pixels) in enumerate(zip(indices, rows)):
            image_28(axes[row, col], pixels, title=f"unit {index}")
        axes[row, 0].set_ylabel(_checkpoint_label(result, seed, which).replace(" (", "\n("), fontsize=8)
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def weight_extremes(result) -> pd.DataFrame:
    """Min, max and sd of every weight matrix at the kept checkpoints: one row per seed/checkpoint/layer."""
    rows = []
    for seed in sorted(result.key_steps):
        for which, weights in key_weights(result, seed).items():
            for layer, matrix in weights.items():
                rows.append({"seed": seed, "checkpoint": which, "step": result.key_steps[seed][which],
                             "layer": layer, "min": matrix.min(), "max": matrix.max(), "sd": matrix.std(),
                             "max |w| / sd": np.abs(matrix).max() / matrix.std()})
    return pd.DataFrame(rows).set_index(["seed", "checkpoint", "layer"])


def weight_histograms_figure(result, seed: int) -> plt.Figure:
    """Figure 14: histograms of W1, W2, W3 (log counts) at init, best and final, extremes marked."""
    weights = key_weights(result, seed)
    fig, axes = plt.subplots(len(LAYERS), len(CHECKPOINTS), figsize=(BOOK_WIDTH_IN, 7.5), sharey="row")
    for col, which in enumerate(CHECKPOINTS):
        for row, layer in enumerate(LAYERS):
            ax, values = axes[row, col], weights[which][layer].ravel()
            ax.hist(values, bins=80, color="tab:blue", alpha=0.7)
            ax.set_yscale("log")
            for extreme in (values.min(), values.max()):
                ax.axvline(extreme, color="red", ls="--", lw=1)
            ax.set_title(f"W{row + 1}, {_checkpoint_label(result, seed, which)}\n"
                         f"min {values.min():.2f}, max {values.max():.2f}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("weight")
    fig.tight_layout()
    return stamp_protocol(fig, result.config)


def lambda_max_table(result, seed: int) -> pd.DataFrame:
    """lambda_max of X(W) and X(W_rand) against lambda_plus and the trap threshold, per checkpoint/layer.

    W_rand is weightwatcher's shuffle at that checkpoint, replayed from its seed on the kept
    (float32) weights, so the trap count should equal the run's stored weightwatcher count.
    """
    stored = result.layers.set_index(["seed", "step", "layer"])
    rows = []
    for which, weights in key_weights(result, seed).items():
        step = result.key_steps[seed][which]
        detected = traps.detect_traps(weights, seed=shuffle_seed(seed, step))
        for layer, matrix in weights.items():
            row = detected.loc[layer]
            rows.append({"checkpoint": which, "step": step, "layer": layer,
                         "lambda_max X(W)": float(np.linalg.svd(matrix, compute_uv=False)[0] ** 2),
                         "lambda_max X(W_rand)": row.lambda_max_raw, "lambda_plus": row.lambda_plus_raw,
                         "lambda_plus (weightwatcher, stored)": float(stored.loc[(seed, step, layer), "rand_bulk_max"]),
                         "lambda_plus + TW": row.threshold_raw, "traps (ours)": int(row.traps),
                         "traps (weightwatcher, stored)": int(stored.loc[(seed, step, layer), "traps"])})
    return pd.DataFrame(rows).set_index(["checkpoint", "layer"])


def explorer_figure(result, seed: int, step: int, layer: str = "fc1") -> plt.Figure:
    """One checkpoint at a glance: accuracy with a marker, ESD with PL fit, W_rand MP fit, v1 image."""
    table = result.layers.set_index(["seed", "step", "layer"])
    if (seed, step, layer) not in table.index:
        steps = sorted(result.layers[result.layers.seed == seed].step.unique())
        raise ValueError(f"no checkpoint (seed {seed}, step {step}, layer {layer!r}); logged steps: {steps}")
    fields = table.loc[(seed, step, layer)]
    fig, grid = plt.subplots(2, 2, figsize=(BOOK_WIDTH_IN, 6.2))
    axes = grid.ravel()
    curves = result.curves[result.curves.seed == seed]
    for split in ("train", "test"):
        axes[0].plot(curves.step, curves[f"{split}_accuracy"], label=split)
    test_now = float(curves.loc[curves.step == step, "test_accuracy"].iloc[0])
    axes[0].plot([step], [test_now], "o", color="black", label=f"test {test_now:.3f}")
    axes[0].axvline(step, color="black", lw=0.8)
    step_axis(axes[0])
    axes[0].set(ylim=(0, 1.02), ylabel="accuracy")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"seed {seed}, step {step:,}", fontsize=9)
    evals = result.array(seed, step, layer, "evals").astype(np.float64)
    trap_plots.plot_powerlaw_fit(axes[1], evals, fields.alpha, fields.xmin, fields.xmax, title=f"{layer}: ESD of W")
    rand_evals = result.array(seed, step, layer, "rand_evals").astype(np.float64)
    trap_plots.plot_mp_fit(axes[2], traps.fit_rand_spectrum(rand_evals, (int(fields.N), int(fields.M))),
                      title=f"{layer}: ESD of W_rand")
    image_28(axes[3], result.array(seed, step, "fc1", "v1"), title="v1 of W1")
    fig.tight_layout()
    return fig


def explorer(result, seed: int = 0, layer: str = "fc1"):
    """A JupyterLab widget: a slider over the logged steps redrawing `explorer_figure`.

    In a kernel without a frontend (`plots.common.in_batch`: papermill through
    `grokutils.tools.execute`, nbval) it displays the figure at the last logged step, the
    slider's starting point, as a plain image and returns None: no widget messages, which can
    stall batch execution (issue 35)."""
    from IPython.display import display

    steps = [int(step) for step in sorted(result.layers[result.layers.seed == seed].step.unique())]
    if in_batch():
        fig = explorer_figure(result, seed, steps[-1], layer)
        display(fig)
        plt.close(fig)
        return None
    import ipywidgets as widgets

    slider = widgets.SelectionSlider(options=steps, value=steps[-1], description="step",
                                     continuous_update=False, layout=widgets.Layout(width="60%"))
    output = widgets.Output()

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = explorer_figure(result, seed, slider.value, layer)
            display(fig)
            plt.close(fig)

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, output])

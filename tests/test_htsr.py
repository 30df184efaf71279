"""grokutils.htsr: weightwatcher in float64, seeded, quiet, with failed fits marked."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from grokutils import htsr
from grokutils.models import make_mlp, weight_matrices


def _mlp_weights(seed=0):
    return {name: w.numpy() for name, w in weight_matrices(make_mlp(seed)).items()}


def test_equals_a_direct_weightwatcher_call_on_the_same_float64_weights():
    weights = _mlp_weights()
    ours = htsr.analyze_matrices(weights, seed=7)
    ww = htsr.import_weightwatcher()
    np.random.seed(7)
    direct = ww.WeightWatcher(model={f"{k}.weight": v for k, v in weights.items()}).analyze(
        vectors=True, detX=True, plot=False, fix_fingers="clip_xmax", randomize=True)
    for row, name in enumerate(weights):
        expected_alpha = direct.alpha.iloc[row]
        if expected_alpha > 0:
            assert ours.loc[name, "alpha"] == expected_alpha
        else:
            assert np.isnan(ours.loc[name, "alpha"])
        assert ours.loc[name, "traps"] == direct.rand_num_spikes.iloc[row]
        assert ours.loc[name, "rand_sigma_mp"] == direct.rand_sigma_mp.iloc[row]


def test_torch_model_path_casts_to_float32_and_differs_slightly():
    """Why we pass float64 arrays: the nn.Module path goes through float32."""
    model = make_mlp(0)
    ww = htsr.import_weightwatcher()
    np.random.seed(0)
    kwargs = {**htsr.AUTHORS_ANALYZE_KWARGS, "randomize": False}
    via_model = ww.WeightWatcher(model=model).analyze(**kwargs)
    ours = htsr.analyze_matrices(_mlp_weights(), seed=0, randomize=False)
    assert abs(via_model.alpha.iloc[0] - ours.loc["fc1", "alpha"]) < 0.05


def test_same_seed_same_traps_and_sigma():
    weights = _mlp_weights(1)
    first, second = htsr.analyze_matrices(weights, seed=3), htsr.analyze_matrices(weights, seed=3)
    pd.testing.assert_frame_equal(first, second)


def test_failed_fit_is_nan_and_small_layer_flagged():
    frame = htsr.analyze_matrices(_mlp_weights(), seed=0)
    assert frame.loc["fc3", "num_evals"] == 10
    assert bool(frame.loc["fc3", "rand_pooled"]) and not bool(frame.loc["fc1", "rand_pooled"])
    assert bool(frame.loc["fc3", "fit_failed"]) == bool(np.isnan(frame.loc["fc3", "alpha"]))
    assert frame.loc["fc1", "alpha"] > 0


def test_logging_and_warning_filters_are_left_alone():
    root = logging.getLogger()
    level, handlers, filters = root.level, list(root.handlers), list(warnings.filters)
    htsr.import_weightwatcher()
    htsr.analyze_matrices({"w": np.random.default_rng(0).normal(size=(150, 300))}, seed=0)
    assert root.level == level and root.handlers == handlers and warnings.filters == filters


@pytest.mark.parametrize("matrices, message", [
    ({}, "at least one 2-D matrix"),
    ({"v": np.ones(5)}, "matrix 'v' must be 2-D"),
    ({"w": np.full((20, 30), np.nan)}, "matrix 'w' holds NaN or Inf"),
])
def test_bad_matrices_are_named(matrices, message):
    with pytest.raises(ValueError, match=message):
        htsr.analyze_matrices(matrices)


def test_checkpoint_call_keeps_every_column_of_the_authors_call():
    """The checkpoint analysis leaves out vectors and detX: the columns we keep are unchanged."""
    from grokutils.config import MLPConfig
    from grokutils.paths import RESULTS_DIR
    from grokutils.store import load_run

    run = load_run(RESULTS_DIR / "mlp-wd0-3000steps-2seeds-efeacd3cbc68", MLPConfig)  # trained weights
    weights = {name: w.double().numpy() for name, w in weight_matrices(run.weights(0, "final")).items()}
    authors = htsr.analyze_matrices(weights, seed=11)
    fast = htsr.analyze_matrices(weights, seed=11, **htsr.CHECKPOINT_ANALYZE_KWARGS)
    assert not htsr.CHECKPOINT_ANALYZE_KWARGS["vectors"] and not htsr.CHECKPOINT_ANALYZE_KWARGS["detX"]
    pd.testing.assert_frame_equal(fast, authors)

"""grokutils.measures: spectra, shuffles, vectors, entropy and the per-checkpoint measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from grokutils import htsr, measures, mlp
from grokutils.config import MLPConfig
from grokutils.models import make_mlp


def test_spectrum_is_eigenvalues_of_wtw():
    w = np.random.default_rng(0).normal(size=(30, 50))
    np.testing.assert_allclose(measures.spectrum(w), np.linalg.eigvalsh(w @ w.T), rtol=1e-10)


def test_shuffled_is_a_seeded_permutation_of_the_entries():
    w = np.arange(12.0).reshape(3, 4)
    a, b = measures.shuffled(w, 5), measures.shuffled(w, 5)
    assert a.shape == w.shape and np.array_equal(a, b) and not np.array_equal(a, w)
    assert sorted(a.ravel()) == sorted(w.ravel())


def test_top_right_vector_is_unit_with_fixed_sign():
    w = np.outer(np.ones(5), -np.eye(8)[2]) + 0.01 * np.random.default_rng(1).normal(size=(5, 8))
    v1 = measures.top_right_vector(w)
    assert np.isclose(np.linalg.norm(v1), 1.0) and np.argmax(np.abs(v1)) == 2 and v1[2] > 0


def test_abs_weight_entropy_by_hand():
    w = np.array([[0.5, -0.25], [0.0, 1.0]])
    expected = -(0.5 * np.log(0.5) + 0.25 * np.log(0.25) + 1.0 * np.log(1.0))
    assert measures.abs_weight_entropy(w) == pytest.approx(expected)


def test_checkpoint_alpha_equals_direct_weightwatcher_call():
    """The alpha stored per layer is exactly weightwatcher's on the same float64 weights."""
    state = make_mlp(2).state_dict()
    model_row, layer_rows, arrays = mlp.measure_checkpoint(state, MLPConfig(), seed=2, step=40)
    ww = htsr.import_weightwatcher()
    np.random.seed(measures.shuffle_seed(2, 40))
    direct = ww.WeightWatcher(model={k: v.numpy() for k, v in state.items() if k.endswith("weight")}).analyze(
        vectors=True, detX=True, plot=False, fix_fingers="clip_xmax", randomize=True)
    assert [row["layer"] for row in layer_rows] == ["fc1", "fc2", "fc3"]
    assert layer_rows[0]["alpha"] == direct.alpha.iloc[0]
    assert layer_rows[1]["alpha"] == direct.alpha.iloc[1]
    assert [row["traps"] for row in layer_rows] == direct.rand_num_spikes.tolist()
    assert arrays["fc1/evals"].shape == (200,) and arrays["fc3/v1"].shape == (200,)
    assert 0 <= model_row["test_accuracy"] <= 1 and 0 <= model_row["activation_sparsity"] <= 1
    assert model_row["lcc_paper"] > 0 and model_row["lcc_notebook"] > 0
    expected_l2 = torch.sqrt(sum((state[f"fc{i}.weight"] ** 2).sum() for i in (1, 2, 3)))
    assert model_row["l2_norm"] == pytest.approx(float(expected_l2))


def test_circuit_complexity_is_zero_without_perturbation():
    model = make_mlp(0).eval()
    x = torch.rand(20, 784, dtype=torch.float64)
    with torch.no_grad():
        assert mlp.circuit_complexity_paper(model, x, drop_fraction=0.0, seed=0) == pytest.approx(0.0)
        assert mlp.circuit_complexity_notebook(model, x, dropout_p=0.0, seed=0) == pytest.approx(0.0)


def test_a_float32_checkpoint_is_measured_in_float32():
    """Issue 15, item 1: the float64 data used to meet a float32 model (`mat1 and mat2 must have the same dtype`)."""
    from grokutils.config import MLPConfig
    from grokutils.mlp import model_measures

    config = MLPConfig(steps=10, dtype="float32")
    state = make_mlp(0, config.init_scale, "float32").state_dict()
    row = model_measures(state, config, seed=0, step=10)
    assert 0 <= row["test_accuracy"] <= 1 and np.isfinite(row["lcc_paper"]) and np.isfinite(row["lcc_notebook"])


def test_one_svd_gives_the_spectrum_and_the_top_vector():
    w = np.random.default_rng(2).normal(size=(20, 60))
    evals, v1 = measures.spectrum_and_top_vector(w)
    np.testing.assert_allclose(evals, measures.spectrum(w), rtol=1e-10)
    np.testing.assert_allclose(v1, measures.top_right_vector(w), atol=1e-12)

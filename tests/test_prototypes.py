"""Prototypes (paper (b) Appendix G): singular vectors, back-projections, tail rows, explorer."""
from __future__ import annotations

import sys

import matplotlib
import matplotlib.figure
import numpy as np
import pytest
from test_traps import FAKE_STEPS, build_fake_run  # the stored run without training

from grokutils import prototypes
from grokutils.plots.common import BATCH_VARIABLE

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A stored run with Gaussian weights and one large FC1 entry at the final step."""
    return build_fake_run(tmp_path_factory.mktemp("results"))


def rank_one_network(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """W1, W2, W3 of the MLP's shapes built around one known pixel pattern, and that pattern."""
    pattern = rng.normal(size=784)
    pattern /= np.linalg.norm(pattern)
    hidden = rng.normal(size=200)
    hidden /= np.linalg.norm(hidden)
    w1 = 50 * np.outer(hidden, pattern) + 0.01 * rng.normal(size=(200, 784))
    w2 = 50 * np.outer(rng.normal(size=200), hidden) + 0.01 * rng.normal(size=(200, 200))
    w3 = rng.normal(size=(10, 200))
    return {"fc1": w1, "fc2": w2, "fc3": w3}, pattern


def test_prototypes_recover_a_planted_pattern():
    weights, pattern = rank_one_network(np.random.default_rng(0))
    vectors = prototypes.prototype_vectors(weights)
    assert list(vectors) == list(prototypes.PROTOTYPES)
    for name, vector in vectors.items():
        assert vector.shape == (784,)
        if name != "v3ᵀ W2 W1":  # v3 of a random W3 need not align with W2's output direction
            cosine = abs(vector @ pattern) / np.linalg.norm(vector)
            assert cosine > 0.99, name


def test_sign_convention_and_back_projection_shapes():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(20, 30))
    u1, s1, v1 = prototypes.top_singular_vectors(matrix)
    assert v1[np.argmax(np.abs(v1))] > 0
    np.testing.assert_allclose(matrix @ v1, s1 * u1, atol=1e-10)
    with pytest.raises(ValueError, match="expected W1"):
        prototypes.prototype_vectors({"fc1": matrix, "fc2": matrix, "fc3": matrix})


def test_tail_rows_pick_the_units_of_the_tail():
    rng = np.random.default_rng(2)
    w1 = 0.1 * rng.normal(size=(200, 784))
    loud = [17, 42, 99]
    w1[loud] += 5 * rng.normal(size=784)  # three hidden units share one strong direction
    indices, rows = prototypes.tail_rows(w1, k=3)
    assert sorted(indices) == loud
    np.testing.assert_array_equal(rows, w1[indices])
    with pytest.raises(ValueError, match="k must be between 1 and 200"):
        prototypes.tail_rows(w1, k=0)


def test_weight_arrays_names_what_is_missing():
    with pytest.raises(KeyError, match="fc3.weight"):
        prototypes.weight_arrays({"fc1.weight": np.zeros((2, 2)), "fc2.weight": np.zeros((2, 2))})


def test_extremes_and_lambda_max_on_a_stored_run(fake_run):
    extremes = prototypes.weight_extremes(fake_run)
    assert extremes.loc[(0, "final", "fc1"), "max"] == pytest.approx(40.0)
    table = prototypes.lambda_max_table(fake_run, seed=0)
    # The kept float32 weights replay weightwatcher's shuffle: the stored count is recovered.
    assert (table["traps (ours)"] == table["traps (weightwatcher, stored)"]).all()
    assert table.loc[("final", "fc1"), "traps (ours)"] == 1
    final_fc1 = table.loc[("final", "fc1")]
    assert final_fc1["lambda_max X(W_rand)"] > final_fc1["lambda_plus + TW"] > final_fc1["lambda_plus"]


def test_figures_and_explorer(fake_run, monkeypatch):
    monkeypatch.delenv(BATCH_VARIABLE, raising=False)  # as in JupyterLab
    assert len(prototypes.prototype_figure(fake_run, seed=0).axes) == 9
    assert len(prototypes.tail_rows_figure(fake_run, seed=0, k=4).axes) == 12
    assert len(prototypes.weight_histograms_figure(fake_run, seed=1).axes) == 9
    assert len(prototypes.explorer_figure(fake_run, seed=0, step=FAKE_STEPS[1]).axes) == 4
    with pytest.raises(ValueError, match="logged steps"):
        prototypes.explorer_figure(fake_run, seed=0, step=7)
    widget = prototypes.explorer(fake_run, seed=0)
    assert list(widget.children[0].options) == list(FAKE_STEPS)
    matplotlib.pyplot.close("all")


def test_without_a_frontend_the_explorer_draws_its_figure_and_makes_no_widget(fake_run, monkeypatch):
    """Issue 35: in batch execution, no widget messages (they can stall nbclient)."""
    monkeypatch.setenv(BATCH_VARIABLE, "1")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # importing it would raise
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    assert prototypes.explorer(fake_run, seed=0) is None
    assert len(shown) == 1 and isinstance(shown[0], matplotlib.figure.Figure)
    assert shown[0].axes[0].get_title() == f"seed 0, step {FAKE_STEPS[-1]:,}"  # the slider's starting point
    assert not matplotlib.pyplot.get_fignums()  # closed after display

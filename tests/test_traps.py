"""The correlation-trap detector: agreement with weightwatcher, and its validation cases."""
from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate

from grokutils import paper, spectra, traps
from grokutils.config import MLPConfig
from grokutils.measures import shuffle_seed, shuffled, spectrum, top_right_vector
from grokutils.phases import find_phases, paper_edge_steps
from grokutils.plots import traps as trap_plots
from grokutils.store import array_key, config_hash, load_run, run_dir, write_run

matplotlib.use("Agg")

MLP_SHAPES = {"fc1": (200, 784), "fc2": (200, 200), "fc3": (10, 200)}  # torch orientation
FALSE_POSITIVE_DRAWS = 20  # per shape here; the notebook uses more
FAKE_STEPS = (0, 10, 100)


def build_fake_run(folder, n_seeds: int = 2):
    """A stored run without training: Gaussian weights, one large FC1 entry planted at the end."""
    config = MLPConfig(steps=FAKE_STEPS[-1], n_seeds=n_seeds, n_checkpoints=2)
    curves, layers, arrays, weights = [], [], {}, {}
    for seed in range(n_seeds):
        for index, step in enumerate(FAKE_STEPS):
            matrices = {name: spectra.gaussian_matrix(shape, seed=100 * seed + step, sigma=0.2)
                        for name, shape in MLP_SHAPES.items()}
            if step == FAKE_STEPS[-1]:
                matrices["fc1"][3, 7] = 40.0  # a trap: far above the BBP strength 0.2 * (784 * 200)^(1/4)
            detected = traps.detect_traps(matrices, seed=shuffle_seed(seed, step))
            curves.append({"seed": seed, "step": step, "train_accuracy": 0.5 + 0.2 * index,
                           "test_accuracy": [0.1, 0.3, 0.2][index]})
            for name, matrix in matrices.items():
                layers.append({"seed": seed, "step": step, "layer": name, "alpha": 3.0, "xmin": 1.0,
                               "xmax": np.nan, "N": max(matrix.shape), "M": min(matrix.shape),
                               "traps": int(detected.loc[name, "traps"]),
                               "rand_bulk_max": detected.loc[name, "lambda_plus_raw"]})
                arrays[array_key(seed, step, name, "evals")] = spectrum(matrix).astype(np.float32)
                rand = spectrum(shuffled(matrix, shuffle_seed(seed, step)))
                arrays[array_key(seed, step, name, "rand_evals")] = rand.astype(np.float32)
                arrays[array_key(seed, step, name, "v1")] = top_right_vector(matrix).astype(np.float32)
                for which, kept_step in zip(("init", "best", "final"), FAKE_STEPS):
                    if kept_step == step:
                        weights[f"seed{seed}/{which}/{name}.weight"] = torch.from_numpy(matrix).float()
    meta = {"key_steps": {str(s): dict(zip(("init", "best", "final"), FAKE_STEPS)) for s in range(n_seeds)},
            # the rest of what the engine writes (store.META_KEYS): a seal lacking any is damaged
            "config_hash": config_hash(config), "status": {str(s): {"status": "finished", "step": FAKE_STEPS[-1]}
                                                           for s in range(n_seeds)},
            "data_source": "synthetic Gaussian weights", "data_fingerprint": {}, "device": "none",
            "timings": {"train_s": 0.0, "measure_s": 0.0, "wall_s": 0.0}, "versions": {}}
    final = run_dir(config, folder)
    write_run(final, config, pd.DataFrame(curves), pd.DataFrame(layers), arrays, weights, meta)
    return load_run(final, MLPConfig)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """The fake run, built once for this module."""
    return build_fake_run(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def mlp_like_matrices():
    """Gaussian matrices of the MLP's shapes, each with one large entry (a trap in every layer)."""
    matrices = {name: spectra.gaussian_matrix(shape, seed=i) for i, (name, shape) in enumerate(MLP_SHAPES.items())}
    for name, matrix in matrices.items():
        matrix[1, 2] = 3 * spectra.bbp_threshold(matrix.shape)
    return matrices


def test_counts_and_fit_match_weightwatcher_on_the_same_shuffles(mlp_like_matrices):
    table = traps.compare_with_weightwatcher(mlp_like_matrices, seed=12345)
    assert table["agree"].all(), table
    np.testing.assert_allclose(table["sigma_mp (ours)"], table["sigma_mp (weightwatcher)"], rtol=1e-9)
    np.testing.assert_allclose(table["lambda_plus (ours)"], table["lambda_plus (weightwatcher)"], rtol=1e-9)
    # FC3 has 10 eigenvalues: both pool 5 shuffles, and the one large entry is counted in each.
    assert table.loc["fc3", "pooled shuffles"] and table.loc["fc3", "traps (ours)"] == traps.POOLED_REPLICAS
    assert table.loc["fc1", "traps (ours)"] == table.loc["fc2", "traps (ours)"] == 1


@pytest.mark.parametrize("shape", [(200, 784), (200, 200)])
def test_no_traps_in_gaussian_matrices(shape):
    draws = traps.false_positive_draws(shape, n_draws=FALSE_POSITIVE_DRAWS, seed=0)
    assert (draws.traps == 0).all(), draws  # 0 false positives in 20 draws per shape
    assert draws["lambda_max / threshold"].max() < 1
    assert draws.sigma_mp.between(0.95, 1.05).all()


@pytest.mark.parametrize("shape", [(200, 784), (200, 200)])
def test_planted_spikes_found_above_bbp_and_not_below(shape):
    table = traps.spike_detection(shape, strengths=[0.5, 2.0], seed=3)
    assert table.loc[0.5].tolist() == [0, 0, 0]
    assert table.loc[2.0, "rank-one: ESD of W"] == 1
    assert table.loc[2.0, "large entry: ESD of W_rand"] == 1
    assert table.loc[2.0, "rank-one: ESD of W_rand"] == 0  # shuffling spreads a rank-one spike into noise


def test_pooling_inflates_small_layer_counts():
    matrix = traps.plant_large_entry(spectra.gaussian_matrix((10, 200), seed=1), 100.0, seed=2)
    single = traps.fit_rand_spectrum(traps.shuffled_spectrum(matrix, np.random.RandomState(0), 1), matrix.shape)
    pooled = traps.fit_rand_spectrum(traps.ww_shuffled_spectra({"fc3": matrix}, seed=0)["fc3"], matrix.shape)
    assert (single.traps, pooled.traps) == (1, traps.POOLED_REPLICAS)


def test_replayed_shuffle_is_weightwatchers_stream():
    matrix = np.arange(12.0).reshape(3, 4)  # 3 eigenvalues < 100: weightwatcher pools 5 shuffles
    np.random.seed(7)
    expected = []
    for _ in range(traps.POOLED_REPLICAS):
        flat = matrix.flatten()
        np.random.shuffle(flat)  # what weightwatcher does after analyze_matrices seeds numpy
        expected.extend(np.linalg.svd(flat.reshape(3, 4), compute_uv=False) ** 2)
    np.testing.assert_allclose(traps.ww_shuffled_spectra({"W": matrix}, seed=7)["W"], np.sort(expected))


def test_mp_density_and_cdf_agree():
    for q in (1.0, 3.92, 20.0):
        lo, hi = (1 - q ** -0.5) ** 2, (1 + q ** -0.5) ** 2
        mass, _ = integrate.quad(lambda x: spectra.mp_density(np.array([x]), q, 1.0)[0], lo, hi, limit=200)
        assert mass == pytest.approx(1.0, abs=1e-3)
        middle = (lo + hi) / 2
        partial, _ = integrate.quad(lambda x: spectra.mp_density(np.array([x]), q, 1.0)[0], lo, middle, limit=200)
        assert spectra.mp_cdf(np.array([middle]), q, 1.0)[0] == pytest.approx(partial, abs=1e-3)
        np.testing.assert_allclose(spectra.mp_cdf(np.array([0.0, hi * 2]), q, 1.0), [0.0, 1.0])


def test_ks_test_accepts_mp_and_rejects_a_heavy_tail():
    gaussian = traps.fit_mp(spectrum(spectra.gaussian_matrix((200, 784), seed=5)), 784, 200)
    assert traps.ks_test(gaussian)[1] > 0.05
    heavy = np.random.default_rng(0).standard_t(df=1.5, size=(200, 784))  # entries with a heavy tail
    assert traps.ks_test(traps.fit_mp(spectrum(heavy), 784, 200))[1] < 1e-3


def test_bbp_prediction_matches_a_strong_spike():
    shape, strength = (200, 784), 3 * spectra.bbp_threshold((200, 784))
    noise = spectra.gaussian_matrix(shape, seed=9)
    top = spectrum(traps.plant_rank_one(noise, strength, seed=10))[-1]
    edge = (np.sqrt(784) + np.sqrt(200)) ** 2
    assert top / edge == pytest.approx(spectra.bbp_outlier_ratio(shape, strength), rel=0.05)
    assert spectra.bbp_outlier_ratio(shape, 0.9 * spectra.bbp_threshold(shape)) == 1.0


@pytest.mark.parametrize("evals, n, m, message", [
    ([1.0], 784, 200, "evals must hold"),
    ([1.0, np.nan], 784, 200, "evals must hold"),
    ([1.0, -2.0], 784, 200, "evals must hold"),
    ([1.0, 2.0], 200, 784, "n >= m"),
])
def test_fit_rejects_bad_input(evals, n, m, message):
    with pytest.raises(ValueError, match=message):
        traps.fit_mp(np.array(evals), n, m)


def test_validation_helpers_reject_bad_arguments():
    with pytest.raises(ValueError, match="n_draws"):
        traps.false_positive_draws((10, 10), n_draws=0)
    with pytest.raises(ValueError, match="2-D shape"):
        spectra.sides((3,))
    with pytest.raises(ValueError, match="at least one"):
        traps.detect_traps({}, seed=0)


def test_refit_run_and_tables(fake_run):
    refit = traps.refit_run(fake_run)
    assert len(refit) == len(fake_run.layers) == 2 * len(FAKE_STEPS) * 3
    last = refit[(refit.step == FAKE_STEPS[-1]) & (refit.layer == "fc1")]
    assert (last.traps == 1).all() and (last.traps_weightwatcher == 1).all()
    assert (refit[refit.step < FAKE_STEPS[-1]].traps == 0).all()
    phases = find_phases(fake_run.curves)  # train accuracy never reaches 1: all pre-grokking
    ks = trap_plots.ks_table(refit, phases.right_edges(), paper.TABLE4_KS)
    assert ks.loc["grokking", "sigma_mp (ours)"] == "not reached"
    assert ks.loc["pre-grokking", "traps (ours)"] == "1.0 ± 0.0"
    counts = trap_plots.trap_count_table(refit, phases.right_edges(), paper.TABLE2_TRAPS[0.0])
    assert counts.loc[("fc1", "anti-grokking"), "paper"] == "7.5 ± 5.6"
    assert paper_edge_steps(refit.step.unique()) == {"pre-grokking": None, "grokking": None,
                                                            "anti-grokking": None}


def test_trap_example_steps_with_and_without_a_collapse(fake_run):
    refit = traps.refit_run(fake_run)
    phases = find_phases(fake_run.curves)
    assert trap_plots.trap_example_steps(refit, phases, seed=0) == {
        100: "no collapse in this run: closest to a trap (fc1)"}
    collapsed = dataclasses.replace(phases, t_fit=0, t_peak=10, t_collapse=100)
    assert trap_plots.trap_example_steps(refit, collapsed, seed=1) == {10: "right before the collapse",
                                                                   100: "end of training"}
    with pytest.raises(ValueError, match="no refitted spectra for seed 5"):
        trap_plots.trap_example_steps(refit, phases, seed=5)


def test_detection_needs_more_than_the_bbp_strength():
    for shape in [(200, 784), (200, 200)]:
        assert 1.0 < traps.detection_strength(shape) < 1.5


def test_run_figures_draw(fake_run):
    phases = find_phases(fake_run.curves)
    shown = trap_plots.checkpoints_to_show(fake_run, phases)
    assert shown == {0: "init", 10: "best test", 100: "end of pre-grokking = final"}
    fig = trap_plots.esd_grid_figure(fake_run, seed=0, steps=shown)
    assert len(fig.axes) == 3 * 4
    fig = trap_plots.largest_eigenvalue_figure(traps.refit_run(fake_run, layers=("fc1",)), phases)
    assert fig.axes[0].get_yscale() == "log"
    matplotlib.pyplot.close("all")

"""grokutils.fits: tail size, the wide-tail flag and the fixed-tail alpha, on spectra of known shape."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokutils import fits


def test_hill_alpha_recovers_a_pareto_exponent():
    rng = np.random.default_rng(0)
    sample = (1 - rng.random(20_000)) ** (-1 / 1.5)  # density ~ x^-2.5: alpha = 2.5
    assert fits.hill_alpha(sample, 0.25) == pytest.approx(2.5, abs=0.05)
    assert fits.hill_alpha(sample, 0.10) == pytest.approx(2.5, abs=0.1)


def test_hill_alpha_needs_two_eigenvalues_and_a_valid_fraction():
    assert np.isnan(fits.hill_alpha(np.array([1.0, 2.0, 3.0]), 0.1))
    with pytest.raises(ValueError, match="fraction must be in"):
        fits.hill_alpha(np.ones(10), 1.5)


def test_tail_size_and_the_wide_tail_flag():
    layers = pd.DataFrame({"seed": 0, "step": [1, 2, 3], "layer": "fc1", "num_pl_spikes": [20, 100, 101],
                           "num_evals": [200, 200, 200]})
    out = fits.with_fit_diagnostics(layers)
    assert out.tail_size.tolist() == [0.1, 0.5, 0.505]
    assert out.wide_tail.tolist() == [False, False, True]  # more than half is flagged, half is not
    with pytest.raises(ValueError, match="lacks columns"):
        fits.with_fit_diagnostics(layers.drop(columns="num_evals"))


def test_first_step_below_needs_alpha_to_stay_below():
    frame = pd.DataFrame({"step": [1, 2, 3, 4], "a": [3.0, 1.5, 2.5, 1.9]})
    assert fits.first_step_below(frame, "a") == 4
    assert fits.first_step_below(frame.assign(a=3.0), "a") is None


def test_fixed_tail_alpha_and_sensitivity_on_a_stored_run(tiny_run):
    table = fits.fixed_tail_alpha(tiny_run)
    assert set(table.layer) == {"fc1", "fc2"} and {"alpha_top10", "alpha_top25", "tail_size"} <= set(table.columns)
    assert table.alpha_top25.notna().all() and (table.alpha_top25 > 1).all()
    edges = {seed: {"grokking": None} for seed in table.seed.unique()}
    summary = fits.sensitivity_table(table, edges)
    assert list(summary.index.names) == ["seed", "layer"] and "alpha_top10_ends_below_2" in summary

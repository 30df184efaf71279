"""grokutils.config: validation, numbers normalized once, and results folders that never move."""
from __future__ import annotations

import numpy as np
import pytest

from grokutils import store, sweep
from grokutils.config import MLPConfig, ModAddConfig

ACCELERATED = dict(steps=200_000, n_seeds=3, n_checkpoints=100, lr=0.005, dtype="float32")
# Folders in results/ (committed, or being trained in the background): their names must never change.
PINNED = [
    (MLPConfig(**ACCELERATED, weight_decay=0.0), "mlp-wd0-200000steps-3seeds-12546fd2f92b"),
    (MLPConfig(**ACCELERATED, weight_decay=0.01), "mlp-wd0.01-200000steps-3seeds-7c3ceba3dd38"),
    (MLPConfig(**{**ACCELERATED, "dtype": "float64"}), "mlp-wd0-200000steps-3seeds-023f243a8447"),
    (MLPConfig(**{**ACCELERATED, "steps": 1_000_000, "n_checkpoints": 120}),
     "mlp-wd0-1000000steps-3seeds-74d7086e626f"),
    (MLPConfig(**{**ACCELERATED, "steps": 1_000_000, "n_checkpoints": 120, "weight_decay": 0.01}),
     "mlp-wd0.01-1000000steps-3seeds-49605ba5de63"),
    (MLPConfig(steps=3000, n_seeds=2, n_checkpoints=40), "mlp-wd0-3000steps-2seeds-efeacd3cbc68"),
    (ModAddConfig(steps=1200, lr=0.003, weight_decay=1.0, train_fraction=0.3, n_checkpoints=16),
     "modadd-wd1-lr0.003-frac0.3-1200steps-1seeds-dcbdf0b4b184"),
]


@pytest.mark.parametrize("config, name", PINNED, ids=[name for _, name in PINNED])
def test_stored_runs_keep_their_folder_names(config, name):
    assert store.run_dir(config, "results").name == name


def test_sweep_points_keep_their_names():
    configs = sweep.sweep_configs([[5e-3, "float32", 50_000], [5e-3, "float64", 50_000]], 60)
    assert [sweep.point_dir(config, "r").name for config in configs] == [
        "mlp-lr0.005-float32-wd0-50000steps-db5c49a9737a",
        "mlp-lr0.005-float64-wd0-50000steps-054a1a840599"]


def test_an_integer_where_a_float_is_meant_hashes_like_the_float():
    assert store.config_hash(MLPConfig(steps=10, init_scale=8)) == store.config_hash(MLPConfig(steps=10))
    assert store.config_hash(MLPConfig(steps=10, weight_decay=0, lr=1)) == \
        store.config_hash(MLPConfig(steps=10, weight_decay=0.0, lr=1.0))
    config = MLPConfig(steps=10, init_scale=8, sparsity_tau=1, lcc_dropout_p=np.float32(0.5))
    assert all(type(getattr(config, name)) is float for name in ("init_scale", "sparsity_tau", "lcc_dropout_p"))


def test_numpy_integers_are_plain_integers():
    config = MLPConfig(steps=np.int64(5), n_seeds=np.int32(2), data_seed=np.int64(0))
    assert store.config_hash(config) == store.config_hash(MLPConfig(steps=5, n_seeds=2))
    assert type(config.steps) is int and type(config.n_seeds) is int
    modadd = ModAddConfig(steps=np.int64(5), p=np.int64(23))
    assert store.config_hash(modadd) == store.config_hash(ModAddConfig(steps=5, p=23))


@pytest.mark.parametrize("fields, message", [
    ({"lr": "1e-3"}, r"lr must be a positive finite number, got '1e-3' \(text, not a number: "
                     r"write 1.0e-3 or 0.001\)"),
    ({"lcc_dropout_p": "half"}, "lcc_dropout_p must be a number in"),
    ({"sparsity_tau": -1.0}, "sparsity_tau must be a non-negative finite number, got -1.0"),
    ({"data_seed": 0.5}, "data_seed must be a non-negative integer, got 0.5"),
    ({"replay_first_epoch": "no"}, "replay_first_epoch must be True or False, got 'no'"),
])
def test_every_field_is_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        MLPConfig(steps=10, **fields)

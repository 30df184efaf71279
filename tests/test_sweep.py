"""grokutils.sweep: one-seed accuracy curves, stored once, and the chapter's tables."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from grokutils import store, sweep
from grokutils.config import MLPConfig

TINY = MLPConfig(steps=20, n_checkpoints=4, lr=5e-3)  # float64: eager, no compilation


def test_a_point_is_trained_stored_in_the_store_and_loaded_again(tmp_path, monkeypatch):
    curve = sweep.accuracy_curve(TINY, tmp_path)
    assert list(curve.step) == TINY.checkpoint_steps
    assert {"train_accuracy", "test_accuracy", "seconds", "lr", "dtype", "diverged"} <= set(curve.columns)
    assert curve.train_accuracy.between(0, 1).all() and not curve.diverged.any()
    folder = sweep.point_dir(TINY, tmp_path)
    assert folder.parent.name == "sweep" and store.is_complete(folder, sweep.POINT)
    assert store.load_run(folder, MLPConfig, sweep.POINT).config == TINY
    monkeypatch.setattr(sweep, "SeedGroup", lambda *args, **kwargs: pytest.fail("a stored point was retrained"))
    pd.testing.assert_frame_equal(sweep.accuracy_curve(TINY, tmp_path), curve)


def test_a_point_is_seed_0_of_a_full_run(tmp_path, tiny_run):
    """Same config as the conftest run, one seed: the same test accuracy at every checkpoint."""
    one_seed = MLPConfig(**{**tiny_run.config.__dict__, "n_seeds": 1})
    curve = sweep.accuracy_curve(one_seed, tmp_path)
    seed0 = tiny_run.curves[tiny_run.curves.seed == 0].reset_index(drop=True)
    pd.testing.assert_series_equal(curve.test_accuracy, seed0.test_accuracy, check_names=False)


def test_bad_points_are_named():
    with pytest.raises(ValueError, match="n_seeds must be 1, got 2"):
        sweep.accuracy_curve(MLPConfig(steps=5, n_seeds=2))
    with pytest.raises(ValueError, match=r"must be \[lr, dtype, steps\], got \[0.001, 'float32'\]"):
        sweep.sweep_configs([[1e-3, "float32"]], 60)
    with pytest.raises(ValueError, match="dtype must be one of"):
        sweep.sweep_configs([[1e-3, "float16", 10]], 60)


def test_precision_table_needs_both_precisions():
    rows = [{"step": s, "train_accuracy": 1.0, "test_accuracy": 0.5, "seconds": 1.0, "lr": 5e-3, "dtype": "float32",
             "weight_decay": 0.0, "diverged": False, "steps": 10} for s in (0, 10)]
    with pytest.raises(ValueError, match="needs one float32 and one float64 point"):
        sweep.precision_table(pd.DataFrame(rows), 5e-3)


def _flip_bit(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _damage(folder, how: str) -> None:
    curves, meta = folder / "curves.parquet", folder / "meta.json"
    if how == "flip":
        _flip_bit(curves, len(curves.read_bytes()) // 2)
    elif how == "truncate":
        curves.write_bytes(curves.read_bytes()[:200])
    elif how == "garbled seal":
        meta.write_text("{garbled")
    else:  # a seal of sizes without hashes
        meta.write_text(json.dumps({key: value for key, value in json.loads(meta.read_text()).items()
                                    if key != "file_sha256"}))


@pytest.mark.parametrize("how", ["flip", "truncate", "garbled seal", "seal without hashes"])
def test_a_damaged_point_is_set_aside_and_recomputed_with_a_warning(how, tmp_path, caplog):
    """As the store does for runs: never served, its files kept as NAME.damaged, trained again."""
    curve = sweep.accuracy_curve(TINY, tmp_path)
    folder = sweep.point_dir(TINY, tmp_path)
    _damage(folder, how)
    damaged = {path.name: path.read_bytes() for path in folder.iterdir()}
    with caplog.at_level("WARNING", logger="grokutils"):
        again = sweep.accuracy_curve(TINY, tmp_path)
    assert folder.name in caplog.text and "recomputing" in caplog.text
    aside = folder.with_name(folder.name + ".damaged")
    assert {path.name: path.read_bytes() for path in aside.iterdir()} == damaged
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), curve.drop(columns="seconds"))
    assert store.is_complete(folder, sweep.POINT)
    pd.testing.assert_frame_equal(sweep.accuracy_curve(TINY, tmp_path), again)  # sealed again: loaded


def test_a_point_folder_whose_config_is_another_points_is_not_served(tmp_path, monkeypatch):
    sweep.accuracy_curve(TINY, tmp_path)
    other = dataclasses.replace(TINY, lr=1e-3)
    shutil.copytree(sweep.point_dir(TINY, tmp_path), sweep.point_dir(other, tmp_path))
    assert store.load_if_finished(sweep.point_dir(other, tmp_path), MLPConfig, sweep.POINT) is None

    def stop(*args, **kwargs):
        raise RuntimeError("training started")

    monkeypatch.setattr(sweep, "SeedGroup", stop)
    with pytest.raises(RuntimeError, match="training started"):
        sweep.accuracy_curve(other, tmp_path)


def test_the_sweeps_own_seal_command_is_gone(tmp_path):
    """`python -m grokutils.sweep --seal FILE` wrote a `FILE.sha256` seal; points are sealed by the store."""
    import subprocess
    import sys

    point = tmp_path / "point.parquet"
    pd.DataFrame({"step": [0, 10], "test_accuracy": [0.1, 0.5]}).to_parquet(point)
    subprocess.run([sys.executable, "-m", "grokutils.sweep", "--seal", str(point)], capture_output=True, timeout=120)
    assert [path.name for path in tmp_path.iterdir()] == ["point.parquet"]


def test_a_sweep_without_a_point_at_the_chosen_protocol_is_refused_before_work():
    """Issue 34: chapter 08 reads the protocol's lr and dtype from the profile; a sweep list that does not
    hold it fails at once, naming the setting and how to add it."""
    points = [[5e-3, "float32", 300], [5e-4, "float32", 300]]
    configs = sweep.sweep_configs(points, 10, must_hold=(5e-3, "float32"))
    assert [(c.lr, c.steps, c.n_seeds, c.n_checkpoints) for c in configs] == [(5e-3, 300, 1, 10), (5e-4, 300, 1, 10)]
    assert configs[0] == dataclasses.replace(MLPConfig(), lr=5e-3, dtype="float32", steps=300, n_seeds=1,
                                             n_checkpoints=10)  # the papers' settings otherwise
    with pytest.raises(ValueError, match=r"no point at the chosen protocol's lr 0.005 and dtype 'float64'.*add "
                                         r"\[0.005, 'float64', STEPS\]"):
        sweep.sweep_configs(points, 10, must_hold=(5e-3, "float64"))

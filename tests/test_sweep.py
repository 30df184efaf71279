"""grokutils.sweep: one-seed accuracy curves, stored once, and the chapter's tables."""
from __future__ import annotations

import pandas as pd
import pytest

from grokutils import sweep
from grokutils.config import MLPConfig

TINY = MLPConfig(steps=20, n_checkpoints=4, lr=5e-3)  # float64: eager, no compilation


def test_a_point_is_trained_stored_and_loaded_again(tmp_path):
    curve = sweep.accuracy_curve(TINY, tmp_path)
    assert list(curve.step) == TINY.checkpoint_steps
    assert {"train_accuracy", "test_accuracy", "seconds", "lr", "dtype", "diverged"} <= set(curve.columns)
    assert curve.train_accuracy.between(0, 1).all() and not curve.diverged.any()
    path = sweep.point_path(TINY, tmp_path)
    assert path.is_file() and path.parent.name == "sweep"
    pd.testing.assert_frame_equal(sweep.accuracy_curve(TINY, tmp_path), curve)  # loaded, not retrained


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
        sweep.sweep_configs([[1e-3, "float32"]], MLPConfig())
    with pytest.raises(ValueError, match="dtype must be one of"):
        sweep.sweep_configs([[1e-3, "float16", 10]], MLPConfig())


def test_precision_table_needs_both_precisions():
    rows = [{"step": s, "train_accuracy": 1.0, "test_accuracy": 0.5, "seconds": 1.0, "lr": 5e-3, "dtype": "float32",
             "weight_decay": 0.0, "diverged": False, "steps": 10} for s in (0, 10)]
    with pytest.raises(ValueError, match="needs one float32 and one float64 point"):
        sweep.precision_table(pd.DataFrame(rows), 5e-3)


def _flip_bit(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_point_is_recomputed_with_a_warning(damage, tmp_path, caplog):
    """A flipped bit (sealed: its SHA-256 differs) or a truncated file is trained again, never served."""
    curve = sweep.accuracy_curve(TINY, tmp_path)
    path = sweep.point_path(TINY, tmp_path)
    if damage == "flip":
        _flip_bit(path, len(path.read_bytes()) // 2)
    else:
        path.write_bytes(path.read_bytes()[:200])
    with caplog.at_level("WARNING", logger="grokutils"):
        again = sweep.accuracy_curve(TINY, tmp_path)
    assert path.name in caplog.text and "recomputing" in caplog.text
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), curve.drop(columns="seconds"))
    pd.testing.assert_frame_equal(sweep.accuracy_curve(TINY, tmp_path), again)  # sealed again: loaded


def test_a_point_stored_before_seals_still_loads_and_can_be_sealed(tmp_path, monkeypatch):
    curve = sweep.accuracy_curve(TINY, tmp_path)
    path = sweep.point_path(TINY, tmp_path)
    sweep.seal_path(path).unlink()  # as written before seals existed
    monkeypatch.setattr(sweep, "SeedGroup", lambda *args, **kwargs: pytest.fail("a stored point was retrained"))
    pd.testing.assert_frame_equal(sweep.accuracy_curve(TINY, tmp_path), curve)
    assert sweep.main(["--seal", str(path)]) == 0
    assert sweep.seal_path(path).read_text() == f"{sweep.file_sha256(path)}  {path.name}\n"
    _flip_bit(path, len(path.read_bytes()) // 2)
    with pytest.raises(ValueError, match="SHA-256 differs"):
        sweep.seal_point(path)


def test_a_sweep_without_a_point_at_the_chosen_protocol_is_refused_before_work():
    """Issue 34: chapter 08 reads the protocol's lr and dtype from the profile; a sweep list that does not
    hold it fails at once, naming the setting and how to add it."""
    base = MLPConfig(n_checkpoints=10)
    points = [[5e-3, "float32", 300], [5e-4, "float32", 300]]
    assert len(sweep.sweep_configs(points, base, must_hold=(5e-3, "float32"))) == 2
    with pytest.raises(ValueError, match=r"no point at the chosen protocol's lr 0.005 and dtype 'float64'.*add "
                                         r"\[0.005, 'float64', STEPS\]"):
        sweep.sweep_configs(points, base, must_hold=(5e-3, "float64"))

"""grokutils.store: the cache, seals, atomic writes, locks (engine and resume: test_engine.py)."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grokutils import engine, store, train
from grokutils.config import MLPConfig


def test_config_hash_is_stable_and_sensitive():
    a, b = MLPConfig(steps=100), MLPConfig(steps=100)
    assert store.config_hash(a) == store.config_hash(b)
    assert store.config_hash(a) != store.config_hash(dataclasses.replace(a, weight_decay=0.01))
    assert store.run_dir(a, "r").name.startswith("mlp-wd0-100steps-1seeds-")


def test_tiny_run_is_complete_and_tidy(tiny_run):
    assert store.is_complete(tiny_run.path)
    assert len(tiny_run.curves) == 2 * len(tiny_run.config.checkpoint_steps)
    assert set(tiny_run.layers.layer) == {"fc1", "fc2", "fc3"}
    assert len(tiny_run.layers) == 3 * len(tiny_run.curves)
    assert tiny_run.meta["data_fingerprint"]["test_x"].startswith("74e1cd932910e49e")
    assert tiny_run.meta["status"] == {"0": {"status": "finished", "step": 30},
                                       "1": {"status": "finished", "step": 30}}
    evals = tiny_run.array(1, 30, "fc1", "evals")
    assert evals.shape == (200,) and np.all(np.diff(evals) >= 0)
    weights = tiny_run.weights(0, "final")
    assert weights["fc1.weight"].shape == (200, 784)
    with pytest.raises(KeyError, match="no weights for seed 0 at 'median'"):
        tiny_run.weights(0, "median")


def _copy_run(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / tiny_run.path.name
    shutil.copytree(tiny_run.path, copy)
    return copy


def test_truncated_file_is_not_a_finished_run(tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    data = (copy / "layers.parquet").read_bytes()
    (copy / "layers.parquet").write_bytes(data[: len(data) // 2])
    assert not store.is_complete(copy)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        store.load_run(copy, MLPConfig)


def test_unsealed_folder_is_not_a_finished_run(tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    (copy / "meta.json").unlink()
    assert not store.is_complete(copy)
    (copy / "meta.json").write_text("{not json")
    assert not store.is_complete(copy)


def test_meta_records_versions_device_and_timings(tiny_run):
    meta = json.loads((tiny_run.path / "meta.json").read_text())
    assert meta["versions"]["weightwatcher"] == "0.7.5.5"
    assert meta["device"].startswith("cpu")
    assert set(meta["timings"]) == {"train_s", "measure_s", "wall_s"}
    assert set(meta["file_sizes"]) == set(store.FILES)
    assert meta["file_sha256"] == {name: store.file_sha256(tiny_run.path / name) for name in store.FILES}


def _flip_byte(path, offset: int = -100) -> None:
    """Flip one bit of one byte: the size stays, the content does not."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _drop_hashes(folder) -> None:
    """Rewrite meta.json as a seal of sizes alone, without file_sha256."""
    meta = json.loads((folder / "meta.json").read_text())
    sizes_only = {key: value for key, value in meta.items() if key != "file_sha256"}
    (folder / "meta.json").write_text(json.dumps(sizes_only, indent=1) + "\n")


def test_flipped_byte_is_not_a_finished_run(tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    _flip_byte(copy / "weights.safetensors")
    assert not store.is_complete(copy)
    with pytest.raises(FileNotFoundError, match="weights.safetensors: SHA-256 differs from the seal"):
        store.load_run(copy, MLPConfig)


def test_a_seal_without_hashes_is_damaged(tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    _drop_hashes(copy)
    assert not store.is_complete(copy)
    assert store.load_if_finished(copy, MLPConfig) is None
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        store.load_run(copy, MLPConfig)


@pytest.mark.parametrize("key", store.META_KEYS)
def test_a_seal_without_a_key_the_loader_reads_is_refused_naming_it(key, tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    meta = json.loads((copy / "meta.json").read_text())
    del meta[key]
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match=rf"damaged seal: meta.json lacks \['{key}'\]"):
        store.load_run(copy, MLPConfig)


def test_a_folder_whose_config_does_not_hash_to_its_name_is_refused(tiny_run, tmp_path):
    renamed = tmp_path / tiny_run.path.name.replace("30steps", "31steps")
    shutil.copytree(tiny_run.path, renamed)
    with pytest.raises(FileNotFoundError, match=f"config.json hashes to {tiny_run.path.name}, not to"):
        store.load_run(renamed, MLPConfig)
    assert store.load_if_finished(renamed, MLPConfig) is None


def test_the_store_has_no_command_that_adds_hashes(tiny_run, tmp_path):
    """`python -m grokutils.store --add-hashes FOLDER` added hashes to a seal of sizes alone; no more."""
    import subprocess
    import sys

    copy = _copy_run(tiny_run, tmp_path)
    _drop_hashes(copy)
    sizes_only = (copy / "meta.json").read_bytes()
    subprocess.run([sys.executable, "-m", "grokutils.store", "--add-hashes", str(copy)], capture_output=True,
                   timeout=120)
    assert (copy / "meta.json").read_bytes() == sizes_only
    assert not store.is_complete(copy)


def test_committed_results_are_sealed_with_hashes_and_load():
    """Every committed run and sweep point: sealed with the SHA-256 of every file, its config's."""
    from grokutils.config import ModAddConfig
    from grokutils.paths import RESULTS_DIR
    from grokutils.sweep import POINT, SWEEP_FOLDER

    runs = [path for path in RESULTS_DIR.iterdir() if path.is_dir() and path.name != SWEEP_FOLDER
            and not path.name.endswith((".partial", ".staging"))]
    points = [path for path in (RESULTS_DIR / SWEEP_FOLDER).iterdir() if path.is_dir()]
    assert runs and points
    for folder, layout in [(run, store.RUN) for run in runs] + [(point, POINT) for point in points]:
        config_class = ModAddConfig if folder.name.startswith("modadd-") else MLPConfig
        assert store.run_problem(folder, config_class, layout) is None, folder.name
        assert set(json.loads((folder / "meta.json").read_text())["file_sha256"]) == set(layout.files)


WRITERS = {  # every atomic write goes through store.atomic_write_bytes
    "bytes": lambda path: store.atomic_write_bytes(path, b"x" * 1000),
    "torch.save": lambda path: train.save_atomic({"w": torch.ones(3, 3)}, path),
    "safetensors": lambda path: train.save_atomic({"w": torch.ones(3, 3)}, path, as_safetensors=True),
    "Parquet table": lambda path: store.atomic_write_table(pd.DataFrame({"a": [1.0]}), path, parquet=True),
    "CSV table": lambda path: store.atomic_write_table(pd.DataFrame({"a": [1.0]}), path, parquet=False),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_full_disk_removes_the_temporary_file_and_names_the_path(writer, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def half_then_full(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    target = tmp_path / "measures.npz"
    with pytest.raises(OSError, match=f"could not write {target}: No space left on device") as raised:
        WRITERS[writer](target)
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_corrupted_store_is_recomputed_with_a_warning(tiny_run, tmp_path, monkeypatch, caplog):
    """A sealed folder whose bytes changed is recomputed, and the log names the folder and file."""
    copy = _copy_run(tiny_run, tmp_path)
    _flip_byte(copy / "weights.safetensors")

    def stop(*args, **kwargs):
        raise RuntimeError("recomputing started")

    monkeypatch.setattr(train, "train_seeds", stop)
    with caplog.at_level("WARNING", logger="grokutils"), pytest.raises(RuntimeError, match="recomputing"):
        engine.run(tiny_run.config, results_dir=tmp_path, device="cpu", progress=False)
    warning = " ".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert copy.name in warning and "weights.safetensors" in warning and "recomputing" in warning
    aside = copy.with_name(copy.name + ".damaged")
    assert f"kept as {aside.name}" in warning and (aside / "curves.parquet").is_file()  # moved aside, not deleted


def test_a_garbled_meta_json_keeps_the_intact_data_files(tiny_run, tmp_path, monkeypatch):
    """A garbled seal on intact data: the run's files are set aside (twice: numbered), never deleted."""
    copy = _copy_run(tiny_run, tmp_path)
    curves = (copy / "curves.parquet").read_bytes()

    def stop(*args, **kwargs):
        raise RuntimeError("recomputing started")

    monkeypatch.setattr(train, "train_seeds", stop)
    for aside_name in (".damaged", ".damaged-2"):
        (copy / "meta.json").write_text("{garbled")
        with pytest.raises(RuntimeError, match="recomputing"):
            engine.run(tiny_run.config, results_dir=tmp_path, device="cpu", progress=False)
        assert (copy.with_name(copy.name + aside_name) / "curves.parquet").read_bytes() == curves
        shutil.copytree(copy.with_name(copy.name + aside_name), copy)


def test_lock_is_released_when_its_holder_dies(tmp_path, hold_run_lock):
    import threading

    final = tmp_path / "run"
    holder = hold_run_lock(final, seconds=60.0)
    holder.kill()
    holder.wait()
    acquired = threading.Event()

    def take() -> None:
        with store.run_lock(final):
            acquired.set()

    threading.Thread(target=take, daemon=True).start()
    assert acquired.wait(timeout=20), "the lock of a killed process was not released"


@pytest.mark.parametrize("file_sizes", [{}, [], {"config.json": 10}, "none"])
def test_a_seal_that_does_not_list_the_run_files_is_damaged(file_sizes, tiny_run, tmp_path, monkeypatch, caplog):
    """A meta.json whose file list is empty, of the wrong type or short is a damaged seal: recomputed."""
    copy = _copy_run(tiny_run, tmp_path)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "file_sizes": file_sizes}))
    assert not store.is_complete(copy)
    assert store.load_if_finished(copy, MLPConfig) is None
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        store.load_run(copy, MLPConfig)

    def stop(*args, **kwargs):
        raise RuntimeError("recomputing started")

    monkeypatch.setattr(train, "train_seeds", stop)
    with caplog.at_level("WARNING", logger="grokutils"), pytest.raises(RuntimeError, match="recomputing"):
        engine.run(tiny_run.config, results_dir=tmp_path, device="cpu", progress=False)
    assert "damaged" in caplog.text and copy.name in caplog.text


def test_a_seal_of_the_wrong_shape_is_damaged(tiny_run, tmp_path):
    copy = _copy_run(tiny_run, tmp_path)
    meta = json.loads((copy / "meta.json").read_text())
    for damaged in ([], {**meta, "file_sha256": []}, {**meta, "file_sha256": {"config.json": 5}}):
        (copy / "meta.json").write_text(json.dumps(damaged))
        assert not store.is_complete(copy), damaged


def _tiny_tables(size: int = 400_000):
    """What write_run takes, with a weights file of about `size` bytes."""
    curves = pd.DataFrame({"seed": [0], "step": [0], "test_accuracy": [0.1]})
    return (curves, curves.assign(layer="fc1"), {"seed0/step0/fc1/evals": np.ones(3, np.float32)},
            {"seed0/final/fc1.weight": torch.ones(size // 4)}, {"status": {}})


def test_every_file_of_a_run_has_the_same_mode(tmp_path):
    final = tmp_path / "run"
    store.write_run(final, MLPConfig(steps=5), *_tiny_tables(1000))
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in final.iterdir()}
    assert set(modes) == {*store.FILES, "meta.json"}
    assert len(set(modes.values())) == 1, modes


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_store import _tiny_tables
from grokutils import store
from grokutils.config import MLPConfig
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
store.write_run(Path(sys.argv[1]), MLPConfig(steps=5), *_tiny_tables())
"""


def test_full_disk_at_assembly_names_the_file_and_leaves_nothing(tmp_path):
    """The weights file does not fit (a file-size limit stands in for a full disk)."""
    import os
    import subprocess
    import sys

    final = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(final), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("OSError") and "weights.safetensors" in last_line, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []

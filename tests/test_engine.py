"""The engine and the one training loop, for both tasks: kill and resume, NaN, cache hits, locks.

Each test runs once per task (`TASKS`): the MLP (its seeds one batched module) and modular
addition (one seed at a time), both through `grokutils.train.train_seeds`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from grokutils import engine, mlp, modadd, store, tasks, train
from grokutils.config import MLPConfig, ModAddConfig
from grokutils.data import modular_addition_data

CPU = torch.device("cpu")
SMALL_MODADD = dict(p=23, train_fraction=0.5)  # 529 pairs, 264 for training: fast, same code paths


def _mnist_like(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=generator, dtype=torch.float64), torch.arange(n) % 10


# task name -> (task, a config of `steps` steps with `n` checkpoints, its training data)
SETUPS = {
    "mlp": (tasks.MLP, lambda steps, n, **kw: MLPConfig(steps=steps, n_checkpoints=n, **kw), _mnist_like),
    "modadd": (tasks.MODADD, lambda steps, n, **kw: ModAddConfig(steps=steps, n_checkpoints=n, batch_size=100,
                                                                 **SMALL_MODADD, **kw),
               lambda: modular_addition_data(23, 0.5, 0)),
}
TASKS = list(SETUPS)


def _final_state(seed_dir) -> dict:
    return torch.load(seed_dir / "state.pt", weights_only=True)


def _assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual["step"] == expected["step"]
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name


@pytest.mark.parametrize("name", TASKS)
def test_crash_after_a_checkpoint_resumes_to_identical_weights(name, tmp_path):
    """A crash right after a checkpoint: the rerun continues from it and ends where an
    uninterrupted run ends, bitwise (every batch is a pure function of seed and step)."""
    task, make_config, make_data = SETUPS[name]
    config, data = make_config(40, 6), make_data()
    crash_step = config.checkpoint_steps[3]

    class Crash(Exception):
        pass

    def crash(step, path):
        if step == crash_step:
            raise Crash

    with pytest.raises(Crash):
        train.train_seed(task, config, 0, data, tmp_path / "a", CPU, crash, progress=False)
    assert _final_state(tmp_path / "a")["step"] == crash_step
    seen = []
    train.train_seed(task, config, 0, data, tmp_path / "a", CPU, lambda s, p: seen.append(s), progress=False)
    assert seen == [t for t in config.checkpoint_steps if t > crash_step]
    train.train_seed(task, config, 0, data, tmp_path / "b", CPU, progress=False)
    _assert_same_weights(_final_state(tmp_path / "a"), _final_state(tmp_path / "b"))
    assert not list(tmp_path.rglob(".*.tmp"))  # atomic writes leave no temporary files


RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    sys.path.insert(0, sys.argv[3])
    from test_engine import SETUPS
    task, make_config, make_data = SETUPS[sys.argv[2]]
    from grokutils.train import train_seed
    train_seed(task, make_config(800, 40), 0, make_data(), Path(sys.argv[1]), torch.device("cpu"), progress=False)
""")


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_killed_run_resumes_to_bitwise_identical_weights(name, tmp_path):
    """SIGKILL a real training process mid-run; rerunning finishes with the same weights."""
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    command = [sys.executable, "-c", RUNNER, str(interrupted), name, os.path.dirname(__file__)]
    process = subprocess.Popen(command)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((interrupted / "weights").glob("*.safetensors"))) < 25:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = _final_state(interrupted)["step"]
    assert 0 < saved < 800, f"kill came too late to test resuming (state at step {saved})"
    subprocess.run(command, check=True)
    subprocess.run([*command[:3], str(reference), *command[4:]], check=True)
    assert _final_state(reference)["step"] == 800
    _assert_same_weights(_final_state(interrupted), _final_state(reference))


@pytest.mark.parametrize("name", TASKS)
def test_nan_loss_stops_with_a_recorded_status(name, tmp_path, monkeypatch):
    task, make_config, make_data = SETUPS[name]
    module = {"mlp": mlp, "modadd": modadd}[name]  # where the task's step finds train_step
    real_step = module.train_step

    def poisoned(model, optimizer, loss_of, lr=None):
        loss = real_step(model, optimizer, loss_of, lr)
        return loss * float("nan") if optimizer.state[model.fc1.weight]["step"] > 150 else loss

    monkeypatch.setattr(module, "train_step", poisoned)
    config, data = make_config(1000, 10), make_data()
    status = train.train_seed(task, config, 0, data, tmp_path, CPU, progress=False)
    assert status == {"status": "diverged", "step": 200}
    assert _final_state(tmp_path)["status"] == "diverged"
    assert train.train_seed(task, config, 0, data, tmp_path, CPU, progress=False) == status  # not restarted


@pytest.fixture(params=TASKS)
def finished(request, tiny_run, tiny_modadd):
    """A finished, stored run of each task (built once per session in conftest.py)."""
    return {"mlp": tiny_run, "modadd": tiny_modadd}[request.param]


def _refuse_training(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "train_seeds", refuse)


def test_stored_run_is_loaded_not_recomputed(finished, monkeypatch):
    _refuse_training(monkeypatch)
    again = engine.run(finished.config, results_dir=finished.path.parent, device="cpu", progress=False)
    pd.testing.assert_frame_equal(again.curves, finished.curves)
    pd.testing.assert_frame_equal(again.layers, finished.layers)
    assert engine.load_if_stored(finished.config, finished.path.parent).path == finished.path


def test_second_process_waits_for_the_first_and_loads_its_result(finished, tmp_path, monkeypatch, caplog,
                                                                 hold_run_lock):
    """Another process holds the run's lock, then stores the run: this one waits and loads it."""
    final = store.run_dir(finished.config, tmp_path)
    holder = hold_run_lock(final, source=finished.path, seconds=2.0)
    _refuse_training(monkeypatch)
    with caplog.at_level("WARNING", logger="grokutils"):
        loaded = engine.run(finished.config, results_dir=tmp_path, device="cpu", n_workers=0, progress=False)
    assert holder.wait(timeout=60) == 0
    assert "waiting" in caplog.text and final.name in caplog.text
    pd.testing.assert_frame_equal(loaded.curves, finished.curves)
    assert sorted(path.name for path in tmp_path.iterdir()) == [final.name]  # no lock file left


@pytest.mark.parametrize("name", TASKS)
def test_early_failure_leaves_no_partial_folder_or_lock(name, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise OSError("no data here")

    task = SETUPS[name][0]
    monkeypatch.setattr(task, "data", no_data)
    with pytest.raises(OSError, match="no data here"):
        engine.run(SETUPS[name][1](5, 2), results_dir=tmp_path, device="cpu", n_workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("device, n_workers, message", [
    ("cuda:1", 0, "got 'cuda:1'"), ("cpu", -1, "n_workers must be a non-negative integer or None, got -1"),
    ("cpu", 1.5, "got 1.5")])
def test_bad_arguments_fail_before_any_folder_is_written(name, device, n_workers, message, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=message):
        engine.run(SETUPS[name][1](5, 2), results_dir=tmp_path, device=device, n_workers=n_workers)
    assert list(tmp_path.iterdir()) == []


def test_a_config_of_no_task_is_refused():
    with pytest.raises(TypeError, match=r"config must be one of \['MLPConfig', 'ModAddConfig'\], got dict"):
        tasks.task_of({"steps": 5})


@pytest.mark.slow
def test_run_killed_at_a_checkpoint_resumes_and_matches(finished, tmp_path, monkeypatch):
    """The engine is stopped at a checkpoint mid-run: nothing is sealed; the rerun resumes
    (training and measuring) and stores the same tables as an uninterrupted run."""
    steps = finished.config.checkpoint_steps
    real_train, kill_at = train.train_seeds, steps[len(steps) // 2]  # a checkpoint before the last

    def killed_mid_run(task, config, seed_dirs, data, device, on_checkpoint, progress, **options):
        def callback(seed, step, path):
            on_checkpoint(seed, step, path)
            if step == kill_at:
                raise KeyboardInterrupt("simulated kill")
        return real_train(task, config, seed_dirs, data, device, callback, progress, **options)

    monkeypatch.setattr(train, "train_seeds", killed_mid_run)
    with pytest.raises(KeyboardInterrupt):
        engine.run(finished.config, results_dir=tmp_path, device="cpu", n_workers=1, progress=False)
    final = store.run_dir(finished.config, tmp_path)
    assert not final.exists() and store.partial_dir(final).is_dir()
    monkeypatch.setattr(train, "train_seeds", real_train)
    resumed = engine.run(finished.config, results_dir=tmp_path, device="cpu", n_workers=1, progress=False)
    assert not store.partial_dir(final).exists()
    pd.testing.assert_frame_equal(resumed.curves, finished.curves)
    pd.testing.assert_frame_equal(resumed.layers, finished.layers)
    assert resumed.key_steps == finished.key_steps  # the pruned .partial folder kept what the run keeps
    for seed, kept in finished.key_steps.items():
        for which in kept:
            for name, tensor in finished.weights(seed, which).items():
                assert torch.equal(resumed.weights(seed, which)[name], tensor), (seed, which, name)


NO_MAIN_GUARD = textwrap.dedent("""
    import sys
    from grokutils import engine
    from grokutils.config import MLPConfig
    engine.run(MLPConfig(steps=20, n_checkpoints=3), results_dir=sys.argv[1], device="cpu", n_workers=1,
               progress=False)
""")


def test_a_script_without_a_main_guard_fails_with_advice_instead_of_hanging(tmp_path):
    """Spawned measuring workers import the main script: without the guard the worker would
    run it again and wait forever on its own parent's run lock."""
    script = tmp_path / "no_guard.py"
    script.write_text(NO_MAIN_GUARD)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "results")], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert done.returncode != 0
    assert "if __name__ == '__main__':" in done.stderr.strip().splitlines()[-1], done.stderr[-3000:]
    assert "no main guard" in done.stderr


HOLD_A_POOL = textwrap.dedent("""
    import os, sys, time
    from multiprocessing import resource_tracker
    from grokutils import engine
    if __name__ == "__main__":
        with engine._measuring_pool(1) as pool:
            print(pool.submit(os.getpid).result(), resource_tracker._resource_tracker._pid, flush=True)
            time.sleep(600)
""")


def _alive(pid: int) -> bool:
    """True if process `pid` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_measuring_workers_die_with_their_parent(tmp_path):
    """kill -9 of the engine's process: its worker and the resource tracker exit too."""
    script = tmp_path / "pool.py"
    script.write_text(HOLD_A_POOL)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        worker, tracker = map(int, process.stdout.readline().split())
        assert _alive(worker) and _alive(tracker)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    deadline = time.time() + 30
    while time.time() < deadline and (_alive(worker) or _alive(tracker)):
        time.sleep(0.2)
    survivors = [pid for pid in (worker, tracker) if _alive(pid)]
    for pid in survivors:  # leave nothing behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"worker {worker} / resource tracker {tracker} outlived their parent"


def test_training_flushes_denormals_and_switches_flushing_off_after():
    tiny = 1e-323  # a float64 denormal
    with engine._flush_denormals():
        assert torch.tensor([tiny], dtype=torch.float64).item() == 0.0
    assert torch.tensor([tiny], dtype=torch.float64).item() > 0.0


def _fake_checkpoint(seed_dir, step, test_accuracy=None) -> None:
    """A weights file at `step`, and its measures if `test_accuracy` is given."""
    import io
    import json

    import numpy as np
    from safetensors.torch import save_file

    from grokutils.store import atomic_write_bytes

    train.weights_path(seed_dir, step).parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, train.weights_path(seed_dir, step))
    if test_accuracy is not None:
        engine.measures_path(seed_dir, step).parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, rows=np.array(json.dumps({"model": {"test_accuracy": test_accuracy}, "layers": []})))
        atomic_write_bytes(engine.measures_path(seed_dir, step), buffer.getvalue())


def test_pruner_keeps_init_first_best_latest_and_unmeasured_weights(tmp_path):
    steps = [0, 1, 2, 5, 10, 20, 50]
    accuracies = {0: 0.1, 1: 0.3, 2: 0.8, 5: 0.8, 10: 0.5}  # best 0.8 first at step 2; 20 and 50 unmeasured
    for step in steps:
        _fake_checkpoint(tmp_path, step, accuracies.get(step))
    engine.WeightsPruner(steps).prune(tmp_path)
    kept = sorted(int(path.stem.split("_")[1]) for path in (tmp_path / "weights").glob("*.safetensors"))
    assert kept == [0, 2, 20, 50]
    _fake_checkpoint(tmp_path, 20, 0.9)  # measured later, and better: step 2 goes; 50 is the latest
    _fake_checkpoint(tmp_path, 50, 0.2)
    pruner = engine.WeightsPruner(steps)
    pruner.prune(tmp_path)
    kept = sorted(int(path.stem.split("_")[1]) for path in (tmp_path / "weights").glob("*.safetensors"))
    assert kept == [0, 20, 50]


def test_an_unreadable_state_is_named_with_the_fix(tmp_path):
    task, make_config, make_data = SETUPS["mlp"]
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(train.DamagedStateError, match=r"seed0/state.pt: the saved training state cannot be read"
                                                      r".*delete it to train this seed again from step 0"):
        train.train_seeds(task, make_config(40, 6), {0: tmp_path / "seed0"}, make_data(), CPU, progress=False)


def test_unreadable_measures_are_measured_again_or_set_aside(tmp_path, caplog):
    """With its weights kept, a garbage measures file is deleted (measured again); without them,
    it is set aside with a warning; unreadable pending weights stop with the file named."""
    _fake_checkpoint(tmp_path, 5, 0.5)
    engine.measures_path(tmp_path, 5).write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="grokutils"):
        engine.check_checkpoint_files(tmp_path, 5)
    assert not engine.measures_path(tmp_path, 5).exists() and "measuring that checkpoint again" in caplog.text
    _fake_checkpoint(tmp_path, 7, 0.5)
    train.weights_path(tmp_path, 7).unlink()  # pruned
    engine.measures_path(tmp_path, 7).write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="grokutils"):
        engine.check_checkpoint_files(tmp_path, 7)
    assert (tmp_path / "measures" / "step_000000007.npz.unreadable").is_file() and "set aside" in caplog.text
    _fake_checkpoint(tmp_path, 9)
    train.weights_path(tmp_path, 9).write_bytes(b"w")  # garbage weights, not measured: cannot be read
    with pytest.raises(train.DamagedStateError, match=r"step_000000009.safetensors: checkpoint weights waiting"):
        engine.check_checkpoint_files(tmp_path, 9)
    engine.check_checkpoint_files(tmp_path, 11)  # nothing saved: nothing to say

"""grokutils.models and grokutils.train: the papers' MLP, batch order, resume, divergence."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokutils import train
from grokutils.models import make_mlp, weight_matrices
from grokutils.train import MLPConfig, batch_indices, log_spaced_steps, train_seed


def test_log_spaced_steps_dense_early_and_at_least_150_to_1e7():
    steps = log_spaced_steps(10_000_000, 160)
    assert steps[0] == 0 and steps[-1] == 10_000_000
    assert len(steps) >= 161 and np.all(np.diff(steps) > 0)
    assert steps[1:11] == list(range(1, 11))  # every early step
    ratios = np.diff(np.log(steps[-50:]))
    assert ratios.std() < 0.02 * ratios.mean() + 1e-3  # evenly spaced in log at the end


def test_log_spaced_steps_short_run_keeps_every_step():
    assert log_spaced_steps(5, 160) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("field, value, message", [
    ("steps", -5, "steps must be a positive integer, got -5"),
    ("n_seeds", 0, "n_seeds must be a positive integer, got 0"),
    ("lr", 0.0, "lr must be a positive finite number, got 0.0"),
    ("lr", float("nan"), "lr must be a positive finite number, got nan"),
    ("lr", float("inf"), "lr must be a positive finite number, got inf"),
    ("init_scale", float("nan"), "init_scale must be a positive finite number, got nan"),
    ("weight_decay", -0.01, "weight_decay must be a non-negative finite number, got -0.01"),
    ("weight_decay", float("inf"), "weight_decay must be a non-negative finite number, got inf"),
    ("weight_decay", float("nan"), "weight_decay must be a non-negative finite number, got nan"),
    ("data_source", "emnist", "data_source must be one of"),
    ("dtype", "float16", "dtype must be one of"),
    ("batch_size", 5000, "batch_size=5000 exceeds the 1000 training images"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MLPConfig(**{field: value})


def test_bad_device_is_named():
    accepted = r"device must be 'auto', 'cpu' or 'cuda\[:N\]' with N < \d+ "
    with pytest.raises(ValueError, match=accepted + ".*got 'gpu0'"):
        train.resolve_device("gpu0")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7", "mps", "meta"])
def test_unavailable_device_is_refused(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=rf"device must be 'auto', 'cpu' or 'cuda\[:N\]' with N < 0 "
                                         rf"\(CUDA devices here: 0\), got '{device}'"):
        train.resolve_device(device)


def test_cuda_index_must_name_an_existing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert train.resolve_device("cuda") == torch.device("cuda")
    assert train.resolve_device("cuda:1") == torch.device("cuda:1")
    assert train.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"with N < 2 \(CUDA devices here: 2\), got 'cuda:7'"):
        train.resolve_device("cuda:7")


def test_cpu_is_always_accepted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("cpu") == torch.device("cpu")
    assert train.resolve_device("auto") == torch.device("cpu")


def test_bad_device_fails_before_any_folder_is_written(tmp_path, monkeypatch):
    from grokutils.experiment import run_experiment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="got 'cuda'"):
        run_experiment(MLPConfig(steps=5), results_dir=tmp_path, device="cuda", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_safetensors", [False, True])
def test_full_disk_leaves_no_temporary_file_and_names_the_path(tmp_path, monkeypatch, as_safetensors):
    import errno
    from pathlib import Path

    def half_then_full(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    target = tmp_path / "state.pt"
    with pytest.raises(OSError, match=f"could not write {target}: No space left on device") as raised:
        train.save_atomic({"w": torch.ones(3, 3)}, target, as_safetensors=as_safetensors)
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_saved_state_loads_back(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7, "status": "running"}
    train.save_atomic(state, tmp_path / "state.pt")
    train.save_atomic(state["model"], tmp_path / "w.safetensors", as_safetensors=True)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 7
    from safetensors.torch import load_file
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], state["model"]["w"])


def test_mlp_is_default_init_times_scale():
    base, scaled = make_mlp(seed=3, init_scale=1.0), make_mlp(seed=3, init_scale=8.0)
    for (name, p1), (_, p8) in zip(base.named_parameters(), scaled.named_parameters()):
        assert p8.dtype == torch.float64
        torch.testing.assert_close(p8, 8.0 * p1, rtol=0, atol=0, msg=name)
    shapes = {name: tuple(w.shape) for name, w in weight_matrices(scaled).items()}
    assert shapes == {"fc1": (200, 784), "fc2": (200, 200), "fc3": (10, 200)}


def test_every_epoch_visits_each_image_once_and_reshuffles():
    config = MLPConfig(steps=100)
    epoch0 = torch.cat([batch_indices(config, 0, step, 1000) for step in range(5)])
    epoch1 = torch.cat([batch_indices(config, 0, step, 1000) for step in range(5, 10)])
    assert sorted(epoch0.tolist()) == list(range(1000)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)


def test_replay_first_epoch_repeats_the_same_five_batches():
    config = MLPConfig(steps=100, replay_first_epoch=True)
    for step in range(5):
        assert torch.equal(batch_indices(config, 0, step, 1000), batch_indices(config, 0, step + 5 * 7, 1000))


def _tiny_data(n=1000):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=generator, dtype=torch.float64), torch.arange(n) % 10


def test_trainer_matches_a_plain_pytorch_loop(tmp_path):
    """Same seed and data: our trainer and a plain loop agree bitwise over 60 steps."""
    config = MLPConfig(steps=60, n_checkpoints=4)
    x, y = _tiny_data()
    train_seed(config, 0, x, y, tmp_path, torch.device("cpu"), progress=False)
    ours = torch.load(tmp_path / "state.pt", weights_only=True)["model"]

    model = make_mlp(0, 8.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    for epoch in range(12):  # 12 epochs x 5 batches
        order = torch.randperm(1000, generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(200):
            optimizer.zero_grad()
            F.mse_loss(model(x[batch]), F.one_hot(y[batch], 10).double()).backward()
            optimizer.step()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ours[name]), name


def test_nan_loss_stops_with_a_recorded_status(tmp_path, monkeypatch):
    real_step = train.train_step

    def poisoned(model, optimizer, xb, yb):
        loss = real_step(model, optimizer, xb, yb)
        return loss * float("nan") if optimizer.state[model.fc1.weight]["step"] > 150 else loss

    monkeypatch.setattr(train, "train_step", poisoned)
    x, y = _tiny_data()
    status = train_seed(MLPConfig(steps=1000, n_checkpoints=10), 0, x, y, tmp_path, torch.device("cpu"),
                        progress=False)
    assert status == {"status": "diverged", "step": 200}
    again = train_seed(MLPConfig(steps=1000, n_checkpoints=10), 0, x, y, tmp_path, torch.device("cpu"),
                       progress=False)
    assert again == status  # a diverged run is not restarted


RUNNER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from grokutils.train import MLPConfig, train_seed
    x = torch.rand(1000, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(1000) % 10
    train_seed(MLPConfig(steps=800, n_checkpoints=30), 0, x, y, Path(sys.argv[1]), torch.device("cpu"),
               progress=False)
""")


@pytest.mark.slow
def test_killed_run_resumes_to_bitwise_identical_weights(tmp_path):
    """SIGKILL a real training process mid-run; rerunning finishes with the same weights."""
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(interrupted)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list((interrupted / "weights").glob("*.safetensors"))) < 15:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = torch.load(interrupted / "state.pt", weights_only=True)["step"]
    assert 0 < saved < 800, f"kill came too late to test resuming (state at step {saved})"
    subprocess.run([sys.executable, "-c", RUNNER, str(interrupted)], check=True)
    subprocess.run([sys.executable, "-c", RUNNER, str(reference)], check=True)
    resumed = torch.load(interrupted / "state.pt", weights_only=True)
    uninterrupted = torch.load(reference / "state.pt", weights_only=True)
    assert resumed["step"] == uninterrupted["step"] == 800
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name

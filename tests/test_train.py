"""grokutils.config, grokutils.models, grokutils.train: configs, the papers' MLP, batch order, the loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokutils import config as config_module
from grokutils import tasks, train
from grokutils.config import MLPConfig, log_spaced_steps
from grokutils.models import make_mlp, weight_matrices
from grokutils.tasks import batch_indices
from grokutils.train import train_seed


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
    ("batch_size", 5000, "batch_size must be at most the 1000 training images, got 5000"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        MLPConfig(**{field: value})


def test_bad_device_is_named():
    accepted = r"device must be 'auto', 'cpu' or 'cuda\[:N\]' with N < \d+ "
    with pytest.raises(ValueError, match=accepted + ".*got 'gpu0'"):
        config_module.resolve_device("gpu0")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7", "mps", "meta"])
def test_unavailable_device_is_refused(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=rf"device must be 'auto', 'cpu' or 'cuda\[:N\]' with N < 0 "
                                         rf"\(CUDA devices here: 0\), got '{device}'"):
        config_module.resolve_device(device)


def test_cuda_index_must_name_an_existing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert config_module.resolve_device("cuda") == torch.device("cuda")
    assert config_module.resolve_device("cuda:1") == torch.device("cuda:1")
    assert config_module.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"with N < 2 \(CUDA devices here: 2\), got 'cuda:7'"):
        config_module.resolve_device("cuda:7")


def test_cpu_is_always_accepted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config_module.resolve_device("cpu") == torch.device("cpu")
    assert config_module.resolve_device("auto") == torch.device("cpu")


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
    train_seed(tasks.MLP, config, 0, (x, y), tmp_path, torch.device("cpu"), progress=False)
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



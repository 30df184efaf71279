"""grokutils.config, grokutils.models, grokutils.train: configs, the papers' MLP, batch order, the loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_batched import BITWISE  # whether batched and plain float64 gradients agree bitwise here

from grokutils import config as config_module
from grokutils import tasks, train
from grokutils.config import MLPConfig, log_spaced_steps
from grokutils.mlp import batch_indices
from grokutils.models import make_mlp, weight_matrices
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
    """Same seed and data: our trainer and a plain loop agree bitwise over 60 steps (to 1e-12 where
    this machine's BLAS rounds batched weight gradients differently)."""
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
        if BITWISE:
            assert torch.equal(tensor, ours[name]), name
        else:  # this BLAS rounds batched weight gradients differently (tests/test_batched.py)
            torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-12 * tensor.abs().max().item(), msg=name)




class _Stop(Exception):
    pass


def test_a_run_stopped_between_checkpoints_resumes_bit_for_bit(tmp_path, monkeypatch):
    """float64, two seeds in one group: the state saved on the clock between checkpoints (here at
    every clock stop) resumes to the same weights and optimizer state as an unbroken run."""
    config = MLPConfig(steps=1200, n_checkpoints=4)  # checkpoints 0, 1, 11, 113, 1200
    data = _tiny_data()
    monkeypatch.setattr(train, "SAVE_EVERY_S", 0.0)
    real_save = train.save_state

    def stop_after_saving(seed_dir, state):
        real_save(seed_dir, state)
        if state["step"] == 1000 and seed_dir.name == "seed1":  # both seeds saved at step 1000
            raise _Stop

    dirs = {seed: tmp_path / "stopped" / f"seed{seed}" for seed in (0, 1)}
    monkeypatch.setattr(train, "save_state", stop_after_saving)
    with pytest.raises(_Stop):
        train.train_seeds(tasks.MLP, config, dirs, data, torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "save_state", real_save)
    assert 1000 not in config.checkpoint_steps
    assert [torch.load(d / "state.pt", weights_only=True)["step"] for d in dirs.values()] == [1000, 1000]
    seen = []
    train.train_seeds(tasks.MLP, config, dirs, data, torch.device("cpu"), progress=False,
                      on_checkpoint=lambda seed, step, path: seen.append(step))
    assert seen == [1200, 1200]  # resumed at step 1000, not at checkpoint 113
    unbroken = {seed: tmp_path / "unbroken" / f"seed{seed}" for seed in (0, 1)}
    train.train_seeds(tasks.MLP, config, unbroken, data, torch.device("cpu"), progress=False)
    for seed in (0, 1):
        resumed, expected = (torch.load(d[seed] / "state.pt", weights_only=True) for d in (dirs, unbroken))
        assert resumed["step"] == expected["step"] == 1200
        for name, tensor in expected["model"].items():
            assert torch.equal(tensor, resumed["model"][name]), name
        for index, entry in expected["optimizer"]["state"].items():
            for key, value in entry.items():
                assert torch.equal(value, resumed["optimizer"]["state"][index][key]), (index, key)


def test_state_is_saved_on_the_clock_only_between_checkpoints(tmp_path, monkeypatch):
    """With SAVE_EVERY_S = 0 the state is saved at each clock stop (multiples of CLOCK_EVERY) that
    is not a checkpoint; with the default (600 s) a short run saves only at its checkpoints."""
    config = MLPConfig(steps=1200, n_checkpoints=4)
    saved = []
    real_save = train.save_state
    monkeypatch.setattr(train, "save_state", lambda seed_dir, state: (saved.append(state["step"]),
                                                                      real_save(seed_dir, state)))
    train.train_seeds(tasks.MLP, config, {0: tmp_path / "a"}, _tiny_data(), torch.device("cpu"), progress=False)
    assert saved == [0, 1, 11, 113, 1200, 1200]  # checkpoints, then the "finished" state
    saved.clear()
    monkeypatch.setattr(train, "SAVE_EVERY_S", 0.0)
    train.train_seeds(tasks.MLP, config, {0: tmp_path / "b"}, _tiny_data(), torch.device("cpu"), progress=False)
    assert saved == [0, 1, 11, 113, 500, 1000, 1200, 1200]


def test_progress_file_records_steps_and_times(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)
    config = MLPConfig(steps=1200, n_checkpoints=4)
    path = tmp_path / "progress.json"
    train.train_seeds(tasks.MLP, config, {0: tmp_path / "seed0"}, _tiny_data(), torch.device("cpu"),
                      progress=False, progress_file=path)
    record = train.read_progress(path)
    steps = [step for _, step in record["samples"]]
    assert record["total_steps"] == 1200 and record["seeds"] == [0] and record["started"][1] == 0
    assert steps[0] == 0 and steps[-1] == 1200 and steps == sorted(steps) and 500 in steps
    times = [time for time, _ in record["samples"]]
    assert times == sorted(times)
    assert train.read_progress(tmp_path / "missing.json") is None


def test_next_stop_is_a_clock_multiple_or_the_target():
    assert train.next_stop(0, 10_000) == train.CLOCK_EVERY
    assert train.next_stop(train.CLOCK_EVERY, 10_000) == 2 * train.CLOCK_EVERY
    assert train.next_stop(7, 113) == 113
    assert train.CLOCK_EVERY % train.FINITE_CHECK_EVERY == 0  # no extra finiteness checks

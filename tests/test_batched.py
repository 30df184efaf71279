"""The MLP's seeds as one batched module, trained by the one loop: against a plain PyTorch loop.

On the CPU in float64 (eager loss, single-tensor AdamW) each seed of the batched module
computes bitwise what a plain `make_mlp(seed)` loop computes where the BLAS gives batched and
single products the same bits (MKL on the Intel Xeons this was built on: `BITWISE`, probed at
import), else to 1e-12 relative (MKL on an AMD EPYC here rounds weight gradients differently).
Float32 uses a compiled loss and the fused AdamW: checked to a stated tolerance. Checkpoints
are the plain loop's `state_dict`s, so a state written by the trainer before this one (which
saved exactly those) resumes.
The CUDA test runs only where a GPU is present.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from grokutils import batched, mlp, tasks
from grokutils.config import MLP_OPTIMIZERS, MLPConfig
from grokutils.mlp import batch_indices
from grokutils.models import make_mlp
from grokutils.train import SeedGroup, train_seed, train_seeds

CPU = torch.device("cpu")


def _batched_gradients_are_bitwise() -> bool:
    """Whether this machine's BLAS gives the batched module (`baddbmm`, and `bmm` in its backward)
    the same float64 bits as a plain `MLP` (`addmm`, `mm`) on one batch of the MLP's shapes. MKL
    does on the Intel Xeons this was built on, but not on every x86: on an AMD EPYC of this
    workplace the forward agrees bitwise and the weight gradients to round-off (3e-14)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(200, 784, generator=generator, dtype=torch.float64)
    target = F.one_hot(torch.arange(200) % 10, 10).double()
    plain, group = make_mlp(0, 8.0), batched.BatchedMLP.initial(MLPConfig(steps=1), [0])
    F.mse_loss(plain(x), target).backward()
    group._losses(x, target, torch.arange(200).unsqueeze(0)).sum().backward()
    return all(torch.equal(p.grad, q.grad[0]) for p, q in zip(plain.parameters(), group.parameters()))


BITWISE = _batched_gradients_are_bitwise()  # else the float64 comparisons hold to 1e-12 of max |w|
NUMERICS_STEPS = 300
CHECKPOINTED = MLPConfig(steps=40, n_checkpoints=6, weight_decay=0.01)  # checkpoints 0, 1, 2, 4, 9, 19, 40
FLOAT32_STEPS = 150  # float32 is compared before Adam starts to amplify round-off (see below)
FLOAT32 = MLPConfig(steps=FLOAT32_STEPS, dtype="float32", lr=5e-3)  # the accelerated protocol's step
# Float32 against the plain float32 loop after 300 steps: the fused AdamW and the compiled loss
# round differently; measured max |difference| 6e-7 of max |w| on 2026-12-03 (float32 eps 1.2e-7)
# on these random images. On the real digits Adam amplifies the round-off in weights whose
# gradient is nearly zero after about 170 steps (README, Speed), so the test stays on this data.
# On an AMD EPYC of this workplace (2026-12-06), where even float64 weight gradients round
# differently, the largest weight difference was 5e-8 of max |w| after 1 step, 1.7e-6 from step 50
# to 200 (eager and compiled alike), then 2.2e-5 (eager) and 2.5e-3 (compiled) at step 300: Adam's
# amplification had begun there, so float32 is compared at FLOAT32_STEPS. First moments are held to
# FLOAT32_MOMENT_RTOL of their largest entry (a signed running mean: its largest entry is small
# beside the round-off of entries that cancel; 1.3e-3 at step 300, eager); wrong betas, a lost state
# or a missed step differ by orders of magnitude more.
FLOAT32_RTOL = 1e-4
FLOAT32_MOMENT_RTOL = 1e-2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def one_thread():
    """One BLAS thread: the machine is shared, and MKL's results may depend on the thread count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _tiny_data(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=generator, dtype=torch.float64), torch.arange(n) % 10


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float | None = None) -> None:
    """Equal to `rtol` relative to the largest value; rtol None: bitwise with MKL, else 1e-12."""
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if rtol is None and BITWISE:
        difference = (actual - expected).abs().max().item() if actual.numel() else 0.0
        assert torch.equal(actual, expected), f"{what}: not bitwise equal, max |difference| {difference:.3g}"
        return
    rtol = 1e-12 if rtol is None else rtol
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale, msg=what)


def _plain_loop(config: MLPConfig, seed: int, x: torch.Tensor, y: torch.Tensor, steps: int):
    """The plain PyTorch loop with the batch order of `batch_indices`; returns model, optimizer, losses."""
    model = make_mlp(seed, config.init_scale, config.dtype)
    optimizer = MLP_OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr,
                                                     weight_decay=config.weight_decay)
    dtype = model.fc1.weight.dtype
    x, y_onehot, losses = x.to(dtype), F.one_hot(y, 10).to(dtype), []
    for step in range(steps):
        rows = batch_indices(config, seed, step, len(x))
        optimizer.zero_grad()
        loss = F.mse_loss(model(x[rows]), y_onehot[rows])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return model, optimizer, torch.stack(losses)


def _group(config: MLPConfig, seeds: list[int], compiled: bool | None = None) -> SeedGroup:
    """A seed group on the tiny data; `compiled` None: the default (compiled in float32)."""
    group = SeedGroup(tasks.MLP, config, seeds, _tiny_data(), CPU)
    if compiled is not None:
        group.model.compile_wanted = compiled
    return group


def _run_recorded(group: SeedGroup, n: int) -> torch.Tensor:
    """(n, S) losses of n steps, one step at a time."""
    return torch.stack([_one_step(group) for _ in range(n)])


def _one_step(group: SeedGroup) -> torch.Tensor:
    losses = group.task.step(group.config, group.seeds, group.step, group.model, group.optimizer, group.train_set)
    group.step += 1
    return losses


def _compare_with_plain_loop(group: SeedGroup, losses: torch.Tensor, rtol: float | None = None) -> None:
    """Each seed of `group`: losses, weights, optimizer state and its file form against its own plain loop."""
    x, y = _tiny_data()
    for index, seed in enumerate(group.seeds):
        model, optimizer, plain_losses = _plain_loop(group.config, seed, x, y, group.step)
        _assert_same(losses[:, index], plain_losses, f"seed {seed} losses", rtol)
        saved = group.seed_state(seed, "running")
        reference = optimizer.state_dict()
        assert saved["optimizer"]["param_groups"] == reference["param_groups"]
        for i, (name, parameter) in enumerate(model.named_parameters()):
            _assert_same(saved["model"][name], parameter, f"seed {seed} {name}", rtol)
            assert set(saved["optimizer"]["state"].get(i, {})) == set(reference["state"].get(i, {}))
            for key, tensor in reference["state"].get(i, {}).items():
                assert saved["optimizer"]["state"][i][key].dtype == tensor.dtype, (name, key)
                moment_rtol = None if rtol is None else max(rtol, FLOAT32_MOMENT_RTOL)
                _assert_same(saved["optimizer"]["state"][i][key], tensor, f"seed {seed} {name} {key}", moment_rtol)


# --- numerics --------------------------------------------------------------------------------------


def test_batched_seeds_match_the_plain_loop_bitwise_in_float64():
    """Two seeds for 300 steps as one module: losses, weights, moments as each seed's plain loop."""
    group = _group(MLPConfig(steps=NUMERICS_STEPS), [0, 1])
    losses = _run_recorded(group, NUMERICS_STEPS)
    assert group.model.compiled is None  # float64: the eager loss
    assert losses[-1].max() < 0.5 * losses[0].min()  # it does learn
    _compare_with_plain_loop(group, losses)


def test_weight_decay_and_the_uneven_last_batch_match_the_plain_loop():
    config = MLPConfig(steps=30, weight_decay=0.01, batch_size=300)  # batches of 300, 300, 300, 100
    group = _group(config, [2, 0])
    _compare_with_plain_loop(group, _run_recorded(group, 30))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_another_optimizer_trains_as_its_plain_loop(optimizer):
    """The config names the optimizer; SGD and Adam (L2 decay) run as their plain loops do."""
    config = MLPConfig(steps=20, weight_decay=0.01, lr=1e-3, optimizer=optimizer)
    group = _group(config, [0, 1])
    assert type(group.optimizer).__name__ == {"sgd": "SGD", "adam": "Adam"}[optimizer]
    _compare_with_plain_loop(group, _run_recorded(group, 20))


def test_float32_eager_loss_with_the_fused_adamw_matches_the_plain_loop_to_a_tolerance():
    group = _group(FLOAT32, [0, 1], compiled=False)
    assert group.optimizer.param_groups[0]["fused"]  # float32: the fused AdamW
    _compare_with_plain_loop(group, _run_recorded(group, FLOAT32_STEPS), rtol=FLOAT32_RTOL)


@pytest.mark.slow
def test_compiled_float32_matches_the_plain_float32_loop_to_a_stated_tolerance():
    """The default on the CPU in float32: torch.compile of the loss (about 30 s to compile)."""
    group = _group(FLOAT32, [0, 1])
    losses = _run_recorded(group, FLOAT32_STEPS)
    assert group.model.compiled is not None, "the float32 loss was not compiled"
    _compare_with_plain_loop(group, losses, rtol=FLOAT32_RTOL)  # the trial step of compiling did not count


def test_compilation_is_the_default_for_float32_only_on_the_cpu():
    assert mlp.default_compile(CPU, "float32") and not mlp.default_compile(CPU, "float64")
    assert mlp.default_compile(torch.device("cuda"), "float64")


def test_failed_compilation_falls_back_to_the_eager_loss_with_one_warning(monkeypatch, caplog):
    def no_compiler(function, **kwargs):
        raise RuntimeError("no working C++ compiler")

    expected = _run_recorded(_group(dataclasses.replace(FLOAT32, steps=20), [0], compiled=False), 20)
    monkeypatch.setattr(torch, "compile", no_compiler)
    group = _group(dataclasses.replace(FLOAT32, steps=20), [0])
    with caplog.at_level("WARNING", logger="grokutils"):
        losses = _run_recorded(group, 20)
    _assert_same(losses, expected, "losses")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "eager" in warnings[0] and "no working C++ compiler" in warnings[0], warnings


def test_a_seed_state_round_trips_through_load_seed_states():
    group = _group(CHECKPOINTED, [0, 1])
    group.run(7)
    states = [group.seed_state(seed, "running") for seed in (1, 0)]  # put back in the other order
    other = _group(CHECKPOINTED, [1, 0])
    batched.load_seed_states(other.model, other.optimizer, states)
    for index, seed in enumerate((1, 0)):
        again = batched.seed_states(other.model, other.optimizer, index, mlp.plain_parameter_groups(CHECKPOINTED))
        for name, tensor in states[index]["model"].items():
            assert torch.equal(again[0][name], tensor), (seed, name)
        for i, entry in states[index]["optimizer"]["state"].items():
            for key, tensor in entry.items():
                assert torch.equal(again[1]["state"][i][key], tensor), (seed, i, key)
    with pytest.raises(ValueError, match="3 saved states for a model of 2 seeds"):
        batched.load_seed_states(other.model, other.optimizer, states + states[:1])


# --- checkpoints, resume, divergence ----------------------------------------------------------------


class Interrupt(Exception):
    """Raised from a checkpoint callback to stop a run as a kill would."""


def _stop_at(step: int, seed: int):
    def callback(called_seed, called_step, path):
        if (called_seed, called_step) == (seed, step):
            raise Interrupt
    return callback


def _saved(seed_dir: Path) -> tuple[dict, dict]:
    """Every weights file ({file name: tensors}) and the state of one seed's folder."""
    weights = {path.name: load_file(path) for path in sorted((seed_dir / "weights").glob("*.safetensors"))}
    return weights, torch.load(seed_dir / "state.pt", weights_only=True)


def _assert_same_folder(actual: Path, expected: Path) -> None:
    """The same checkpoint files with the same tensors, and the same final state."""
    (weights, state), (weights_ref, state_ref) = _saved(actual), _saved(expected)
    assert list(weights) == list(weights_ref)
    for name, tensors in weights_ref.items():
        for key, tensor in tensors.items():
            _assert_same(weights[name][key], tensor, f"{actual.name} {name} {key}")
    assert (state["step"], state["status"]) == (state_ref["step"], state_ref["status"])
    for key, tensor in state_ref["model"].items():
        _assert_same(state["model"][key], tensor, f"{actual.name} state {key}")
    assert state["optimizer"]["param_groups"] == state_ref["optimizer"]["param_groups"]
    for i, entry in state_ref["optimizer"]["state"].items():
        for key, tensor in entry.items():
            _assert_same(state["optimizer"]["state"][i][key], tensor, f"{actual.name} optimizer {i} {key}")


@pytest.fixture(scope="module")
def one_seed_runs(tmp_path_factory):
    """Seeds 0 and 1 under CHECKPOINTED, each trained alone, with the checkpoints announced."""
    root, calls = tmp_path_factory.mktemp("alone"), []
    for seed in (0, 1):
        train_seed(tasks.MLP, CHECKPOINTED, seed, _tiny_data(), root / f"seed{seed}", CPU, progress=False,
                   on_checkpoint=lambda step, path, s=seed: calls.append((s, step, path.name)))
    return root, calls


def test_seeds_together_write_what_each_seed_alone_writes(tmp_path, one_seed_runs):
    root, alone_calls = one_seed_runs
    calls = []
    statuses = train_seeds(tasks.MLP, CHECKPOINTED, {s: tmp_path / f"seed{s}" for s in (0, 1)}, _tiny_data(), CPU,
                           on_checkpoint=lambda seed, step, path: calls.append((seed, step, path.name)),
                           progress=False)
    assert statuses == {seed: {"status": "finished", "step": 40} for seed in (0, 1)}
    assert sorted(calls) == sorted(alone_calls)
    for seed in (0, 1):
        _assert_same_folder(tmp_path / f"seed{seed}", root / f"seed{seed}")


def test_a_state_saved_by_a_plain_loop_resumes(tmp_path, one_seed_runs):
    """The trainer before this one saved each seed as the plain loop's `state_dict`s (its tests
    checked that bitwise); a state written that way at step 9 resumes to the same end."""
    root, _ = one_seed_runs
    x, y = _tiny_data()
    for seed in (0, 1):
        model, optimizer, _ = _plain_loop(CHECKPOINTED, seed, x, y, 9)
        seed_dir = tmp_path / f"seed{seed}"
        (seed_dir / "weights").mkdir(parents=True)
        for name in [path.name for path in sorted((root / f"seed{seed}" / "weights").iterdir())][:5]:  # to step 9
            (seed_dir / "weights" / name).write_bytes((root / f"seed{seed}" / "weights" / name).read_bytes())
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 9,
                    "status": "running"}, seed_dir / "state.pt")
    train_seeds(tasks.MLP, CHECKPOINTED, {s: tmp_path / f"seed{s}" for s in (0, 1)}, (x, y), CPU, progress=False)
    for seed in (0, 1):
        _assert_same_folder(tmp_path / f"seed{seed}", root / f"seed{seed}")


def test_seeds_saved_at_different_steps_resume_in_groups(tmp_path, one_seed_runs):
    root, _ = one_seed_runs
    stop = CHECKPOINTED.checkpoint_steps[4]
    dirs = {s: tmp_path / f"seed{s}" for s in (0, 1)}
    with pytest.raises(Interrupt):  # seed 0 saved at `stop`, seed 1 one checkpoint earlier
        train_seeds(tasks.MLP, CHECKPOINTED, dirs, _tiny_data(), CPU, on_checkpoint=_stop_at(stop, seed=0),
                    progress=False)
    assert torch.load(dirs[0] / "state.pt", weights_only=True)["step"] == stop
    assert torch.load(dirs[1] / "state.pt", weights_only=True)["step"] == CHECKPOINTED.checkpoint_steps[3]
    train_seeds(tasks.MLP, CHECKPOINTED, {**dirs, 2: tmp_path / "seed2"}, _tiny_data(), CPU, progress=False)
    for seed in (0, 1):
        _assert_same_folder(tmp_path / f"seed{seed}", root / f"seed{seed}")
    assert torch.load(tmp_path / "seed2" / "state.pt", weights_only=True)["status"] == "finished"  # a new seed


def test_a_diverging_seed_stops_alone_with_its_status(tmp_path, monkeypatch):
    real_losses, calls = batched.BatchedMLP._losses, []

    def poisoned(self, x, y_onehot, rows):  # seed index 1's loss reads NaN after 150 steps
        losses = real_losses(self, x, y_onehot, rows)
        calls.append(1)
        nan_at_1 = torch.where(torch.arange(len(losses)) == 1, float("nan"), 0.0).to(losses.dtype)
        return losses if len(calls) <= 150 else losses + nan_at_1  # seed 0's gradient stays finite

    monkeypatch.setattr(batched.BatchedMLP, "_losses", poisoned)
    config = MLPConfig(steps=250, n_checkpoints=3, batch_size=20)  # checkpoints 0, 1, 16, 250
    dirs = {s: tmp_path / f"seed{s}" for s in (0, 1)}
    statuses = train_seeds(tasks.MLP, config, dirs, _tiny_data(), CPU, progress=False)
    assert statuses == {0: {"status": "finished", "step": 250}, 1: {"status": "diverged", "step": 200}}
    state = torch.load(dirs[1] / "state.pt", weights_only=True)
    assert (state["status"], state["step"]) == ("diverged", 200)
    assert [p.name for p in sorted((dirs[1] / "weights").iterdir())][-1] == "step_000000016.safetensors"
    again = train_seeds(tasks.MLP, config, dirs, _tiny_data(), CPU, progress=False)
    assert again == statuses  # a diverged seed is not restarted, a finished one not retrained


def test_saved_states_of_different_steps_are_refused_as_one_group():
    group = _group(CHECKPOINTED, [0])
    states = [group.seed_state(0, "running", step=4), group.seed_state(0, "running", step=9)]
    with pytest.raises(ValueError, match=r"must share one step to train together, got steps \[4, 9\]"):
        SeedGroup(tasks.MLP, CHECKPOINTED, [0, 1], _tiny_data(), CPU, states)


def test_the_optimizer_field_is_checked_and_keeps_old_hashes():
    from grokutils import store
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adamw', 'adam', 'sgd'\), got 'lion'"):
        MLPConfig(optimizer="lion")
    config = MLPConfig(steps=1_000_000, n_seeds=3, lr=5e-3, dtype="float32", n_checkpoints=120)
    assert store.run_dir(config, Path("results")).name == "mlp-wd0-1000000steps-3seeds-74d7086e626f"
    assert store.run_dir(dataclasses.replace(config, optimizer="sgd"), Path("r")).name.startswith(
        "mlp-wd0-1000000steps-3seeds-sgd-")


# --- on a GPU ----------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.slow
def test_compiled_cuda_graphs_match_the_plain_loop_on_the_cpu():
    config = MLPConfig(steps=NUMERICS_STEPS)
    group = SeedGroup(tasks.MLP, config, [0, 1], _tiny_data(), torch.device("cuda"))
    losses = _run_recorded(group, NUMERICS_STEPS)
    assert group.model.compiled is not None
    _compare_with_plain_loop(group, losses, rtol=1e-10)


"""grokutils.fast: the batched trainer against the plain PyTorch loop and `train_seed`.

On the CPU the batched trainer computes bitwise what the per-seed loop computes (checked
here with MKL, the BLAS of the x86 wheels; with another BLAS to 1e-12 relative). The
numerics test runs 300 steps, not the issue's 1,000, to stay near ten seconds on one core;
round-off differences grow slowly here (about 1e-15 after 1,000 steps from a 1-ulp nudge).
The CUDA tests run only where a GPU is present.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from grokutils import batched, engine, fast, tasks
from grokutils.config import MLPConfig
from grokutils.models import make_mlp
from grokutils.tasks import batch_indices
from grokutils.train import train_seed

CPU = torch.device("cpu")
BITWISE = torch.backends.mkl.is_available()  # batched and single matmuls agree bitwise in MKL
NUMERICS_STEPS = 300
CHECKPOINTED = MLPConfig(steps=40, n_checkpoints=6, weight_decay=0.01)  # checkpoints 0, 1, 2, 4, 9, 19, 40
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
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


def _compare_with_plain_loop(trainer: fast.BatchedTrainer, losses: torch.Tensor, x, y,
                             rtol: float | None = None):
    """Each seed of `trainer`: losses, weights and Adam moments against its own plain loop."""
    for index, seed in enumerate(trainer.seeds):
        model, optimizer, plain_losses = _plain_loop(trainer.config, seed, x, y, trainer.step)
        _assert_same(losses[:, index], plain_losses, f"seed {seed} losses", rtol)
        saved = trainer.state.seed_state(index, trainer.config, "running")
        for i, (name, parameter) in enumerate(model.named_parameters()):
            _assert_same(saved["model"][name], parameter, f"seed {seed} {name}", rtol)
            for key in ("exp_avg", "exp_avg_sq"):
                _assert_same(saved["optimizer"]["state"][i][key], optimizer.state[parameter][key],
                             f"seed {seed} {name} {key}", rtol)


# --- the schedule --------------------------------------------------------------------------------


@pytest.mark.parametrize("replay", [False, True])
def test_chunk_rows_are_batch_indices_of_every_seed(replay):
    config = MLPConfig(steps=100, replay_first_epoch=replay)
    for start, n in [(0, 1), (3, 5), (7, 13), (12, 2)]:
        rows = batched.chunk_rows(config, [0, 2], start, n, 1000)
        expected = torch.stack([torch.stack([batch_indices(config, seed, step, 1000) for seed in (0, 2)])
                                for step in range(start, start + n)])
        assert torch.equal(rows, expected), (start, n)


def test_uneven_batches_are_refused_by_the_batched_trainer():
    config = MLPConfig(steps=3, batch_size=300)
    with pytest.raises(ValueError, match="batch_size=300 must divide the 1000 training rows"):
        batched.chunk_rows(config, [0], 0, 1, 1000)
    with pytest.raises(ValueError, match="batch_size=300 must divide the 1000 training rows"):
        fast.BatchedTrainer(config, [0], *_tiny_data(), CPU)


@pytest.mark.parametrize("chunk", [0, 3, 8192, True])
def test_bad_chunk_is_named(chunk):
    with pytest.raises(ValueError, match=f"chunk must be a power of two from 1 to 4096, got {chunk!r}"):
        fast.BatchedTrainer(MLPConfig(steps=3), [0], *_tiny_data(), CPU, chunk=chunk)


def test_graphs_need_cuda():
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, got cpu"):
        fast.BatchedTrainer(MLPConfig(steps=3), [0], *_tiny_data(), CPU, use_graphs=True)


def test_adam_scalars_stay_exact_after_the_bias_corrections_saturate():
    config = MLPConfig()
    beta1, beta2 = batched.BETAS
    direct = [(-(config.lr / (1 - beta1 ** float(t))), (1 - beta2 ** float(t)) ** 0.5)
              for t in range(1, 60_001)]
    assert batched.adam_scalars(config, 1, 60_000) == direct
    assert batched.adam_scalars(config, 59_990, 11) == direct[-11:]


def test_flat_rows_round_trip_the_model_state():
    state = make_mlp(3).state_dict()
    row = batched.flatten(state)
    assert row.shape == (batched.N_PARAMETERS,) == (199_210,)
    back = batched.unflatten(row)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)


# --- numerics ------------------------------------------------------------------------------------


def test_batched_training_matches_the_plain_loop_for_each_seed():
    """Two seeds for 300 steps as one batched model: losses, weights, moments as the plain loop."""
    x, y = _tiny_data()
    trainer = fast.BatchedTrainer(MLPConfig(steps=NUMERICS_STEPS), [0, 1], x, y, CPU, chunk=64)
    losses = trainer.run(NUMERICS_STEPS, record=True)  # 4 chunks of 64, then 32 + 8 + 4 steps
    assert losses.shape == (NUMERICS_STEPS, 2) and trainer.step == NUMERICS_STEPS
    assert losses[-1].max() < 0.5 * losses[0].min()  # it does learn
    _compare_with_plain_loop(trainer, losses, x, y)


def test_weight_decay_and_runs_in_pieces_match_the_plain_loop():
    x, y = _tiny_data()
    trainer = fast.BatchedTrainer(MLPConfig(steps=30, weight_decay=0.01), [2], x, y, CPU, chunk=8)
    losses = torch.cat([trainer.run(n, record=True) for n in (1, 0, 7, 22)])
    _compare_with_plain_loop(trainer, losses, x, y)


FLOAT32 = MLPConfig(steps=NUMERICS_STEPS, dtype="float32", lr=5e-3)  # the accelerated protocol's step
# Compiled float32 against the plain float32 loop after 300 steps: fused element-wise code rounds
# differently; measured max |difference| 3e-6 of max |w| on 2026-12-02 (float32 eps is 1.2e-7).
FLOAT32_COMPILED_RTOL = 1e-4


def test_eager_float32_steps_match_the_plain_float32_loop_bitwise():
    x, y = _tiny_data()
    trainer = fast.BatchedTrainer(FLOAT32, [0, 1], x, y, CPU, chunk=64, use_compile=False)
    assert trainer.x.dtype == torch.float32
    losses = trainer.run(NUMERICS_STEPS, record=True)
    _compare_with_plain_loop(trainer, losses, x, y)


@pytest.mark.slow
def test_compiled_float32_steps_match_the_plain_float32_loop_to_a_stated_tolerance():
    """The default on the CPU in float32: torch.compile of the step (about 30 s to compile)."""
    x, y = _tiny_data()
    trainer = fast.BatchedTrainer(FLOAT32, [0, 1], x, y, CPU, chunk=64)
    losses = trainer.run(NUMERICS_STEPS, record=True)
    assert trainer.step_fn is not trainer.eager_step, "the float32 step was not compiled"
    assert trainer.step == NUMERICS_STEPS  # the trial step of compilation does not count
    _compare_with_plain_loop(trainer, losses, x, y, rtol=FLOAT32_COMPILED_RTOL)


def test_compilation_is_the_default_for_float32_only_on_the_cpu():
    assert fast.default_compile(CPU, "float32") and not fast.default_compile(CPU, "float64")
    x, y = _tiny_data(200)
    trainer = fast.BatchedTrainer(MLPConfig(steps=2, batch_size=200), [0], x, y, CPU)
    trainer.run(2)
    assert trainer.step_fn is trainer.eager_step  # float64 stays eager, so bitwise equal to the plain loop


# --- checkpoints, resume, divergence ----------------------------------------------------------------


class Interrupt(Exception):
    """Raised from a checkpoint callback to stop a run as a kill would."""


def _stop_at(step: int, seed: int | None = None):
    """A checkpoint callback that raises at `step` (of `seed`, for the batched trainer's callbacks)."""
    def callback(*args):  # (seed, step, path) from fast.train_seeds, (step, path) from train_seed
        called = (args[0], args[1]) if len(args) == 3 else (None, args[0])
        if called == (seed, step):
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
            assert state["optimizer"]["state"][i][key].dtype == tensor.dtype
            _assert_same(state["optimizer"]["state"][i][key], tensor, f"{actual.name} optimizer {i} {key}")


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """`train_seed` runs of seeds 0 and 1 under CHECKPOINTED, with the checkpoints it announced."""
    root, x_y, calls = tmp_path_factory.mktemp("reference"), _tiny_data(), []
    for seed in (0, 1):
        train_seed(tasks.MLP, CHECKPOINTED, seed, tuple(x_y), root / f"seed{seed}", CPU, progress=False,
                   on_checkpoint=lambda step, path, s=seed: calls.append((s, step, path.name)))
    return root, calls


def test_batched_run_writes_what_train_seed_writes(tmp_path, reference_runs):
    root, reference_calls = reference_runs
    calls = []
    statuses = fast.train_seeds(CHECKPOINTED, {s: tmp_path / f"seed{s}" for s in (0, 1)}, *_tiny_data(), CPU,
                                on_checkpoint=lambda seed, step, path: calls.append((seed, step, path.name)),
                                progress=False, chunk=8)
    assert statuses == {seed: {"status": "finished", "step": 40} for seed in (0, 1)}
    assert sorted(calls) == sorted(reference_calls)
    for seed in (0, 1):
        _assert_same_folder(tmp_path / f"seed{seed}", root / f"seed{seed}")


def test_each_trainer_resumes_the_other(tmp_path, reference_runs):
    root, _ = reference_runs
    x, y = _tiny_data()
    stop = CHECKPOINTED.checkpoint_steps[4]
    dirs = {s: tmp_path / "fast_first" / f"seed{s}" for s in (0, 1)}
    with pytest.raises(Interrupt):  # seed 0 stops at `stop`, seed 1 one checkpoint earlier
        fast.train_seeds(CHECKPOINTED, dirs, x, y, CPU, on_checkpoint=_stop_at(stop, seed=0), progress=False)
    assert torch.load(dirs[0] / "state.pt", weights_only=True)["step"] == stop
    train_seed(tasks.MLP, CHECKPOINTED, 0, (x, y), dirs[0], CPU, progress=False)  # the reference resumes fast's state
    fast.train_seeds(CHECKPOINTED, {1: dirs[1]}, x, y, CPU, progress=False)
    dirs = {s: tmp_path / "reference_first" / f"seed{s}" for s in (0, 1)}
    with pytest.raises(Interrupt):
        train_seed(tasks.MLP, CHECKPOINTED, 0, (x, y), dirs[0], CPU, progress=False, on_checkpoint=_stop_at(stop))
    fast.train_seeds(CHECKPOINTED, dirs, x, y, CPU, progress=False, chunk=4)  # seed 0 at `stop`, seed 1 new
    for folder in ("fast_first", "reference_first"):
        for seed in (0, 1):
            _assert_same_folder(tmp_path / folder / f"seed{seed}", root / f"seed{seed}")


def test_a_diverging_seed_stops_alone_with_its_status(tmp_path, monkeypatch):
    real_make_step = batched.make_step

    def poisoned_make_step(config):  # seed index 1's loss turns NaN after 150 steps
        step_fn, calls = real_make_step(config), []

        def step(*args):
            loss = step_fn(*args)
            calls.append(1)
            if len(calls) <= 150:
                return loss
            return torch.where(torch.arange(len(loss)) == 1, loss * float("nan"), loss)
        return step

    monkeypatch.setattr(fast, "make_step", poisoned_make_step)
    config = MLPConfig(steps=250, n_checkpoints=3, batch_size=20)  # checkpoints 0, 1, 16, 250
    dirs = {s: tmp_path / f"seed{s}" for s in (0, 1)}
    statuses = fast.train_seeds(config, dirs, *_tiny_data(), CPU, progress=False, chunk=32)
    assert statuses == {0: {"status": "finished", "step": 250}, 1: {"status": "diverged", "step": 200}}
    state = torch.load(dirs[1] / "state.pt", weights_only=True)
    assert (state["status"], state["step"]) == ("diverged", 200)
    assert [p.name for p in sorted((dirs[1] / "weights").iterdir())][-1] == "step_000000016.safetensors"
    again = fast.train_seeds(config, dirs, *_tiny_data(), CPU, progress=False)
    assert again == statuses  # a diverged seed is not restarted, a finished one not retrained


def test_uneven_batches_fall_back_to_train_seed(tmp_path):
    config = MLPConfig(steps=3, batch_size=300, n_checkpoints=3)
    statuses = fast.train_seeds(config, {0: tmp_path / "seed0"}, *_tiny_data(), CPU, progress=False)
    assert statuses == {0: {"status": "finished", "step": 3}}
    assert torch.load(tmp_path / "seed0" / "state.pt", weights_only=True)["step"] == 3


# --- on a GPU ----------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_graphs_match_the_eager_steps_on_the_gpu():
    x, y = _tiny_data()
    cuda = torch.device("cuda")
    eager = fast.BatchedTrainer(MLPConfig(steps=300), [0, 1], x, y, cuda, use_graphs=False, use_compile=False)
    graphs = fast.BatchedTrainer(MLPConfig(steps=300), [0, 1], x, y, cuda, chunk=64, use_compile=False)
    _assert_same(graphs.run(300, record=True), eager.run(300, record=True), "losses", rtol=1e-13)
    _assert_same(graphs.state.params, eager.state.params, "weights", rtol=1e-13)


@needs_cuda
@pytest.mark.slow
def test_compiled_cuda_graphs_match_the_plain_loop_on_the_cpu():
    x, y = _tiny_data()
    config = MLPConfig(steps=NUMERICS_STEPS)
    trainer = fast.BatchedTrainer(config, [0, 1], x, y, torch.device("cuda"), chunk=64)  # graphs + compile
    losses = trainer.run(NUMERICS_STEPS, record=True)
    _compare_with_plain_loop(trainer, losses, x, y, rtol=1e-10)


@needs_cuda
def test_cuda_run_writes_what_train_seed_writes(tmp_path, reference_runs):
    root, reference_calls = reference_runs
    calls = []
    dirs = {s: tmp_path / f"seed{s}" for s in (0, 1)}
    fast.train_seeds(CHECKPOINTED, dirs, *_tiny_data(), torch.device("cuda"),
                     on_checkpoint=lambda seed, step, path: calls.append((seed, step, path.name)),
                     progress=False, chunk=8, use_compile=False)
    assert sorted(calls) == sorted(reference_calls)
    for seed in (0, 1):
        weights, state = _saved(tmp_path / f"seed{seed}")
        weights_ref, state_ref = _saved(root / f"seed{seed}")
        assert list(weights) == list(weights_ref) and state["step"] == state_ref["step"]
        for key, tensor in state_ref["model"].items():
            _assert_same(state["model"][key], tensor, key, rtol=1e-11)


@needs_cuda
@pytest.mark.slow
def test_engine_on_cuda_matches_the_cpu_run(tmp_path, tiny_run):
    """The engine takes the batched path on CUDA; its curves agree with the CPU run's (conftest)."""
    on_gpu = engine.run(tiny_run.config, results_dir=tmp_path, device="cuda", n_workers=1, progress=False)
    assert on_gpu.meta["status"] == tiny_run.meta["status"]
    for column in ("train_loss", "train_accuracy", "test_accuracy"):
        if column in tiny_run.curves:
            torch.testing.assert_close(torch.tensor(on_gpu.curves[column].to_numpy()),
                                       torch.tensor(tiny_run.curves[column].to_numpy()), rtol=1e-9, atol=1e-12)


# --- a GPU whose graph capture or compilation fails: eager steps, one warning ---------------------


def _cuda_without_graphs(monkeypatch) -> None:
    """Stand-ins for the CUDA calls of the capture path, on the CPU: streams do nothing, capture fails."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    stream = SimpleNamespace(wait_stream=lambda other: None)

    def failing_graph(*args, **kwargs):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    for name, value in {"Stream": lambda device=None: stream, "stream": lambda s: nullcontext(),
                        "current_stream": lambda device=None: stream, "CUDAGraph": lambda: object(),
                        "graph": failing_graph, "synchronize": lambda device=None: None}.items():
        monkeypatch.setattr(torch.cuda, name, value)


@pytest.mark.parametrize("compiled", [False, True])
def test_failed_graph_capture_falls_back_to_eager_steps_with_one_warning(compiled, monkeypatch, caplog):
    """As on a GPU where capture fails (with the compiled step, then with the eager one):
    training goes on with the eager step, same numbers, and says so once."""
    x, y = _tiny_data()
    config = MLPConfig(steps=40)
    expected = fast.BatchedTrainer(config, [0, 1], x, y, CPU, chunk=8, use_compile=False).run(40, record=True)
    if compiled:  # a "compiled" step that is not the eager function itself, without compiling
        monkeypatch.setattr(torch, "compile", lambda step, **kwargs: lambda *args: step(*args))
    _cuda_without_graphs(monkeypatch)
    trainer = fast.BatchedTrainer(config, [0, 1], x, y, CPU, chunk=8, use_compile=compiled)
    trainer.use_graphs = True  # what a CUDA device gets
    with caplog.at_level("WARNING", logger="grokutils"):
        losses = torch.cat([trainer.run(24, record=True), trainer.run(16, record=True)])
    _assert_same(losses, expected, "losses")
    assert trainer.graphs is None and trainer.step_fn is trainer.eager_step
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "eager" in warnings[0] and "not permitted" in warnings[0], warnings


def test_failed_compilation_falls_back_to_the_eager_step_with_one_warning(monkeypatch, caplog):
    def no_compiler(step, **kwargs):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compiler)
    x, y = _tiny_data()
    config = MLPConfig(steps=20, dtype="float32")
    expected = fast.BatchedTrainer(config, [0], x, y, CPU, use_compile=False).run(20, record=True)
    trainer = fast.BatchedTrainer(config, [0], x, y, CPU)  # float32 on the CPU: compiled by default
    with caplog.at_level("WARNING", logger="grokutils"):
        losses = trainer.run(20, record=True)
    _assert_same(losses, expected, "losses")
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "eager" in warnings[0] and "no working C++ compiler" in warnings[0], warnings

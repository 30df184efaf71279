"""All seeds of an MLP experiment trained together as one batched model, fast on a GPU.

    statuses = train_seeds(config, {0: dir0, 1: dir1}, train_x, train_y, torch.device("cuda"))

Seed s of `grokutils.train.train_seed` and seed s here compute the same thing: the same
initial weights, the same batches (seed s's own epoch permutations), the same MSE on one-hot
targets and the same AdamW arithmetic (the single-tensor `torch.optim.AdamW` that PyTorch
uses on the CPU: decoupled weight decay, `lerp_` for the first moment, bias corrections
computed in Python, eps added after the square root). On the CPU (MKL, one thread) the
results are bitwise equal to `train_seed` (tests/test_fast.py); on a GPU they differ by
round-off only (other matrix kernels and, under `torch.compile`, fused element-wise code),
and the benchmark (`python -m grokutils.tools.bench`) prints that difference.

How it is fast:

* the S seeds are one model (`grokutils.batched`): every parameter of seed s is row s of an (S, P) buffer, the
  layers are (S, out, in) views of it, and forward and backward are written out with
  `torch.baddbmm`/`torch.bmm`, so one kernel serves all seeds;
* AdamW runs on the whole (S, P) buffer at once (about ten element-wise kernels, or one or
  two under `torch.compile`);
* the data stay on the device; each step gathers its rows with a static index tensor;
* on CUDA, runs of 1, 2, 4, ... `chunk` steps are captured once as CUDA graphs and
  replayed, so a chunk of steps costs one launch; the host prepares the next chunk's batch
  indices and Adam scalars while the GPU works on the current one.

Checkpoints go to exactly the files `train_seed` writes (`seed_dir/weights/step_*.safetensors`
and `seed_dir/state.pt` with model, optimizer, step and status), so resuming, measuring and
`grokutils.engine` work unchanged, and a run can be resumed by either trainer.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from grokutils import tasks, train
from grokutils.batched import BatchedState, adam_scalars, chunk_rows, evenly_batched, make_step
from grokutils.config import MLPConfig
from grokutils.models import DTYPES
from grokutils.train import FINITE_CHECK_EVERY

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 256  # steps per CUDA-graph replay at most (a power of two)


# --- running chunks of steps ---------------------------------------------------------------------


class BatchedTrainer:
    """S seeds of one config as one batched model on one device; `run(n)` takes n steps.

    On CUDA the steps are replayed from CUDA graphs (captured on first use), by default with
    the step compiled by `torch.compile` inside; where compiling or capturing fails, the eager
    step (and no graphs) takes over, with one WARNING. On the CPU they run from the same static
    buffers, compiled by default in float32 (fused element-wise code, 1.5x faster; round-off
    differs from the plain loop) and eager in float64 (bitwise equal to the plain loop).
    `diverged` maps seed -> the first checked step with a non-finite loss,
    checked where `train_seed` checks: every FINITE_CHECK_EVERY steps and at the end of a run.
    """

    def __init__(self, config: MLPConfig, seeds: list[int], train_x: torch.Tensor, train_y: torch.Tensor,
                 device: torch.device, state: BatchedState | None = None, chunk: int = DEFAULT_CHUNK,
                 use_graphs: bool | None = None, use_compile: bool | None = None):
        _check_chunk(chunk)
        if not evenly_batched(config, len(train_x)):
            raise ValueError(f"batch_size={config.batch_size} must divide the {len(train_x)} training rows")
        if use_graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        dtype = DTYPES[config.dtype]
        self.config, self.seeds, self.device, self.chunk = config, list(seeds), device, chunk
        self.state = (state or BatchedState.initial(config, self.seeds)).to(device)
        if self.state.params.shape[0] != len(self.seeds):
            raise ValueError(f"the state holds {self.state.params.shape[0]} seeds, "
                             f"but seeds are {self.seeds}")
        self.x, self.y_onehot = tasks.MLP.train_set(config, (train_x, train_y), device)  # (n, 784), (n, 10)
        self.use_graphs = device.type == "cuda" if use_graphs is None else use_graphs
        self.use_compile = default_compile(device, config.dtype) if use_compile is None else use_compile
        self.eager_step = make_step(config)
        self.step_fn = self.eager_step  # torch.compile of it, once compiled
        self.compiled_on_cpu = False
        self.diverged: dict[int, int] = {}
        n_slots = 2 * chunk - 1  # graph j (2^j steps) reads slots [2^j - 1, 2^(j+1) - 1)
        shape = (n_slots, len(self.seeds), config.batch_size)
        self.rows = torch.zeros(shape, dtype=torch.int64, device=device)  # static batch rows
        self.scalars = torch.ones((n_slots, 4), dtype=dtype, device=device)  # 4 wide: 16-byte aligned rows
        self.losses = torch.zeros((n_slots, len(self.seeds)), dtype=dtype, device=device)
        self.staging = [_Staging(shape, dtype, device.type == "cuda") for _ in range(2)]  # host side, double
        self.launches, self.finished, self.graphs = 0, [], None

    @property
    def step(self) -> int:
        """Optimizer steps taken so far."""
        return self.state.step

    def run(self, n_steps: int, record: bool = False, bar: tqdm | None = None) -> torch.Tensor | None:
        """Take `n_steps` steps; returns their (n_steps, S) losses on the CPU if `record`."""
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with on_device:  # graphs, streams and events of this trainer's GPU
            if self.use_graphs and self.graphs is None:
                self._capture()
            elif self.use_compile and not self.use_graphs and not self.compiled_on_cpu:
                self._compile_without_graphs()
            target, recorded = self.step + n_steps, []
            while self.step < target:
                n = min(self.chunk, target - self.step)
                self._launch(self.step, n, target)
                self.state.step += n
                recorded += self._harvest(wait=False, bar=bar)
            recorded += self._harvest(wait=True, bar=bar)
        if not record:
            return None
        return torch.cat(recorded) if recorded else torch.zeros(0, len(self.seeds), dtype=self.losses.dtype)

    def _launch(self, start: int, n: int, target: int) -> None:
        """Fill a staging buffer with the chunk's rows and Adam scalars; enqueue copies and steps."""
        staging = self.staging[self.launches % 2]
        if staging.pending is not None:  # the chunk that used this buffer before must be done
            self.finished.append(staging.result())
        plan = _plan(n)
        spans = [(2 ** j - 1, 2 ** (j + 1) - 1) for j in plan]
        slots = torch.cat([torch.arange(first, end) for first, end in spans])  # slot of each step
        staging.rows[slots] = chunk_rows(self.config, self.seeds, start, n, len(self.x))
        scalars = torch.tensor(adam_scalars(self.config, start + 1, n), dtype=staging.scalars.dtype)
        staging.scalars[slots, :2] = scalars
        for first, end in spans:
            self.rows[first:end].copy_(staging.rows[first:end], non_blocking=True)
            self.scalars[first:end].copy_(staging.scalars[first:end], non_blocking=True)
        for j in plan:
            self._replay(j)
        staging.losses.copy_(self.losses, non_blocking=True)
        staging.begin(start, slots, target)
        self.launches += 1

    def _replay(self, j: int) -> None:
        """The 2^j steps of slots [2^j - 1, 2^(j+1) - 1): one graph replay, or eagerly."""
        if self.graphs is not None:
            self.graphs[j].replay()
            return
        for slot in range(2 ** j - 1, 2 ** (j + 1) - 1):
            self._slot_step(slot)

    def _slot_step(self, slot: int) -> None:
        """One step reading the static buffers of `slot`."""
        state = self.state
        loss = self.step_fn(state.params, state.exp_avg, state.exp_avg_sq, self.x, self.y_onehot,
                            self.rows[slot], self.scalars[slot])
        self.losses[slot].copy_(loss)

    def _harvest(self, wait: bool, bar: tqdm | None) -> list[torch.Tensor]:
        """Losses of the finished chunks (of all chunks if `wait`), in step order, checked."""
        if wait:
            self.finished += [staging.result() for staging in self.staging if staging.pending is not None]
        done, self.finished = sorted(self.finished, key=lambda item: item[0]), []
        for start, losses, target in done:
            self._check(start, losses, target)
            if bar is not None:
                bar.update(len(losses))
        return [losses for _, losses, _ in done]

    def _check(self, start: int, losses: torch.Tensor, target: int) -> None:
        """Record seeds whose loss is non-finite at a checked step (where `train_seed` checks)."""
        steps = torch.arange(start + 1, start + 1 + len(losses))  # the step count after each update
        checked = (steps % FINITE_CHECK_EVERY == 0) | (steps == target)
        bad = ~torch.isfinite(losses[checked])  # (checked steps, S)
        for index in bad.any(0).nonzero().flatten().tolist():
            first = int(steps[checked][bad[:, index]][0])
            seed = self.seeds[index]
            self.diverged[seed] = min(first, self.diverged.get(seed, first))

    def _capture(self) -> None:
        """Warm up (and compile) on a side stream, then capture one CUDA graph per 2^j steps.

        If capture fails, with the compiled step and then with the eager one, training goes on
        with the eager step and no graphs, after one WARNING: a slower run, not a stopped one.
        """
        with self._steps_undone():  # the warm-up steps do not count
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                if self.use_compile:
                    self._try_compile()
                for _ in range(3):
                    self._slot_step(0)
            torch.cuda.current_stream(self.device).wait_stream(side)
        failure = self._capture_or_none()
        if failure is None:
            return
        if self.step_fn is not self.eager_step:  # the compiled step may be what capture refused
            self.step_fn = self.eager_step
            if self._capture_or_none() is None:
                log.warning("CUDA graph capture of the compiled step failed (%s: %s); replaying graphs of the "
                            "eager step instead", type(failure).__name__, failure)
                return
        self.graphs, self.use_graphs, self.use_compile = None, False, False
        log.warning("CUDA graph capture failed (%s: %s); training on with the eager step, without graphs "
                    "(the same arithmetic, slower)", type(failure).__name__, failure)

    def _capture_or_none(self) -> Exception | None:
        """Capture the graphs of the current step: None if it worked, else the error (no graphs kept)."""
        try:
            self.graphs = self._capture_graphs()
            return None
        except Exception as err:  # an unsupported op, a driver without capture: eager steps still work
            self.graphs = None
            return err

    def _compile_without_graphs(self) -> None:
        """Compile the step (CPU): one trial step on copies, so the state is left as it was."""
        self.compiled_on_cpu = True
        with self._steps_undone():  # the trial step does not count
            self._try_compile()

    @contextlib.contextmanager
    def _steps_undone(self) -> Iterator[None]:
        """Parameters and Adam moments are put back as they were on leaving the block."""
        tensors = (self.state.params, self.state.exp_avg, self.state.exp_avg_sq)
        backup = [tensor.clone() for tensor in tensors]
        yield
        for tensor, saved in zip(tensors, backup):
            tensor.copy_(saved)

    def _try_compile(self) -> None:
        """Use `torch.compile` of the step if it compiles and runs here; else keep the eager step."""
        try:
            self.step_fn = torch.compile(self.eager_step, dynamic=False, fullgraph=True)
            self._slot_step(0)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as err:  # no triton, an unsupported op: the eager step is still right
            log.warning("torch.compile failed (%s: %s); using the eager step", type(err).__name__, err)
            self.step_fn = self.eager_step

    def _capture_graphs(self) -> list:
        """One CUDA graph per chunk size 2^j, j = 0 .. log2(chunk)."""
        graphs = []
        for j in range(self.chunk.bit_length()):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for slot in range(2 ** j - 1, 2 ** (j + 1) - 1):
                    self._slot_step(slot)
            graphs.append(graph)
        torch.cuda.synchronize(self.device)
        return graphs


def default_compile(device: torch.device, dtype: str) -> bool:
    """Whether the step is compiled unless told: on CUDA always, on the CPU in float32 only."""
    return device.type == "cuda" or dtype == "float32"


class _Staging:
    """Host buffers for one chunk (pinned on CUDA), and the event that marks the chunk done."""

    def __init__(self, shape: tuple[int, int, int], dtype: torch.dtype, cuda: bool):
        self.rows = torch.zeros(shape, dtype=torch.int64, pin_memory=cuda)
        self.scalars = torch.ones((shape[0], 4), dtype=dtype, pin_memory=cuda)
        self.losses = torch.zeros((shape[0], shape[1]), dtype=dtype, pin_memory=cuda)
        self.event = torch.cuda.Event() if cuda else None
        self.pending: tuple[int, torch.Tensor, int] | None = None  # start, slots in step order, target

    def begin(self, start: int, slots: torch.Tensor, target: int) -> None:
        """Mark the chunk just enqueued as in flight."""
        if self.event is not None:
            self.event.record()
        self.pending = (start, slots, target)

    def result(self) -> tuple[int, torch.Tensor, int]:
        """Wait for the chunk in flight; (start step, its (n, S) losses on the CPU, target)."""
        if self.event is not None:
            self.event.synchronize()
        start, slots, target = self.pending
        self.pending = None
        return start, self.losses[slots], target  # indexing copies


def _plan(n: int) -> list[int]:
    """The exponents j of the graph sizes 2^j that add up to n, largest first."""
    return [j for j in reversed(range(n.bit_length())) if n >> j & 1]


def _check_chunk(chunk: int) -> None:
    """`chunk` must be a power of two from 1 to 4096."""
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not 1 <= chunk <= 4096 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of two from 1 to 4096, got {chunk!r}")


# --- whole runs, with checkpoints in train_seed's layout ------------------------------------------


def train_seeds(config: MLPConfig, seed_dirs: Mapping[int, Path], train_x: torch.Tensor,
                train_y: torch.Tensor, device: torch.device,
                on_checkpoint: Callable[[int, int, Path], None] = lambda seed, step, path: None,
                progress: bool = True, chunk: int = DEFAULT_CHUNK,
                use_compile: bool | None = None) -> dict[int, dict]:
    """Train every seed in `seed_dirs` (seed -> folder) to `config.steps` as one batched model.

    Resumes each seed from its `state.pt` (written by this function or by `train_seed`);
    seeds saved at different steps are trained in groups, one group per step. Saves what
    `train_seed` saves and calls `on_checkpoint(seed, step, path)` after each checkpoint.
    Returns {seed: {"status": "finished" | "diverged", "step": last step}}.
    """
    _check_chunk(chunk)
    for seed_dir in seed_dirs.values():
        (Path(seed_dir) / "weights").mkdir(parents=True, exist_ok=True)
    if not evenly_batched(config, len(train_x)):  # uneven last batch: no static shapes
        log.info("batch_size %d does not divide %d rows: training seed by seed",
                 config.batch_size, len(train_x))
        return {seed: train.train_seed(tasks.MLP, config, seed, (train_x, train_y), Path(seed_dir), device,
                                       on_checkpoint=lambda step, path, s=seed: on_checkpoint(s, step, path),
                                       progress=progress)
                for seed, seed_dir in seed_dirs.items()}
    statuses, groups = {}, {}
    for seed, seed_dir in seed_dirs.items():
        saved = _load_or_start(config, seed, Path(seed_dir), on_checkpoint)
        if saved["status"] == "diverged":
            statuses[seed] = {"status": "diverged", "step": int(saved["step"])}
        else:
            groups.setdefault(int(saved["step"]), {})[seed] = saved
    for step, members in sorted(groups.items()):
        trainer = BatchedTrainer(config, list(members), train_x, train_y, device,
                                 state=BatchedState.from_saved(list(members.values())), chunk=chunk,
                                 use_compile=use_compile)
        statuses.update(_train_group(trainer, seed_dirs, on_checkpoint, progress))
        del trainer  # free the device memory and graphs before the next group
    return {seed: statuses[seed] for seed in seed_dirs}


def _load_or_start(config: MLPConfig, seed: int, seed_dir: Path, on_checkpoint) -> dict:
    """The saved `state.pt` of a seed, or a fresh start with its step-0 checkpoint written."""
    saved = train.load_state(seed_dir)
    if saved is not None:
        return saved
    start = BatchedState.initial(config, [seed])
    _checkpoint(start, 0, config, seed, seed_dir, on_checkpoint)
    return start.seed_state(0, config, "running")


def _train_group(trainer: BatchedTrainer, seed_dirs: Mapping[int, Path], on_checkpoint,
                 progress: bool) -> dict[int, dict]:
    """Train one group of seeds (all at one step) to the end, checkpointing like `train_seed`.

    A seed whose loss turns non-finite stops as in `train_seed`: no further checkpoints, and
    `state.pt` says "diverged" at the step of detection. Its weights there (non-finite
    anyway) are those at the end of the checkpoint interval, since the batch runs on.
    """
    config, live, statuses = trainer.config, list(trainer.seeds), {}
    label = f"seed {live[0]}" if len(live) == 1 else f"seeds {','.join(map(str, live))}"
    bar = tqdm(total=config.steps, initial=trainer.step, desc=label, disable=not progress, unit="step",
               unit_scale=True, mininterval=1.0, smoothing=0.05)
    for target in [t for t in config.checkpoint_steps if t > trainer.step]:
        trainer.run(target - trainer.step, bar=bar)
        for seed in [s for s in live if s in trainer.diverged]:  # as train_seed: stop, no checkpoint
            step = trainer.diverged[seed]
            log.warning("seed %d: non-finite loss by step %d; run stopped", seed, step)
            saved = trainer.state.seed_state(trainer.seeds.index(seed), config, "diverged", step)
            train.save_state(Path(seed_dirs[seed]), saved)
            statuses[seed] = {"status": "diverged", "step": step}
            live.remove(seed)
        if not live:
            break
        for seed in live:
            _checkpoint(trainer.state, trainer.seeds.index(seed), config, seed, Path(seed_dirs[seed]),
                        on_checkpoint)
    bar.close()
    for seed in live:
        saved = trainer.state.seed_state(trainer.seeds.index(seed), config, "finished")
        train.save_state(Path(seed_dirs[seed]), saved)
        statuses[seed] = {"status": "finished", "step": trainer.step}
    return statuses


def _checkpoint(state: BatchedState, index: int, config: MLPConfig, seed: int, seed_dir: Path,
                on_checkpoint) -> None:
    """The weights of this step, then the training state (`train.save_checkpoint`); then notify."""
    train.save_checkpoint(seed_dir, state.seed_state(index, config, "running"),
                          lambda step, path: on_checkpoint(seed, step, path))

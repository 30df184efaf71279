"""All seeds of an MLP experiment trained together as one batched model, fast on a GPU.

    statuses = train_seeds(config, {0: dir0, 1: dir1}, train_x, train_y, torch.device("cuda"))

Seed s of `grokutils.train.train_seed` and seed s here compute the same thing: the same
initial weights, the same batches (seed s's own epoch permutations), the same MSE on one-hot
targets and the same AdamW arithmetic (the single-tensor `torch.optim.AdamW` that PyTorch
uses on the CPU: decoupled weight decay, `lerp_` for the first moment, bias corrections
computed in Python, eps added after the square root). On the CPU (MKL, one thread) the
results are bitwise equal to `train_seed` (tests/test_fast.py); on a GPU they differ by
round-off only (other matrix kernels and, under `torch.compile`, fused element-wise code),
and the benchmark (`python -m grokutils.bench`) prints that difference.

How it is fast:

* the S seeds are one model: every parameter of seed s is row s of an (S, P) buffer, the
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
`grokutils.experiment` work unchanged, and a run can be resumed by either trainer.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from grokutils import train
from grokutils.models import DTYPES, MLP, make_mlp
from grokutils.train import FINITE_CHECK_EVERY, MLPConfig, weights_path

log = logging.getLogger(__name__)
BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as train_seed uses them
EPS = 1e-8
N_CLASSES = 10
DEFAULT_CHUNK = 256  # steps per CUDA-graph replay at most (a power of two)


def parameter_layout() -> list[tuple[str, tuple[int, ...]]]:
    """The MLP's parameters in `state_dict` order: [(name, shape)], built without touching RNG."""
    with torch.device("meta"):
        return [(name, tuple(tensor.shape)) for name, tensor in MLP().state_dict().items()]


def _offsets(layout: list[tuple[str, tuple[int, ...]]]) -> list[tuple[str, tuple[int, ...], int, int]]:
    """[(name, shape, start, end)] of each parameter in a flat row."""
    spans, start = [], 0
    for name, shape in layout:
        size = int(torch.Size(shape).numel())
        spans.append((name, shape, start, start + size))
        start += size
    return spans


SPANS = _offsets(parameter_layout())
N_PARAMETERS = SPANS[-1][3]  # P = 199,210 for 784-200-200-10


def flatten(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One seed's tensors (model state or Adam moments, keyed by name) as a flat (P,) row."""
    return torch.cat([state[name].reshape(-1) for name, _, _, _ in SPANS])


def unflatten(row: torch.Tensor) -> dict[str, torch.Tensor]:
    """A flat (P,) row as {name: tensor} with the model's shapes (fresh, unshared storage)."""
    return {name: row[start:end].view(shape).clone() for name, shape, start, end in SPANS}


def layer_views(flat: torch.Tensor) -> list[torch.Tensor]:
    """(S, P) -> [W1 (S, 200, 784), b1 (S, 200), W2, b2, W3 (S, 10, 200), b3 (S, 10)], views."""
    return [flat[:, start:end].view(flat.shape[0], *shape) for _, shape, start, end in SPANS]


# --- the state of S seeds --------------------------------------------------------------------


@dataclass
class BatchedState:
    """Parameters and AdamW moments of S seeds, each (S, P), all at the same step."""

    params: torch.Tensor  # (S, P)
    exp_avg: torch.Tensor  # (S, P), AdamW first moment
    exp_avg_sq: torch.Tensor  # (S, P), AdamW second moment
    step: int  # optimizer steps taken so far (the same for every seed)

    @classmethod
    def initial(cls, config: MLPConfig, seeds: list[int]) -> BatchedState:
        """Step 0: `make_mlp(seed, ...)` weights for each seed, zero moments (on the CPU)."""
        params = torch.stack([flatten(make_mlp(seed, config.init_scale, config.dtype).state_dict())
                              for seed in seeds])
        return cls(params, torch.zeros_like(params), torch.zeros_like(params), 0)

    @classmethod
    def from_saved(cls, saved: list[dict]) -> BatchedState:
        """Stack `state.pt` dicts (model, optimizer, step) saved at one common step."""
        steps = {int(entry["step"]) for entry in saved}
        if len(steps) != 1:
            raise ValueError(f"saved states must share one step to be batched, got steps {sorted(steps)}")
        params = torch.stack([flatten(entry["model"]) for entry in saved])
        moments = [_saved_moments(entry["optimizer"], params[0]) for entry in saved]
        return cls(params, torch.stack([m for m, _ in moments]), torch.stack([v for _, v in moments]),
                   steps.pop())

    def to(self, device: torch.device) -> BatchedState:
        """The same state on `device`."""
        moved = (tensor.to(device) for tensor in (self.params, self.exp_avg, self.exp_avg_sq))
        return BatchedState(*moved, self.step)

    def seed_state(self, index: int, config: MLPConfig, status: str, step: int | None = None) -> dict:
        """Row `index` as the `state.pt` dict `train_seed` writes: model, optimizer, step, status."""
        step = self.step if step is None else step
        rows = [tensor[index].detach().cpu() for tensor in (self.params, self.exp_avg, self.exp_avg_sq)]
        model, exp_avg, exp_avg_sq = (unflatten(row) for row in rows)
        return {"model": model, "optimizer": optimizer_state_dict(config, step, exp_avg, exp_avg_sq),
                "step": step, "status": status}


def _saved_moments(optimizer_state: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (P,) exp_avg and exp_avg_sq from an AdamW `state_dict` (zeros before the first step)."""
    per_parameter = optimizer_state["state"]
    if not per_parameter:
        return torch.zeros_like(like), torch.zeros_like(like)
    names = [name for name, _, _, _ in SPANS]
    return tuple(flatten({name: per_parameter[i][key] for i, name in enumerate(names)})
                 for key in ("exp_avg", "exp_avg_sq"))


def optimizer_state_dict(config: MLPConfig, step: int, exp_avg: dict, exp_avg_sq: dict) -> dict:
    """What `torch.optim.AdamW(model.parameters(), lr, weight_decay).state_dict()` holds at `step`."""
    with torch.device("meta"):
        template = torch.optim.AdamW(MLP().parameters(), lr=config.lr, weight_decay=config.weight_decay)
    saved = template.state_dict()
    if step > 0:  # AdamW keeps `step` as a float32 CPU scalar tensor per parameter
        saved["state"] = {i: {"step": torch.tensor(float(step), dtype=torch.float32),
                              "exp_avg": exp_avg[name], "exp_avg_sq": exp_avg_sq[name]}
                          for i, (name, _, _, _) in enumerate(SPANS)}
    return saved


# --- one step, and the host-side schedule ------------------------------------------------------


def make_step(config: MLPConfig) -> Callable[..., torch.Tensor]:
    """The batched training step: forward, MSE, written-out backward and AdamW, in place.

    `step(params, exp_avg, exp_avg_sq, x, y_onehot, rows, scalars) -> loss (S,)` where rows
    (S, B) are the batch rows of each seed and scalars[0:2] = (-lr / bias_correction1,
    sqrt(bias_correction2)) of this step, as `torch.optim.AdamW` computes them in Python.
    """
    lr, weight_decay = config.lr, config.weight_decay
    beta1, beta2 = BETAS

    def step(params, exp_avg, exp_avg_sq, x, y_onehot, rows, scalars):
        w1, b1, w2, b2, w3, b3 = layer_views(params)
        xb, yb = x[rows], y_onehot[rows]  # (S, B, 784), (S, B, 10)
        h1 = torch.baddbmm(b1.unsqueeze(1), xb, w1.transpose(1, 2)).relu()  # (S, B, 200): nn.Linear's addmm
        h2 = torch.baddbmm(b2.unsqueeze(1), h1, w2.transpose(1, 2)).relu()  # (S, B, 200)
        out = torch.baddbmm(b3.unsqueeze(1), h2, w3.transpose(1, 2))  # (S, B, 10)
        diff = out - yb
        loss = (diff * diff).mean((1, 2))  # (S,), F.mse_loss per seed
        g3 = diff * (2.0 / (rows.shape[1] * y_onehot.shape[1]))  # mse_loss backward: 2 / numel
        g2 = torch.where(h2 <= 0, 0.0, torch.bmm(g3, w3))  # threshold_backward of the ReLU
        g1 = torch.where(h1 <= 0, 0.0, torch.bmm(g2, w2))
        grad = torch.cat([torch.bmm(g1.transpose(1, 2), xb).flatten(1), g1.sum(1),
                          torch.bmm(g2.transpose(1, 2), h1).flatten(1), g2.sum(1),
                          torch.bmm(g3.transpose(1, 2), h2).flatten(1), g3.sum(1)], dim=1)  # (S, P)
        if weight_decay != 0:
            params.mul_(1 - lr * weight_decay)  # decoupled weight decay
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / scalars[1]).add_(EPS)
        params.add_(exp_avg.mul(scalars[0]).div_(denom))  # = addcdiv_(exp_avg, denom, value=-step_size)
        return loss

    return step


def adam_scalars(config: MLPConfig, first_step: int, n: int) -> list[tuple[float, float]]:
    """(-step_size, sqrt(bias_correction2)) of steps first_step .. first_step + n - 1 (1-based).

    The same Python float arithmetic as the single-tensor `torch.optim.AdamW`.
    """
    beta1, beta2 = BETAS
    values = []
    for step in range(first_step, first_step + n):
        bias_correction1, bias_correction2 = 1 - beta1 ** float(step), 1 - beta2 ** float(step)
        values.append((-(config.lr / bias_correction1), bias_correction2 ** 0.5))
        if bias_correction1 == 1.0 and bias_correction2 == 1.0:  # saturated: constant from here on
            values += [values[-1]] * (first_step + n - 1 - step)
            break
    return values


def evenly_batched(config: MLPConfig, n_train: int) -> bool:
    """Whether every batch is full (the batched trainer needs static shapes)."""
    return n_train % config.batch_size == 0


def chunk_rows(config: MLPConfig, seeds: list[int], start: int, n: int, n_train: int) -> torch.Tensor:
    """Batch rows of steps start .. start + n - 1 for every seed: (n, S, B), = `batch_indices`."""
    if not evenly_batched(config, n_train):
        raise ValueError(f"batch_size={config.batch_size} must divide the {n_train} training rows")
    per_epoch = n_train // config.batch_size
    first, last = start // per_epoch, (start + n - 1) // per_epoch
    offset = (start - first * per_epoch) * config.batch_size
    per_seed = []
    for seed in seeds:
        epochs = [0 if config.replay_first_epoch else epoch for epoch in range(first, last + 1)]
        order = torch.cat([train.epoch_order(seed, epoch, n_train) for epoch in epochs])
        per_seed.append(order[offset:offset + n * config.batch_size].view(n, config.batch_size))
    return torch.stack(per_seed, dim=1)


# --- running chunks of steps ---------------------------------------------------------------------


class BatchedTrainer:
    """S seeds of one config as one batched model on one device; `run(n)` takes n steps.

    On CUDA the steps are replayed from CUDA graphs (captured on first use), by default with
    the step compiled by `torch.compile` inside. On the CPU they run from the same static
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
        self.x = train_x.to(device, dtype)  # (n_train, 784), kept on the device
        self.y_onehot = F.one_hot(train_y, N_CLASSES).to(device, dtype)  # (n_train, 10)
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
        """Warm up (and compile) on a side stream, then capture one CUDA graph per 2^j steps."""
        with self._steps_undone():  # the warm-up steps do not count
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                if self.use_compile:
                    self._try_compile()
                for _ in range(3):
                    self._slot_step(0)
            torch.cuda.current_stream(self.device).wait_stream(side)
        try:
            self.graphs = self._capture_graphs()
        except Exception as err:
            if self.step_fn is self.eager_step:
                raise
            log.warning("capturing the compiled step failed (%s: %s); capturing the eager step",
                        type(err).__name__, err)
            self.step_fn = self.eager_step
            self.graphs = self._capture_graphs()

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
        return {seed: train.train_seed(config, seed, train_x, train_y, Path(seed_dir), device,
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
    state_path = seed_dir / "state.pt"
    if state_path.exists():
        return torch.load(state_path, weights_only=True, map_location="cpu")
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
            train.save_atomic(saved, Path(seed_dirs[seed]) / "state.pt")
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
        train.save_atomic(saved, Path(seed_dirs[seed]) / "state.pt")
        statuses[seed] = {"status": "finished", "step": trainer.step}
    return statuses


def _checkpoint(state: BatchedState, index: int, config: MLPConfig, seed: int, seed_dir: Path,
                on_checkpoint) -> None:
    """As `train._checkpoint`: the weights of this step, then the training state; then notify."""
    saved = state.seed_state(index, config, "running")
    path = weights_path(seed_dir, state.step)
    train.save_atomic(saved["model"], path, as_safetensors=True)
    train.save_atomic(saved, seed_dir / "state.pt")
    on_checkpoint(seed, state.step, path)

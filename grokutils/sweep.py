"""The learning-rate sweep behind the accelerated protocol: accuracy against step, one seed each.

    curve = accuracy_curve(MLPConfig(steps=100_000, lr=2e-3, dtype="float32", n_checkpoints=60))

Each point of the sweep is an `MLPConfig` with one seed, trained by the training loop's seed
group (`grokutils.train.SeedGroup`) in this process, and evaluated on the whole training and test sets at
its log-spaced checkpoints: train and test accuracy only, no HTSR measures, so a point
costs its training time and little more. A finished point is a folder of the results store
(`grokutils.store`, layout `POINT`) in `results/sweep/`, named by the config's hash: its
config.json and its curve (curves.parquet), sealed by meta.json. The store loads it, locks it
while it is trained, and sets a damaged one aside (`NAME.damaged`) and recomputes it with a
WARNING, as it does runs; an interrupted point is recomputed from the start (each takes
minutes, not hours).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from grokutils import store, tasks
from grokutils.config import MLPConfig, resolve_device
from grokutils.mlp import cached_mnist
from grokutils.models import make_mlp
from grokutils.paths import RESULTS_DIR
from grokutils.train import SeedGroup

log = logging.getLogger(__name__)
SWEEP_FOLDER = "sweep"


def point_name(config: MLPConfig) -> str:
    """The folder name of a sweep point: its lr, dtype, weight decay, steps and config hash."""
    settings = f"lr{config.lr:g}-{config.dtype}-wd{config.weight_decay:g}-{config.steps}steps"
    return f"mlp-{settings}-{store.config_hash(config)}"


POINT = store.Layout(files=("config.json", "curves.parquet"), meta_keys=("config_hash",), name=point_name)


def point_dir(config: MLPConfig, results_dir: Path | str = RESULTS_DIR) -> Path:
    """Where one sweep point is stored."""
    return Path(results_dir) / SWEEP_FOLDER / point_name(config)


def accuracies(weights: dict[str, torch.Tensor], config: MLPConfig, data) -> dict[str, float]:
    """Train and test accuracy of one seed's weights (an `MLP.state_dict()`)."""
    model = make_mlp(seed=0, init_scale=1.0, dtype=config.dtype)
    model.load_state_dict(weights)
    dtype = model.fc1.weight.dtype
    with torch.no_grad():
        return {f"{split}_accuracy": float((model(x.to(dtype)).argmax(1) == y).double().mean())
                for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y))}


def accuracy_curve(config: MLPConfig, results_dir: Path | str = RESULTS_DIR, device: str = "cpu",
                   progress: bool = False) -> pd.DataFrame:
    """Accuracy at every checkpoint of a one-seed config: loaded if stored, else trained and stored.

    Columns: step, train_accuracy, test_accuracy, seconds (training time so far), lr, dtype,
    weight_decay, diverged. The seed is seed 0, the same initial weights and batches as seed 0
    of a full run of the same settings.
    """
    if config.n_seeds != 1:
        raise ValueError(f"a sweep point trains one seed: n_seeds must be 1, got {config.n_seeds}")
    folder = point_dir(config, results_dir)
    stored = store.load_if_finished(folder, MLPConfig, POINT)
    if stored is None:
        torch_device = resolve_device(device)
        stored = store.load_or_compute(folder, MLPConfig, lambda: _compute(config, folder, torch_device, progress),
                                       POINT)
    return stored.curves


def _compute(config: MLPConfig, folder: Path, device: torch.device, progress: bool) -> store.RunResult:
    """Train a point, store it in `folder` and return it loaded; the caller holds its lock."""
    curve = _train_curve(config, device, progress)
    files = {"config.json": store.config_bytes(config), "curves.parquet": store.parquet_bytes(curve)}
    store.write_sealed(folder, files, {"config_hash": store.config_hash(config)}, POINT)
    return store.load_run(folder, MLPConfig, POINT)


def _train_curve(config: MLPConfig, device: torch.device, progress: bool = False) -> pd.DataFrame:
    """Train seed 0 of `config`, measuring train and test accuracy at every checkpoint."""
    data = cached_mnist(config.n_per_class, config.data_seed, config.data_source)
    trainer = SeedGroup(tasks.MLP, config, [0], data, device)
    rows, clock = [], 0.0
    for step in config.checkpoint_steps:
        tic = time.perf_counter()
        trainer.run(step - trainer.step)
        clock += time.perf_counter() - tic
        rows.append({"step": step, **accuracies(trainer.model.seed_weights(0), config, data), "seconds": clock})
        if progress:
            log.info("lr %g %s: step %d, test accuracy %.3f", config.lr, config.dtype, step,
                     rows[-1]["test_accuracy"])
    return pd.DataFrame(rows).assign(lr=config.lr, dtype=config.dtype, weight_decay=config.weight_decay,
                                     diverged=bool(trainer.diverged))


def sweep_configs(points: list[list], n_checkpoints: int,
                  must_hold: tuple[float, str] | None = None) -> list[MLPConfig]:
    """One-seed configs from [lr, dtype, steps] entries with `n_checkpoints` log-spaced checkpoints,
    everything else the papers' (the `MLPConfig` defaults). `must_hold`: an (lr, dtype) the sweep must
    have a point at (the chosen protocol's), checked before any work."""
    base = MLPConfig(n_checkpoints=n_checkpoints)
    configs = []
    for entry in points:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise ValueError(f"a sweep point must be [lr, dtype, steps], got {entry!r}")
        lr, dtype, steps = entry
        configs.append(dataclasses.replace(base, lr=lr, dtype=dtype, steps=steps, n_seeds=1))
    if must_hold is not None and all((c.lr, c.dtype) != tuple(must_hold) for c in configs):
        raise ValueError(f"sweep_points has no point at the chosen protocol's lr {must_hold[0]:g} and dtype "
                         f"{must_hold[1]!r} (profiles/accelerated.yaml); got {[list(p) for p in points]}: add "
                         f"[{must_hold[0]:g}, {must_hold[1]!r}, STEPS]")
    return configs


# --- what the sweep chapter shows ------------------------------------------------------------------


def load_points(configs: list[MLPConfig], results_dir: Path | str = RESULTS_DIR, device: str = "cpu") -> pd.DataFrame:
    """The accuracy curves of every point, one table (trained where not stored)."""
    return pd.concat([accuracy_curve(config, results_dir, device).assign(steps=config.steps) for config in configs],
                     ignore_index=True)


def point_label(lr: float, dtype: str) -> str:
    """'lr 5e-03, float32'."""
    return f"lr {lr:.0e}, {dtype}"


def curves_figure(curves: pd.DataFrame, x: str = "step"):
    """Train (dashed) and test (solid) accuracy of each point, against steps or lr x steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (lr, dtype), rows in curves.groupby(["lr", "dtype"], sort=True):
        position = rows.step * (lr if x == "lr_steps" else 1.0)
        line, = ax.plot(position, rows.test_accuracy, label=point_label(lr, dtype),
                        ls="-" if dtype == "float32" else "-.")
        ax.plot(position, rows.train_accuracy, color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=1e-3 if x == "lr_steps" else 1)
    ax.set_xlim(left=0)
    ax.set_xlabel("learning rate x optimizer step" if x == "lr_steps" else "optimizer step")
    ax.set_ylabel("accuracy (test solid, train dotted)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def point_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per point: fit step, test peak and its step, final test and train accuracy, fall, time."""
    from grokutils.phases import best_raw_step, find_phases, with_int_steps

    rows = []
    for (lr, dtype, steps), point in curves.groupby(["lr", "dtype", "steps"], sort=True):
        phases = find_phases(point.assign(seed=0))
        rows.append({"lr": lr, "dtype": dtype, "steps": steps, "t_fit": phases.t_fit,
                     "peak test accuracy": round(phases.peak_test_accuracy, 4),
                     "step of peak": phases.t_peak if phases.t_fit is not None else best_raw_step(point),
                     "final test accuracy": round(phases.final_test_accuracy, 4),
                     "fall from peak": round(phases.peak_test_accuracy - phases.final_test_accuracy, 4),
                     "t_collapse": phases.t_collapse,
                     "final train accuracy": round(float(point.train_accuracy.iloc[-1]), 4),
                     "training seconds": round(float(point.seconds.iloc[-1]), 1),
                     "diverged": bool(point.diverged.iloc[0])})
    table = with_int_steps(pd.DataFrame(rows), ("t_fit", "t_collapse", "step of peak"))
    return table.set_index(["lr", "dtype", "steps"])


def precision_table(curves: pd.DataFrame, lr: float) -> pd.DataFrame:
    """float32 against float64 at one learning rate: the point table's rows and their difference."""
    table = point_table(curves[curves.lr == lr]).reset_index(["lr", "steps"], drop=True)
    if set(table.index) != {"float32", "float64"}:
        raise ValueError(f"lr {lr:g} needs one float32 and one float64 point, got {sorted(table.index)}")
    numeric = table.drop(columns=["diverged"]).astype(float)
    table.loc["float32 - float64"] = (numeric.loc["float32"] - numeric.loc["float64"]).round(4)
    return table.drop(columns=["diverged", "training seconds"]).T

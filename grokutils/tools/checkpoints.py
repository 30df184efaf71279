"""Checkpoint files as the tools read them: the one `CheckpointError`, safetensors headers and indexes.

`list_tensors` describes every tensor of a safetensors checkpoint (one file, a folder of
files, or shards listed in `model.safetensors.index.json`) from the file headers alone,
without reading a tensor: each file is checked (header, size) and the index against its
shards, so a broken checkpoint fails fast. `grokutils.tools.llm` analyzes what it lists;
`grokutils.tools.watch` raises the same `CheckpointError` for the files it refuses.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_NAME = "model.safetensors.index.json"
# Bytes per element of the safetensors dtypes; a tensor of another dtype has its size unchecked.
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
               "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


class CheckpointError(ValueError):
    """A checkpoint path, file or index that is missing, unsafe, or cannot be read as documented."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as its safetensors header describes it."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]


def read_header(file: Path) -> dict[str, TensorEntry]:
    """Parse and check a safetensors header; raise CheckpointError naming the file."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: truncated, {size} bytes is shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise CheckpointError(f"{file}: truncated, header needs {header_len} bytes, file holds {size}")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{file}: header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: header is a JSON {type(header).__name__}, not an object of tensors")
    header.pop("__metadata__", None)
    entries = {name: _entry(file, name, fields) for name, fields in header.items()}
    data_end = max((header[name]["data_offsets"][1] for name in entries), default=0)
    expected = 8 + header_len + data_end
    if expected != size:
        raise CheckpointError(f"{file}: truncated or padded, its header describes {expected} bytes, "
                              f"the file holds {size}")
    return entries


def _is_count(value) -> bool:
    """A non-negative int (JSON's, not a bool or a string)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(file: Path, name: str, fields) -> TensorEntry:
    """One header entry, every field checked before any tensor is read: dtype a string, shape
    a list of counts, data_offsets two counts in order spanning shape x the dtype's size."""
    where = f"{file}: tensor {name!r}"
    if not isinstance(fields, dict) or not {"dtype", "shape", "data_offsets"} <= set(fields):
        raise CheckpointError(f"{where}: header entry needs dtype, shape and data_offsets, got {fields!r:.120}")
    dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
    if not isinstance(dtype, str):
        raise CheckpointError(f"{where}: dtype {dtype!r} is not a string such as 'F32' or 'BF16'")
    if not isinstance(shape, list) or not all(_is_count(size) for size in shape):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets {offsets!r} is not [begin, end], two integers with "
                              "0 <= begin <= end")
    if dtype in DTYPE_BYTES:
        expected = DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64))
        if offsets[1] - offsets[0] != expected:
            raise CheckpointError(f"{where}: shape {shape} of {dtype} needs {expected} bytes, its data_offsets "
                                  f"{offsets} span {offsets[1] - offsets[0]}")
    return TensorEntry(name, file, dtype, tuple(shape))


def _read_index(index: Path) -> dict[str, Path]:
    """Tensor name -> shard file from a `model.safetensors.index.json`, shards checked."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = {name: index.parent / shard for name, shard in weight_map.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index}: not a valid index, need a JSON object with a 'weight_map' "
                              f"({err!r})") from None
    for shard in sorted(set(shards.values())):
        if not shard.is_file():
            raise CheckpointError(f"{index}: lists shard {shard.name}, which is missing")
    return shards


def list_tensors(path: str | Path) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint (a .safetensors file, or a folder with or without an index)."""
    path = Path(path)
    if path.is_file():
        return read_header(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is neither a folder nor a .safetensors file")
    if (path / INDEX_NAME).is_file():
        shards = _read_index(path / INDEX_NAME)
        headers = {shard: read_header(shard) for shard in sorted(set(shards.values()))}
        entries = {}
        for name, shard in shards.items():
            if name not in headers[shard]:
                raise CheckpointError(f"{path / INDEX_NAME}: maps {name} to {shard.name}, "
                                      "which does not hold it")
            entries[name] = headers[shard][name]
        return entries
    files = sorted(path.glob("*.safetensors"))
    if not files:
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise FileNotFoundError(f"no .safetensors file in {path} (found: {found}); "
                                "convert the weights to safetensors")
    return {name: entry for file in files for name, entry in read_header(file).items()}

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

INDEX_NAME = "model.safetensors.index.json"


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
    header.pop("__metadata__", None)
    try:
        entries = {k: TensorEntry(k, file, v["dtype"], tuple(v["shape"])) for k, v in header.items()}
        data_end = max((v["data_offsets"][1] for v in header.values()), default=0)
    except (KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{file}: header entry lacks dtype/shape/data_offsets ({err})") from None
    expected = 8 + header_len + data_end
    if expected != size:
        raise CheckpointError(f"{file}: truncated or padded, its header describes {expected} bytes, "
                              f"the file holds {size}")
    return entries


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

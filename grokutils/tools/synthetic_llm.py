"""Synthetic gpt-oss-format checkpoints, for tests, `benchmarks/llm_memory.py` and the LLM chapter.

The Hugging Face names and layouts of openai/gpt-oss-20b, at any size, with random weights:
bf16 dense tensors, MXFP4 experts (`grokutils.tools.mxfp4`), shards and an index, as
`grokutils.tools.llm` reads them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from grokutils.tools.checkpoints import INDEX_NAME
from grokutils.tools.mxfp4 import BLOCK_SIZE, BYTES_PER_BLOCK, E2M1_VALUES, encode_mxfp4


def _random_mxfp4(rng: np.random.Generator, shape: tuple[int, ...], encode: bool) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 (blocks, scales) of a (*prefix, K) tensor: representable values encoded, or raw codes."""
    n_blocks = shape[-1] // BLOCK_SIZE
    if not encode:  # every byte is a valid pair of codes; scales near 2**-6
        blocks = rng.integers(0, 256, size=(*shape[:-1], n_blocks, BYTES_PER_BLOCK), dtype=np.uint8)
        return blocks, rng.integers(118, 124, size=blocks.shape[:-1], dtype=np.uint8)
    codes = rng.integers(0, 16, size=shape)  # representable values: decode(encode(x)) == x
    exponents = np.repeat(rng.integers(-9, -3, size=(*shape[:-1], n_blocks)), BLOCK_SIZE, axis=-1)
    return encode_mxfp4(E2M1_VALUES[codes] * np.exp2(exponents))


def _synthetic_block(rng: np.random.Generator, i: int, hidden: int, intermediate: int, n_experts: int,
                     encode: bool) -> dict[str, np.ndarray]:
    """The tensors of transformer block i in gpt-oss naming (float64 here, bf16 on disk)."""
    prefix, tensors = f"model.layers.{i}.", {}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        tensors[f"{prefix}self_attn.{proj}.weight"] = rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)
        tensors[f"{prefix}self_attn.{proj}.bias"] = np.zeros(hidden)
    tensors[f"{prefix}self_attn.sinks"] = np.zeros(4)
    tensors[f"{prefix}mlp.router.weight"] = rng.standard_normal((n_experts, hidden)) / np.sqrt(hidden)
    tensors[f"{prefix}mlp.router.bias"] = np.zeros(n_experts)
    expert_shapes = {"gate_up_proj": (2 * intermediate, hidden), "down_proj": (hidden, intermediate)}
    for proj, (rows, cols) in expert_shapes.items():
        name = f"{prefix}mlp.experts.{proj}"
        tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = _random_mxfp4(rng, (n_experts, rows, cols), encode)
        tensors[f"{name}_bias"] = np.zeros((n_experts, rows))
    tensors[f"{prefix}input_layernorm.weight"] = np.ones(hidden)
    tensors[f"{prefix}post_attention_layernorm.weight"] = np.ones(hidden)
    return tensors


def _save_shard(tensors: dict[str, np.ndarray], file: Path) -> int:
    """Write numpy tensors to safetensors, uint8 as is and floats as bfloat16 (as gpt-oss); bytes written."""
    from safetensors.torch import save_file

    torch_tensors = {name: torch.from_numpy(array) if array.dtype == np.uint8
                     else torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
                     for name, array in tensors.items()}
    save_file(torch_tensors, str(file), metadata={"format": "pt"})
    return sum(t.numel() * t.element_size() for t in torch_tensors.values())


def write_synthetic_gpt_oss(
    folder: str | Path, *, n_blocks: int = 2, n_experts: int = 4, hidden: int = 128, intermediate: int = 128,
    vocab: int = 256, blocks_per_shard: int = 1, encode: bool = True, seed: int = 0,
) -> Path:
    """A random gpt-oss-format checkpoint: bf16 dense tensors, MXFP4 experts, shards + index.

    Args:
        hidden, intermediate: multiples of 32 (MXFP4 blocks run along the input dimension).
        encode: True quantizes E2M1-representable values with our encoder (exact); False
            draws random codes and scales directly (fast, for multi-GB benchmarks).
    """
    if hidden % BLOCK_SIZE or intermediate % BLOCK_SIZE:
        raise ValueError(f"hidden and intermediate must be multiples of {BLOCK_SIZE}, "
                         f"got {hidden} and {intermediate}")
    folder, rng = Path(folder), np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, n_blocks, blocks_per_shard)
    weight_map, total_size = {}, 0
    for k, start in enumerate(starts):
        tensors = {}
        for i in range(start, min(start + blocks_per_shard, n_blocks)):
            tensors |= _synthetic_block(rng, i, hidden, intermediate, n_experts, encode)
        if k == 0:
            tensors["model.embed_tokens.weight"] = rng.standard_normal((vocab, hidden))
        if k == len(starts) - 1:
            tensors["model.norm.weight"] = np.ones(hidden)
            tensors["lm_head.weight"] = rng.standard_normal((vocab, hidden)) / np.sqrt(hidden)
        file = folder / f"model-{k + 1:05d}-of-{len(starts):05d}.safetensors"
        total_size += _save_shard(tensors, file)
        weight_map |= dict.fromkeys(tensors, file.name)
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2))
    return folder

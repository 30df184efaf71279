"""MXFP4: 4-bit E2M1 codes in blocks of 32 sharing one power-of-two scale (gpt-oss experts).

Layout, as read by the dequantizer in `transformers` (integrations/mxfp4.py) for gpt-oss:

* `blocks`: uint8 of shape (*prefix, G, 16). Byte j of a block holds two codes: its low
  nibble (`byte & 0x0F`) is element 2j, its high nibble (`byte >> 4`) element 2j + 1.
* `scales`: uint8 of shape (*prefix, G), one biased exponent (E8M0) per block.
* a code is sign bit (bit 3) + E2M1 magnitude index (bits 0-2) into
  {0, 0.5, 1, 1.5, 2, 3, 4, 6}; value = e2m1(code) * 2**(scale - 127).
* decoding gives (*prefix, G * 32): for gpt-oss experts (E, rows, G, 16) -> (E, rows, G * 32),
  one (out_features, in_features) matrix per expert; transformers then transposes each
  expert to (in, out), which changes no singular value.

The encoder is ours, for tests and synthetic checkpoints: per block it takes the OCP MX
shared exponent floor(log2(max |x|)) - 2 and rounds to the nearest E2M1 value (ties away
from zero, clamped at 6). Values that are exactly representable decode back unchanged.
"""
from __future__ import annotations

import numpy as np

BLOCK_SIZE = 32  # values sharing one scale
BYTES_PER_BLOCK = BLOCK_SIZE // 2  # two 4-bit codes per byte
SCALE_BIAS = 127  # value = e2m1 * 2**(scale - SCALE_BIAS)
E2M1_EMAX = 2  # exponent of the largest E2M1 magnitude (6 = 1.5 * 2**2)
# code -> value; codes 8-15 are the negatives of codes 0-7 (sign bit 3)
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
)
# magnitude boundaries halfway between consecutive E2M1 magnitudes
_MAGNITUDE_MIDPOINTS = (E2M1_VALUES[1:8] + E2M1_VALUES[0:7]) / 2


def _check_packed(blocks: np.ndarray, scales: np.ndarray) -> None:
    """Raise ValueError unless blocks (*prefix, G, 16) and scales (*prefix, G) are uint8 and agree."""
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise ValueError(f"blocks must have shape (..., G, {BYTES_PER_BLOCK}), got {blocks.shape}")
    if blocks.shape[:-1] != scales.shape:
        raise ValueError(f"scales shape {scales.shape} must equal the blocks shape without its last axis, "
                         f"{blocks.shape[:-1]}")


def decode_mxfp4(blocks: np.ndarray, scales: np.ndarray, dtype: np.dtype = np.float64) -> np.ndarray:
    """Dequantize MXFP4 blocks (*prefix, G, 16) and scales (*prefix, G) to (*prefix, G * 32)."""
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    _check_packed(blocks, scales)
    codes = np.empty(blocks.shape[:-1] + (BLOCK_SIZE,), dtype=np.uint8)  # (*prefix, G, 32)
    codes[..., 0::2] = blocks & 0x0F  # low nibble first
    codes[..., 1::2] = blocks >> 4
    exponents = scales.astype(np.int32)[..., None] - SCALE_BIAS  # (*prefix, G, 1)
    values = np.ldexp(E2M1_VALUES.astype(dtype)[codes], exponents)
    return values.reshape(*blocks.shape[:-2], -1)


def _block_exponents(blocks_of_values: np.ndarray) -> np.ndarray:
    """Shared unbiased exponent per block: floor(log2(max |x|)) - 2, 0 for all-zero blocks."""
    amax = np.abs(blocks_of_values).max(axis=-1)
    with np.errstate(divide="ignore"):
        exponents = np.floor(np.log2(amax)) - E2M1_EMAX
    exponents[amax == 0] = 0
    return np.clip(exponents, -SCALE_BIAS, 254 - SCALE_BIAS).astype(np.int32)  # 255 is NaN in E8M0


def encode_mxfp4(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize (*prefix, K) floats, K a multiple of 32, to MXFP4 (blocks, scales)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1 or values.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"the last axis must be a multiple of {BLOCK_SIZE}, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite to encode as MXFP4")
    grouped = values.reshape(*values.shape[:-1], -1, BLOCK_SIZE)  # (*prefix, G, 32)
    exponents = _block_exponents(grouped)
    scaled = np.ldexp(grouped, -exponents[..., None])
    magnitude_index = np.digitize(np.abs(scaled), _MAGNITUDE_MIDPOINTS).astype(np.uint8)
    codes = magnitude_index | (np.signbit(scaled).astype(np.uint8) << 3)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (*prefix, G, 16)
    scales = (exponents + SCALE_BIAS).astype(np.uint8)
    return blocks.astype(np.uint8), scales

"""MXFP4 encode/decode: layout (nibble order, scale bias) and exact round trips."""
import numpy as np
import pytest

from grokutils.tools.mxfp4 import BLOCK_SIZE, E2M1_VALUES, decode_mxfp4, encode_mxfp4


def representable(rng: np.random.Generator, shape: tuple[int, ...], exponents=(-20, 20)) -> np.ndarray:
    """Random values e2m1(code) * 2**k, one k per 32-value block: exactly representable."""
    codes = rng.integers(0, 16, size=shape)
    k = rng.integers(*exponents, size=(*shape[:-1], shape[-1] // BLOCK_SIZE))
    return E2M1_VALUES[codes] * np.exp2(np.repeat(k, BLOCK_SIZE, axis=-1))


def test_e2m1_table_is_sign_and_magnitude():
    magnitudes = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    np.testing.assert_array_equal(E2M1_VALUES[:8], magnitudes)
    np.testing.assert_array_equal(E2M1_VALUES[8:], -np.array(magnitudes))
    assert np.signbit(E2M1_VALUES[8])  # code 8 is -0.0


def test_low_nibble_is_the_first_value_and_scale_bias_is_127():
    blocks = np.zeros((1, 16), dtype=np.uint8)  # one block: G = 1
    blocks[0, 0] = 0x21  # low nibble 1 (0.5), high nibble 2 (1.0)
    blocks[0, 1] = 0xF7  # low nibble 7 (6.0), high nibble 15 (-6.0)
    for scale, factor in [(127, 1.0), (128, 2.0), (126, 0.5), (117, 2.0**-10)]:
        values = decode_mxfp4(blocks, np.array([scale], dtype=np.uint8))
        assert values.shape == (32,)  # (G * 32,)
        np.testing.assert_array_equal(values[:4], factor * np.array([0.5, 1.0, 6.0, -6.0]))
        assert not values[4:].any()


@pytest.mark.parametrize("shape", [(32,), (7, 64), (3, 5, 96)])
def test_round_trip_is_exact_on_representable_values(shape):
    values = representable(np.random.default_rng(0), shape)
    values[..., :BLOCK_SIZE] = 0.0  # an all-zero block too
    blocks, scales = encode_mxfp4(values)
    assert blocks.shape == (*shape[:-1], shape[-1] // BLOCK_SIZE, 16) and blocks.dtype == np.uint8
    assert scales.shape == blocks.shape[:-1] and scales.dtype == np.uint8
    np.testing.assert_array_equal(decode_mxfp4(blocks, scales), values)


def test_encoding_of_decoded_canonical_blocks_gives_the_same_bytes():
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(4, 6, 16), dtype=np.uint8)
    blocks[..., 0] = 0x67  # every block holds magnitudes 4 and 6: the canonical exponent
    scales = rng.integers(100, 150, size=(4, 6), dtype=np.uint8)
    again_blocks, again_scales = encode_mxfp4(decode_mxfp4(blocks, scales))
    np.testing.assert_array_equal(again_scales, scales)
    np.testing.assert_array_equal(again_blocks, blocks)


def test_encoder_rounds_to_nearest_and_clamps_at_six():
    values = np.zeros((2, 32))
    values[0, :7] = [6.0, 0.2, 0.3, 2.4, 2.6, 5.1, -0.74]  # max 6: shared exponent 0
    values[1, :2] = [7.5, -0.25]  # max 7.5: exponent 0 too, so 7.5 clamps to 6
    decoded = decode_mxfp4(*encode_mxfp4(values))
    np.testing.assert_array_equal(decoded[0, :7], [6.0, 0.0, 0.5, 2.0, 3.0, 6.0, -0.5])
    np.testing.assert_array_equal(decoded[1, :2], [6.0, -0.5])


def test_quantization_error_is_at_most_a_quarter_of_the_block_maximum():
    values = np.random.default_rng(2).standard_normal((16, 256))
    decoded = decode_mxfp4(*encode_mxfp4(values))
    block_max = np.abs(values.reshape(16, 8, 32)).max(axis=-1, keepdims=True)
    error = np.abs(decoded - values).reshape(16, 8, 32)
    assert (error <= block_max / 4 + 1e-12).all()  # spacing 2 among 4..6 after scaling to <= 8


def test_agrees_with_the_transformers_dequantizer():
    torch = pytest.importorskip("torch")
    mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 256, size=(2, 24, 3, 16), dtype=np.uint8)  # (experts, rows, G, 16)
    scales = rng.integers(110, 140, size=(2, 24, 3), dtype=np.uint8)
    theirs = mxfp4.convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                              dtype=torch.float32)  # (experts, G * 32, rows)
    np.testing.assert_array_equal(decode_mxfp4(blocks, scales), theirs.numpy().transpose(0, 2, 1))


@pytest.mark.parametrize("blocks, scales, match", [
    (np.zeros((2, 16), np.int8), np.zeros(2, np.uint8), "uint8"),
    (np.zeros((2, 8), np.uint8), np.zeros(2, np.uint8), r"\(\.\.\., G, 16\)"),
    (np.zeros((2, 16), np.uint8), np.zeros(3, np.uint8), "scales shape"),
])
def test_decode_rejects_malformed_input(blocks, scales, match):
    with pytest.raises(ValueError, match=match):
        decode_mxfp4(blocks, scales)


@pytest.mark.parametrize("values, match", [(np.ones(33), "multiple of 32"), (np.full(32, np.nan), "finite")])
def test_encode_rejects_malformed_input(values, match):
    with pytest.raises(ValueError, match=match):
        encode_mxfp4(values)

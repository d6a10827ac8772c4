"""Affine quantize / dequantize / fake quantize against torch, bit for bit, on values drawn at and
around the .5 rounding ties, at the dtype's extremes, per tensor and per channel.

The plain textbook formula (the reference below, in float64 with a true division) agrees with torch
everywhere except within a rounding error of a tie; the tests show both: torch is matched exactly,
the reference to within one level.
"""
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.quant import affine, dtypes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's quantized-tensor deprecation notice

TORCH_DTYPES = {dtypes.quint8: torch.quint8, dtypes.qint8: torch.qint8, dtypes.qint32: torch.qint32}


def _fake_quantize_per_tensor_affine_reference(x, scale, zero_point, quant_min, quant_max):
    levels = np.clip(np.round(x.astype(np.float64) / scale) + zero_point, quant_min, quant_max)
    return ((levels - zero_point) * scale).astype(x.dtype)


def assert_bits_equal(actual, expected):
    """Same dtype, shape and bytes (so -0.0 != 0.0 and NaN == NaN of the same payload)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.tobytes() == expected.tobytes(), f"\n{actual}\n!=\n{expected}"


# ----- strategies ---------------------------------------------------------------------------------

def _scales():
    """Scales of many magnitudes, some exact in float32 and some not (torch keeps float64)."""
    return st.one_of(st.floats(1e-4, 10.0), st.floats(2.0**-13, 10.0, width=32), st.sampled_from([0.1, 0.5, 1 / 3]))


@st.composite
def near_ties(draw, shape, scales, zero_points, low, high, dtype=np.float32, axis=None):
    """Values x = (k + 0.5 - zero_point) * scale, a few ulps either side, with levels k in [low, high]
    (a few beyond, to clamp), plus some extremes; scales / zero_points broadcast along `axis`."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = -1
    scales = np.reshape(scales, bshape)
    zps = np.reshape(zero_points, bshape)
    k = rng.integers(max(low - 3, -2**40), min(high + 3, 2**40), size=shape, endpoint=True)
    x = ((k + rng.choice([0.5, 0.0, 0.25], size=shape) - zps) * scales).astype(dtype)
    x = x + (rng.integers(-2, 3, size=shape) * np.spacing(x)).astype(dtype)
    extremes = np.array([np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0, 1e-45, np.finfo(np.float32).max], dtype)
    flat = x.reshape(-1)
    count = draw(st.integers(0, min(flat.size, 3)))
    flat[:count] = rng.choice(extremes, size=count)
    return x


def _zero_point(dtype):
    return st.integers(max(dtype.quant_min, -1000), min(dtype.quant_max, 1000))


QDTYPES = st.sampled_from([dtypes.quint8, dtypes.qint8, dtypes.qint32])
SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


# ----- quantize / dequantize ---------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(data=st.data(), dtype=QDTYPES, shape=SHAPES, scale=_scales())
def test_quantize_dequantize_per_tensor_match_torch_bit_for_bit(data, dtype, shape, scale):
    zero_point = data.draw(_zero_point(dtype))
    x = data.draw(near_ties(shape, scale, zero_point, -300, 300))
    q_torch = torch.quantize_per_tensor(torch.from_numpy(x), scale, zero_point, TORCH_DTYPES[dtype])
    q = affine.quantize_per_tensor(x, scale, zero_point, dtype)
    assert_bits_equal(q, q_torch.int_repr().numpy())
    assert_bits_equal(affine.dequantize_per_tensor(q, scale, zero_point), q_torch.dequantize().numpy())


@settings(max_examples=50, deadline=None)
@given(data=st.data(), dtype=QDTYPES, shape=SHAPES)
def test_quantize_dequantize_per_channel_match_torch_bit_for_bit(data, dtype, shape):
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    scales = np.array(data.draw(st.lists(_scales(), min_size=channels, max_size=channels)))
    zero_points = np.array(data.draw(st.lists(_zero_point(dtype), min_size=channels, max_size=channels)))
    x = data.draw(near_ties(shape, scales, zero_points, -300, 300, axis=axis))
    q_torch = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales),
                                         torch.from_numpy(zero_points), axis, TORCH_DTYPES[dtype])
    q = affine.quantize_per_channel(x, scales, zero_points, axis, dtype)
    assert_bits_equal(q, q_torch.int_repr().numpy())
    assert_bits_equal(affine.dequantize_per_channel(q, scales, zero_points, axis), q_torch.dequantize().numpy())
    assert_bits_equal(affine.quantize_per_channel(x, scales, zero_points, axis - len(shape), dtype), q)


def test_per_tensor_and_per_channel_round_differently_next_to_a_tie():
    """The documented example: fused multiply-add per tensor, two roundings per channel."""
    x = np.array([-12.15], np.float32)
    per_tensor = torch.quantize_per_tensor(torch.from_numpy(x), 0.1, 128, torch.quint8).int_repr().numpy()
    per_channel = torch.quantize_per_channel(torch.from_numpy(x), torch.tensor([0.1], dtype=torch.float64),
                                             torch.tensor([128]), 0, torch.quint8).int_repr().numpy()
    assert (per_tensor[0], per_channel[0]) == (7, 6)
    assert_bits_equal(affine.quantize_per_tensor(x, 0.1, 128, dtypes.quint8), per_tensor)
    assert_bits_equal(affine.quantize_per_channel(x, [0.1], [128], 0, dtypes.quint8), per_channel)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=_scales(), zero_point=st.integers(-2**31, 2**31 - 1))
def test_dequantize_qint32_extremes_match_torch(seed, scale, zero_point):
    """q - zero_point is int32 arithmetic in torch (it wraps around); the per-channel kernel subtracts in float32."""
    q = np.random.default_rng(seed).integers(-2**31, 2**31, size=7).astype(np.int32)
    q[:2] = [2**31 - 1, -2**31]
    expected = torch._make_per_tensor_quantized_tensor(torch.from_numpy(q), scale, zero_point).dequantize()
    assert_bits_equal(affine.dequantize_per_tensor(q, scale, zero_point), expected.numpy())
    expected = torch._make_per_channel_quantized_tensor(
        torch.from_numpy(q[None]), torch.tensor([scale], dtype=torch.float64), torch.tensor([zero_point]), 0).dequantize()
    assert_bits_equal(affine.dequantize_per_channel(q[None], [scale], [zero_point], 0), expected.numpy())


def test_quantize_zero_dim_and_empty_arrays():
    assert_bits_equal(affine.quantize_per_tensor(np.float32(0.26), 0.1, 3, "quint8"), np.array(6, np.uint8))
    assert_bits_equal(affine.dequantize_per_tensor(np.array(6, np.uint8), 0.5, 3), np.array(1.5, np.float32))
    assert affine.quantize_per_channel(np.zeros((0, 2), np.float32), [1.0, 1.0], [0, 0], 1, "qint8").shape == (0, 2)


# ----- fake quantize ------------------------------------------------------------------------------

@st.composite
def quant_ranges(draw):
    quant_min = draw(st.integers(-300, 300))
    return quant_min, quant_min + draw(st.integers(0, 300))


@settings(max_examples=50, deadline=None)
@given(data=st.data(), shape=SHAPES, qrange=quant_ranges(), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.floats(2.0**-13, 10.0, width=32))
def test_fake_quantize_per_tensor_matches_torch_forward_and_gradient(data, shape, qrange, dtype, scale):
    quant_min, quant_max = qrange
    zero_point = data.draw(st.integers(quant_min, quant_max))
    x = data.draw(near_ties(shape, scale, zero_point, quant_min, quant_max, dtype))
    x.reshape(-1)[-1:] = data.draw(st.sampled_from([np.nan, x.reshape(-1)[-1]]))
    out, mask = affine.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)

    x_torch = torch.from_numpy(x).requires_grad_(True)
    out_torch = torch.fake_quantize_per_tensor_affine(x_torch, scale, zero_point, quant_min, quant_max)
    upstream = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out_torch.backward(torch.from_numpy(upstream))
    assert_bits_equal(out, out_torch.detach().numpy())
    assert_bits_equal(upstream * mask, x_torch.grad.numpy())  # torch: grad * mask

    finite = np.isfinite(x)
    reference = _fake_quantize_per_tensor_affine_reference(x[finite], scale, zero_point, quant_min, quant_max)
    np.testing.assert_allclose(out[finite], reference, rtol=0, atol=scale * 1.001)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), shape=SHAPES, qrange=quant_ranges(), dtype=st.sampled_from([np.float32, np.float64]))
def test_fake_quantize_per_channel_matches_torch_forward_and_gradient(data, shape, qrange, dtype):
    quant_min, quant_max = qrange
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    scales = np.array(data.draw(st.lists(st.floats(2.0**-13, 10.0, width=32), min_size=channels, max_size=channels)),
                      np.float32)
    zero_points = np.array(data.draw(st.lists(st.integers(quant_min, quant_max), min_size=channels,
                                              max_size=channels)), np.int32)
    x = data.draw(near_ties(shape, scales, zero_points, quant_min, quant_max, dtype, axis=axis))
    x.reshape(-1)[-1:] = data.draw(st.sampled_from([np.nan, x.reshape(-1)[-1]]))
    out, mask = affine.fake_quantize_per_channel_affine(x, scales, zero_points, axis, quant_min, quant_max)

    x_torch = torch.from_numpy(x).requires_grad_(True)
    out_torch = torch.fake_quantize_per_channel_affine(x_torch, torch.from_numpy(scales),
                                                       torch.from_numpy(zero_points), axis, quant_min, quant_max)
    upstream = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out_torch.backward(torch.from_numpy(upstream))
    assert_bits_equal(out, out_torch.detach().numpy())
    assert_bits_equal(upstream * mask, x_torch.grad.numpy())  # torch: grad * mask


def test_fake_quantize_gradient_boundary_is_inclusive():
    """Levels equal to quant_min / quant_max pass the gradient; one level beyond does not."""
    x = np.array([-0.75, -0.5, 0.0, 2.5, 2.75], np.float32)  # levels -2 (tie to even), -1, 0, 5, 6 (tie)
    _, mask = affine.fake_quantize_per_tensor_affine(x, 0.5, 0, -1, 5)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(x_torch, 0.5, 0, -1, 5).sum().backward()
    assert mask.tolist() == [False, True, True, True, False] == x_torch.grad.bool().tolist()


# ----- the fused multiply-add ---------------------------------------------------------------------

def _round_to_float32(value):
    """Exact round-half-to-even of a Fraction to float32 (the oracle for fma_float32)."""
    guess = np.float32(float(value))
    candidates = [guess, np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))]
    best = min(candidates, key=lambda c: (abs(Fraction(float(c)) - value), int(np.float32(c).view(np.int32)) & 1))
    return np.float32(best)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-1e6, 1e6, width=32)] * 3), min_size=1, max_size=20))
def test_fma_float32_rounds_once(triples):
    a, b, c = (np.array(column, np.float32) for column in zip(*triples))
    expected = [_round_to_float32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                for x, y, z in zip(a, b, c)]
    np.testing.assert_array_equal(affine.fma_float32(a, b, c), np.array(expected, np.float32))  # Fraction has no -0.0


def test_fma_float32_avoids_double_rounding():
    """(1 + 2**-23)(1 - 2**-23) + 2**24 + 2 = 2**24 + 3 - 2**-46: just below a float32 tie. Rounding
    to float64 first lands on the tie and then goes up to 2**24 + 4; the single rounding gives 2**24 + 2."""
    a, b, c = np.float32(1 + 2**-23), np.float32(1 - 2**-23), np.float32(2**24 + 2)
    assert np.float32(np.float64(a) * np.float64(b) + np.float64(c)) == 2**24 + 4
    assert affine.fma_float32(a, b, c) == 2**24 + 2


# ----- bad input ----------------------------------------------------------------------------------

def test_bad_input_raises_with_the_argument_named():
    x = np.array([0.5, 1.0], np.float32)
    with pytest.raises(ValueError, match="x contains NaN"):
        affine.quantize_per_tensor(np.array([np.nan], np.float32), 0.1, 0, dtypes.quint8)
    with pytest.raises(ValueError, match="x contains NaN"):
        affine.quantize_per_channel(np.array([[np.nan]], np.float32), [0.1], [0], 0, dtypes.quint8)
    with pytest.raises(TypeError, match="float32"):
        affine.quantize_per_tensor(x.astype(np.float64), 0.1, 0, dtypes.quint8)
    with pytest.raises(ValueError, match="scale"):
        affine.quantize_per_tensor(x, 0.0, 0, dtypes.quint8)
    with pytest.raises(ValueError, match="scale"):
        affine.quantize_per_tensor(x, -1.0, 0, dtypes.quint8)
    with pytest.raises(ValueError, match="scale"):
        affine.quantize_per_tensor(x, float("inf"), 0, dtypes.quint8)
    with pytest.raises(ValueError, match="scale"):
        affine.quantize_per_tensor(x, 1e-45, 0, dtypes.quint8)  # 1 / scale overflows float32
    with pytest.raises(ValueError, match="zero_point"):
        affine.quantize_per_tensor(x, 0.1, 256, dtypes.quint8)
    with pytest.raises(ValueError, match="zero_point"):
        affine.quantize_per_tensor(x, 0.1, -129, dtypes.qint8)
    with pytest.raises(TypeError, match="zero_point"):
        affine.quantize_per_tensor(x, 0.1, 0.5, dtypes.qint8)
    with pytest.raises(ValueError, match="not a known quantized dtype"):
        affine.quantize_per_tensor(x, 0.1, 0, "qint4")
    with pytest.raises(TypeError, match="not a quantized dtype"):
        affine.quantize_per_tensor(x, 0.1, 0, np.int8)
    with pytest.raises(ValueError, match="2 elements"):
        affine.quantize_per_channel(x[None], [0.1], [0], 1, dtypes.qint8)
    with pytest.raises(ValueError, match="axis=2"):
        affine.quantize_per_channel(x[None], [0.1], [0], 2, dtypes.qint8)
    with pytest.raises(TypeError, match="q has dtype float32"):
        affine.dequantize_per_tensor(x, 0.1, 0)
    with pytest.raises(ValueError, match="zero_point"):
        affine.dequantize_per_tensor(np.array([1], np.int8), 0.1, 200)
    with pytest.raises(ValueError, match="zero_point"):
        affine.fake_quantize_per_tensor_affine(x, 0.1, 6, 0, 5)
    with pytest.raises(ValueError, match="quant_min=6"):
        affine.fake_quantize_per_tensor_affine(x, 0.1, 0, 6, 5)
    with pytest.raises(ValueError, match="scale"):
        affine.fake_quantize_per_channel_affine(x[None], [-0.1], [0], 0, 0, 5)
    with pytest.raises(TypeError, match="float32 or float64"):
        affine.fake_quantize_per_tensor_affine(x.astype(np.int32), 0.1, 0, 0, 5)

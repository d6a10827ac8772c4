"""TFLite's int8 arithmetic (graph/ops/litert.py, tflite/integer.py) bit for bit against LiteRT's reference
kernels: per-channel int8 CONV_2D and DEPTHWISE_CONV_2D, FULLY_CONNECTED (per tensor and per channel), ADD
with broadcasting, QUANTIZE from float (ties round away from zero), on hypothesis-drawn shapes, scales and
zero points. Every comparison is exact: the integer kernels have one right answer.

On a CPU without VNNI (or without AVX2) the expected codes are the same: LiteRT's reference kernels are
portable C++ with no CPU-specific path, and minicompress's int32 sums are exact on every int8 GEMM route
(`kernels.qgemm`; the maddubs route gives way to int16 where a pair could saturate)."""
from fractions import Fraction

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tflite_writer import Writer, litert

import minicompress as mc
from minicompress import tflite
from minicompress.graph.ops.litert import (multiply_by_quantized_multiplier, quantize_multiplier,
                                           rounding_divide_by_pot, saturating_rounding_doubling_high_mul)

SETTINGS = settings(max_examples=15, deadline=None)
SCALES = st.floats(1e-3, 0.5)
ZERO_POINTS = st.integers(-20, 20)
ACTS = st.sampled_from([0, 1, 2, 3])


def ints(shape, seed, dtype=np.int8):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def check_exact(data, inputs):
    expected = litert(data, inputs)
    with mc.no_grad():
        got = tflite.load(data)(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g.numpy(), e)


@given(m=st.floats(1e-9, 1e3))
def test_quantize_multiplier_reconstructs_the_real_multiplier(m):
    """m = q 2^(shift - 31) with q in [2^30, 2^31], to within half a unit of q."""
    q, shift = quantize_multiplier(m)
    assert 2 ** 30 <= q < 2 ** 31
    assert abs(q * 2.0 ** (shift - 31) - m) <= 2.0 ** (shift - 32) * (1 + 1e-12)


def _half_away(f):
    return int(abs(f) + Fraction(1, 2)) * (1 if f >= 0 else -1)


def _half_up(f):
    return (f + Fraction(1, 2)) // 1


INT32 = st.integers(-2 ** 31, 2 ** 31 - 1)


@example(a=-1, b=2 ** 30, x=-1, exponent=1, q=2 ** 30, shift=0)        # ties: -0.5 -> 0 in the high mul
@given(a=INT32, b=INT32, x=INT32, exponent=st.integers(0, 31), q=st.integers(2 ** 30, 2 ** 31 - 1),
       shift=st.integers(-31, 0))
def test_fixed_point_helpers_against_exact_rationals(a, b, x, exponent, q, shift):
    """gemmlowp's two roundings and the single one, each against its definition in exact arithmetic:
    SaturatingRoundingDoublingHighMul rounds ties toward +inf (its nudge for a negative product makes a
    negative tie go toward zero), RoundingDivideByPOT ties away from zero."""
    expected = 2 ** 31 - 1 if a == b == -2 ** 31 else _half_up(Fraction(2 * a * b, 2 ** 32))
    assert int(saturating_rounding_doubling_high_mul(a, b)) == expected
    assert int(rounding_divide_by_pot(x, exponent)) == _half_away(Fraction(x, 2 ** exponent))
    exact = Fraction(x * q, 2 ** (31 - shift))
    assert int(multiply_by_quantized_multiplier(x, q, shift, "single")) == (exact + Fraction(1, 2)) // 1   # half up
    double = _half_away(Fraction(_half_up(Fraction(2 * x * q, 2 ** 32)), 2 ** -shift))   # two roundings
    assert int(multiply_by_quantized_multiplier(x, q, shift, "double")) == double


def _int8_tensor(w, shape, scale, zp, name, data=None, axis=0):
    return w.tensor(shape, np.int8, data, name=name, quantization=(scale, np.broadcast_to(zp, np.shape(scale)), axis))


@SETTINGS
@example(h=1, wd=3, cin=1, cout=1, k=1, stride=1, dilation=1, padding=0, s_in=0.5, s_out=0.5, zp_in=1, zp_out=0,
         act=0, depthwise=False, mult=1, seed=0)        # single rounding would give 75 where LiteRT gives 76
@given(h=st.integers(1, 6), wd=st.integers(1, 6), cin=st.integers(1, 3), cout=st.integers(1, 4),
       k=st.integers(1, 3), stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.sampled_from([0, 1]),
       s_in=SCALES, s_out=SCALES, zp_in=ZERO_POINTS, zp_out=ZERO_POINTS, act=ACTS, depthwise=st.booleans(),
       mult=st.integers(1, 2), seed=st.integers(0, 2 ** 16))
def test_conv_per_channel(h, wd, cin, cout, k, stride, dilation, padding, s_in, s_out, zp_in, zp_out, act,
                          depthwise, mult, seed):
    assume(padding == 0 or (h >= dilation * (k - 1) + 1 and wd >= dilation * (k - 1) + 1))
    rng = np.random.default_rng(seed)
    channels = cin * mult if depthwise else cout
    shape = (1, k, k, channels) if depthwise else (cout, k, k, cin)
    s_w = rng.uniform(1e-3, 2e-2, channels).astype(np.float32)
    m = Writer()
    x = _int8_tensor(m, [1, h, wd, cin], [s_in], [zp_in], "x")
    y = _int8_tensor(m, [1], [s_out], [zp_out], "y")
    filt = _int8_tensor(m, shape, s_w, np.zeros(channels, int), "filter", ints(shape, seed),
                        axis=3 if depthwise else 0)
    bias_scale = (np.float32(s_in) * s_w).astype(np.float32)
    bias = m.tensor([channels], np.int32, rng.integers(-3000, 3000, channels).astype(np.int32), name="bias",
                    quantization=(bias_scale, np.zeros(channels, int), 0))
    if depthwise:
        m.op("DEPTHWISE_CONV_2D", [x, filt, bias], [y], "DepthwiseConv2DOptions", padding=padding, strideW=stride,
             strideH=stride, depthMultiplier=mult, dilationWFactor=dilation, dilationHFactor=dilation,
             fusedActivationFunction=act)
    else:
        m.op("CONV_2D", [x, filt, bias], [y], "Conv2DOptions", padding=padding, strideW=stride, strideH=stride,
             dilationWFactor=dilation, dilationHFactor=dilation, fusedActivationFunction=act)
    check_exact(m.finish([x], [y]), [ints((1, h, wd, cin), seed + 1)])


@SETTINGS
@example(batch=2, depth=1, units=1, per_channel=False, s_in=0.5, s_out=0.5, zp_in=0, zp_out=0, act=0, bias=False,
         seed=0)                                        # double rounding would give 4 where LiteRT gives 3
@given(batch=st.integers(1, 3), depth=st.integers(1, 8), units=st.integers(1, 5), per_channel=st.booleans(),
       s_in=SCALES, s_out=SCALES, zp_in=ZERO_POINTS, zp_out=ZERO_POINTS, act=ACTS, bias=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_fully_connected(batch, depth, units, per_channel, s_in, s_out, zp_in, zp_out, act, bias, seed):
    rng = np.random.default_rng(seed)
    s_w = rng.uniform(1e-3, 2e-2, units if per_channel else 1).astype(np.float32)
    m = Writer()
    x = _int8_tensor(m, [batch, depth], [s_in], [zp_in], "x")
    y = _int8_tensor(m, [1], [s_out], [zp_out], "y")
    w = _int8_tensor(m, (units, depth), s_w, np.zeros(s_w.size, int), "w", ints((units, depth), seed))
    b = m.tensor([units], np.int32, rng.integers(-3000, 3000, units).astype(np.int32), name="b",
                 quantization=(np.float32(s_in) * s_w, np.zeros(s_w.size, int), 0)) if bias else -1
    m.op("FULLY_CONNECTED", [x, w, b], [y], "FullyConnectedOptions", fusedActivationFunction=act)
    try:
        data = m.finish([x], [y])
    except RuntimeError:
        assume(False)            # a combination this LiteRT build does not run (per-channel without bias)
    check_exact(data, [ints((batch, depth), seed + 1)])


@SETTINGS
@given(shapes=st.sampled_from([((2, 3), (2, 3)), ((1, 2, 2, 3), (3,)), ((2, 1, 3), (1, 4, 1))]),
       s_a=SCALES, s_b=SCALES, s_out=SCALES, zps=st.tuples(ZERO_POINTS, ZERO_POINTS, ZERO_POINTS), act=ACTS,
       seed=st.integers(0, 2 ** 16))
def test_add(shapes, s_a, s_b, s_out, zps, act, seed):
    m = Writer()
    a = _int8_tensor(m, shapes[0], [s_a], [zps[0]], "a")
    b = _int8_tensor(m, shapes[1], [s_b], [zps[1]], "b")
    y = _int8_tensor(m, [1], [s_out], [zps[2]], "y")
    m.op("ADD", [a, b], [y], "AddOptions", fusedActivationFunction=act)
    check_exact(m.finish([a, b], [y]), [ints(shapes[0], seed), ints(shapes[1], seed + 1)])


@SETTINGS
@given(shape=st.sampled_from([(5,), (2, 3, 4)]), scale_exponent=st.integers(-6, 0), zp=ZERO_POINTS,
       dtype=st.sampled_from([np.int8, np.uint8]), seed=st.integers(0, 2 ** 16))
def test_quantize_rounds_ties_away_from_zero(shape, scale_exponent, zp, dtype, seed):
    """A power-of-two scale puts x = (k + 1/2) scale exactly on a tie: TFLite rounds it away from zero."""
    scale = 2.0 ** scale_exponent
    halves = np.random.default_rng(seed).integers(-300, 300, shape) + 0.5
    x = (halves * scale).astype(np.float32)
    zp = zp + 128 if dtype == np.uint8 else zp
    m = Writer()
    xi = m.tensor(shape, name="x")
    y = m.tensor(shape, dtype, name="y", quantization=([scale], [zp], 0))
    m.op("QUANTIZE", [xi], [y], "QuantizeOptions")
    check_exact(m.finish([xi], [y]), [x])


def test_quantized_chain_float_in_float_out():
    """QUANTIZE -> int8 CONV_2D (RELU6) -> int8 ADD -> DEQUANTIZE: float in, float out, bit for bit."""
    rng = np.random.default_rng(3)
    m = Writer()
    x = m.tensor([1, 5, 5, 2], name="x")
    q = _int8_tensor(m, [1], [0.02], [-3], "q")
    c = _int8_tensor(m, [1], [0.05], [-128], "c")
    s = _int8_tensor(m, [1], [0.07], [5], "s")
    y = m.tensor([1], name="y")
    s_w = rng.uniform(5e-3, 1e-2, 2).astype(np.float32)
    m.op("QUANTIZE", [x], [q], "QuantizeOptions")
    m.op("CONV_2D", [q, _int8_tensor(m, (2, 3, 3, 2), s_w, [0, 0], "w", ints((2, 3, 3, 2), 4)),
                     m.tensor([2], np.int32, np.array([100, -50], np.int32), name="bias",
                              quantization=(np.float32(0.02) * s_w, [0, 0], 0))], [c], "Conv2DOptions",
         padding=0, strideW=1, strideH=1, fusedActivationFunction=3)
    m.op("ADD", [c, q], [s], "AddOptions")
    m.op("DEQUANTIZE", [s], [y], "DequantizeOptions")
    check_exact(m.finish([x], [y]), [rng.uniform(-2, 2, (1, 5, 5, 2)).astype(np.float32)])


def test_a_loaded_int8_graph_saves_and_loads_bit_for_bit(tmp_path):
    """The graph's "tflite" nodes keep plain attributes (ints, lists): minicompress.save / load round-trip."""
    rng = np.random.default_rng(5)
    m = Writer()
    x = m.tensor([1, 4, 4, 2], name="x")
    q = _int8_tensor(m, [1], [0.03], [2], "q")
    y = _int8_tensor(m, [1], [0.04], [-4], "y")
    s_w = rng.uniform(5e-3, 1e-2, 3).astype(np.float32)
    m.op("QUANTIZE", [x], [q], "QuantizeOptions")
    m.op("DEPTHWISE_CONV_2D", [q, _int8_tensor(m, (1, 3, 3, 2), s_w[:2], [0, 0], "w",
                                               ints((1, 3, 3, 2), 6), axis=3),
                               m.tensor([2], np.int32, np.array([30, -30], np.int32), name="bias",
                                        quantization=(np.float32(0.03) * s_w[:2], [0, 0], 0))], [y],
         "DepthwiseConv2DOptions", padding=0, strideW=1, strideH=1, depthMultiplier=1)
    graph = tflite.load(m.finish([x], [y]))
    inputs = rng.uniform(-1, 1, (1, 4, 4, 2)).astype(np.float32)
    mc.save(graph, tmp_path / "int8.npz")
    with mc.no_grad():
        np.testing.assert_array_equal(mc.load(tmp_path / "int8.npz")(inputs).numpy(), graph(inputs).numpy())


def test_integer_tensors_in_an_operator_without_integer_arithmetic_are_refused():
    """An int8 DIV (a reciprocal in fixed point in TFLite) must not run the float formula on the codes."""
    import pytest
    from minicompress.graph.registry import UnsupportedOperatorError
    m = Writer()
    x = _int8_tensor(m, [2, 3], [0.05], [0], "x")
    d = _int8_tensor(m, [2, 3], [0.05], [0], "d")
    y = _int8_tensor(m, [2, 3], [0.1], [0], "y")
    m.op("DIV", [x, d], [y], "DivOptions")
    with pytest.raises(UnsupportedOperatorError, match="DIV .*quantized tensor 'x' \\(INT8\\)"):
        tflite.load(m.finish([x, d], [y], infer_shapes=False))


def test_int8_codes_pass_through_the_movement_ops():
    """int8 CONV_2D -> MAX_POOL_2D -> RESHAPE -> FULLY_CONNECTED -> SPLIT: the pool and the movement ops carry
    the codes unchanged (input and output share scale and zero point, as TFLite requires), bit for bit."""
    rng = np.random.default_rng(8)
    m = Writer()
    x = _int8_tensor(m, [1, 6, 6, 2], [0.02], [1], "x")
    c, p, r = (_int8_tensor(m, [1], [0.05], [-7], n) for n in ("c", "p", "r"))
    f, s0, s1 = (_int8_tensor(m, [1], [0.08], [4], n) for n in ("f", "s0", "s1"))
    s_w = rng.uniform(5e-3, 1e-2, 4).astype(np.float32)
    m.op("CONV_2D", [x, _int8_tensor(m, (4, 3, 3, 2), s_w, np.zeros(4, int), "w", ints((4, 3, 3, 2), 9)),
                     m.tensor([4], np.int32, np.array([10, -10, 40, 0], np.int32), name="bias",
                              quantization=(np.float32(0.02) * s_w, np.zeros(4, int), 0))], [c], "Conv2DOptions",
         padding=0, strideW=1, strideH=1, fusedActivationFunction=1)
    m.op("MAX_POOL_2D", [c], [p], "Pool2DOptions", padding=1, strideW=2, strideH=2, filterWidth=2, filterHeight=2)
    m.op("RESHAPE", [p, m.const(np.array([1, 36], np.int32))], [r], "ReshapeOptions", newShape=[1, 36])
    m.op("FULLY_CONNECTED", [r, _int8_tensor(m, (6, 36), [0.01], [0], "fc", ints((6, 36), 10)), -1], [f],
         "FullyConnectedOptions")
    m.op("SPLIT", [m.const(np.array(1, np.int32)), f], [s0, s1], "SplitOptions", numSplits=2)
    check_exact(m.finish([x], [s0, s1]), [ints((1, 6, 6, 2), 11)])

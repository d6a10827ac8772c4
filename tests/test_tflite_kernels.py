"""The compiled TFLite int8 kernels (kernels/tflite_int8.py) against their twins, the reference formulas of
graph/ops/litert.py, bit for bit on drawn shapes, geometries and codes. The twins are held to LiteRT's
reference kernels by test_tflite_int8_ops.py and test_tflite_export.py (which now run the compiled kernels
too); here every element of every drawn case must be equal, with gemmlowp's two roundings and the single one.

On a CPU without VNNI (or without AVX2) the expected codes are the same: LiteRT's reference kernels are
portable C++ with no CPU-specific path, and minicompress's int32 sums are exact on every int8 GEMM route
(`kernels.qgemm`; the maddubs route gives way to int16 where a pair could saturate)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.graph.ops import litert
from minicompress.kernels import tflite_int8 as K

ROUNDINGS = st.sampled_from(["double", "single"])


def _multipliers(rng, n, shifts=(-12, 0)):
    """(q, shift) per channel from real multipliers 2^shift x [0.5, 1): TFLite's QuantizeMultiplier's range."""
    pairs = [litert.quantize_multiplier(float(rng.uniform(0.5, 1.0)) * 2.0 ** int(rng.integers(*shifts)))
             for _ in range(n)]
    return np.array([q for q, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 9), st.booleans(), ROUNDINGS, st.integers(0, 2**32 - 1))
def test_requantize_equals_the_fixed_point_formula(rows, channels, per_channel, rounding, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2**31, 2**31, (rows, channels)).astype(np.int32)
    acc.flat[:4] = [-2**31, 2**31 - 1, 0, -1][:acc.size]
    q, shift = _multipliers(rng, channels if per_channel else 1, (-31, 1))
    zero_point, low, high = int(rng.integers(-128, 128)), -128, int(rng.integers(0, 128))
    expected = litert._requantize(acc.astype(np.int64), q, shift, zero_point, low, high, np.int8, rounding)
    np.testing.assert_array_equal(K.requantize(acc, q, shift, zero_point, low, high, rounding), expected)


@st.composite
def conv_cases(draw):
    depthwise = draw(st.booleans())
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    c = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides, dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    # the output size TFLite's SAME / VALID padding gives lies between these; any that stays inside works
    oh = max(1, (h + 2 * pads[0] - dilations[0] * (kh - 1) - 1) // strides[0] + 1)
    ow = max(1, (w + 2 * pads[1] - dilations[1] * (kw - 1) - 1) // strides[1] + 1)
    out_channels = c * draw(st.integers(1, 3)) if depthwise else draw(st.integers(1, 7))
    return depthwise, (n, h, w, c), (kh, kw), strides, dilations, pads, (oh, ow), out_channels, draw(st.booleans()), \
        draw(ROUNDINGS), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=80, deadline=None)
@given(conv_cases())
def test_conv_and_depthwise_kernels_equal_the_reference(case):
    depthwise, x_shape, (kh, kw), strides, dilations, pads, out_size, o, with_bias, rounding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    w_shape = (1, kh, kw, o) if depthwise else (o, kh, kw, x_shape[3])
    w = rng.integers(-127, 128, w_shape).astype(np.int8)
    bias = rng.integers(-2**16, 2**16, o).astype(np.int32) if with_bias else None
    q, shift = _multipliers(rng, o)
    attrs = dict(strides=strides, dilations=dilations, pads=pads, out_size=out_size,
                 input_zero_point=int(rng.integers(-128, 128)), multipliers=q, shifts=shift,
                 output_zero_point=int(rng.integers(-128, 128)), activation_min=-128, activation_max=127,
                 depthwise=int(depthwise), rounding=rounding)
    np.testing.assert_array_equal(litert.Conv2D().run(x, w, bias, **attrs), litert.Conv2D.reference(x, w, bias, **attrs))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 70), st.integers(1, 9), st.booleans(), st.booleans(), ROUNDINGS,
       st.integers(0, 2**32 - 1))
def test_fully_connected_kernel_equals_the_reference(batch, inputs, outputs, per_channel, with_bias, rounding, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (batch, inputs)).astype(np.int8)
    w = rng.integers(-127, 128, (outputs, inputs)).astype(np.int8)
    bias = rng.integers(-2**16, 2**16, outputs).astype(np.int32) if with_bias else None
    q, shift = _multipliers(rng, outputs if per_channel else 1)
    attrs = dict(input_zero_point=int(rng.integers(-128, 128)), weight_zero_point=0 if per_channel else int(rng.integers(-10, 10)),
                 multipliers=q, shifts=shift, output_zero_point=int(rng.integers(-128, 128)), activation_min=-128,
                 activation_max=127, rounding=rounding)
    np.testing.assert_array_equal(litert.FullyConnected().run(x, w, bias, **attrs),
                                  litert.FullyConnected.reference(x, w, bias, **attrs))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([((3, 4, 5), (3, 4, 5)), ((2, 1, 5), (1, 4, 5)), ((6,), (1,)), ((1, 3, 3, 8), (1, 1, 1, 8))]),
       st.sampled_from([1, -1]), ROUNDINGS, st.integers(0, 2**32 - 1))
def test_add_and_sub_kernel_equals_the_reference(shapes, sign, rounding, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(-128, 128, s).astype(np.int8) for s in shapes)
    (q0, q1, q2), (s0, s1, s2) = _multipliers(rng, 3, (-20, -1))
    args = (sign, [int(rng.integers(-128, 128)), int(rng.integers(-128, 128))], [q0, q1, q2], [s0, s1, s2],
            int(rng.integers(-128, 128)), -128, 127, 20, rounding)
    np.testing.assert_array_equal(K.rescaled_sum(a, b, *args), litert.rescaled_sum_reference(a, b, *args))

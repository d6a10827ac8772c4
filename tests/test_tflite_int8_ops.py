"""The int8 operators of mobile vision models beyond convolutions (graph/ops/litert.py, tflite/integer.py) bit
for bit against LiteRT's reference kernels (BUILTIN_REF), on hypothesis-drawn shapes, scales and zero points:
MUL and SUB with broadcasting, RELU / RELU6 / RELU_N1_TO_1 and fused activations, LEAKY_RELU, PRELU,
MAX_POOL_2D and AVERAGE_POOL_2D, MEAN, PAD / PADV2, CONCATENATION, DEQUANTIZE, RESIZE_NEAREST_NEIGHBOR.
Every comparison is exact: the integer kernels have one right answer.

On a CPU without VNNI (or without AVX2) the expected codes are the same: LiteRT's reference kernels are
portable C++ with no CPU-specific path, and minicompress's int32 sums are exact on every int8 GEMM route
(`kernels.qgemm`; the maddubs route gives way to int16 where a pair could saturate)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tflite_int8 import check_exact, ints
from tflite_writer import Writer, litert

from minicompress import tflite
from minicompress.graph.registry import UnsupportedOperatorError

SETTINGS = settings(max_examples=12, deadline=None)
SCALES = st.floats(1e-3, 0.5)
ZERO_POINTS = st.integers(-20, 20)
ACTS = st.sampled_from([0, 1, 2, 3])          # NONE, RELU, RELU_N1_TO_1, RELU6
SEEDS = st.integers(0, 2 ** 16)
BROADCASTS = st.sampled_from([((2, 3), (2, 3)), ((1, 2, 2, 3), (3,)), ((2, 1, 3), (1, 4, 1)), ((1, 3, 3, 2), ())])


def q8(w, shape, scale, zp, name, data=None):
    """A per-tensor int8 tensor (a constant when data is given)."""
    return w.tensor(shape, np.int8, data, name=name, quantization=([scale], [zp], 0))


@SETTINGS
@given(op=st.sampled_from(["MUL", "SUB"]), shapes=BROADCASTS, s_a=SCALES, s_b=SCALES, s_out=SCALES,
       zps=st.tuples(ZERO_POINTS, ZERO_POINTS, ZERO_POINTS), act=ACTS, seed=SEEDS)
def test_mul_and_sub(op, shapes, s_a, s_b, s_out, zps, act, seed):
    m = Writer()
    a, b = q8(m, shapes[0], s_a, zps[0], "a"), q8(m, shapes[1], s_b, zps[1], "b")
    y = q8(m, [1], s_out, zps[2], "y")
    m.op(op, [a, b], [y], op.capitalize() + "Options", fusedActivationFunction=act)
    check_exact(m.finish([a, b], [y]), [ints(shapes[0], seed), ints(shapes[1], seed + 1)])


@SETTINGS
@given(op=st.sampled_from(["RELU", "RELU6", "RELU_N1_TO_1"]), shape=st.sampled_from([(7,), (1, 3, 4, 2)]),
       s_in=SCALES, s_out=SCALES, zp_in=ZERO_POINTS, zp_out=ZERO_POINTS, seed=SEEDS)
def test_relu_family_rescales_and_clamps(op, shape, s_in, s_out, zp_in, zp_out, seed):
    m = Writer()
    x, y = q8(m, shape, s_in, zp_in, "x"), q8(m, shape, s_out, zp_out, "y")
    m.op(op, [x], [y])
    check_exact(m.finish([x], [y]), [ints(shape, seed)])


@SETTINGS
@given(alpha=st.floats(0.0, 1.0), s_in=SCALES, s_out=SCALES, zp_in=ZERO_POINTS, zp_out=ZERO_POINTS, seed=SEEDS)
def test_leaky_relu(alpha, s_in, s_out, zp_in, zp_out, seed):
    m = Writer()
    x, y = q8(m, [2, 3, 5], s_in, zp_in, "x"), q8(m, [2, 3, 5], s_out, zp_out, "y")
    m.op("LEAKY_RELU", [x], [y], "LeakyReluOptions", alpha=alpha)
    check_exact(m.finish([x], [y]), [ints((2, 3, 5), seed)])


@SETTINGS
@given(alpha_shape=st.sampled_from([(1, 1, 3), (3,), (2, 4, 3)]), s_in=SCALES, s_alpha=st.floats(1e-3, 1e-2),
       s_out=SCALES, zps=st.tuples(ZERO_POINTS, ZERO_POINTS, ZERO_POINTS), seed=SEEDS)
def test_prelu_with_a_broadcast_alpha(alpha_shape, s_in, s_alpha, s_out, zps, seed):
    m = Writer()
    x, y = q8(m, [1, 2, 4, 3], s_in, zps[0], "x"), q8(m, [1, 2, 4, 3], s_out, zps[2], "y")
    alpha = q8(m, alpha_shape, s_alpha, zps[1], "alpha", ints(alpha_shape, seed + 1))
    m.op("PRELU", [x, alpha], [y])
    check_exact(m.finish([x], [y]), [ints((1, 2, 4, 3), seed)])


@SETTINGS
@given(op=st.sampled_from(["MAX_POOL_2D", "AVERAGE_POOL_2D"]), h=st.integers(1, 7), w=st.integers(1, 7),
       k=st.integers(1, 3), stride=st.integers(1, 3), padding=st.sampled_from([0, 1]), scale=SCALES,
       zp=ZERO_POINTS, act=ACTS, seed=SEEDS)
def test_pools_round_and_clamp_as_the_reference(op, h, w, k, stride, padding, scale, zp, act, seed):
    """AVERAGE_POOL_2D rounds sum / count half away from zero over the taps inside the input (SAME padding
    counts fewer at the borders); both clamp to the fused activation."""
    if padding == 1 and (h < k or w < k):       # VALID with a window larger than the input: no output
        k = 1
    m = Writer()
    x, y = q8(m, [2, h, w, 3], scale, zp, "x"), q8(m, [1], scale, zp, "y")
    m.op(op, [x], [y], "Pool2DOptions", padding=padding, strideW=stride, strideH=stride, filterWidth=k,
         filterHeight=k, fusedActivationFunction=act)
    check_exact(m.finish([x], [y]), [ints((2, h, w, 3), seed)])


@SETTINGS
@given(shape_axes=st.sampled_from([((1, 4, 5, 3), [1, 2]), ((2, 3, 3, 4), [2, 1]), ((1, 7, 2, 3), [-2]),
                                   ((3, 6), [1]), ((2, 2, 3, 5), [1, 2, 3]), ((1, 16, 16, 2), [1, 2])]),
       keep=st.booleans(), s_in=SCALES, s_out=SCALES, zp_in=ZERO_POINTS, zp_out=ZERO_POINTS, seed=SEEDS)
def test_mean(shape_axes, keep, s_in, s_out, zp_in, zp_out, seed):
    shape, axes = shape_axes
    m = Writer()
    x, y = q8(m, shape, s_in, zp_in, "x"), q8(m, [1], s_out, zp_out, "y")
    m.op("MEAN", [x, m.const(np.array(axes, np.int32))], [y], "ReducerOptions", keepDims=keep)
    check_exact(m.finish([x], [y]), [ints(shape, seed)])


@SETTINGS
@given(op=st.sampled_from(["PAD", "PADV2"]), pads=st.lists(st.integers(0, 2), min_size=8, max_size=8),
       scale=SCALES, zp=ZERO_POINTS, value=st.integers(-128, 127), seed=SEEDS)
def test_pad_fills_with_the_zero_point_or_the_constant(op, pads, scale, zp, value, seed):
    m = Writer()
    x, y = q8(m, [1, 3, 2, 2], scale, zp, "x"), q8(m, [1], scale, zp, "y")
    inputs = [x, m.const(np.array(pads, np.int32).reshape(4, 2))]
    if op == "PADV2":
        inputs.append(q8(m, [], scale, zp, "value", np.array(value, np.int8)))
    m.op(op, inputs, [y])
    check_exact(m.finish([x], [y]), [ints((1, 3, 2, 2), seed)])


@SETTINGS
@given(axis=st.integers(-4, 3), sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3), scale=SCALES,
       zp=ZERO_POINTS, seed=SEEDS)
def test_concatenation(axis, sizes, scale, zp, seed):
    m = Writer()
    shapes = []
    for n in sizes:
        shape = [1, 2, 3, 2]
        shape[axis % 4] = n
        shapes.append(shape)
    xs = [q8(m, s, scale, zp, f"x{k}") for k, s in enumerate(shapes)]
    y = q8(m, [1], scale, zp, "y")
    m.op("CONCATENATION", xs, [y], "ConcatenationOptions", axis=axis)
    check_exact(m.finish(xs, [y]), [ints(s, seed + k) for k, s in enumerate(shapes)])


def test_concatenation_of_differently_scaled_int8_inputs_is_refused_as_litert_refuses_it():
    m = Writer()
    a, b = q8(m, [1, 2], 0.1, 0, "a"), q8(m, [1, 2], 0.2, 0, "b")
    y = q8(m, [1, 4], 0.2, 0, "y")
    m.op("CONCATENATION", [a, b], [y], "ConcatenationOptions", axis=1)
    data = m.finish([a, b], [y], infer_shapes=False)
    with pytest.raises(RuntimeError):
        litert(data, [ints((1, 2), 0), ints((1, 2), 1)])
    with pytest.raises(UnsupportedOperatorError, match="CONCATENATION.*'a' has scale"):
        tflite.load(data)


@SETTINGS
@given(shape=st.sampled_from([(5,), (1, 3, 2, 4)]), scale=SCALES, zp=st.integers(-128, 127), seed=SEEDS)
def test_dequantize_int8(shape, scale, zp, seed):
    m = Writer()
    x, y = q8(m, shape, scale, zp, "x"), m.tensor(shape, name="y")
    m.op("DEQUANTIZE", [x], [y])
    check_exact(m.finish([x], [y]), [ints(shape, seed)])


@SETTINGS
@given(h=st.integers(1, 5), w=st.integers(1, 5), out=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       mode=st.sampled_from([(False, False), (True, False), (False, True)]), scale=SCALES, zp=ZERO_POINTS,
       seed=SEEDS)
def test_resize_nearest_neighbor_moves_the_codes(h, w, out, mode, scale, zp, seed):
    m = Writer()
    x, y = q8(m, [1, h, w, 2], scale, zp, "x"), q8(m, [1], scale, zp, "y")
    m.op("RESIZE_NEAREST_NEIGHBOR", [x, m.const(np.array(out, np.int32))], [y], "ResizeNearestNeighborOptions",
         alignCorners=mode[0], halfPixelCenters=mode[1])
    check_exact(m.finish([x], [y]), [ints((1, h, w, 2), seed)])


@settings(max_examples=25, deadline=None)
@given(op=st.sampled_from(["LOGISTIC", "TANH"]), s_in=st.floats(1e-3, 0.2), zp_in=ZERO_POINTS,
       out=st.sampled_from([(1 / 256, -128), (1 / 128, 0), None]), s_out=SCALES, zp_out=ZERO_POINTS)
def test_logistic_and_tanh_tables(op, s_in, zp_in, out, s_out, zp_out):
    """Every one of the 256 codes through the table; LOGISTIC's output scale is 1/256 (LiteRT requires it)."""
    if op == "LOGISTIC":
        out = (1 / 256, -128 if out is None else zp_out)
    s_out, zp_out = out or (s_out, zp_out)
    m = Writer()
    x, y = q8(m, [2, 128], s_in, zp_in, "x"), q8(m, [2, 128], s_out, zp_out, "y")
    m.op(op, [x], [y])
    check_exact(m.finish([x], [y]), [np.arange(-128, 128, dtype=np.int8).reshape(2, 128)])


@settings(max_examples=25, deadline=None)
@given(s_in=st.floats(1e-3, 0.2), zp_in=ZERO_POINTS, ratio=st.floats(0.2, 2.0), zp_out=ZERO_POINTS)
def test_hard_swish_in_int16_fixed_point(s_in, zp_in, ratio, zp_out):
    """Every code through HARD_SWISH's int16 arithmetic; the output scale near the input's (as a converter
    chooses it: hard-swish keeps positive values and shrinks negative ones)."""
    m = Writer()
    x, y = q8(m, [2, 128], s_in, zp_in, "x"), q8(m, [2, 128], s_in * ratio, zp_out, "y")
    m.op("HARD_SWISH", [x], [y])
    check_exact(m.finish([x], [y]), [np.arange(-128, 128, dtype=np.int8).reshape(2, 128)])


@SETTINGS
@given(h=st.integers(1, 6), w=st.integers(1, 6), out=st.tuples(st.integers(1, 13), st.integers(1, 13)),
       mode=st.sampled_from([(False, False), (True, False), (False, True)]), scale=SCALES, zp=ZERO_POINTS,
       seed=SEEDS)
def test_resize_bilinear_in_1024ths_of_a_pixel(h, w, out, mode, scale, zp, seed):
    m = Writer()
    x, y = q8(m, [2, h, w, 3], scale, zp, "x"), q8(m, [1], scale, zp, "y")
    m.op("RESIZE_BILINEAR", [x, m.const(np.array(out, np.int32))], [y], "ResizeBilinearOptions",
         alignCorners=mode[0], halfPixelCenters=mode[1])
    check_exact(m.finish([x], [y]), [ints((2, h, w, 3), seed)])


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(1, 10), (3, 7), (1, 2, 2, 5), (2, 300)]), s_in=st.floats(1e-3, 0.5),
       zp_in=ZERO_POINTS, beta=st.sampled_from([1.0, 0.5, 2.0]), seed=SEEDS)
def test_softmax_in_gemmlowp_fixed_point(shape, s_in, zp_in, beta, seed):
    """Rows of at most 300: LiteRT's kernel aborts the process when a row's sum of exps reaches 512."""
    m = Writer()
    x, y = q8(m, shape, s_in, zp_in, "x"), q8(m, shape, 1 / 256, -128, "y")
    m.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=beta)
    check_exact(m.finish([x], [y]), [ints(shape, seed)])


def _weights(m, rng, shape, s_in, name, axis=0, s_w_max=2e-2):
    """Per-channel int8 weights (channels along `axis`) and their int32 bias at scale s_in s_w."""
    channels = shape[axis]
    s_w = rng.uniform(s_w_max / 4, s_w_max, channels).astype(np.float32)
    w = m.tensor(shape, np.int8, ints(shape, int(rng.integers(1 << 16))), name=name,
                 quantization=(s_w, np.zeros(channels, int), axis))
    bias = m.tensor([channels], np.int32, rng.integers(-500, 500, channels).astype(np.int32), name=name + "/bias",
                    quantization=(np.float32(s_in) * s_w, np.zeros(channels, int), 0))
    return w, bias


def test_a_mobile_block_float_in_float_out_bit_for_bit():
    """QUANTIZE, CONV_2D, HARD_SWISH, DEPTHWISE_CONV_2D (RELU6), a squeeze-and-excite branch (MEAN over
    [1, 2], FULLY_CONNECTED with RELU, LOGISTIC, MUL broadcast), PAD, MAX_POOL_2D, AVERAGE_POOL_2D,
    FULLY_CONNECTED, SOFTMAX, DEQUANTIZE, as one model: every int8 value through it equals LiteRT's."""
    rng = np.random.default_rng(12)
    m = Writer()
    x = m.tensor([1, 8, 8, 3], name="x")
    q = q8(m, [1], 0.02, 0, "q")
    c, h, d = q8(m, [1], 0.05, -10, "c"), q8(m, [1], 0.04, -50, "h"), q8(m, [1], 0.03, -128, "d")
    mean, flat = q8(m, [1], 0.02, -100, "mean"), q8(m, [1], 0.02, -100, "flat")
    f1, f2 = q8(m, [1], 0.05, -128, "f1"), q8(m, [1], 0.1, 0, "f2")
    g, g4 = q8(m, [1], 1 / 256, -128, "g"), q8(m, [1], 1 / 256, -128, "g4")
    e, p, mp, ap, r = (q8(m, [1], 0.03, -128, n) for n in ("e", "p", "mp", "ap", "r"))
    logits, s = q8(m, [1], 0.1, 5, "logits"), q8(m, [1], 1 / 256, -128, "s")
    y = m.tensor([1], name="y")
    m.op("QUANTIZE", [x], [q], "QuantizeOptions")
    m.op("CONV_2D", [q, *_weights(m, rng, (8, 3, 3, 3), 0.02, "conv")], [c], "Conv2DOptions", padding=0,
         strideW=2, strideH=2)
    m.op("HARD_SWISH", [c], [h])
    m.op("DEPTHWISE_CONV_2D", [h, *_weights(m, rng, (1, 3, 3, 8), 0.04, "dw", axis=3)], [d],
         "DepthwiseConv2DOptions", padding=0, strideW=1, strideH=1, depthMultiplier=1, fusedActivationFunction=3)
    m.op("MEAN", [d, m.const(np.array([1, 2], np.int32))], [mean], "ReducerOptions", keepDims=True)
    m.op("RESHAPE", [mean, m.const(np.array([1, 8], np.int32))], [flat], "ReshapeOptions", newShape=[1, 8])
    m.op("FULLY_CONNECTED", [flat, *_weights(m, rng, (4, 8), 0.02, "se1")], [f1], "FullyConnectedOptions",
         fusedActivationFunction=1)
    m.op("FULLY_CONNECTED", [f1, *_weights(m, rng, (8, 4), 0.05, "se2")], [f2], "FullyConnectedOptions")
    m.op("LOGISTIC", [f2], [g])
    m.op("RESHAPE", [g, m.const(np.array([1, 1, 1, 8], np.int32))], [g4], "ReshapeOptions", newShape=[1, 1, 1, 8])
    m.op("MUL", [d, g4], [e], "MulOptions")
    m.op("PAD", [e, m.const(np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))], [p])
    m.op("MAX_POOL_2D", [p], [mp], "Pool2DOptions", padding=1, strideW=2, strideH=2, filterWidth=2, filterHeight=2)
    m.op("AVERAGE_POOL_2D", [mp], [ap], "Pool2DOptions", padding=1, strideW=1, strideH=1, filterWidth=2,
         filterHeight=2)
    m.op("RESHAPE", [ap, m.const(np.array([1, 32], np.int32))], [r], "ReshapeOptions", newShape=[1, 32])
    m.op("FULLY_CONNECTED", [r, *_weights(m, rng, (5, 32), 0.03, "head", s_w_max=1e-3)], [logits],
         "FullyConnectedOptions")
    m.op("SOFTMAX", [logits], [s], "SoftmaxOptions", beta=1.0)
    m.op("DEQUANTIZE", [s], [y])
    check_exact(m.finish([x], [y]), [rng.uniform(-2, 2, (1, 8, 8, 3)).astype(np.float32)])


def test_an_int8_softmax_whose_output_is_not_scale_1_256_is_refused_by_name():
    m = Writer()
    x, y = q8(m, [1, 4], 0.1, 0, "x"), q8(m, [1, 4], 0.01, 0, "y")
    m.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=1.0)
    with pytest.raises(UnsupportedOperatorError, match="SOFTMAX.*scale 1/256 and zero point -128"):
        tflite.load(m.finish([x], [y], infer_shapes=False))


def test_the_new_int8_nodes_save_and_load_bit_for_bit(tmp_path):
    """Tables, multipliers and shifts are plain attributes: minicompress.save / load round-trips them."""
    import minicompress as mc
    m = Writer()
    x, h = q8(m, [1, 4, 4, 3], 0.05, 3, "x"), q8(m, [1, 4, 4, 3], 0.04, -20, "h")
    t, y = q8(m, [1, 4, 4, 3], 1 / 128, 0, "t"), q8(m, [1, 4, 4, 3], 1 / 256, -128, "y")
    m.op("HARD_SWISH", [x], [h])
    m.op("TANH", [h], [t])
    m.op("SOFTMAX", [t], [y], "SoftmaxOptions", beta=1.0)
    graph = tflite.load(m.finish([x], [y]))
    inputs = ints((1, 4, 4, 3), 21)
    mc.save(graph, tmp_path / "int8.npz")
    with mc.no_grad():
        np.testing.assert_array_equal(mc.load(tmp_path / "int8.npz")(inputs).numpy(), graph(inputs).numpy())


def test_a_uint8_quantized_operator_is_refused_rather_than_run_as_float():
    m = Writer()
    x = m.tensor([1, 3, 3, 2], np.uint8, name="x", quantization=([0.1], [128], 0))
    y = m.tensor([1, 5, 5, 2], np.uint8, name="y", quantization=([0.1], [128], 0))
    m.op("PAD", [x, m.const(np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))], [y])
    with pytest.raises(UnsupportedOperatorError, match="PAD.*quantized uint8"):
        tflite.load(m.finish([x], [y], infer_shapes=False))

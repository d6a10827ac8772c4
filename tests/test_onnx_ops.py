"""Every operator of the registry against onnxruntime, one-node models on hypothesis-drawn shapes, at the
opsets where its semantics change. onnxruntime is the oracle; nothing expected is computed here."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnx_harness import assert_matches, one_node_model

import minicompress.onnx as mco
from minicompress.graph import UnsupportedOperatorError

SETTINGS = settings(max_examples=12, deadline=None)
# float32 results of one elementwise op agree to a few ulps; sums over windows or rows to ~1e-6 relative
ELEMENTWISE = dict(rtol=2e-6, atol=1e-6)
SUMS = dict(rtol=1e-5, atol=1e-5)


def floats(shape, low=-3.0, high=3.0, dtype=np.float32):
    low, high = float(np.float32(low)), float(np.float32(high))
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, width=32, allow_nan=False))


shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)
seeds = st.integers(0, 2**31 - 1)


def rng_array(seed, shape, low=-3.0, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# ----- elementwise ---------------------------------------------------------------------------------

UNARY = ["Relu", "Sigmoid", "Tanh", "Erf", "Neg", "Abs", "Exp", "Floor", "Ceil", "Sin", "Cos", "Softplus",
         "HardSwish", "Sign", "Round"]


@pytest.mark.parametrize("op_type", UNARY)
@SETTINGS
@given(data=st.data())
def test_unary(op_type, data):
    x = data.draw(floats(data.draw(shapes)))
    assert_matches(op_type, [("x", x)], opset=17, **ELEMENTWISE)


@pytest.mark.parametrize("op_type", ["Sqrt", "Log", "Reciprocal"])
@SETTINGS
@given(data=st.data())
def test_unary_positive(op_type, data):
    x = data.draw(floats(data.draw(shapes), 0.05, 5.0))
    assert_matches(op_type, [("x", x)], **ELEMENTWISE)


@pytest.mark.parametrize("op_type,attrs", [("LeakyRelu", {"alpha": 0.1}), ("Elu", {"alpha": 0.7}), ("Selu", {}),
                                           ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("LeakyRelu", {})])
@SETTINGS
@given(data=st.data())
def test_unary_with_attributes(op_type, attrs, data):
    x = data.draw(floats(data.draw(shapes)))
    assert_matches(op_type, [("x", x)], attrs, **ELEMENTWISE)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@SETTINGS
@given(data=st.data())
def test_gelu_opset_20(approximate, data):
    x = data.draw(floats(data.draw(shapes)))
    assert_matches("Gelu", [("x", x)], {"approximate": approximate}, opset=20, **ELEMENTWISE)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
                                     "Equal", "Greater", "Less", "PRelu"])
@SETTINGS
@given(data=st.data())
def test_binary_broadcast(op_type, data):
    pair = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4))
    a_shape, b_shape = pair.input_shapes
    if op_type == "PRelu":   # the slope broadcasts onto x, not the other way round
        a_shape = np.broadcast_shapes(a_shape, b_shape)
    low = 0.1 if op_type == "Pow" else -3.0
    a = data.draw(floats(a_shape, low, 3.0))
    b = data.draw(floats(b_shape, -2.0 if op_type == "Pow" else -3.0, 2.0 if op_type == "Pow" else 3.0))
    if op_type == "Div":
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b)
    if op_type in ("Equal", "Greater", "Less"):
        b = np.where(np.arange(b.size).reshape(b.shape) % 3 == 0, np.float32(0.0), b).astype(np.float32)
        a = np.round(a).astype(np.float32)
    assert_matches(op_type, [("a", a), ("b", b)], opset=13, rtol=1e-5, atol=1e-6)


def test_integer_division_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 0], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    assert_matches("Div", [("a", a), ("b", b)])


@SETTINGS
@given(data=st.data())
def test_where_and_logic(data):
    shape = data.draw(shapes)
    c = data.draw(hnp.arrays(np.bool_, shape))
    d = data.draw(hnp.arrays(np.bool_, shape))
    x, y = data.draw(floats(shape)), data.draw(floats(shape))
    assert_matches("Where", [("c", c), ("x", x), ("y", y)])
    assert_matches("Not", [("c", c)])
    assert_matches("And", [("c", c), ("d", d)])
    assert_matches("Or", [("c", c), ("d", d)])


@pytest.mark.parametrize("opset", [7, 11, 13])
@SETTINGS
@given(data=st.data(), low=st.floats(-2, 0, width=32), high=st.floats(0, 2, width=32))
def test_clip(opset, data, low, high):
    x = data.draw(floats(data.draw(shapes)))
    if opset < 11:
        assert_matches("Clip", [("x", x)], {"min": low, "max": high}, opset=opset)
    else:
        assert_matches("Clip", [("x", x), ("lo", np.float32(low)), ("hi", np.float32(high))], opset=opset)
        assert_matches("Clip", [("x", x), ("lo", None), ("hi", np.float32(high))], opset=opset)


@pytest.mark.parametrize("to,dtype", [(7, np.int64), (6, np.int32), (1, np.float32), (9, np.bool_), (11, np.float64)])
def test_cast(to, dtype):
    x = np.array([[-2.7, -0.5, 0.0, 0.4, 1.5, 3.9]], np.float32)
    assert_matches("Cast", [("x", x)], {"to": to}, opset=13)
    assert_matches("Cast", [("x", x)], {"to": to}, opset=19)


# ----- softmax: the opset 13 change ---------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [7, 11, 13])
@SETTINGS
@given(data=st.data())
def test_softmax(op_type, opset, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(floats(shape, -5, 5))
    assert_matches(op_type, [("x", x)], {"axis": axis}, opset=opset, rtol=1e-5, atol=1e-6)


def test_softmax_opset_1_on_4d_input_flattens_from_axis_1():
    # onnx's ReferenceEvaluator returns 1.0 everywhere for this case
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    model, feeds, _ = one_node_model("Softmax", [("x", x)], opset=7)
    out = mco.load(model)(x).detach().numpy()
    np.testing.assert_allclose(out.reshape(2, -1).sum(axis=1), [1.0, 1.0], rtol=1e-6)
    assert_matches("Softmax", [("x", x)], opset=7, rtol=1e-5, atol=1e-7)


# ----- linear algebra, convolution ----------------------------------------------------------------

@pytest.mark.parametrize("opset", [7, 11, 13])
@SETTINGS
@given(m=st.integers(1, 5), k=st.integers(1, 6), n=st.integers(1, 5), trans_a=st.booleans(), trans_b=st.booleans(),
       alpha=st.sampled_from([1.0, 0.5]), beta=st.sampled_from([1.0, 2.0]), c_kind=st.sampled_from(["n", "1n", "mn"]),
       constant=st.booleans(), seed=seeds)
def test_gemm(opset, m, k, n, trans_a, trans_b, alpha, beta, c_kind, constant, seed):
    a = rng_array(seed, (k, m) if trans_a else (m, k))
    b = rng_array(seed + 1, (n, k) if trans_b else (k, n))
    c = rng_array(seed + 2, {"n": (n,), "1n": (1, n), "mn": (m, n)}[c_kind])
    attrs = {"transA": int(trans_a), "transB": int(trans_b), "alpha": alpha, "beta": beta}
    assert_matches("Gemm", [("a", a), ("b", b), ("c", c)], attrs, opset=opset,
                   constants=("b", "c") if constant else (), **SUMS)


@SETTINGS
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3), m=st.integers(1, 4),
       k=st.integers(1, 4), n=st.integers(1, 4), constant=st.booleans(), vector=st.booleans(), seed=seeds)
def test_matmul(batch, m, k, n, constant, vector, seed):
    a_shape = (k,) if vector else batch.input_shapes[0] + (m, k)
    b_shape = (k, n) if constant else batch.input_shapes[1] + (k, n)
    a, b = rng_array(seed, a_shape), rng_array(seed + 1, b_shape)
    assert_matches("MatMul", [("a", a), ("b", b)], constants=("b",) if constant else (), **SUMS)


@st.composite
def conv_case(draw, transposed=False):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    size = [draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 6)) for k, d in zip(kernel, dilations)]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad.startswith("SAME"):
        dilations = [1, 1]      # onnxruntime rejects dilations with SAME padding
    attrs = {"strides": strides, "dilations": dilations, "group": groups, "kernel_shape": kernel}
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    if transposed:
        attrs.pop("dilations") if auto_pad != "NOTSET" else None
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            attrs["dilations"] = [1, 1]
        else:
            attrs["output_padding"] = [draw(st.integers(0, s - 1)) for s in strides]   # onnxruntime: < stride
        if auto_pad == "NOTSET":
            attrs["pads"] = [min(p, d * (k - 1)) for p, k, d in zip(pads, kernel * 2, dilations * 2)]
        weight = (c_in, c_out // groups, *kernel)
    else:
        weight = (c_out, c_in // groups, *kernel)
    return (draw(st.integers(1, 2)), c_in, *size), weight, c_out, attrs


@SETTINGS
@given(case=conv_case(), bias=st.booleans(), constant=st.booleans(), seed=seeds)
def test_conv(case, bias, constant, seed):
    x_shape, w_shape, c_out, attrs = case
    inputs = [("x", rng_array(seed, x_shape)), ("w", rng_array(seed + 1, w_shape))]
    if bias:
        inputs.append(("b", rng_array(seed + 2, (c_out,))))
    assert_matches("Conv", inputs, attrs, opset=11, constants=("w", "b") if constant else (), **SUMS)


@SETTINGS
@given(length=st.integers(3, 9), kernel=st.integers(1, 3), stride=st.integers(1, 2), pads=st.tuples(
    st.integers(0, 2), st.integers(0, 2)), seed=seeds)
def test_conv_1d(length, kernel, stride, pads, seed):
    x, w = rng_array(seed, (2, 3, length)), rng_array(seed + 1, (4, 3, kernel))
    assert_matches("Conv", [("x", x), ("w", w)], {"strides": [stride], "pads": list(pads)}, constants=("w",), **SUMS)


@SETTINGS
@given(size=st.tuples(st.integers(3, 6), st.integers(3, 6), st.integers(3, 6)), kernel=st.integers(1, 3),
       stride=st.integers(1, 2), dilation=st.integers(1, 2), pad=st.integers(0, 1), groups=st.sampled_from([1, 2]),
       bias=st.booleans(), seed=seeds)
def test_conv_3d(size, kernel, stride, dilation, pad, groups, bias, seed):
    kernel = min(kernel, (min(size) + 2 * pad - 1) // dilation + 1)
    x, w = rng_array(seed, (2, 4, *size)), rng_array(seed + 1, (6, 4 // groups, kernel, kernel, kernel))
    inputs = [("x", x), ("w", w)] + ([("b", rng_array(seed + 2, (6,)))] if bias else [])
    assert_matches("Conv", inputs, {"strides": [stride] * 3, "dilations": [dilation] * 3, "pads": [pad] * 6,
                                    "group": groups}, constants=("w", "b"), **SUMS)


@SETTINGS
@given(case=conv_case(transposed=True), bias=st.booleans(), constant=st.booleans(), seed=seeds)
def test_conv_transpose(case, bias, constant, seed):
    x_shape, w_shape, c_out, attrs = case
    inputs = [("x", rng_array(seed, x_shape)), ("w", rng_array(seed + 1, w_shape))]
    if bias:
        inputs.append(("b", rng_array(seed + 2, (c_out,))))
    assert_matches("ConvTranspose", inputs, attrs, opset=11, constants=("w", "b") if constant else (), **SUMS)


@SETTINGS
@given(length=st.integers(1, 7), kernel=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 1),
       seed=seeds)
def test_conv_transpose_1d(length, kernel, stride, pad, seed):
    pad = min(pad, (kernel - 1) // 2)
    x, w = rng_array(seed, (2, 3, length)), rng_array(seed + 1, (3, 4, kernel))
    assert_matches("ConvTranspose", [("x", x), ("w", w)], {"strides": [stride], "pads": [pad, pad]},
                   constants=("w",), **SUMS)


def test_conv_transpose_output_shape():
    x, w = rng_array(0, (1, 2, 3, 3)), rng_array(1, (2, 3, 3, 3))
    for auto_pad in ("NOTSET", "SAME_UPPER", "SAME_LOWER"):
        assert_matches("ConvTranspose", [("x", x), ("w", w)],
                       {"strides": [2, 2], "output_shape": [6, 7], "auto_pad": auto_pad}, **SUMS)


# ----- normalization ------------------------------------------------------------------------------

@pytest.mark.parametrize("opset,attrs", [(7, {"momentum": 0.8}), (9, {"momentum": 0.8}), (9, {}),
                                         (14, {"training_mode": 0}), (15, {})])
@SETTINGS
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4), constant=st.booleans(), seed=seeds)
def test_batch_normalization(opset, attrs, shape, constant, seed):
    c = shape[1]
    inputs = [("x", rng_array(seed, shape)), ("s", rng_array(seed + 1, (c,))), ("b", rng_array(seed + 2, (c,))),
              ("m", rng_array(seed + 3, (c,))), ("v", rng_array(seed + 4, (c,), 0.2, 2.0))]
    assert_matches("BatchNormalization", inputs, dict(attrs, epsilon=1e-3), opset=opset,
                   constants=("s", "b", "m", "v") if constant else (), **SUMS)


def test_batch_normalization_9_with_momentum_uses_running_statistics():
    # onnx's ReferenceEvaluator takes batch statistics here; the spec (and onnxruntime) use the running ones
    x = rng_array(0, (4, 3, 2, 2))
    stats = [("s", np.ones(3, np.float32)), ("b", np.zeros(3, np.float32)), ("m", np.full(3, 5.0, np.float32)),
             ("v", np.full(3, 4.0, np.float32))]
    model, _, _ = one_node_model("BatchNormalization", [("x", x)] + stats, {"momentum": 0.5}, opset=9,
                                 constants=("s", "b", "m", "v"))
    np.testing.assert_allclose(mco.load(model)(x).detach().numpy(), (x - 5.0) / np.sqrt(4.0 + 1e-5), rtol=1e-6)
    assert_matches("BatchNormalization", [("x", x)] + stats, {"momentum": 0.5}, opset=9, constants=("s", "b", "m", "v"))


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5), data=st.data(), seed=seeds)
def test_layer_normalization(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    norm_shape = shape[axis:] if axis >= 0 else shape[len(shape) + axis:]
    constant = data.draw(st.booleans())
    inputs = [("x", rng_array(seed, shape)), ("s", rng_array(seed + 1, norm_shape)), ("b", rng_array(seed + 2, norm_shape))]
    assert_matches("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-4}, opset=17,
                   constants=("s", "b") if constant else (), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=4, max_dims=4, min_side=2, max_side=5), seed=seeds)
def test_instance_normalization_and_lrn(shape, seed):
    c = shape[1]
    x = rng_array(seed, shape)
    assert_matches("InstanceNormalization", [("x", x), ("s", rng_array(seed + 1, (c,))),
                                             ("b", rng_array(seed + 2, (c,)))], rtol=1e-4, atol=1e-5)
    assert_matches("LRN", [("x", x)], {"size": 3, "alpha": 0.01, "beta": 0.75, "bias": 1.5}, **SUMS)


# ----- pooling ------------------------------------------------------------------------------------

@st.composite
def pool_case(draw, dilated=True):
    kernel = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))] if dilated else [1, 1]
    pads = [draw(st.integers(0, (k - 1) * d // 2)) for k, d in zip(kernel * 2, dilations * 2)]
    pads = [min(p, k // 2) for p, k in zip(pads, kernel * 2)]
    size = [draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 6)) for k, d in zip(kernel, dilations)]
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": int(draw(st.booleans()))}
    if dilated and dilations != [1, 1]:
        attrs["dilations"] = dilations
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size), attrs


@SETTINGS
@given(case=pool_case(), seed=seeds)
def test_max_pool(case, seed):
    shape, attrs = case
    assert_matches("MaxPool", [("x", rng_array(seed, shape))], attrs, opset=12)


@SETTINGS
@given(case=pool_case(dilated=False), storage_order=st.integers(0, 1), seed=seeds)
def test_max_pool_indices(case, storage_order, seed):
    """The Indices output (flat positions in the input, N and C included) equals onnxruntime's; random
    floats have no ties, so the first maximum is the only one."""
    shape, attrs = case
    assert_matches("MaxPool", [("x", rng_array(seed, shape))], dict(attrs, storage_order=storage_order), opset=12,
                   n_outputs=2)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_max_pool_auto_pad(auto_pad):
    assert_matches("MaxPool", [("x", rng_array(0, (1, 2, 7, 6)))],
                   {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": auto_pad})


@SETTINGS
@given(case=pool_case(dilated=False), include_pad=st.booleans(), seed=seeds)
def test_average_pool(case, include_pad, seed):
    shape, attrs = case
    assert_matches("AveragePool", [("x", rng_array(seed, shape))], dict(attrs, count_include_pad=int(include_pad)),
                   opset=11, **SUMS)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=3, max_dims=4, min_side=1, max_side=5), seed=seeds)
def test_global_pools(shape, seed):
    x = rng_array(seed, shape)
    assert_matches("GlobalAveragePool", [("x", x)], **SUMS)
    assert_matches("GlobalMaxPool", [("x", x)])


# ----- reductions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                                     "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
@pytest.mark.parametrize("opset", [11, 13, 18])
@SETTINGS
@given(data=st.data())
def test_reduce(op_type, opset, data):
    shape = data.draw(shapes)
    x = data.draw(floats(shape, -2, 2))
    axes = data.draw(st.none() | st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                                          unique_by=lambda a: a % len(shape)))
    keepdims = data.draw(st.sampled_from([0, 1]))
    axes_as_input = opset >= 18 or (op_type == "ReduceSum" and opset >= 13)
    if axes_as_input:
        inputs = [("x", x), ("axes", None if axes is None else np.array(axes, np.int64))]
        assert_matches(op_type, inputs, {"keepdims": keepdims}, opset=opset, rtol=1e-5, atol=1e-5)
    else:
        attrs = {"keepdims": keepdims} if axes is None else {"keepdims": keepdims, "axes": axes}
        assert_matches(op_type, [("x", x)], attrs, opset=opset, rtol=1e-5, atol=1e-5)


def test_reduce_noop_with_empty_axes():
    x = rng_array(0, (2, 3))
    assert_matches("ReduceMean", [("x", x), ("axes", np.zeros(0, np.int64))], {"noop_with_empty_axes": 1}, opset=18)
    assert_matches("ReduceSum", [("x", x), ("axes", np.zeros(0, np.int64))], {"noop_with_empty_axes": 0}, opset=13)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@SETTINGS
@given(data=st.data())
def test_arg_max_min(op_type, data):
    shape = data.draw(shapes)
    x = np.round(data.draw(floats(shape, -2, 2)))    # rounded: ties, to check which index wins
    attrs = {"axis": data.draw(st.integers(-len(shape), len(shape) - 1)), "keepdims": data.draw(st.sampled_from([0, 1])),
             "select_last_index": data.draw(st.sampled_from([0, 1]))}
    assert_matches(op_type, [("x", x)], attrs, opset=13)


@SETTINGS
@given(data=st.data(), largest=st.sampled_from([0, 1]))
def test_top_k(data, largest):
    shape = data.draw(shapes)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(1, shape[axis]))
    x = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-100, 100, width=32), unique=True))
    assert_matches("TopK", [("x", x), ("k", np.array([k], np.int64))], {"axis": axis, "largest": largest},
                   opset=11, n_outputs=2)

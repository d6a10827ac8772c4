"""com.microsoft MatMulNBits -> Int4Linear (minicompress.onnx.load), on files written by onnxruntime's own
`MatMulNBitsQuantizer` (the oracle file, made by onnxruntime from a float MatMul) and by our export: the
weight decoded here is the weight onnxruntime multiplies by, bit for bit (onnxruntime run on the identity
matrix returns W^T exactly: each output is one product with 1 plus exact zeros), and a loaded model's
output is onnxruntime's within float32 summation error."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn
from minicompress import onnx as mco
from minicompress.graph import registry
from minicompress.quant.weight_only import Int4Linear

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx_ir")                    # what onnxruntime's matmul_nbits_quantizer imports
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

BLOCK_SIZES = st.sampled_from([16, 32, 64, 128])


def float_matmul(w, bias=None):
    """A float model y = x @ w (+ bias), w (K, N) an initializer, as onnxruntime's quantizer takes it."""
    k, n = w.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if bias is None else "xw"], name="mm")]
    inits = [numpy_helper.from_array(w, "w")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["xw", "b"], ["y"], name="add"))
        inits.append(numpy_helper.from_array(bias, "b"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_quantized(w, block_size, symmetric, bias=None):
    quantizer = MatMulNBitsQuantizer(float_matmul(w, bias), block_size=block_size, is_symmetric=symmetric)
    quantizer.process()
    return quantizer.model.model


def run_onnxruntime(proto, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def int4_layers(graph_module):
    return [m for m in graph_module.modules() if isinstance(m, Int4Linear)]


def summation_bound(x, w):
    """2 gamma_{K+1} |x| |W|^T: two float32 sums of the same K products in any two orders (+ a bias)."""
    k = x.shape[-1]
    u = 2.0 ** -24
    return 2 * (k + 1) * u / (1 - (k + 1) * u) * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), BLOCK_SIZES, st.booleans(), st.integers(0, 2**32 - 1))
def test_onnxruntime_quantizer_files_load_as_int4_linear(in_features, out_features, block_size, symmetric, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((in_features, out_features)).astype(np.float32)
    proto = ort_quantized(w, block_size, symmetric)
    assert [n.op_type for n in proto.graph.node] == ["MatMulNBits"]
    model = mco.load(proto)
    (layer,) = int4_layers(model)
    assert (layer.group_size, layer.symmetric) == (block_size, symmetric)
    weight = layer.dequantized_weight()
    assert np.array_equal(run_onnxruntime(proto, np.eye(in_features, dtype=np.float32)), weight.T)
    x = rng.standard_normal((3, in_features)).astype(np.float32)
    assert np.all(np.abs(model(x).data.astype(np.float64) - run_onnxruntime(proto, x)) <= summation_bound(x, weight))


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 200), st.integers(1, 40), BLOCK_SIZES, st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_our_export_loads_back_byte_for_byte(in_features, out_features, block_size, symmetric, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Int4Linear.from_float(nn.Linear(in_features, out_features, bias=bias), block_size, symmetric)
    x = rng.standard_normal((2, 3, in_features)).astype(np.float32)
    proto = mco.export(nn.Sequential(layer), mc.tensor(x))
    (loaded,) = int4_layers(mco.load(proto))
    for name in ("weight_packed", "weight_scales", "weight_zero_points", "bias"):
        a, b = getattr(layer, name), getattr(loaded, name)
        assert (a is None and b is None) or (a.data.dtype == b.data.dtype and a.data.tobytes() == b.data.tobytes())
    assert np.array_equal(mco.load(proto)(x).data, layer(mc.tensor(x)).data)     # the same kernel on the same bytes


def matmul_nbits_model(k, n, block_size, initializers, inputs, graph_inputs=(), **attrs):
    node = helper.make_node("MatMulNBits", ["x", *inputs], ["y"], name="q", domain="com.microsoft", K=k, N=n,
                            bits=attrs.pop("bits", 4), block_size=block_size, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k]),
                                            *graph_inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(v, name) for name, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def asymmetric_arrays(k=40, n=3, block_size=16, seed=0):
    w = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32)
    proto = ort_quantized(w, block_size, symmetric=False)
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def test_a_trivial_g_idx_and_a_bias_are_read_and_run_as_onnxruntime_runs_them():
    w = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    arrays = {i.name: numpy_helper.to_array(i) for i in ort_quantized(w, 16, symmetric=True).graph.initializer}
    arrays["g_idx"] = (np.arange(40) // 16).astype(np.int32)
    arrays["bias"] = np.array([0.5, -1.0, 2.0], np.float32)
    proto = matmul_nbits_model(40, 3, 16, arrays, ["w_Q4", "w_scales", "", "g_idx", "bias"])
    (layer,) = int4_layers(mco.load(proto))
    x = np.random.default_rng(1).standard_normal((4, 40)).astype(np.float32)
    w = layer.dequantized_weight()
    bound = summation_bound(x, w) + 2 * 41 * 2.0 ** -24 * np.abs(arrays["bias"])
    assert np.all(np.abs(layer(mc.tensor(x)).data.astype(np.float64) - run_onnxruntime(proto, x)) <= bound)


def test_weights_given_at_run_time_run_as_the_operator():
    """B a graph input, not a constant: the node stays an operator, computing what the layer would."""
    arrays = asymmetric_arrays()
    b = arrays.pop("w_Q4")
    proto = matmul_nbits_model(40, 3, 16, arrays, ["B", "w_scales", "w_zero_points"],
                               [helper.make_tensor_value_info("B", TensorProto.UINT8, list(b.shape))])
    model = mco.load(proto)
    assert not int4_layers(model)
    x = np.random.default_rng(2).standard_normal((5, 40)).astype(np.float32)
    (layer,) = int4_layers(mco.load(matmul_nbits_model(40, 3, 16, {**arrays, "w_Q4": b},
                                                       ["w_Q4", "w_scales", "w_zero_points"])))
    assert np.array_equal(model(x, b).data, layer(mc.tensor(x)).data)


def test_what_the_int4_layout_cannot_hold_is_refused_by_name():
    arrays = asymmetric_arrays()
    inputs = ["w_Q4", "w_scales", "w_zero_points"]
    with pytest.raises(registry.UnsupportedOperatorError, match="g_idx"):
        mco.load(matmul_nbits_model(40, 3, 16, {**arrays, "g_idx": np.zeros(40, np.int32)}, [*inputs, "g_idx"]))
    with pytest.raises(registry.UnsupportedOperatorError, match="g_idx with zero_points"):
        mco.load(matmul_nbits_model(40, 3, 16, {**arrays, "g_idx": (np.arange(40) // 16).astype(np.int32)},
                                    [*inputs, "g_idx"]))
    with pytest.raises(registry.UnsupportedOperatorError, match="zero_points of type float32"):
        mco.load(matmul_nbits_model(40, 3, 16, {**arrays, "w_zero_points": np.full((3, 3), 8, np.float32)}, inputs))
    with pytest.raises(registry.UnsupportedOperatorError, match="bits=8"):
        mco.load(matmul_nbits_model(40, 3, 16, arrays, inputs, bits=8))
    with pytest.raises(ValueError, match="scales must hold 9 float32 values"):
        mco.load(matmul_nbits_model(40, 3, 16, {**arrays, "w_scales": arrays["w_scales"][:, :2]}, inputs))
    with pytest.raises(ValueError, match="block_size must be a power of two"):
        mco.load(matmul_nbits_model(40, 3, 24, arrays, inputs))

"""One-node ONNX models built with onnx.helper, run by minicompress and by onnxruntime (the oracle); and
which integer arithmetic this host's onnxruntime uses for uint8 x int8 products (`host_arithmetic`)."""
import functools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import minicompress as mc
import minicompress.onnx as mco

_ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE,
         np.dtype(np.int64): onnx.TensorProto.INT64, np.dtype(np.int32): onnx.TensorProto.INT32,
         np.dtype(np.bool_): onnx.TensorProto.BOOL, np.dtype(np.uint8): onnx.TensorProto.UINT8,
         np.dtype(np.int8): onnx.TensorProto.INT8}


def ort_session(model_bytes):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@functools.cache
def ort_saturates_u8s8():
    """True when this host's onnxruntime adds uint8 x int8 byte pairs into a saturating int16 (MLAS's AVX2
    kernels, `vpmaddubsw`, on CPUs without VNNI), found once by running MatMulInteger on a = 255, b = 127:
    exactly 4 * 255 * 127 = 129540, saturated 2 * 32767 = 65534."""
    model, feeds, _ = one_node_model("MatMulInteger", [("a", np.full((2, 4), 255, np.uint8)),
                                                       ("b", np.full((4, 3), 127, np.int8))])
    result = ort_session(model.SerializeToString()).run(None, feeds)[0]
    if np.all(result == 4 * 255 * 127):
        return False
    if np.all(result == 2 * 32767):
        return True
    raise AssertionError(f"onnxruntime's MatMulInteger gave {result.ravel()[:3]}, neither exact nor saturated")


def host_arithmetic():
    """The `arithmetic` of `minicompress.onnx.load` that reproduces this host's onnxruntime on uint8 x int8
    products: "u8s8-saturating" on an AVX2-only CPU, "exact" with VNNI (or AVX512-BW / non-x86 kernels)."""
    return "u8s8-saturating" if ort_saturates_u8s8() else "exact"


def one_node_model(op_type, inputs, attrs=None, opset=17, n_outputs=1, constants=(), domain=""):
    """A model of one node. `inputs` is a list of (name, array or None); names in `constants` become
    initializers, None an omitted optional input."""
    feeds, graph_inputs, initializers, names = {}, [], [], []
    for name, array in inputs:
        if array is None:
            names.append("")
            continue
        names.append(name)
        array = np.asarray(array)
        if name in constants:
            initializers.append(numpy_helper.from_array(array, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, _ELEM[array.dtype], array.shape))
            feeds[name] = array
    while names and not names[-1]:   # a trailing omitted input is left out, not named ""
        names.pop()
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outputs, domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "one_node", graph_inputs,
                              [onnx.ValueInfoProto(name=o) for o in outputs], initializers)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8 if opset < 21 else 10)
    return model, feeds, [name for name, a in inputs if a is not None and name not in constants]


def run_both(op_type, inputs, attrs=None, opset=17, n_outputs=1, constants=(), domain="", arithmetic="exact"):
    """(minicompress outputs, onnxruntime outputs), each a list of arrays; minicompress loads the model with
    `arithmetic` (pass `host_arithmetic()` to compare uint8 x int8 products with this host's onnxruntime)."""
    model, feeds, order = one_node_model(op_type, inputs, attrs, opset, n_outputs, constants, domain)
    data = model.SerializeToString()
    expected = ort_session(data).run(None, feeds)
    with mc.no_grad():
        result = mco.load(data, arithmetic=arithmetic)(*[feeds[name] for name in order])
    result = list(result) if isinstance(result, tuple) else [result]
    return [r.numpy() for r in result], expected


def assert_matches(op_type, inputs, attrs=None, opset=17, n_outputs=1, constants=(), rtol=1e-6, atol=1e-6,
                   domain="", arithmetic="exact"):
    ours, theirs = run_both(op_type, inputs, attrs, opset, n_outputs, constants, domain, arithmetic)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"{op_type} output {i}: shape {a.shape} != onnxruntime {b.shape}"
        assert a.dtype == b.dtype, f"{op_type} output {i}: dtype {a.dtype} != onnxruntime {b.dtype}"
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{op_type} output {i}")

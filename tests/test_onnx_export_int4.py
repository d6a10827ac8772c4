"""Int4Linear -> ONNX com.microsoft MatMulNBits, run by onnxruntime: its output within float32 summation
error of ours (both multiply x by the same float32 weight, dequantized from the same bytes)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minicompress as mc
from minicompress import nn
from minicompress import onnx as mco
from minicompress.quant.weight_only import Int4Linear

ort = pytest.importorskip("onnxruntime")


def run_onnxruntime(proto, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def summation_bound(x, layer):
    """2 gamma_{K+1} (|x| |W|^T + |b|): two float32 sums of K products and a bias, in any two orders."""
    k = layer.in_features
    u = 2.0 ** -24
    gamma = (k + 1) * u / (1 - (k + 1) * u)
    rows = np.abs(x.reshape(-1, k)).astype(np.float64)
    magnitude = rows @ np.abs(layer.dequantized_weight()).T.astype(np.float64)
    if layer.bias is not None:
        magnitude += np.abs(layer.bias.data)
    return 2 * gamma * magnitude.reshape(*x.shape[:-1], layer.out_features)


@given(st.integers(1, 130), st.integers(1, 70), st.sampled_from([16, 32, 64, 128]), st.booleans(), st.booleans(),
       st.sampled_from([(3,), (2, 5)]), st.integers(0, 2**32 - 1))
def test_matmul_nbits_equals_int4_linear(in_features, out_features, group_size, symmetric, bias, batch, seed):
    rng = np.random.default_rng(seed)
    layer = Int4Linear.from_float(nn.Linear(in_features, out_features, bias=bias), group_size, symmetric)
    x = rng.standard_normal((*batch, in_features)).astype(np.float32)
    proto = mco.export(nn.Sequential(layer), mc.tensor(x))   # traced: a model of layers
    (node,) = proto.graph.node
    assert (node.op_type, node.domain) == ("MatMulNBits", "com.microsoft")
    attrs = {a.name: a.i for a in node.attribute}
    assert attrs == {"K": in_features, "N": out_features, "bits": 4, "block_size": group_size}
    ours = layer(mc.tensor(x)).data
    theirs = run_onnxruntime(proto, x)
    assert theirs.shape == ours.shape and theirs.dtype == np.float32
    assert np.all(np.abs(theirs.astype(np.float64) - ours) <= summation_bound(x, layer))


def test_a_model_of_int4_layers_exports_whole():
    from minicompress import quant as Q
    mc.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    model = Q.quantize_int4_weights(nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5)), group_size=16,
                                    symmetric=False, method="gptq", calibrate=lambda m: m(mc.tensor(x)))
    proto = mco.export(model, mc.tensor(x))
    assert [n.op_type for n in proto.graph.node] == ["MatMulNBits", "Relu", "MatMulNBits"]
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("com.microsoft", 1)}
    # the second layer's rows are the first's outputs: allow the first layer's error carried through
    ours = model(mc.tensor(x)).data
    np.testing.assert_allclose(run_onnxruntime(proto, x), ours, rtol=1e-5, atol=1e-5)

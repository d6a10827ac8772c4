"""minicompress models written as ONNX and run by onnxruntime (the oracle): traced float models, pruned
models, and imported graphs written back."""
import numpy as np
import pytest

from onnx_harness import one_node_model, ort_session

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn, prune
from minicompress.nn import create_mobile_classifier

# float32 through a dozen layers in two runtimes: 1e-4 of the output's scale
RTOL = 1e-4


def seeded(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def randomize_batch_norms(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.data[:] = rng.uniform(-0.5, 0.5, c)
            m.running_var.data[:] = rng.uniform(0.5, 1.5, c)
            m.weight.data[:] = rng.uniform(0.5, 1.5, c)
            m.bias.data[:] = rng.uniform(-0.5, 0.5, c)
    return model.eval()


def run_exported(model, example, x, **kwargs):
    proto = mco.export(model, example, None, **kwargs)
    return ort_session(proto.SerializeToString()).run(None, {proto.graph.input[0].name: x})[0]


def assert_exports(model, example, x, **kwargs):
    expected = run_exported(model, example, x, **kwargs)
    with mc.no_grad():
        got = model(mc.tensor(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * float(np.abs(expected).max()))


def test_mobile_classifier_exports_with_a_dynamic_batch():
    mc.manual_seed(0)
    model = randomize_batch_norms(create_mobile_classifier())
    assert_exports(model, seeded(0, 1, 1, 8, 8), seeded(1, 5, 1, 8, 8))


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4, bias=False), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1), nn.ELU(),
            nn.AvgPool2d(3, stride=1, padding=1), nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(6, 12), nn.GELU(), nn.Dropout(0.3), nn.LayerNorm(12), nn.Tanh(), nn.Linear(12, 4),
            nn.Softmax(dim=-1))

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("opset", [17, 20])
def test_layer_zoo_exports(opset):
    mc.manual_seed(1)
    model = randomize_batch_norms(Chain())
    assert_exports(model, seeded(0, 2, 3, 9, 9), seeded(1, 3, 3, 9, 9), opset_version=opset)


def test_linear_on_sequences_exports_as_matmul_and_add():
    mc.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False))
    proto = mco.export(model, seeded(0, 2, 4, 5), None)
    assert [n.op_type for n in proto.graph.node] == ["MatMul", "Add", "Relu", "MatMul"]
    assert_exports(model, seeded(0, 2, 4, 5), seeded(1, 3, 4, 5))


def test_pruned_model_exports_its_masked_weights():
    mc.manual_seed(3)
    model = randomize_batch_norms(create_mobile_classifier())
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
    assert_exports(model, seeded(0, 1, 1, 8, 8), seeded(1, 2, 1, 8, 8))


def test_imported_graph_exports_back():
    mc.manual_seed(4)
    model = randomize_batch_norms(create_mobile_classifier())
    first = mco.export(model, seeded(0, 1, 1, 8, 8), None)
    graph = mco.load(first)
    x = seeded(1, 3, 1, 8, 8)
    expected = ort_session(first.SerializeToString()).run(None, {"input": x})[0]
    again = run_exported(graph, x, x)
    np.testing.assert_allclose(again, expected, rtol=RTOL, atol=RTOL * float(np.abs(expected).max()))


def test_graph_written_at_an_opset_that_changes_a_node_is_refused():
    model, _, _ = one_node_model("Softmax", [("x", seeded(0, 2, 3))], {"axis": 1}, opset=11)
    graph = mco.load(model)
    with pytest.raises(mco.ExportError, match="Softmax.*opset-1 form"):
        mco.export(graph, seeded(0, 2, 3), None, opset_version=17)
    back = mco.export(graph, seeded(0, 2, 3), None, opset_version=11)
    assert back.opset_import[0].version == 11


class TensorOpBetweenLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.b(self.a(x) * 2)


def test_a_tensor_operation_between_layers_is_reported():
    with pytest.raises(mco.ExportError, match="layer 'b'.*outside any layer"):
        mco.export(TensorOpBetweenLayers(), seeded(0, 1, 3), None)
    with pytest.raises(ValueError, match="opset_version"):
        mco.export(nn.Linear(3, 3), seeded(0, 1, 3), None, opset_version=6)

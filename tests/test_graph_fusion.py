"""graph.fuse (Conv+BN+ReLU fusion found in the data flow) against torch's fuse_fx, on an imported ONNX graph
and on the project's classifier, whose fuse_mobile_classifier now traces and fuses the graph."""
import io
import warnings

import numpy as np
import pytest
import torch

from onnx_harness import ort_session
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn, quant
from minicompress.graph import fuse, trace


def seeded(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def randomized_twin(seed=0):
    torch.manual_seed(seed)
    net = MobileClassifier().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net


def onnx_with_batch_norms(net):
    """torch.onnx.export without constant folding keeps BatchNormalization nodes (folding would fuse them)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                          input_names=["in0"], output_names=["out"], do_constant_folding=False,
                          dynamic_axes={"in0": {0: "batch"}})
    return buffer.getvalue()


def torch_fused_convs(net):
    from torch.ao.quantization.quantize_fx import fuse_fx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = fuse_fx(net)
    return [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]


def test_imported_graph_fuses_as_torchs_fuse_fx():
    net = randomized_twin()
    data = onnx_with_batch_norms(net)
    graph = mco.load(data)
    fused = fuse(graph)
    assert [n["op_type"] for n in graph.nodes].count("BatchNormalization") == 9       # the original is kept
    kinds = [n["op_type"] for n in fused.nodes]
    assert kinds.count("ConvReLU2d") == 9 and "BatchNormalization" not in kinds and "Relu" not in kinds
    ours = [fused.get_submodule(n["target"])[0] for n in fused.nodes if n["op_type"] == "ConvReLU2d"]
    theirs = torch_fused_convs(net)
    assert len(ours) == len(theirs) == 9
    for a, b in zip(ours, theirs):
        # torch.rsqrt against 1 / sqrt in float32: one ulp of the scale, so 2 ulps of the product
        np.testing.assert_allclose(a.weight.data, b.weight.detach().numpy(), rtol=3e-7, atol=0)
        np.testing.assert_allclose(a.bias.data, b.bias.detach().numpy(), rtol=3e-7, atol=1e-7)
    x = seeded(1, 4, 1, 8, 8)
    expected = ort_session(data).run(None, {"in0": x})[0]
    with mc.no_grad():
        got = fused(x).numpy()
    # float32 through ~10 layers, the BN folded first (as onnxruntime's optimizer also does)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def classifier(seed=0):
    mc.manual_seed(seed)
    model = nn.create_mobile_classifier().eval()
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[:] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_var.data[:] = rng.uniform(0.5, 1.5, m.num_features)
    return model


def test_fuse_mobile_classifier_is_the_graph_fusion_and_equals_the_eager_fusion():
    model = classifier()
    by_graph = quant.fuse_mobile_classifier(model)
    by_names = quant.fuse_modules(model, quant.find_fusable_patterns(model))
    a, b = by_graph.state_dict(), by_names.state_dict()
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key].data if hasattr(a[key], "data") else a[key],
                                      b[key].data if hasattr(b[key], "data") else b[key])
    assert [type(m) for m in by_graph.modules()] == [type(m) for m in by_names.modules()]
    x = seeded(2, 3, 1, 8, 8)
    with mc.no_grad():
        np.testing.assert_array_equal(by_graph(mc.Tensor(x)).numpy(), by_names(mc.Tensor(x)).numpy())
        graph = fuse(model, x)
        np.testing.assert_array_equal(graph(x).numpy(), by_graph(mc.Tensor(x)).numpy())


class RegisteredOutOfOrder(nn.Module):
    """relu and bn registered before the conv they follow: registration order finds nothing to fuse."""

    def __init__(self):
        super().__init__()
        self.relu, self.bn, self.conv = nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Linear(3 * 4 * 4, 2)
        self.flatten = nn.Flatten()

    def forward(self, x):
        return self.head(self.flatten(self.relu(self.bn(self.conv(x)))))


def test_fusion_follows_the_data_flow_not_the_registration_order():
    model = RegisteredOutOfOrder().eval()
    model.bn.running_var.data[:] = [0.5, 2.0, 1.5]
    assert quant.find_fusable_patterns(model) == []
    fused = quant.fuse_mobile_classifier(model, example_inputs=seeded(0, 1, 2, 4, 4))
    assert isinstance(fused.conv, quant.ConvReLU2d)
    assert isinstance(fused.bn, nn.Identity) and isinstance(fused.relu, nn.Identity)
    x = seeded(1, 5, 2, 4, 4)
    with mc.no_grad():
        # BN folded into the conv's weights: float32 rounding of the folded product, relative to the output
        expected = model(mc.Tensor(x)).numpy()
        np.testing.assert_allclose(fused(mc.Tensor(x)).numpy(), expected, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(expected).max()))


def test_fuse_needs_example_inputs_to_trace_a_module():
    with pytest.raises(ValueError, match="example_inputs"):
        fuse(RegisteredOutOfOrder().eval())
    traced = trace(RegisteredOutOfOrder().eval(), seeded(0, 1, 2, 4, 4))
    qat = fuse(traced.train(), is_qat=True)
    assert type(qat.get_submodule("conv")).__name__ == "ConvBnReLU2d"

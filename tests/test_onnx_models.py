"""Whole models exported by torch.onnx.export (the TorchScript exporter, dynamo=False), loaded here and
compared with onnxruntime to 1e-4 relative; and what a GraphModule must support as a Module: a listing,
state_dict, save/load without pickle, pruning and dynamic quantization of its imported layers."""
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from onnx_harness import ort_session
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn, prune
from minicompress.graph import GraphModule, UnsupportedOperatorError

# float32 through ~10 layers: both runtimes round each sum differently, 1e-4 of the output's scale holds
RTOL = 1e-4


def export(model, example, opset, dynamic_axes=None):
    buffer = io.BytesIO()
    names = [f"in{i}" for i in range(len(example))]
    torch.onnx.export(model.eval(), tuple(torch.from_numpy(e) for e in example), buffer, opset_version=opset,
                      dynamo=False, input_names=names, output_names=["out"], dynamic_axes=dynamic_axes)
    return buffer.getvalue()


def assert_close_to_onnxruntime(data, inputs):
    expected = ort_session(data).run(None, {f"in{i}": x for i, x in enumerate(inputs)})[0]
    with mc.no_grad():
        got = mco.load(data)(*inputs).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=RTOL * float(np.abs(expected).max()))
    return got


def seeded(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def randomize_batch_norms(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


class SmallCNN(torch.nn.Module):
    """Conv/BN/ReLU, a residual add, max and average pooling, a transposed conv, concat, upsampling,
    hardswish and a classifier: the operators a CNN export uses."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.res = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.down = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.up = torch.nn.ConvTranspose2d(12, 4, 2, stride=2)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = torch.nn.functional.max_pool2d(x, 2)
        y = torch.nn.functional.hardswish(self.down(x))
        z = torch.cat([self.up(y), torch.nn.functional.interpolate(y, scale_factor=2.0)[:, :4]], dim=1)
        z = torch.nn.functional.avg_pool2d(z, 3, stride=2, padding=1)
        z = torch.nn.functional.adaptive_avg_pool2d(torch.clamp(z, -1.0, 2.0), 1).flatten(1)
        return torch.softmax(self.head(torch.cat([z, z], dim=1)), dim=-1)


class Encoder(torch.nn.Module):
    """A transformer-encoder block written out (attention by matmul, softmax, layer norm, GELU), so that the
    export keeps the batch and sequence dimensions dynamic."""

    def __init__(self, dim=16, heads=4, hidden=32):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.ff1, self.ff2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)

    def forward(self, x, mask):
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + mask[:, None, None, :]
        attn = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = self.norm1(x + self.proj(attn))
        return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


@pytest.mark.parametrize("opset", [9, 13, 17])
def test_small_cnn_matches_onnxruntime(opset):
    torch.manual_seed(0)
    net = randomize_batch_norms(SmallCNN())
    data = export(net, [seeded(0, 2, 3, 16, 16)], opset, {"in0": {0: "batch"}})
    assert_close_to_onnxruntime(data, [seeded(1, 3, 3, 16, 16)])   # another batch size than exported


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_encoder_with_dynamic_batch_and_length_matches_onnxruntime(opset):
    torch.manual_seed(0)
    example = [seeded(0, 2, 5, 16), np.zeros((2, 5), np.float32)]
    data = export(Encoder(), example, opset, {"in0": {0: "n", 1: "t"}, "in1": {0: "n", 1: "t"}})
    mask = np.where(np.arange(7)[None, :] < np.array([[7], [4], [2]]), 0.0, -1e4).astype(np.float32)
    assert_close_to_onnxruntime(data, [seeded(1, 3, 7, 16), mask])


@pytest.mark.parametrize("opset", [14, 17])
def test_torch_transformer_encoder_matches_onnxruntime(opset):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, activation="gelu")
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    data = export(encoder, [seeded(0, 2, 5, 16)], opset)   # this exporter bakes the shapes of attention in
    assert_close_to_onnxruntime(data, [seeded(1, 2, 5, 16)])


def mobile_classifier_onnx(opset=17):
    torch.manual_seed(0)
    net = randomize_batch_norms(MobileClassifier())
    return export(net, [seeded(0, 1, 1, 8, 8)], opset, {"in0": {0: "batch"}})


def test_mobile_classifier_matches_onnxruntime_and_imports_as_layers():
    data = mobile_classifier_onnx()
    assert_close_to_onnxruntime(data, [seeded(1, 4, 1, 8, 8)])
    model = mco.load(data)
    kinds = [type(m).__name__ for _, m in model.named_children()]
    # the exporter folds each BatchNorm into its conv: the stem's and the blocks' 9 convs and the classifier
    assert kinds.count("Conv2d") == 9 and kinds.count("Linear") == 1


def test_weights_shared_through_identity_still_become_layers():
    # an untrained classifier has equal folded biases, which the exporter shares through Identity nodes
    torch.manual_seed(0)
    model = mco.load(export(MobileClassifier(), [seeded(0, 1, 1, 8, 8)], 17, {"in0": {0: "batch"}}))
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 9
    assert not [n for n in model.nodes if n["kind"] == "op" and n["op_type"] in ("Conv", "Identity")]


def test_graph_listing_names_layers_and_operators():
    model = mco.load(mobile_classifier_onnx())
    text = str(model.graph)
    assert text.startswith("graph(%in0: float32[batch, 1, 8, 8]):")
    assert "Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)) from Conv" in text
    assert "= Add(" in text and "= GlobalAveragePool(" in text and "return %out" in text


def test_graph_module_round_trips_through_a_model_file(tmp_path):
    model = mco.load(mobile_classifier_onnx())
    x = seeded(2, 3, 1, 8, 8)
    path = tmp_path / "classifier.npz"
    mc.save(model, path)
    loaded = mc.load(path)
    assert isinstance(loaded, GraphModule)
    assert list(loaded.state_dict()) == list(model.state_dict())
    with mc.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert str(loaded.graph) == str(model.graph)


def test_pruning_and_dynamic_quantization_act_on_imported_layers():
    data = mobile_classifier_onnx()
    model = mco.load(data)
    x = seeded(3, 2, 1, 8, 8)
    with mc.no_grad():
        before = model(x).numpy()
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    prune.ln_structured(conv, "weight", amount=0.5, n=1, dim=0)
    zero_rows = int((np.abs(conv.weight.data).reshape(conv.out_channels, -1).sum(axis=1) == 0).sum())
    assert zero_rows == conv.out_channels // 2
    with mc.no_grad():
        pruned = model(x).numpy()
    assert not np.allclose(pruned, before)
    quantized = mc.quant.quantize_dynamic(mco.load(data), {nn.Linear})
    assert any(type(m).__name__ != "Linear" and "Linear" in type(m).__name__ for m in quantized.modules())
    with mc.no_grad():
        out = quantized(x).numpy()
    # an int8 classifier: within a few quantization steps of the float logits (scale ~1)
    np.testing.assert_allclose(out, before, atol=0.1)


def test_unsupported_operator_names_op_node_and_opset():
    node = helper.make_node("NonMaxSuppression", ["b", "s"], ["y"], name="nms_1")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 4, 4]),
                                            helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOperatorError, match=r"'NonMaxSuppression' \(node 'nms_1'\) .* opset 13"):
        mco.load(model)


def test_unknown_attribute_and_opset_out_of_range_are_errors():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    node = helper.make_node("Relu", ["x"], ["y"], name="r", made_up=3)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOperatorError, match=r"'Relu' \(node 'r', opset 13\).*made_up"):
        mco.load(model)
    old = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 5)])
    with pytest.raises(UnsupportedOperatorError, match="opset is 5"):
        mco.load(old)


def test_inputs_are_checked_against_the_graph():
    model = mco.load(mobile_classifier_onnx())
    with pytest.raises(TypeError, match="takes 1 input"):
        model(seeded(0, 1, 1, 8, 8), seeded(0, 1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"must have shape \[batch, 1, 8, 8\]"):
        model(seeded(0, 1, 1, 9, 8))
    with pytest.raises(TypeError, match="dtype float32"):
        model(np.zeros((1, 1, 8, 8), np.int64))


def test_negative_dim_value_is_a_dynamic_dimension():
    """PaddlePaddle's exporter writes a dynamic dimension as dim_value -1; onnxruntime reads it as dynamic,
    so any size is accepted there, and the static dimensions are still checked."""
    h = onnx.helper
    weight = seeded(0, 4, 3, 3, 3)
    graph = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["y"], ["z"])],
                         "paddle_like", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, -1, -1])],
                         [h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [-1, 4, -1, -1])],
                         [onnx.numpy_helper.from_array(weight, "w")])
    data = h.make_model(graph, opset_imports=[h.make_opsetid("", 11)], ir_version=8).SerializeToString()
    model = mco.load(data)
    assert model.inputs[0]["shape"] == [None, 3, None, None]
    for shape in [(6, 3, 48, 192), (1, 3, 5, 7)]:
        x = seeded(1, *shape)
        expected = ort_session(data).run(None, {"x": x})[0]
        with mc.no_grad():
            got = model(x).numpy()
        # one 27-term dot product per output: float32 rounding of the two summation orders
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"must have shape \[\?, 3, \?, \?\]"):
        model(seeded(0, 1, 2, 8, 8))
    spec = dict(model.inputs[0], shape=[-1, 3, -1, -1])   # a graph module saved with the raw -1 runs too
    raw = GraphModule([spec], model.outputs, model.nodes, dict(model.named_children()),
                      {v: model._buffers[b].data for v, (b, _) in model.constants.items()})
    with mc.no_grad():
        assert raw(seeded(1, 2, 3, 4, 5)).shape == (2, 4, 4, 5)

"""The GraphModule's inference plan (graph/inference.py): under no_grad, Conv -> BatchNormalization -> Relu/Clip
chains of an imported graph run as one fused conv kernel and single-use Relu values are overwritten in place.
The plan must give the bits of the same graph run node by node (grad enabled), agree with onnxruntime,
and never touch a value something else can still see (an input, a graph output, a value read twice)."""
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn as tnn

from onnx_harness import ort_session
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco


def export(net, shape, fold=True, output_names=("out",)):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, *shape),), buffer, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=list(output_names), do_constant_folding=fold,
                          dynamic_axes={"x": {0: "batch"}})
    return buffer.getvalue()


def randomize(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net


class Relu6Net(tnn.Module):
    """conv -> bn -> relu6 (a Clip node), conv -> relu, and a conv whose output is also a graph output."""

    def __init__(self):
        super().__init__()
        self.a = tnn.Sequential(tnn.Conv2d(2, 4, 3, 1, 1), tnn.BatchNorm2d(4), tnn.ReLU6())
        self.b = tnn.Sequential(tnn.Conv2d(4, 4, 1), tnn.ReLU())
        self.c = tnn.Conv2d(4, 3, 3, 2, 1, groups=1)

    def forward(self, x):
        h = self.b(self.a(x))
        c = self.c(h)
        return c, torch.relu(c) + h.mean()


def node_by_node(graph, x):
    """The graph's plain interpreter (grad enabled: no fused chain, nothing in place)."""
    out = graph(x)
    return tuple(o.detach().numpy() for o in out) if isinstance(out, tuple) else out.detach().numpy()


@pytest.mark.parametrize("fold", [True, False])
def test_fused_chains_give_the_bits_of_the_nodes_and_match_onnxruntime(fold):
    """fold=False keeps the BatchNormalization nodes (Conv -> BN -> Relu chains), fold=True has torch fold
    them (Conv -> Relu chains)."""
    torch.manual_seed(0)
    net = randomize(MobileClassifier(), 1)
    data = export(net, (1, 8, 8), fold=fold)
    graph = mco.load(data)
    plan = graph.inference_plan()
    assert len(plan.chains) == 9                              # the stem and both convs of the 4 blocks
    assert all((bn is not None) == (not fold) for _, bn, _ in plan.chains.values())
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((3, 1, 8, 8)).astype(np.float32)
        before = x.copy()
        with mc.no_grad():
            fused = graph(x).numpy()
        np.testing.assert_array_equal(fused, node_by_node(graph, x))
        np.testing.assert_array_equal(x, before)              # the input is never written
        expected = ort_session(data).run(None, {"x": x})[0]
        # float32 through ~10 layers; onnxruntime folds the BN (fold=False) in its own order
        np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_clip_chains_graph_outputs_and_shared_values():
    """A Clip (ReLU6) ends a chain with its bounds; a conv output that is also a graph output is neither
    fused with the Relu reading it nor overwritten by it."""
    torch.manual_seed(1)
    net = randomize(Relu6Net(), 2)
    data = export(net, (2, 9, 9), fold=False, output_names=("c", "y"))
    graph = mco.load(data)
    plan = graph.inference_plan()
    assert sorted(clip for _, _, clip in plan.chains.values()) == [(0.0, 6.0), (0.0, np.inf)]
    x = np.random.default_rng(3).standard_normal((2, 2, 9, 9)).astype(np.float32)
    with mc.no_grad():
        c, y = (t.numpy() for t in graph(x))
    c_plain, y_plain = node_by_node(graph, x)
    np.testing.assert_array_equal(c, c_plain)
    np.testing.assert_array_equal(y, y_plain)
    c_ort, y_ort = ort_session(data).run(None, {"x": x})
    assert (c < 0).any()                                      # the relu'd value was not written over c
    np.testing.assert_allclose(c, c_ort, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, y_ort, rtol=1e-5, atol=1e-5)


def test_a_hooked_conv_runs_node_by_node():
    torch.manual_seed(2)
    graph = mco.load(export(randomize(MobileClassifier(), 3), (1, 8, 8)))
    conv_node = next(n for n in graph.nodes if n["op_type"] == "Conv")
    seen = []
    graph.get_submodule(conv_node["target"]).register_forward_hook(lambda m, args, out: seen.append(out.data.copy()))
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with mc.no_grad():
        out = graph(x).numpy()
    assert len(seen) == 1 and (seen[0] < 0).any()             # the hook saw the conv's own output, before Relu
    np.testing.assert_array_equal(out, node_by_node(graph, x))


def test_plan_follows_changes_to_the_nodes():
    """Removing the Relu nodes (rewiring their readers) rebuilds the plan: no chain is left."""
    torch.manual_seed(3)
    graph = mco.load(export(randomize(MobileClassifier(), 4), (1, 8, 8)))
    assert graph.inference_plan().chains
    rename = {}
    kept = []
    for node in graph.nodes:
        node["inputs"] = [rename.get(v, v) for v in node["inputs"]]
        if node["op_type"] == "Relu":
            rename[node["outputs"][0]] = node["inputs"][0]
        else:
            kept.append(node)
    graph.nodes = kept
    graph.outputs = [rename.get(v, v) for v in graph.outputs]
    assert not graph.inference_plan().chains
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with mc.no_grad():
        out = graph(x).numpy()
    np.testing.assert_array_equal(out, node_by_node(graph, x))


class ResidualNet(tnn.Module):
    """relu(bn(conv(x)) + x): the Add reads a fresh conv output (and the input, which it must not write),
    the Relu a fresh Add output; nothing else reads either."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = tnn.Conv2d(3, 3, 3, 1, 1, bias=False), tnn.BatchNorm2d(3)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def test_add_and_relu_over_fresh_values_run_in_place_without_touching_the_input():
    torch.manual_seed(4)
    data = export(randomize(ResidualNet(), 5), (3, 7, 7))
    graph = mco.load(data)
    assert sorted(graph.nodes[i]["op_type"] for i in graph.inference_plan().inplace) == ["Add", "Relu"]
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 7)).astype(np.float32)
    before = x.copy()
    with mc.no_grad():
        out = graph(x).numpy()
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out, node_by_node(graph, x))
    np.testing.assert_allclose(out, ort_session(data).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_interleaved_conv_relu_chains_run_every_node():
    """Two conv -> relu chains written interleaved (conv a, conv b, relu a, relu b), as TFLite files order
    their branches: a chain is fused only when its nodes are consecutive, so no node between them is skipped,
    and both results are torch's."""
    from minicompress.graph.module import GraphModule
    torch.manual_seed(0)
    conv_a, conv_b = tnn.Conv2d(2, 3, 3, padding=1), tnn.Conv2d(2, 3, 1)
    layers = {}
    for name, conv in (("a", conv_a), ("b", conv_b)):
        layer = mc.nn.Conv2d(2, 3, conv.kernel_size, padding=conv.padding)
        layer.weight.data = conv.weight.detach().numpy().copy()
        layer.bias.data = conv.bias.detach().numpy().copy()
        layers[name] = layer
    nodes = [{"name": "a", "kind": "module", "target": "a", "op_type": "Conv", "inputs": ["x"], "outputs": ["ha"]},
             {"name": "b", "kind": "module", "target": "b", "op_type": "Conv", "inputs": ["x"], "outputs": ["hb"]},
             {"name": "ra", "kind": "op", "op_type": "Relu", "domain": "", "version": 6, "attrs": {},
              "inputs": ["ha"], "outputs": ["ya"]},
             {"name": "rb", "kind": "op", "op_type": "Relu", "domain": "", "version": 6, "attrs": {},
              "inputs": ["hb"], "outputs": ["yb"]}]
    graph = GraphModule([{"name": "x", "dtype": "float32", "shape": [None, 2, 5, 5]}], ["ya", "yb"], nodes, layers)
    graph.eval()
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    with mc.no_grad():
        fast = [y.numpy() for y in graph(x)]
    for got, slow in zip(fast, node_by_node(graph, x)):
        np.testing.assert_array_equal(got, slow)
    with torch.no_grad():
        expected = [torch.relu(conv(torch.from_numpy(x))).numpy() for conv in (conv_a, conv_b)]
    for got, want in zip(fast, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)   # float32 sums in another order

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


def hard_swish_graph(legacy=False):
    """h = Conv(x); y = h * Clip(h + 3, 0, 6) / 6 (hard-swish as exporters spell it); z = 1 - Relu(y);
    q = Div(Cast(z > 0, int64) * 7, 2) (an integer Div: it truncates, so it never runs in place). legacy:
    opset 6, Clip's bounds as attributes, no q."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(7, np.int64), "seven"),
             numpy_helper.from_array(np.array(2, np.int64), "two")]
    clip = (helper.make_node("Clip", ["t"], ["c"], min=0.0, max=6.0) if legacy
            else helper.make_node("Clip", ["t", "zero", "six"], ["c"]))
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["h", "three"], ["t"]), clip,
             helper.make_node("Mul", ["h", "c"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"]),
             helper.make_node("Relu", ["y"], ["r"]), helper.make_node("Sub", ["one", "r"], ["z"]),
             helper.make_node("Greater", ["z", "zero"], ["g"]), helper.make_node("Cast", ["g"], ["gi"], to=7),
             helper.make_node("Mul", ["gi", "seven"], ["g7"]), helper.make_node("Div", ["g7", "two"], ["q"])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 5, 5]),
               helper.make_tensor_value_info("q", TensorProto.INT64, [1, 3, 5, 5])]
    if legacy:
        nodes, outputs = nodes[:7], outputs[:1]
    graph = helper.make_graph(nodes, "hard_swish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6 if legacy else 13)], ir_version=8)
    return model.SerializeToString()


def test_elementwise_chains_run_in_place_with_the_bits_of_the_nodes():
    data = hard_swish_graph()
    graph = mco.load(data)
    plan = graph.inference_plan()
    in_place = sorted(graph.nodes[i]["name"] for i in plan.inplace)
    by_output = {graph.nodes[i]["outputs"][0] for i in plan.inplace}
    # h is read twice (Add, Mul) and 1, 3, 6, 7, 2 are constants: Add(h, 3) allocates; the Clip, the Mul
    # (over c), the Div, the Relu and the Sub (over r, its second input) run in place; of the integer chain
    # the Mul reads a Cast (not known to be fresh) and allocates, and its Div is planned in place but
    # declines at run time (an integer Div truncates)
    assert by_output == {"c", "m", "y", "r", "z", "q"}, in_place
    assert plan.clips == {i: (0.0, 6.0) for i in plan.inplace if graph.nodes[i]["op_type"] == "Clip"}
    x = np.random.default_rng(1).uniform(-5, 5, (1, 2, 5, 5)).astype(np.float32)
    before = x.copy()
    with mc.no_grad():
        z, q = (o.numpy() for o in graph(x))
    np.testing.assert_array_equal(x, before)
    expected_z, expected_q = node_by_node(graph, x)
    np.testing.assert_array_equal(z, expected_z)
    np.testing.assert_array_equal(q, expected_q)
    theirs = ort_session(data).run(None, {"x": x})
    np.testing.assert_allclose(z, theirs[0], rtol=1e-6, atol=1e-5)   # a 18-term float32 conv sum, then exact ops
    np.testing.assert_array_equal(q, theirs[1])


def test_clip_6_and_legacy_binaries_never_run_in_place():
    """Clip-6 clamps to float32's range by default and opset-6 binaries broadcast by attribute: they run
    node by node (only the Relu, the same at every opset, runs in place)."""
    data = hard_swish_graph(legacy=True)
    graph = mco.load(data)
    assert {graph.nodes[i]["op_type"] for i in graph.inference_plan().inplace} == {"Relu"}
    x = np.random.default_rng(2).uniform(-5, 5, (1, 2, 5, 5)).astype(np.float32)
    with mc.no_grad():
        z = graph(x).numpy()
    np.testing.assert_array_equal(z, node_by_node(graph, x))     # (onnxruntime has no kernels of opset 6)

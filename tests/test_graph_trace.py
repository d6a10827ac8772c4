"""graph.trace (the project's models as GraphModules) and graph.patterns (chains found in the data flow)."""
import numpy as np
import pytest

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn
from minicompress.graph import GraphModule, TraceError, trace
from minicompress.graph.patterns import (CONV_BN, CONV_BN_RELU, CONV_RELU, DEFAULT_PATTERNS, LINEAR_RELU, clip_bounds,
                                         find_chains, node_by_name)


def seeded(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def classifier(seed=0):
    mc.manual_seed(seed)
    return nn.create_mobile_classifier().eval()


def test_trace_keeps_the_layers_their_names_and_the_outputs():
    model = classifier()
    graph = trace(model, seeded(0, 1, 1, 8, 8))
    assert isinstance(graph, GraphModule)
    assert list(graph.state_dict()) == list(model.state_dict())
    assert graph.get_submodule("blocks.1.conv.depthwise") is model.blocks[1].conv.depthwise
    add = node_by_name(graph, "blocks_1_skip_add")
    assert add["op_type"] == "Add" and add["inputs"] == ["blocks_1_conv_relu2", "blocks_0_conv_relu2"]
    x = seeded(1, 5, 1, 8, 8)                       # another batch size: the batch dimension is dynamic
    with mc.no_grad():
        np.testing.assert_array_equal(graph(x).numpy(), model(mc.Tensor(x)).numpy())


class TensorOpBetweenLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.b(self.a(x) * 2)


def test_trace_reports_a_tensor_operation_outside_layers():
    with pytest.raises(TraceError, match="layer 'b'.*outside any layer"):
        trace(TensorOpBetweenLayers(), seeded(0, 1, 3))


def test_chains_are_found_in_traced_and_imported_graphs_alike():
    model = classifier()
    x = seeded(0, 1, 1, 8, 8)
    traced = find_chains(trace(model, x))
    imported = find_chains(mco.load(mco.export(model, x).SerializeToString()))
    # the stem and both convs of each of 4 blocks; the exporter names nodes by the layers' dotted names
    assert len(traced) == len(imported) == 9
    assert [[n.replace(".", "_") for n in chain] for chain in imported] == traced
    assert traced[0] == ["stem_0", "stem_1", "stem_2"]


class Branchy(nn.Module):
    """conv1's output feeds bn1 and the add, so conv1 -> bn1 is no chain; bn1 -> relu6 ends in a Clip."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU6()
        self.add = nn.Add()
        self.conv2, self.relu2 = nn.Conv2d(2, 2, 1), nn.ReLU()
        self.flatten, self.fc, self.relu3 = nn.Flatten(), nn.Linear(8, 3), nn.ReLU()

    def forward(self, x):
        h = self.conv1(x)
        y = self.add(self.relu(self.bn1(h)), h)
        y = self.relu2(self.conv2(y))
        return self.relu3(self.fc(self.flatten(y)))


def test_a_value_read_twice_breaks_a_chain_and_patterns_match_in_order():
    graph = trace(Branchy().eval(), seeded(0, 1, 2, 2, 2))
    assert find_chains(graph) == [["conv2", "relu2"], ["fc", "relu3"]]
    assert find_chains(graph, [("BatchNormalization", "Clip")]) == [["bn1", "relu"]]
    assert find_chains(graph, [(nn.Conv2d,), CONV_RELU]) == [["conv1"], ["conv2"]]   # first pattern wins
    assert find_chains(graph, [LINEAR_RELU]) == [["fc", "relu3"]]
    assert clip_bounds(graph, node_by_name(graph, "relu")) == (0.0, 6.0)
    with pytest.raises(ValueError, match="list of step tuples"):
        find_chains(graph, CONV_BN)
    assert DEFAULT_PATTERNS[0] == CONV_BN_RELU


def test_clip_bounds_of_an_imported_clip():
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Clip", ["r", "lo", "hi"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    proto = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph = mco.load(proto)
    assert clip_bounds(graph, graph.nodes[1]) == (0.0, 6.0)
    assert find_chains(graph, [("Relu", "Clip")]) == [[graph.nodes[0]["name"], graph.nodes[1]["name"]]]

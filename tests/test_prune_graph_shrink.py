"""shrink and ln_structured on imported ONNX graphs: channel dependencies read from the graph (operator
nodes Relu, Add, Concat, MaxPool, Flatten into Gemm), outputs equal to the masked graph's."""
import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_quantize_command import ConcatCNN
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco
import minicompress.prune as P
from minicompress import nn
from minicompress.graph import GraphModule
from minicompress.training import parameter_count


def exported(net, dynamic=True):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                          input_names=["in0"], output_names=["out"],
                          dynamic_axes={"in0": {0: "batch"}} if dynamic else None)
    return mco.load(buffer.getvalue())


def prune_channels(graph, amount, seed):
    """ln_structured on every dense conv; the pruned channels' biases zeroed too, so each removed channel
    is exactly zero and the shrink is exact (a nonzero constant before a padded conv cannot be folded)."""
    rng = np.random.default_rng(seed)
    for m in graph.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.out_channels > 4:
            P.ln_structured(m, "weight", amount=amount, n=2, dim=0,
                            importance_scores=mc.Tensor(rng.random(m.weight.shape).astype(np.float32)))
    P.strip_pruning(graph)
    for m in graph.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            dead = ~np.any(m.weight.data.reshape(m.out_channels, -1) != 0, axis=1)
            m.bias.data = np.where(dead, np.float32(0), m.bias.data).astype(np.float32)
    return graph


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 1000))
def test_imported_classifier_shrinks_through_residual_adds(seed):
    torch.manual_seed(seed)
    graph = prune_channels(exported(MobileClassifier()), 0.4, seed)
    assert isinstance(graph, GraphModule)
    assert {n["op_type"] for n in graph.nodes if n["kind"] == "op"} >= {"Relu", "Add", "GlobalAveragePool", "Flatten"}
    x = np.random.default_rng(seed).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with mc.no_grad():
        expected = graph(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # exact: nothing is dropped
        shrunk = P.shrink(graph)
    assert isinstance(shrunk, GraphModule) and parameter_count(shrunk) < 0.9 * parameter_count(graph)
    with mc.no_grad():
        # float32: the same products summed over fewer (zero) terms
        np.testing.assert_allclose(shrunk(x).numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    convs = [m for m in shrunk.modules() if isinstance(m, nn.Conv2d)]
    # a depthwise conv follows each pruned 1x1 or stem conv and keeps the channels it is given
    for producer, depthwise in zip(convs, convs[1:]):
        if depthwise.groups > 1:
            assert depthwise.groups == depthwise.in_channels == producer.out_channels
    tied = P.tied_output_groups(graph)
    assert any(len(group) == 2 for group in tied)     # the two convs whose outputs a residual Add joins


@pytest.mark.parametrize("dynamic", [True, False])
def test_concat_and_flatten_into_gemm_keep_channel_offsets(dynamic):
    torch.manual_seed(0)
    graph = prune_channels(exported(ConcatCNN(), dynamic), 0.5, 0)
    kinds = {n["op_type"] for n in graph.nodes if n["kind"] == "op"}
    assert {"Concat", "MaxPool", "AveragePool"} <= kinds and kinds & {"Flatten", "Reshape"}
    x = np.random.default_rng(1).standard_normal((4 if dynamic else 1, 1, 8, 8)).astype(np.float32)
    with mc.no_grad():
        expected = graph(x).numpy()
    shrunk = P.shrink(graph, example_input=x)
    convs = [m for m in shrunk.modules() if isinstance(m, nn.Conv2d)]
    left, right, mix = convs[1], convs[2], convs[3]
    assert mix.in_channels == left.out_channels + right.out_channels < 10       # concat: offsets followed
    linear = [m for m in shrunk.modules() if isinstance(m, nn.Linear)][0]
    assert linear.in_features == mix.out_channels * 2 * 2 < 32                   # flatten: channel * spatial
    with mc.no_grad():
        np.testing.assert_allclose(shrunk(x).numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_a_graph_written_by_minicompress_shrinks_through_reshape_and_batch_norm_layers():
    """mco.export writes Flatten as Reshape(x, [0, -1]) and keeps BatchNormalization: both are followed."""
    mc.manual_seed(2)
    model = nn.create_mobile_classifier().eval()
    x = np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32)
    graph = mco.load(mco.export(model, x).SerializeToString())
    assert "Reshape" in {n["op_type"] for n in graph.nodes}
    graph = prune_channels(graph, 0.5, 2)
    for m in graph.modules():                  # BN turns a removed zero channel into beta - gamma * mean / std
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data = (m.weight.data * m.running_mean.data / np.sqrt(m.running_var.data + m.eps)).astype(np.float32)
    with mc.no_grad():
        expected = graph(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = P.shrink(graph, example_input=x)
    assert [m for m in shrunk.modules() if isinstance(m, nn.Linear)][0].in_features < 64
    assert parameter_count(shrunk) < parameter_count(graph)
    with mc.no_grad():
        np.testing.assert_allclose(shrunk(x).numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

"""The passes chained on an imported ONNX model: prune -> shrink -> static (graph) or dynamic int8 -> export
again, and the exported file run by onnxruntime gives minicompress's outputs."""
import warnings

import numpy as np
import torch

from onnx_harness import ort_session
from test_prune_graph_shrink import exported, prune_channels
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco
import minicompress.prune as P
from minicompress import nn, quant
from minicompress.cli.quantize import minmax_per_channel_qconfig
from minicompress.quant.quantize_fx import convert_fx, prepare_fx


def images(seed, n):
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def test_prune_shrink_quantize_and_export_an_imported_classifier():
    torch.manual_seed(0)
    graph = prune_channels(exported(MobileClassifier()), 0.3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = P.shrink(graph)
    prepared = prepare_fx(small, minmax_per_channel_qconfig())
    with mc.no_grad():
        prepared(images(0, 32))
    int8 = convert_fx(prepared)
    x = images(1, 8)
    proto = mco.export(int8, x[:1])
    with mc.no_grad():
        ours = int8(x).numpy()
        masked = graph(x).numpy()
    theirs = ort_session(proto.SerializeToString()).run(None, {"in0": x})[0]
    step = [m for m in int8.modules() if isinstance(m, quant.modules.Linear)][0].scale
    # the same integers in onnxruntime's QDQ kernels: activations rounded as x * (1 / s) here and x / s there
    # can split a tie, one step; float32 rounding of the dequantized values on top
    assert np.abs(theirs - ours).max() <= 1.01 * step
    assert np.mean(ours.argmax(1) == masked.argmax(1)) >= 0.75          # int8 of the shrunk model still agrees
    assert sum(m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)) < \
        sum(m.out_channels for m in graph.modules() if isinstance(m, nn.Conv2d))


def test_dynamic_int8_of_an_imported_graph_exports_and_runs_in_onnxruntime():
    torch.manual_seed(1)
    graph = exported(MobileClassifier())
    dynamic = quant.quantize_dynamic(graph, {nn.Linear: quant.full_range_dynamic_qconfig})
    x = images(2, 4)
    proto = mco.export(dynamic, x[:1])
    assert "MatMulInteger" in {n.op_type for n in proto.graph.node}
    with mc.no_grad():
        ours = dynamic(x).numpy()
    theirs = ort_session(proto.SerializeToString()).run(None, {"in0": x})[0]
    # full-range inputs: onnxruntime's DynamicQuantizeLinear picks the same qparams; float32 accumulation order
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())

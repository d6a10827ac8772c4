"""Graph-mode static quantization (prepare_fx / convert_fx): an imported ONNX CNN against torch's own FX
quantization of its twin, and the mobile classifier through the eager and the graph path."""
import warnings

import numpy as np
import pytest
import torch

from test_graph_fusion import onnx_with_batch_norms, randomized_twin

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn, quant
from minicompress.quant import modules as nnq
from minicompress.quant.quantize_fx import convert_fx, prepare_fx


@pytest.fixture(autouse=True, scope="module")
def _engine(x86_engine):
    """torch's x86 quantized engine, the one minicompress's integer kernels mirror."""


def batches(seed, count=3, n=16):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 1, 8, 8)).astype(np.float32) for _ in range(count)]


def torch_fx_quantized(net, calibration):
    from torch.ao.quantization import QConfigMapping, get_default_qconfig
    from torch.ao.quantization.quantize_fx import convert_fx as t_convert, prepare_fx as t_prepare
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = t_prepare(net, QConfigMapping().set_global(get_default_qconfig("x86")),
                             (torch.from_numpy(calibration[0]),))
        with torch.no_grad():
            for x in calibration:
                prepared(torch.from_numpy(x))
        return t_convert(prepared)


@pytest.mark.parametrize("seed", [0, 1])
def test_imported_onnx_cnn_quantizes_as_torchs_fx_twin(seed):
    net = randomized_twin(seed)
    calibration = batches(seed)
    theirs = torch_fx_quantized(net, calibration)
    prepared = prepare_fx(mco.load(onnx_with_batch_norms(net)), quant.get_default_qconfig("x86"))
    observed = [n for n in prepared.nodes if n["op_type"] == "Observer"]
    # the input, 9 fused convs, 2 adds, the pool, flatten, the classifier: operator nodes are observed too
    assert {n["observes"] for n in observed} >= {"in0", "out"} and len(observed) == 15
    with mc.no_grad():
        for x in calibration:
            prepared(x)
    ours = convert_fx(prepared)
    kinds = {type(m).__name__ for m in ours.modules()}
    assert {"Quantize", "ConvReLU2d", "QuantizedAdd", "AdaptiveAvgPool2d", "Linear", "DeQuantize"} <= kinds
    x = batches(seed + 100, 1, 64)[0]
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with mc.no_grad():
        got = ours(x).numpy()
    step = [m for m in ours.modules() if isinstance(m, nnq.Linear)][0].scale
    # Same observers and qparams; the BN fold (torch.rsqrt vs 1 / sqrt, one ulp) and requantization ties
    # move an activation by one step somewhere in 10 layers: 1 output step was the most seen (seeds 0-1)
    assert np.abs(got - expected).max() <= 2 * step + 1e-6


def test_mobile_classifier_gives_the_same_int8_model_through_modules_and_graph():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier().eval()
    calibration = batches(3)
    qconfig = quant.get_default_qconfig("x86")
    fused = quant.fuse_mobile_classifier(model)
    fused.qconfig = qconfig
    eager = quant.prepare(fused)
    graph = prepare_fx(model, qconfig, calibration[0])
    with mc.no_grad():
        for x in calibration:
            eager(mc.Tensor(x))
            graph(x)
    eager, graph = quant.convert(eager), convert_fx(graph)
    for node in graph.nodes:
        a, b = graph.get_submodule(node["target"]), eager.get_submodule(node["target"])
        assert type(a) is type(b), node["target"]
        assert (getattr(a, "scale", None), getattr(a, "zero_point", None)) == \
            (getattr(b, "scale", None), getattr(b, "zero_point", None)), node["target"]
        if hasattr(a, "weight") and callable(a.weight):
            np.testing.assert_array_equal(a.weight().int_repr(), b.weight().int_repr())
            np.testing.assert_array_equal(a.bias, b.bias)
    x = batches(4, 1, 32)[0]
    with mc.no_grad():
        np.testing.assert_array_equal(graph(x).numpy(), eager(mc.Tensor(x)).numpy())


def test_convert_fx_refuses_an_uncalibrated_model_and_a_float_one():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier().eval()
    prepared = prepare_fx(model, quant.get_default_qconfig("x86"), batches(0, 1, 1)[0])
    with pytest.raises(ValueError, match="has seen no data"):
        convert_fx(prepared)
    with pytest.raises(TypeError, match="prepare_fx"):
        convert_fx(model)
    with pytest.raises(TypeError, match="qconfig_mapping"):
        prepare_fx(model, "x86", batches(0, 1, 1)[0])
    skipped = prepare_fx(model, {"": quant.get_default_qconfig("x86"), "classifier": None}, batches(0, 1, 1)[0])
    with mc.no_grad():
        skipped(batches(0, 1, 4)[0])
    converted = convert_fx(skipped)
    assert type(converted.get_submodule("classifier")) is nn.Linear       # left float, fed a dequantized value

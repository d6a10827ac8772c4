"""Models quantized by onnxruntime.quantization (QDQ and QOperator formats, per tensor and per channel,
static; and dynamic) run here with onnxruntime's results.

On CPUs with AVX2 but no VNNI onnxruntime's uint8 x int8 kernels add byte pairs into a saturating int16.
The static models are quantized with reduce_range (7-bit weights, as onnxruntime recommends for such CPUs),
for which those kernels are exact everywhere (2 * 255 * 64 < 2**15); the dynamic models keep 8-bit weights and
are loaded with the arithmetic this host's onnxruntime uses (`onnx_harness.host_arithmetic`)."""
import os

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from onnx_harness import host_arithmetic, ort_session
from test_onnx_models import Encoder, export, randomize_batch_norms
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco


class Batches(CalibrationDataReader):
    def __init__(self, name, arrays):
        self.name, self.items = name, iter(arrays)

    def get_next(self):
        x = next(self.items, None)
        return None if x is None else {self.name: x}


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    torch.manual_seed(0)
    data = export(randomize_batch_norms(MobileClassifier()), [np.zeros((1, 1, 8, 8), np.float32)], 17,
                  {"in0": {0: "batch"}})
    path = tmp_path_factory.mktemp("quant") / "classifier.onnx"
    path.write_bytes(data)
    return path


def run_both(path, x, arithmetic="exact"):
    model = onnx.load(os.fspath(path))
    expected = ort_session(model.SerializeToString()).run(None, {"in0": x})[0]
    with mc.no_grad():
        got = mco.load(model, arithmetic=arithmetic)(x).numpy()
    return got, expected, model


def output_step(model):
    """The scale of the DequantizeLinear that produces the graph's output."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    last = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert last.op_type == "DequantizeLinear"
    return float(inits[last.input[1]])


@pytest.mark.parametrize("quant_format", [QuantFormat.QDQ, QuantFormat.QOperator])
@pytest.mark.parametrize("per_channel", [False, True])
def test_statically_quantized_classifier_matches_onnxruntime(classifier_file, tmp_path, quant_format, per_channel):
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(16)]
    out = tmp_path / "int8.onnx"
    quantize_static(os.fspath(classifier_file), os.fspath(out), Batches("in0", calibration),
                    quant_format=quant_format, per_channel=per_channel, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    got, expected, model = run_both(out, rng.standard_normal((64, 1, 8, 8)).astype(np.float32))
    if quant_format == QuantFormat.QOperator:
        ops = {(n.domain, n.op_type) for n in model.graph.node}
        assert ("com.microsoft", "QLinearAdd") in ops and ("", "QLinearConv") in ops
    steps = np.abs(got - expected) / output_step(model)
    # the target: within one output step on >= 99.9% of elements, two at most anywhere
    assert np.mean(steps <= 1 + 1e-3) >= 0.999 and steps.max() <= 2 + 1e-3


def test_dynamically_quantized_models_match_onnxruntime(classifier_file, tmp_path):
    out = tmp_path / "dynamic.onnx"
    quantize_dynamic(os.fspath(classifier_file), os.fspath(out), weight_type=QuantType.QInt8)
    got, expected, model = run_both(out, np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype(np.float32),
                                    host_arithmetic())
    assert "ConvInteger" in {n.op_type for n in model.graph.node}
    # the activations are quantized at run time by the same formula, so the codes and sums agree;
    # what remains is float32 rounding of the rescaling
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_dynamically_quantized_encoder_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    path, out = tmp_path / "encoder.onnx", tmp_path / "encoder.int8.onnx"
    path.write_bytes(export(Encoder(), [np.zeros((2, 5, 16), np.float32), np.zeros((2, 5), np.float32)], 17,
                            {"in0": {0: "n", 1: "t"}, "in1": {0: "n", 1: "t"}}))
    quantize_dynamic(os.fspath(path), os.fspath(out), weight_type=QuantType.QInt8)
    model = onnx.load(os.fspath(out))
    x = np.random.default_rng(2).standard_normal((3, 7, 16)).astype(np.float32)
    mask = np.zeros((3, 7), np.float32)
    expected = ort_session(model.SerializeToString()).run(None, {"in0": x, "in1": mask})[0]
    with mc.no_grad():
        got = mco.load(model, arithmetic=host_arithmetic())(x, mask).numpy()
    # layer norms after each block: both runtimes quantize the same activations to the same codes
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

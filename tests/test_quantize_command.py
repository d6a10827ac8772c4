"""`minicompress quantize MODEL.onnx`: the QDQ file it writes against onnxruntime's quantize_static on a
torch-exported CNN (BatchNormalization kept, Concat, pools, Flatten into Gemm), a model onnxruntime fails on,
bad input; and graph-mode static int8 (quantize_fx) of the same CNN against onnxruntime's model.

Where onnxruntime runs an int8 file, both sides quantize the weights to 7 bits (reduce_range): onnxruntime's
uint8 x int8 kernels on CPUs with AVX2 but no VNNI add byte pairs into a saturating int16, exact for 7-bit
weights (2 * 255 * 64 < 2**15), so the int8 file gives the same integers in onnxruntime on every CPU."""
import io
import warnings

import numpy as np
import onnx
import pytest
import torch

from onnx_harness import ort_session

import minicompress as mc
import minicompress.onnx as mco
from minicompress import cli
from minicompress.cli.quantize import _ort_quantize_static, minmax_per_channel_qconfig, qdq_differences
from minicompress.quant.quantize_fx import convert_fx, prepare_fx


class ConcatCNN(torch.nn.Module):
    """conv-bn-relu, max pool, two branches joined by Concat, conv-relu, average pool, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.pool = torch.nn.MaxPool2d(2)
        self.left = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1), torch.nn.ReLU())
        self.right = torch.nn.Sequential(torch.nn.Conv2d(8, 6, 3, padding=1), torch.nn.ReLU())
        self.mix = torch.nn.Sequential(torch.nn.Conv2d(10, 8, 1), torch.nn.ReLU(), torch.nn.AvgPool2d(2))
        self.fc = torch.nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        h = self.pool(self.stem(x))
        h = self.mix(torch.cat([self.left(h), self.right(h)], 1))
        return self.fc(torch.flatten(h, 1))


def concat_cnn_onnx(seed):
    torch.manual_seed(seed)
    net = ConcatCNN().eval()
    with torch.no_grad():
        bn = net.stem[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False,
                          input_names=["in0"], output_names=["out"], dynamic_axes={"in0": {0: "batch"}},
                          do_constant_folding=False)
    return buffer.getvalue()


def calibration(seed, n=64):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_quantization_agrees_with_onnxruntimes_quantize_static(seed, tmp_path):
    data = concat_cnn_onnx(seed)
    path = tmp_path / "float.onnx"
    path.write_bytes(data)
    x = calibration(seed)
    prepared = prepare_fx(mco.load(data), minmax_per_channel_qconfig(reduce_range=True))
    with mc.no_grad():
        prepared(x)
    ours = convert_fx(prepared)
    kinds = {type(m).__name__ for m in ours.modules()}
    assert {"QuantizedConcat", "MaxPool2d", "AvgPool2d", "Flatten", "ConvReLU2d", "Linear"} <= kinds
    theirs = ort_session(_ort_quantize_static(str(path), "in0", [x], reduce_range=True)).run(None, {"in0": x})[0]
    ours_in_ort = ort_session(mco.export(ours, x[:1]).SerializeToString()).run(None, {"in0": x})[0]
    reference = ort_session(data).run(None, {"in0": x})[0]
    with mc.no_grad():
        got = ours(x).numpy()
    step = [m for m in ours.modules() if type(m).__name__ == "Linear"][0].scale
    # The qparams are the same as onnxruntime's (MinMax on the same data, checked by hand); our int8 file run
    # by onnxruntime gives our integers to one output step (activations rounded as x * (1 / s) here, x / s
    # there: a tie can go either way).
    assert np.abs(ours_in_ort - got).max() <= 1.01 * step        # 1 step, with float32 rounding of the values
    # onnxruntime's own model folds BN and rounds weights and biases on its own, so the two int8 models are
    # not the same integers: over seeds 0-5 (7-bit weights) they were at most 6 steps apart (mean at most 1.47),
    # and equally far from the float model (ours at most 0.4 step further). Those bounds, with margin:
    assert np.abs(got - theirs).max() <= 8 * step
    assert np.abs(got - theirs).mean() <= 2 * step
    assert np.abs(got - reference).max() <= np.abs(theirs - reference).max() + step


def test_quantize_command_writes_onnxruntimes_qdq_graph_and_prints_the_comparison(tmp_path, capsys):
    model, cal, out = tmp_path / "m.onnx", tmp_path / "cal.npy", tmp_path / "m.int8.onnx"
    model.write_bytes(concat_cnn_onnx(0))
    np.save(cal, calibration(0, 16))
    assert cli.main(["quantize", str(model), "--calibration", str(cal), "--out", str(out), "--batch-size", "8",
                     "--reduce-range"]) == 0
    text = capsys.readouterr().out
    assert "the same nodes and initializers, by name" in text, text
    assert "zero points equal on 8/8" in text and "6/6 int8 tensors identical" in text, text
    assert all(row in text for row in ("minicompress's file, minicompress", "minicompress's file, onnxruntime",
                                       "onnxruntime's file, onnxruntime", "top-1 agree"))
    proto = onnx.load(str(out))
    theirs = onnx.load_from_string(_ort_quantize_static(str(model), "in0", [calibration(0, 16)[:8],
                                                                              calibration(0, 16)[8:]],
                                                        reduce_range=True))
    d = qdq_differences(proto, theirs)
    # five Conv / Gemm weights per channel and the BatchNormalization scale per tensor
    assert d["weights"] == d["weights_identical"] == 6 and d["biases"] == d["biases_identical"]
    assert d["zero_points_equal"] == d["activations"] and d["scale_rel_diff"] <= 1e-5
    x = calibration(5, 4)
    with mc.no_grad():
        expected = mco.load(str(out))(x).numpy()
    # onnxruntime runs the same integers; its float steps between them (QuantizeLinear's x / s against
    # x * (1 / s) here) can put a value at a tie on the other side: at most one output step apart.
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    step = float(initializers["out_scale"])
    got = ort_session(proto.SerializeToString()).run(None, {"in0": x})[0]
    assert np.abs(got - expected).max() <= 1.01 * step


def test_a_model_onnxruntime_cannot_quantize_is_still_written_with_the_reason(tmp_path, capsys):
    # onnxruntime's histogram calibrators stack the batches with np.asarray, so batches of unequal sizes
    # (16 samples in batches of 6) make its quantize_static fail; minicompress pools them all the same
    model, cal, out = tmp_path / "m.onnx", tmp_path / "cal.npy", tmp_path / "m.int8.onnx"
    model.write_bytes(concat_cnn_onnx(0))
    np.save(cal, calibration(0, 16))
    argv = ["quantize", str(model), "--calibration", str(cal), "--out", str(out), "--batch-size", "6",
            "--method", "percentile"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "comparison with onnxruntime skipped: its quantize_static failed" in captured.out
    assert "Traceback" not in captured.out + captured.err and out.exists()


@pytest.mark.parametrize("case, message", [
    ("missing", "no ONNX file"),
    ("no_calibration", "no calibration file"),
    ("wrong_shape", "has shape \\[4, 3, 8, 8\\]; the model's input 'in0' is \\[\\?, 1, 8, 8\\]"),
    ("out_folder", "is a folder"),
    ("method", "--method 'kl': expected one of minmax, entropy, percentile, distribution"),
    ("percentile", "--percentile 101.0 must be a number in \\[0, 100\\]"),
    ("percentile_method", "--percentile 99.0 applies to method 'percentile' only"),
    ("bins", "--num-bins 8 must be at least --num-quantized-bins 16"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(case, message, tmp_path, capsys):
    model, cal, out = tmp_path / "m.onnx", tmp_path / "cal.npy", tmp_path / "m.int8.onnx"
    model.write_bytes(concat_cnn_onnx(0))
    np.save(cal, np.zeros((4, 3, 8, 8), np.float32) if case == "wrong_shape" else calibration(0, 4))
    argv = ["quantize", str(model), "--calibration", str(cal), "--out", str(out)]
    if case == "missing":
        argv[1] = str(tmp_path / "absent.onnx")
    elif case == "no_calibration":
        argv[3] = str(tmp_path / "absent.npy")
    elif case == "out_folder":
        argv[5] = str(tmp_path)
    argv += {"method": ["--method", "kl"], "percentile": ["--method", "percentile", "--percentile", "101"],
             "percentile_method": ["--percentile", "99"],
             "bins": ["--method", "entropy", "--num-bins", "8", "--num-quantized-bins", "16"]}.get(case, [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicompress: error: ") and "\n" not in err and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not out.exists()


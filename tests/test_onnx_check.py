"""`minicompress check`: node-by-node agreement with onnxruntime, and the first node that disagrees."""
import numpy as np
import pytest
import torch

from test_onnx_models import SmallCNN, export, randomize_batch_norms

from minicompress import cli
from minicompress.graph.ops import elementwise


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    torch.manual_seed(0)
    data = export(randomize_batch_norms(SmallCNN()), [np.zeros((1, 3, 16, 16), np.float32)], 13)
    path = tmp_path_factory.mktemp("check") / "cnn.onnx"
    path.write_bytes(data)
    return path


def test_agreeing_model_exits_0_with_a_row_per_node(cnn_file, tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert cli.main(["check", str(cnn_file), "--input", str(x)]) == 0
    out = capsys.readouterr().out
    assert "node outputs agree with onnxruntime" in out
    assert "Relu" in out and "ConvTranspose" in out and "diverges" not in out


def test_first_divergent_node_is_named(cnn_file, capsys, monkeypatch):
    # a Relu that leaks: every value after the first Relu may differ, the report must name that Relu
    monkeypatch.setattr(elementwise.Relu, "run", lambda self, x: np.where(x >= 0, x, x * np.float32(0.01)))
    assert cli.main(["check", str(cnn_file)]) == 1
    out = capsys.readouterr().out
    first = [line for line in out.splitlines() if line.startswith("first divergence")]
    assert len(first) == 1 and "(Relu)" in first[0]
    rows = [line for line in out.splitlines() if "<-- diverges" in line]
    assert rows[0].split()[1] == "Relu"


def test_missing_files_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "none.onnx")]) == 2
    assert "no ONNX file" in capsys.readouterr().err


def test_uint8_int8_saturation_is_diagnosed_on_every_cpu(tmp_path, capsys):
    """MatMulInteger on large codes (a in 200..255, b in 100..127: every byte pair above 32767): this host's
    onnxruntime either sums exactly (VNNI) or saturates each int16 pair sum (AVX2 without VNNI; found by
    `onnx_harness.host_arithmetic`). In the arithmetic that matches the host, check agrees (exit 0); in the
    other, the node diverges; and in exact arithmetic on a saturating host the diagnosis says that the
    saturating arithmetic reproduces onnxruntime, with the remedies."""
    from onnx_harness import host_arithmetic, one_node_model
    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, (3, 8)).astype(np.uint8)
    model, _, _ = one_node_model("MatMulInteger", [("a", a), ("b", rng.integers(100, 128, (8, 4)).astype(np.int8))],
                                 constants=("b",))
    path, x = tmp_path / "m.onnx", tmp_path / "a.npy"
    path.write_bytes(model.SerializeToString())
    np.save(x, a)
    matching = host_arithmetic()
    other = "exact" if matching == "u8s8-saturating" else "u8s8-saturating"
    assert cli.main(["check", str(path), "--input", str(x), "--arithmetic", matching]) == 0
    capsys.readouterr()
    assert cli.main(["check", str(path), "--input", str(x), "--arithmetic", other]) == 1
    out = capsys.readouterr().out
    assert "first divergence" in out and "(MatMulInteger)" in out
    if other == "exact":
        assert "onnxruntime saturates on this CPU" in out and "--reduce-range" in out and "U8U8" in out, out


@pytest.mark.parametrize("array, message", [
    (np.zeros((1, 3, 16, 16)), "must be tensor(float)"),                 # float64: onnxruntime refuses it too
    (np.zeros((1, 3, 16), np.float32), "must have rank 4"),
    (np.zeros((1, 2, 16, 16), np.float32), "dimension(s) [1] differ")])
def test_inputs_are_checked_as_a_session_checks_a_feed(cnn_file, tmp_path, capsys, array, message):
    np.save(tmp_path / "x.npy", array)
    assert cli.main(["check", str(cnn_file), "--input", str(tmp_path / "x.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("minicompress: error: input 'in0'") and message in captured.err

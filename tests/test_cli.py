"""The `minicompress` command: inspect, bench and predict on a saved model; bad input gives one
clear line on stderr and exit status 2, never a traceback."""
import numpy as np
import pytest

import minicompress as mc
from minicompress import cli, io, nn


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1).eval()
    model.input_shape = (1, 8, 8)
    path = tmp_path_factory.mktemp("cli") / "model.npz"
    io.save(model, path)
    return path


def test_inspect_lists_layers_and_bytes(model_file, capsys):
    assert cli.main(["inspect", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "stem.0" in out and "classifier" in out and "float32" in out and "total:" in out


def test_bench_reports_both_batch_sizes(model_file, capsys):
    assert cli.main(["bench", str(model_file), "--batch-sizes", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "batch    1" in out and "batch    4" in out
    assert "int8 GEMM route: " in out


def test_bench_of_an_int8_model_names_the_kernels_its_layers_took(tmp_path, capsys):
    from minicompress.quant.static import quantize_static
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1).eval()
    calibration = [mc.tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32))]
    qmodel = quantize_static(model, calibration)
    qmodel.input_shape = (1, 8, 8)
    io.save(qmodel, tmp_path / "int8.npz")
    assert cli.main(["bench", str(tmp_path / "int8.npz"), "--batch-sizes", "1"]) == 0
    out = capsys.readouterr().out
    assert "int8 kernels taken: " in out and "conv depthwise: direct loop" in out and "linear: qgemm " in out


def test_predict_prints_probabilities_that_sum_to_one(model_file, tmp_path, capsys):
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(model_file), str(tmp_path / "x.npy")]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("sample")]
    assert len(lines) == 3
    model = io.load(model_file).eval()
    with mc.no_grad():
        expected = model(mc.tensor(x)).data.argmax(1)
    assert [int(l.split("class ")[1].split()[0]) for l in lines] == expected.tolist()


@pytest.mark.parametrize("argv, message", [
    (["inspect", "does-not-exist.npz"], "no such model file"),
    (["bench", "{model}", "--batch-sizes", "one"], "--batch-sizes"),
    (["predict", "{model}", "{bad_shape}"], "expected (1, 8, 8)"),
    (["predict", "{not_a_model}", "{bad_shape}"], "not a minicompress model file"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, model_file, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 3), np.float32))
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    paths = dict(model=model_file, bad_shape=tmp_path / "bad.npy", not_a_model=tmp_path / "other.npz")
    assert cli.main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicompress: error:") and message in err and "\n" not in err


def test_unknown_option_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["optimize", "--quantize", "int4"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_charts_are_written_as_png_where_matplotlib_is_installed(tmp_path):
    """The `[plot]` extra: two PNG files from a report (skipped where matplotlib is not installed)."""
    pytest.importorskip("matplotlib")
    from minicompress.pipelines.classify import Report, StageResult
    from minicompress.pipelines.report import write_charts

    report = Report(rows=[StageResult("student", 0.98, 10474, 44712, 0.9, 0.1),
                          StageResult("int8", 0.97, 5445, 7334, 1.9, 0.2)])
    paths = write_charts(report, str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["accuracy_vs_size.png", "latency.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _report_with_pareto():
    from minicompress.pipelines.classify import Report, StageResult
    candidate = {"name": "all int4", "precisions": "10 int4", "bytes": 9632, "metric": 0.92, "predicted_drop": 0.064,
                 "drop": 0.025, "latency_b1_ms": 1.0, "latency_b64_ms": 0.14, "pareto": True, "chosen": False}
    chosen = dict(candidate, name="chosen", precisions="6 int8 / 4 int4", bytes=9964, metric=0.95, chosen=True)
    return Report(rows=[StageResult("student", 0.98, 10474, 44712, 0.9, 0.1)], pareto=[candidate, chosen])


def test_the_mixed_precision_candidates_are_a_second_table_and_a_json_list():
    report = _report_with_pareto()
    text = report.to_markdown()
    assert "| all int4 | 10 int4 | 9,632 | 0.9200 | 6.40 | 2.50 |" in text
    assert "| chosen | 6 int8 / 4 int4 | 9,964 | 0.9500 |" in text and text.rstrip().endswith("| * |")
    assert report.to_dict()["pareto"] == report.pareto
    assert "pareto" not in type(report)().to_dict()


def test_the_pareto_chart_is_written_where_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    from minicompress.pipelines.report import write_charts

    paths = write_charts(_report_with_pareto(), str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["accuracy_vs_size.png", "latency.png", "pareto.png"]
    with open(paths[-1], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----- optimize: every option is checked before any work starts ---------------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if `optimize` gets as far as training: every case below must stop before it."""
    import minicompress.pipelines.classify

    def refuse(*args, **kwargs):
        raise AssertionError("optimize started work despite a bad option")
    monkeypatch.setattr(minicompress.pipelines.classify, "optimize", refuse)


def _one_error_line(capsys, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert err.startswith("minicompress: error:") and "\n" not in err
    for needle in needles:
        assert needle in err


@pytest.mark.parametrize("option, value", [
    ("--seed", "-1"), ("--teacher-epochs", "-1"), ("--epochs", "0"), ("--epochs", "-3"),
    ("--prune", "1"), ("--prune", "-0.1"), ("--prune", "nan"), ("--prune", "inf"),
    ("--max-drop", "-1"), ("--max-drop", "nan"), ("--max-drop", "inf"),
    ("--max-bytes", "0"), ("--max-bytes", "-5"),
])
def test_bad_numeric_option_names_itself_and_creates_nothing(option, value, tmp_path, capsys, no_training):
    out = tmp_path / "never-created"
    assert cli.main(["optimize", "--out", str(out), option, value]) == 2
    _one_error_line(capsys, option)
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [
    (["--max-drop", "1", "--max-bytes", "9000"], ("--max-drop", "--max-bytes")),
    (["--task", "detect", "--max-drop", "1"], ("--max-drop", "--task detect")),
    (["--task", "embed", "--model", ".", "--max-bytes", "9000"], ("--max-bytes", "--task embed")),
])
def test_mixed_precision_targets_are_refused_together_or_outside_the_digits_job(args, needles, tmp_path, capsys,
                                                                                no_training):
    out = tmp_path / "never-created"
    assert cli.main(["optimize", "--out", str(out), *args]) == 2
    _one_error_line(capsys, *needles)
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys, no_training):
    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    assert cli.main(["optimize", "--out", str(existing)]) == 2
    _one_error_line(capsys, "--out", "not a folder")
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("out", ["", "/proc", "/proc/minicompress-out", "{file}/sub/dir"])
def test_out_that_cannot_be_written_is_refused_and_leaves_no_folder(out, tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["optimize", "--out", out.format(file=tmp_path / "file")]) == 2
    _one_error_line(capsys, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_out_inside_a_read_only_folder_is_refused(tmp_path, capsys, no_training):
    """A read-only folder, where the permission bits are enforced (not for root, which bypasses them)."""
    import os
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("permission bits are not enforced for this user")
        assert cli.main(["optimize", "--out", str(locked / "out")]) == 2
        _one_error_line(capsys, "--out")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_job_that_fails_removes_the_folders_it_created(tmp_path, capsys, monkeypatch):
    import minicompress.pipelines.classify

    def fail(*args, **kwargs):
        raise ValueError("the data is bad")
    monkeypatch.setattr(minicompress.pipelines.classify, "optimize", fail)
    out = tmp_path / "new" / "nested"
    assert cli.main(["optimize", "--out", str(out), "--epochs", "1"]) == 2
    _one_error_line(capsys, "the data is bad")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_keeps_an_existing_folder_and_its_files(tmp_path, capsys, monkeypatch):
    import minicompress.pipelines.classify

    def fail(*args, **kwargs):
        raise ValueError("the data is bad")
    monkeypatch.setattr(minicompress.pipelines.classify, "optimize", fail)
    (tmp_path / "model.npz").write_text("an earlier result")
    assert cli.main(["optimize", "--out", str(tmp_path), "--epochs", "1"]) == 2
    assert (tmp_path / "model.npz").read_text() == "an earlier result"


def test_optimize_help_describes_quantize_and_seed(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["optimize", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--quantize {static,dynamic,qat,none} int8 quantization" in text
    assert "--seed SEED non-negative seed" in text


def test_pipeline_refuses_a_negative_teacher_epochs_before_training():
    from minicompress.pipelines.classify import optimize

    printed = []
    with pytest.raises(ValueError, match="teacher_epochs"):
        optimize(None, None, None, None, epochs=1, teacher_epochs=-1, log=printed.append)
    assert printed == []


# ----- predict: the input preprocessing the model file records ------------------------------------

@pytest.fixture(scope="module")
def digits_model_file(tmp_path_factory):
    from minicompress.data.digits import input_preprocessing
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1).eval()
    path = tmp_path_factory.mktemp("cli") / "digits.npz"
    io.save(model, path, metadata={"input": input_preprocessing()})
    return path


def _predicted(out):
    return [int(l.split("class ")[1].split()[0]) for l in out.splitlines() if l.startswith("sample")]


def test_raw_pixel_counts_are_refused_and_scaled_with_raw(digits_model_file, tmp_path, capsys):
    from minicompress.data import load_digits
    images, _ = load_digits()
    raw = np.rint(images[:5] * 16).astype(np.int64)  # the data set's own 0..16 pixel counts
    np.save(tmp_path / "raw.npy", raw)
    assert cli.main(["predict", str(digits_model_file), str(tmp_path / "raw.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicompress: error:") and "--raw" in err and "[0, 1]" in err and "\n" not in err
    assert cli.main(["predict", str(digits_model_file), str(tmp_path / "raw.npy"), "--raw"]) == 0
    with_raw = _predicted(capsys.readouterr().out)
    np.save(tmp_path / "scaled.npy", raw.reshape(5, 64) / 16.0)  # flattened rows are accepted too
    assert cli.main(["predict", str(digits_model_file), str(tmp_path / "scaled.npy")]) == 0
    assert with_raw == _predicted(capsys.readouterr().out) and len(with_raw) == 5


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 1, 8, 8), np.float32), "no samples"),
    (np.full((2, 1, 8, 8), 17.0, np.float32), "outside [0, 1]"),
    (np.zeros((2, 1, 8, 8), bool), "real numbers"),
    (np.full((2, 64), np.nan, np.float32), "finite"),
])
def test_bad_predict_input_is_one_line(digits_model_file, tmp_path, capsys, array, message):
    np.save(tmp_path / "x.npy", array)
    assert cli.main(["predict", str(digits_model_file), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicompress: error:") and message in err and "\n" not in err


def test_predict_help_states_the_expected_input(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "(1, 8, 8)" in out and "[0, 1]" in out and "--raw" in out and "empty batch" in out


def test_inspect_shows_the_recorded_input(digits_model_file, capsys):
    assert cli.main(["inspect", str(digits_model_file)]) == 0
    assert "input: shape (1, 8, 8) float32, values in [0, 1]" in capsys.readouterr().out


def _crafted(tmp_path, kind):
    import json
    import zipfile
    path = tmp_path / f"{kind}.npz"
    model = nn.Linear(64, 10)
    io.save(model, path, metadata={"input": {"shape": [1, 8, 8], "range": [0.0, 1.0]}})
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header_npy = members["__format__.json.npy"]
    start = header_npy.index(b"\n") + 1
    header = json.loads(header_npy[start:])
    if kind == "deep":
        text = json.dumps(header).replace('"metadata": {', '"metadata": {"x": ' + "[" * 3000 + "]" * 3000 + ", ")
    else:
        if kind == "in_features":
            header["model"]["attributes"]["in_features"] = 65
        elif kind == "version":
            header["version"] = True
        elif kind == "metadata":
            header["metadata"]["input"]["shape"] = "eight"
        elif kind == "conv":  # a Linear's entry relabelled as a Conv2d: loads without its conv attributes
            header["model"]["class"] = "minicompress.nn.layers.Conv2d"
        text = json.dumps(header)
    np.savez(path, **{"__format__.json": np.frombuffer(text.encode(), np.uint8)})
    with zipfile.ZipFile(path, "a") as z:
        for name, data in members.items():
            if name != "__format__.json.npy":
                z.writestr(name, data)
    return path


@pytest.mark.parametrize("kind", ["deep", "in_features", "version", "metadata", "conv", "npy"])
@pytest.mark.parametrize("command", ["inspect", "predict"])
def test_crafted_model_files_are_one_error_line(tmp_path, capsys, kind, command):
    if kind == "npy":
        path = tmp_path / "model.npy"
        np.save(path, np.zeros(3))
    else:
        path = _crafted(tmp_path, kind)
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    argv = [command, str(path)] + ([str(tmp_path / "x.npy")] if command == "predict" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicompress: error:") and "\n" not in err


# ----- .onnx files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """A float and an int8 (QDQ) export of the mobile classifier, a file that is not ONNX, and one whose
    operator minicompress does not implement."""
    onnx = pytest.importorskip("onnx")
    import minicompress.onnx as mco
    from minicompress import quant
    folder = tmp_path_factory.mktemp("cli_onnx")
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1).eval()
    x = mc.tensor(np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32))
    mco.export(model, x, folder / "float.onnx")
    fused = quant.fuse_mobile_classifier(model)
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    with mc.no_grad():
        prepared(x)
    int8 = quant.convert(prepared)
    mco.export(int8, x, folder / "int8.onnx")
    (folder / "garbage.onnx").write_bytes(b"\x08\x07 these bytes are not a protobuf ModelProto \xff\xff")
    h = onnx.helper
    graph = h.make_graph([h.make_node("Einsum", ["a", "a"], ["y"], equation="ij,ij->i")], "g",
                         [h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 2])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(folder / "einsum.onnx"))
    return dict(folder=folder, model=model, int8=int8)


def test_inspect_onnx_lists_operators_and_initializer_bytes(onnx_files, capsys):
    assert cli.main(["inspect", str(onnx_files["folder"] / "int8.onnx")]) == 0
    out = capsys.readouterr().out
    assert "input: input float32 ['batch', 1, 8, 8]" in out
    assert "QuantizeLinear" in out and "Conv 9" in out and "QDQ format" in out
    weights = [m.weight() for m in onnx_files["int8"].modules() if hasattr(m, "_weight")]
    # int8: the weight codes and their zero points (one per output channel, or one per tensor)
    int8_bytes = sum(w.int_repr().nbytes + (w.shape[0] if w.is_per_channel() else 1) for w in weights)
    assert f"int8 {int8_bytes:,}" in out


def test_bench_onnx_times_minicompress_and_onnxruntime(onnx_files, capsys):
    pytest.importorskip("onnxruntime")
    assert cli.main(["bench", str(onnx_files["folder"] / "int8.onnx"), "--batch-sizes", "1,2"]) == 0
    out = capsys.readouterr().out
    for batch in ("batch    1", "batch    2"):
        line = next(l for l in out.splitlines() if l.startswith(batch))
        assert "minicompress" in line and "onnxruntime" in line and "minicompress / onnxruntime" in line
        assert "int8 layers" in line


def test_bench_threads_sets_both_sides_and_says_how_they_wait(onnx_files, capsys):
    pytest.importorskip("onnxruntime")
    import numba
    before = numba.get_num_threads()
    assert cli.main(["bench", str(onnx_files["folder"] / "float.onnx"), "--batch-sizes", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "threads: 1 each" in out and "intra_op_num_threads=1" in out and "allow_spinning=0" in out
    assert "OMP_WAIT_POLICY=" in out
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("threads, message", [("0", "must be a positive integer"), ("4096", "NUMBA_NUM_THREADS")])
def test_bench_refuses_a_thread_count_it_cannot_run(onnx_files, threads, message, capsys):
    assert cli.main(["bench", str(onnx_files["folder"] / "float.onnx"), "--threads", threads]) == 2
    _one_error_line(capsys, message)


def test_predict_onnx_with_dynamic_dimensions_takes_the_arrays(tmp_path, capsys):
    """An input declared (batch, 3, '?', '?') takes any height and width; a wrong channel count is one error
    line naming the input, as the InferenceSession words it."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    h = onnx.helper
    graph = h.make_graph([h.make_node("GlobalAveragePool", ["x"], ["p"]), h.make_node("Flatten", ["p"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3, "?", "?"])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])])
    path = tmp_path / "pool.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), str(path))
    x = np.random.default_rng(3).random((2, 3, 5, 7), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(path), str(tmp_path / "x.npy")]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("sample")]
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0].argmax(1)
    assert [int(l.split("class ")[1].split()[0]) for l in lines] == expected.tolist()
    np.save(tmp_path / "bad.npy", np.zeros((2, 4, 5, 7), np.float32))
    assert cli.main(["predict", str(path), str(tmp_path / "bad.npy")]) == 2
    _one_error_line(capsys, "input 'x'", "dimension(s) [1] differ")


@pytest.mark.parametrize("name, kind", [("float.onnx", "model"), ("int8.onnx", "int8")])
@pytest.mark.parametrize("how", ["positional", "--input"])
def test_predict_onnx_gives_the_models_classes(onnx_files, name, kind, how, tmp_path, capsys):
    x = np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", str(onnx_files["folder"] / name)]
    argv += [str(tmp_path / "x.npy")] if how == "positional" else ["--input", str(tmp_path / "x.npy")]
    assert cli.main(argv) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("sample")]
    with mc.no_grad():
        logits = onnx_files[kind](mc.tensor(x)).numpy()
    # the int8 export runs as float QDQ arithmetic when loaded: its logits are within one output step of
    # the int8 model's, so only samples whose top two logits are further apart than that must agree
    top2 = np.sort(logits, axis=1)[:, -2:]
    step = onnx_files["int8"].classifier.scale if kind == "int8" else 0.0
    decided = top2[:, 1] - top2[:, 0] > 2 * step
    assert decided.any()
    predicted = np.array([int(l.split("class ")[1].split()[0]) for l in lines])
    assert (predicted[decided] == logits.argmax(1)[decided]).all()


@pytest.mark.parametrize("command", ["inspect", "bench", "predict"])
@pytest.mark.parametrize("name, message", [("garbage.onnx", "is not an ONNX model"),
                                           ("einsum.onnx", "'Einsum'"), ("missing.onnx", "no such ONNX file")])
def test_bad_onnx_files_are_one_error_line(onnx_files, command, name, message, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    argv = [command, str(onnx_files["folder"] / name)] + (["--input", str(tmp_path / "x.npy")]
                                                          if command == "predict" else [])
    assert cli.main(argv) == 2
    _one_error_line(capsys, message, name)


def test_predict_onnx_refuses_input_of_the_wrong_shape_and_two_inputs(onnx_files, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 3), np.float32))
    path = str(onnx_files["folder"] / "float.onnx")
    assert cli.main(["predict", path, "--input", str(tmp_path / "x.npy")]) == 2
    _one_error_line(capsys, "expected (1, 8, 8)")
    assert cli.main(["predict", path, str(tmp_path / "x.npy"), "--input", str(tmp_path / "x.npy")]) == 2
    _one_error_line(capsys, "not both")


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """A Conv + GlobalAveragePool + Flatten model whose input is [-1, 3, -1, -1] (PaddlePaddle's dynamic dims)."""
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"]), h.make_node("GlobalAveragePool", ["y"], ["p"]),
                          h.make_node("Flatten", ["p"], ["z"])],
                         "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, -1, -1])],
                         [h.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [-1, 4])],
                         [onnx.numpy_helper.from_array(weight, "w")])
    path = tmp_path_factory.mktemp("cli_dynamic") / "dynamic.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_bench_onnx_with_dynamic_dims_asks_for_either_shape_form(dynamic_onnx, capsys):
    assert cli.main(["bench", str(dynamic_onnx), "--batch-sizes", "1"]) == 2
    _one_error_line(capsys, "input 'x'", "3 dims of one sample or all 4 dims", "--batch-sizes")


@pytest.mark.parametrize("shape", ["3,12,20", "1,3,12,20", "5,3,12,20"])
def test_bench_onnx_takes_one_samples_shape_or_the_full_shape(dynamic_onnx, shape, capsys):
    assert cli.main(["bench", str(dynamic_onnx), "--batch-sizes", "1,2", "--input-shape", shape]) == 0
    out = capsys.readouterr().out
    assert "batch    1: minicompress" in out and "batch    2: minicompress" in out


@pytest.mark.parametrize("shape, message", [("12,20", "has 2 dims; the model's input 'x' is [?, 3, ?, ?]: give"),
                                            ("1,1,3,12,20", "has 5 dims"), ("3,0,20", "positive integers"),
                                            ("1,2,12,20", "the input has 2 channels; the model's first layer "
                                                          "expects 3 (the model's input 'x' is [?, 3, ?, ?])")])
def test_bench_onnx_refuses_a_shape_of_another_rank_or_channels(dynamic_onnx, shape, message, capsys):
    assert cli.main(["bench", str(dynamic_onnx), "--input-shape", shape]) == 2
    _one_error_line(capsys, message)


def test_bench_model_file_takes_the_full_shape_too(model_file, capsys):
    assert cli.main(["bench", str(model_file), "--batch-sizes", "2", "--input-shape", "1,1,8,8"]) == 0
    assert "batch    2: " in capsys.readouterr().out


@pytest.mark.parametrize("shape", ["3,8,8", "1,3,8,8"])
def test_bench_names_the_channels_of_a_one_channel_model(model_file, shape, capsys):
    assert cli.main(["bench", str(model_file), "--input-shape", shape]) == 2
    _one_error_line(capsys, f"--input-shape {shape}: the input has 3 channels; the model's first layer expects 1")


def test_bench_of_a_model_without_input_shape_names_the_channels(tmp_path, capsys):
    """A model file recording no input shape runs the given one; its first conv names the channels."""
    mc.manual_seed(0)
    path = tmp_path / "bare.npz"
    io.save(nn.create_mobile_classifier(10, 1).eval(), path)
    assert cli.main(["bench", str(path), "--input-shape", "3,8,8", "--batch-sizes", "1"]) == 2
    assert "the input has 3 channels; the convolution expects 1" in capsys.readouterr().err


def test_predict_onnx_with_dynamic_dims_takes_any_size_the_graph_accepts(dynamic_onnx, tmp_path, capsys):
    x = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["predict", str(dynamic_onnx), str(tmp_path / "x.npy")]) == 0
    assert len([l for l in capsys.readouterr().out.splitlines() if l.startswith("sample")]) == 2
    np.save(tmp_path / "bad.npy", x[:, :2])
    assert cli.main(["predict", str(dynamic_onnx), str(tmp_path / "bad.npy")]) == 2
    _one_error_line(capsys, "must have shape [?, 3, ?, ?], got (2, 2, 12, 20)")


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
    from minicompress.pipeline import Report, StageResult

    report = Report(rows=[StageResult("student", 0.98, 10474, 44712, 0.9, 0.1),
                          StageResult("int8", 0.97, 5445, 7334, 1.9, 0.2)])
    paths = cli._write_charts(report, str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["accuracy_vs_size.png", "latency.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

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


# ----- optimize: every option is checked before any work starts ---------------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if `optimize` gets as far as training: every case below must stop before it."""
    import minicompress.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("optimize started work despite a bad option")
    monkeypatch.setattr(minicompress.pipeline, "optimize", refuse)


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
])
def test_bad_numeric_option_names_itself_and_creates_nothing(option, value, tmp_path, capsys, no_training):
    out = tmp_path / "never-created"
    assert cli.main(["optimize", "--out", str(out), option, value]) == 2
    _one_error_line(capsys, option)
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
    import minicompress.pipeline

    def fail(*args, **kwargs):
        raise ValueError("the data is bad")
    monkeypatch.setattr(minicompress.pipeline, "optimize", fail)
    out = tmp_path / "new" / "nested"
    assert cli.main(["optimize", "--out", str(out), "--epochs", "1"]) == 2
    _one_error_line(capsys, "the data is bad")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_job_keeps_an_existing_folder_and_its_files(tmp_path, capsys, monkeypatch):
    import minicompress.pipeline

    def fail(*args, **kwargs):
        raise ValueError("the data is bad")
    monkeypatch.setattr(minicompress.pipeline, "optimize", fail)
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
    from minicompress.pipeline import optimize

    printed = []
    with pytest.raises(ValueError, match="teacher_epochs"):
        optimize(None, None, None, None, epochs=1, teacher_epochs=-1, log=printed.append)
    assert printed == []

"""The end-to-end job on digits, shortened (few epochs) so it fits the test budget; the full-length
figures are in benchmarks/RESULTS.md (bench_pipeline.py)."""
import json

import numpy as np
import pytest

import minicompress as mc
from minicompress import io
from minicompress.models import create_teacher_classifier
from minicompress.nn import create_mobile_classifier
from minicompress.pipelines.classify import optimize
from minicompress.training import digits_loaders


@pytest.fixture(scope="module")
def report():
    mc.manual_seed(0)
    train, test = digits_loaders(seed=0)
    return optimize(create_mobile_classifier(), create_teacher_classifier(), train, test, prune=0.3,
                    structured=True, quantize="static", epochs=6, finetune_epochs=2, progress=False, log=None,
                    latency_repeat=3)


def test_report_has_a_row_per_stage_with_consistent_ratios(report):
    assert [r.stage for r in report.rows] == ["teacher", "student", "distilled", "pruned", "int8"]
    student = report.row("student")
    for r in report.rows:
        assert r.bytes > 0 and r.parameters > 0 and r.latency_b1_ms > 0 and r.latency_b64_ms > 0
        assert r.size_vs_student == pytest.approx(student.bytes / r.bytes)
    assert report.row("pruned").parameters < report.row("distilled").parameters  # shrink removed channels
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["stages"]) == 5 and data["settings"]["quantize"] == "static"
    assert report.to_markdown().count("\n") == 6


def test_int8_student_is_4x_smaller_and_quantization_costs_under_a_point(report):
    # With this shortened training the pruning stage has not recovered fully; the full-length comparison
    # against the float student (defaults, several seeds) is benchmarks/bench_pipeline.py's.
    pruned, final = report.row("pruned"), report.row("int8")
    assert final.size_vs_student >= 4.0
    assert final.accuracy >= pruned.accuracy - 0.01 - 1e-9, (final.accuracy, pruned.accuracy)
    assert final.accuracy >= 0.9


def test_final_model_round_trips_through_a_file(report, tmp_path):
    model = report.models["int8"]
    io.save(model, tmp_path / "int8.npz")
    loaded = io.load(tmp_path / "int8.npz")
    x = mc.tensor(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    with mc.no_grad():
        np.testing.assert_array_equal(model(x).data, loaded(x).data)


def test_bad_arguments_are_refused():
    train, test = digits_loaders()
    args = (create_mobile_classifier(), create_teacher_classifier(), train, test)
    with pytest.raises(ValueError, match="prune"):
        optimize(*args, prune=1.5)
    with pytest.raises(ValueError, match="quantize"):
        optimize(*args, quantize="int4")


def test_residual_convs_share_one_channel_ranking_so_shrink_removes_the_asked_share():
    """Convs whose outputs a residual addition sums are listed together by `tied_output_groups` and pruned
    on one ranking, so `shrink` removes round(0.3 * C) channels there too, not only those both happened
    to pick."""
    from minicompress import prune as P
    from minicompress.pipelines.stages import prune_model

    mc.manual_seed(0)
    model = create_mobile_classifier()
    names = {id(m): name for name, m in model.named_modules()}
    assert [[names[id(m)] for m in tied] for tied in P.tied_output_groups(model)] == [
        ["stem.0"], ["blocks.0.conv.pointwise", "blocks.1.conv.pointwise"],
        ["blocks.2.conv.pointwise", "blocks.3.conv.pointwise"]]
    widths = [model.stem[0].out_channels, model.blocks[1].conv.pointwise.out_channels,
              model.blocks[3].conv.pointwise.out_channels]
    pruned = prune_model(model, 0.3, structured=True, train_loader=None, finetune_epochs=0, lr=0.01)
    kept = [pruned.stem[0].out_channels, pruned.blocks[1].conv.pointwise.out_channels,
            pruned.blocks[3].conv.pointwise.out_channels]
    assert kept == [w - round(0.3 * w) for w in widths]
    assert pruned.blocks[0].conv.pointwise.out_channels == kept[1]

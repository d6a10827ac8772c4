"""A shortened detection job (tiny scenes, one epoch per stage): every stage's row, the int8 model's
agreement with its float source, model files, and the command line."""
import copy
import json

import numpy as np
import pytest

import minicompress as mc
from minicompress import cli
from minicompress.cli import detect as detect_cli
from minicompress.data import load_digit_scenes
from minicompress.pipelines.detect import optimize_detector, quantize_detector
from minicompress.models import Detector


@pytest.fixture(scope="module")
def scenes():
    return load_digit_scenes(40, image_size=32, max_objects=3, seed=0)


@pytest.fixture(scope="module")
def report(scenes):
    mc.manual_seed(0)
    return optimize_detector(Detector(image_size=32), Detector(image_size=32, width_mult=2.0), *scenes, epochs=1,
                             finetune_epochs=1, batch_size=16, progress=False, log=None, latency_repeat=2)


def test_the_job_reports_every_stage(report):
    assert [r.stage for r in report.rows] == ["teacher", "student", "distilled", "pruned", "int8"]
    for r in report.rows:
        assert -1 <= r.map <= r.map_50 <= 1 or r.map_50 == -1
        assert r.parameters > 0 and r.bytes > 0 and r.latency_b1_ms > 0
    pruned = report.models["pruned"]
    weights = [m.weight.data for m in pruned.modules() if isinstance(m, mc.nn.Conv2d)]
    zeros = sum((w == 0).sum() for w in weights) / sum(w.size for w in weights)
    assert 0.2 <= zeros < 0.21   # one global threshold over every conv weight
    assert report.row("int8").bytes * 3 < report.row("pruned").bytes
    table = report.to_markdown()
    assert table.count("\n") == 6 and "mAP@0.5" in table
    assert json.loads(json.dumps(report.to_dict()))["stages"][0]["stage"] == "teacher"


def test_int8_detector_tracks_its_float_source_and_survives_a_file(scenes, tmp_path):
    train, test = scenes
    mc.manual_seed(0)   # reproducible weights; the bound holds for any initialisation
    model = Detector(image_size=32).eval()
    quantized = quantize_detector(model, train.images)
    x = mc.tensor(test.images)
    with mc.no_grad():
        reference, got = model(x).data, quantized(x).data
    # int8 activations at every layer: errors of a few output quantization steps, far below the outputs' range.
    assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()
    mc.save(quantized, tmp_path / "int8.npz")
    with mc.no_grad():
        np.testing.assert_array_equal(mc.load(tmp_path / "int8.npz")(x).data, got)


def test_bad_arguments_are_rejected_before_training(scenes):
    for kwargs, message in ((dict(prune=1.0), "prune"), (dict(quantize="dynamic"), "quantize"),
                            (dict(epochs=0), "epochs")):
        with pytest.raises(ValueError, match=message):
            optimize_detector(Detector(image_size=32), Detector(image_size=32), *scenes, **kwargs)


def test_command_line_optimize_detect_and_predict(tmp_path, monkeypatch, capsys):
    for name, value in (("DETECT_TEST_SCENES", 3), ("DETECT_SCENES_PER_EPOCH", 8), ("DETECT_IMAGE_SIZE", 32)):
        monkeypatch.setattr(detect_cli, name, value)
    out = tmp_path / "job"
    assert cli.main(["optimize", "--task", "detect", "--epochs", "1", "--teacher-epochs", "1", "--no-progress",
                     "--out", str(out)]) == 0
    assert {"report.json", "report.md", "model.npz"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "report.json").read_text())
    assert [s["stage"] for s in saved["stages"]] == ["teacher", "student", "distilled", "pruned", "channel-pruned KD",
                                                     "int8", "channel-pruned KD int8", "dynamic int8"]
    assert saved["settings"]["final_stage"] == "channel-pruned KD int8" and saved["settings"]["prune"] == 0.2
    assert saved["settings"]["wall_seconds"] > 0
    assert saved["settings"]["channel_finetune"]["after"] == detect_cli.DETECT_CHANNEL_FINETUNE["after"]
    rows = {s["stage"]: s for s in saved["stages"]}
    assert rows["channel-pruned KD"]["parameters"] < rows["pruned"]["parameters"]   # shrink removed channels
    assert rows["channel-pruned KD int8"]["bytes"] < rows["int8"]["bytes"]
    assert rows["dynamic int8"]["bytes"] == rows["pruned"]["bytes"]   # torch's default mapping: no conv
    images = load_digit_scenes(10, image_size=32, seed=1)[1].images
    np.save(tmp_path / "x.npy", images)
    capsys.readouterr()
    assert cli.main(["predict", str(out / "model.npz"), str(tmp_path / "x.npy")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("image ") == len(images)


def test_resampled_scenes_are_new_each_pass_and_the_same_for_the_same_draw():
    from minicompress.data import digit_scene_sampler
    from minicompress.detect import resampled_scene_loader

    draw = digit_scene_sampler(6, image_size=32, max_objects=2, seed=3)
    first, again = draw(0), draw(0)
    np.testing.assert_array_equal(first.images, again.images)
    assert (draw(1).images != first.images).any()
    loader = resampled_scene_loader(Detector(image_size=32), draw, batch_size=4)
    passes = [np.concatenate([x.data for x, _, _ in loader]) for _ in range(2)]
    assert len(loader) == 2 and all(p.shape == (6, 1, 32, 32) for p in passes)
    assert not np.array_equal(np.sort(passes[0].ravel()), np.sort(passes[1].ravel()))
    np.testing.assert_array_equal(np.sort(passes[0].ravel()), np.sort(first.images.ravel()))


def test_the_job_writes_a_png_of_detections_where_matplotlib_is_installed(scenes, tmp_path):
    pytest.importorskip("matplotlib")
    model = Detector(image_size=32)
    assert detect_cli._write_detections_png(model, scenes[1], tmp_path / "d.png", count=3)
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prune_model_fine_tunes_before_and_after_shrink_by_the_pair_it_is_given():
    from minicompress.pipelines.stages import prune_model

    calls = []
    model = prune_model(Detector(image_size=32), 0.25, True, None, (0, 3), 0.0,
                        finetune=lambda m, n: calls.append((n, sum(p.data.size for p in m.parameters()))))
    # No fine-tune before the shrink (0 epochs); the one after it trains the smaller model.
    assert [n for n, _ in calls] == [3] and calls[0][1] == sum(p.data.size for p in model.parameters())
    assert calls[0][1] < sum(p.data.size for p in Detector(image_size=32).parameters())
    for bad in ((1, 2, 3), (-1, 2), 1.5, (True, 1)):
        with pytest.raises(ValueError, match="finetune_epochs"):
            prune_model(Detector(image_size=32), 0.25, True, None, bad, 0.0, finetune=lambda m, n: None)


def test_the_distillation_fine_tune_of_a_shrunk_detector_starts_at_the_kd_loss_and_lowers_it(scenes):
    """The job's channel-pruned KD fine-tune: `train_detector_with_distillation` on the `shrink`-ed student.
    On one fixed batch the first epoch's loss is the loss of the batch before any step (a reference
    computed here by `DetectionDistillation` on the same models), and a few small Adam steps lower it."""
    from minicompress.detect import scene_loader
    from minicompress.distill.detection import DetectionDistillation, train_detector_with_distillation
    from minicompress.pipelines.stages import prune_model

    train, _ = scenes
    mc.manual_seed(0)
    teacher = Detector(image_size=32, width_mult=2.0).eval()
    student = prune_model(Detector(image_size=32), 0.25, True, None, 0, 0.0)
    loader = scene_loader(student, train, batch_size=len(train.images))   # one batch, the same each epoch
    weights = detect_cli.DETECT_DISTILL
    x, classes, boxes = next(iter(loader))
    reference = DetectionDistillation(teacher, copy.deepcopy(student), **weights).train()(x, classes, boxes)
    history = train_detector_with_distillation(teacher, student, loader, 6, lr=1e-3, **weights)
    np.testing.assert_allclose(history[0]["total"], reference.total.item(), rtol=1e-6)
    np.testing.assert_allclose(history[0]["class_kd"], reference.class_kd.item(), rtol=1e-6)
    assert history[-1]["total"] < history[0]["total"]


def test_channel_finetune_rejects_bad_settings_by_name(scenes):
    from minicompress.pipelines.detect import ChannelFinetune

    for kwargs, name in ((dict(before=-1), "before"), (dict(after=1.5), "after"), (dict(lr_factor=0), "lr_factor"),
                         (dict(amount=1.0), "amount")):
        with pytest.raises(ValueError, match=name):
            ChannelFinetune(**kwargs)
    with pytest.raises(ValueError, match="channel_finetune"):
        optimize_detector(Detector(image_size=32), Detector(image_size=32), *scenes, structured=True,
                          channel_finetune=dict(after=2))

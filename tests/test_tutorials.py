"""The tutorials run as written (with shorter training where they take parameters)."""
import runpy
from pathlib import Path

import pytest

from minilm import requires_minilm

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def load_tutorial(name):
    return runpy.run_path(str(TUTORIALS / name), run_name="tutorial")


def test_tutorial_01_trains_a_mobile_classifier_to_95_percent():
    accuracy = load_tutorial("01_tensors_and_layers.py")["main"]()
    assert accuracy >= 0.95


def test_tutorial_04_distills_a_teacher_into_the_mobile_classifier():
    accuracies = load_tutorial("04_distillation.py")["main"](teacher_epochs=2, epochs=2)
    assert set(accuracies) == {"teacher", "alone", "distilled", "feature_distilled"}
    assert accuracies["teacher"] >= 0.9  # about 0.98 after two epochs
    assert min(accuracies["alone"], accuracies["distilled"], accuracies["feature_distilled"]) >= 0.8  # about 0.95


def test_tutorial_05_deploys_the_int8_file_without_torch(tmp_path):
    report, deployed = load_tutorial("05_edge_deployment.py")["main"](epochs=4, finetune_epochs=1, out=str(tmp_path))
    assert "nothing heavy" in deployed
    accuracy = float(deployed.split("test accuracy ")[1].split()[0])
    assert accuracy == pytest.approx(report.row("int8").accuracy, abs=5e-5)  # printed to 4 decimals


def test_tutorial_02_quantizes_the_classifier_to_a_quarter_of_its_size():
    results = load_tutorial("02_quantization.py")["main"](epochs=3, qat_epochs=1)
    float_result, static = results["float32"], results["static int8"]
    assert float_result["bytes"] / static["bytes"] >= 3.5
    assert static["accuracy"] >= float_result["accuracy"] - 0.02
    assert results["QAT int8"]["bytes"] == static["bytes"]


def test_tutorial_03_prunes_shrinks_and_runs_sparse():
    results = load_tutorial("03_pruning.py")["main"](epochs=4, finetune_epochs=2)
    assert results["gradual 50%"] >= results["float"] - 0.02
    assert results["shrunk"] >= results["float"] - 0.05
    assert abs(results["sparse"] - results["gradual 50%"]) <= 1 / 300  # same weights, CSR sums in another order
    assert len(results["sensitivity"]) == 10


def test_tutorial_06_runs_the_detection_job_in_map():
    report = load_tutorial("06_edge_detection.py")["main"](n_images=24, epochs=1, teacher_epochs=1,
                                                                finetune_epochs=1, progress=False)
    assert [r.stage for r in report.rows] == ["teacher", "student", "distilled", "pruned", "int8"]
    assert report.row("int8").bytes < report.row("student").bytes
    assert all(-1 <= r.map_50 <= 1 for r in report.rows)


@requires_minilm
def test_tutorial_07_compresses_a_pretrained_sentence_encoder():
    results = load_tutorial("07_pretrained_transformer.py")["main"](prune=6)
    float_cosine, float_bytes, answer = results["float32"]
    cosine, size, int8_answer = results["int8 full range"]
    assert cosine >= 0.99 and float_bytes / size >= 3.5 and int8_answer == answer
    assert results["int8 torch qconfig"][0] < cosine
    assert results["6 heads pruned"][1] < float_bytes

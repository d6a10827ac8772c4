"""The tutorials run as written (with shorter training where they take parameters)."""
import runpy
from pathlib import Path

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

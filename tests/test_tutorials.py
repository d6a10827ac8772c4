"""The tutorials run as written (with shorter training where they take parameters)."""
import runpy
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def load_tutorial(name):
    return runpy.run_path(str(TUTORIALS / name), run_name="tutorial")


def test_tutorial_01_trains_a_mobile_classifier_to_95_percent():
    accuracy = load_tutorial("01_tensors_and_layers.py")["main"]()
    assert accuracy >= 0.95

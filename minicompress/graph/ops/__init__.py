"""ONNX operators on NumPy arrays, one class per operator and opset change (see `graph/registry.py`)."""
from . import elementwise, nn, quantized, reduce, rnn, shape  # noqa: F401  (each module registers its operators)

"""ONNX operators on NumPy arrays, one class per operator and opset change (see `graph/registry.py`)."""
from . import elementwise, nn, quantized, quantized_rnn, reduce, rnn, shape  # noqa: F401  (each registers its operators)

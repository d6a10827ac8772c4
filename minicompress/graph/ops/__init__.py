"""ONNX operators on NumPy arrays, one class per operator and opset change (see `graph/registry.py`), and
TFLite's integer operators (domain "tflite", `litert.py`)."""
from . import elementwise, litert, nn, quantized, quantized_rnn, reduce, rnn, shape  # noqa: F401  (each registers its operators)

"""ONNX in and out. `load(path | bytes | ModelProto) -> GraphModule`.

Needs the optional `onnx` package (`pip install 'minicompress[onnx]'`); running a loaded model needs only
NumPy and Numba.
"""
from .importer import MAX_OPSET, MIN_OPSET, load

__all__ = ["load", "MIN_OPSET", "MAX_OPSET"]

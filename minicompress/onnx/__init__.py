"""ONNX in and out: `load(path | bytes | ModelProto) -> GraphModule` and
`export(model, example_inputs, path, opset_version=17)`.

Needs the optional `onnx` package (`pip install 'minicompress[onnx]'`); running a loaded model needs only
NumPy and Numba.
"""
from .exporter import ExportError, export
from .importer import MAX_OPSET, MIN_OPSET, load

__all__ = ["load", "export", "ExportError", "MIN_OPSET", "MAX_OPSET"]

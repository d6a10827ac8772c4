"""ONNX in and out: `load(path | bytes | ModelProto) -> GraphModule` and
`export(model, example_inputs, path, opset_version=17)` (float models, and minicompress's int8 models in
onnxruntime's QDQ format); `fold_qdq(graph_module)` runs a loaded QDQ graph on integer layers;
`quantize_qdq(model, batches)` writes the QDQ graph onnxruntime's quantize_static writes;
`InferenceSession(path_or_bytes, sess_options, providers)` and `SessionOptions`: onnxruntime's Python API
over a loaded graph (`import minicompress.onnx as ort` in a script written for onnxruntime).

Needs the optional `onnx` package (`pip install 'minicompress[onnx]'`); running a loaded model needs only
NumPy and Numba.
"""
from .errors import ExportError
from .exporter import export
from .importer import MAX_OPSET, MIN_OPSET, load
from .qdq_fold import fold_qdq
from .qdq_quantize import quantize_qdq
from .session import (InferenceSession, InvalidArgument, ModelMetadata, NodeArg, RunOptions, SessionOptions,
                      get_available_providers, get_device)

__all__ = ["load", "export", "fold_qdq", "quantize_qdq", "ExportError", "MIN_OPSET", "MAX_OPSET", "InferenceSession",
           "SessionOptions", "RunOptions", "NodeArg", "ModelMetadata", "InvalidArgument", "get_available_providers",
           "get_device"]

"""TFLite in: `load(path | bytes) -> GraphModule`, a model read from LiteRT's flatbuffer file: float and
float16 models, sparse weights, and int8 convolutions, fully-connected layers and additions as TFLite's
integer arithmetic.

Needs the optional `flatbuffers` package (`pip install 'minicompress[tflite]'`); running a loaded model needs
only NumPy and Numba. The graph takes and returns what LiteRT's interpreter does (NHWC, same dtypes).
"""
from .errors import TFLiteExportError, TFLiteFormatError
from .export import export
from .importer import load, read

__all__ = ["TFLiteExportError", "TFLiteFormatError", "export", "load", "read"]

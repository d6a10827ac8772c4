"""TFLite in: `load(path | bytes) -> GraphModule`, a float model read from LiteRT's flatbuffer file.

Needs the optional `flatbuffers` package (`pip install 'minicompress[tflite]'`); running a loaded model needs
only NumPy and Numba. The graph takes and returns what LiteRT's interpreter does (NHWC, same dtypes).
"""
from .errors import TFLiteFormatError
from .importer import load, read

__all__ = ["load", "read", "TFLiteFormatError"]

"""TFLite in: `load(path | bytes) -> GraphModule`, a model read from LiteRT's flatbuffer file: float and
float16 models, sparse weights, and int8 models as TFLite's integer arithmetic, bit for bit with LiteRT's
reference kernels: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, RELU, RELU6, RELU_N1_TO_1,
LEAKY_RELU, PRELU, HARD_SWISH, LOGISTIC, TANH, SOFTMAX, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, PAD, PADV2,
CONCATENATION, RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR, QUANTIZE, DEQUANTIZE and the movement ops
(`graph/ops/litert.py`, `lower.INTEGER_OPS`).

Needs the optional `flatbuffers` package (`pip install 'minicompress[tflite]'`); running a loaded model needs
only NumPy and Numba. The graph takes and returns what LiteRT's interpreter does (NHWC, same dtypes).
"""
from .errors import TFLiteFormatError
from .importer import load, read

__all__ = ["load", "read", "TFLiteFormatError"]

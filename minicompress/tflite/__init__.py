"""TFLite in and out.

`load(path | bytes) -> GraphModule`, a model read from LiteRT's flatbuffer file: float and float16 models,
sparse weights, and int8 models as TFLite's integer arithmetic, bit for bit with LiteRT's reference kernels:
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, PRELU,
HARD_SWISH, LOGISTIC, TANH, SOFTMAX, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, PAD, PADV2, CONCATENATION,
RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR, QUANTIZE, DEQUANTIZE and the movement ops (`graph/ops/litert.py`,
`lower.INTEGER_OPS`). The graph takes and returns what LiteRT's interpreter does (NHWC, same dtypes).

`export(model, example_inputs, path)` writes a float model, or an int8 model of `minicompress.quant`
(`get_default_qconfig("tflite")`), as a `.tflite` file that LiteRT runs: NCHW inputs and outputs as the
model's, NHWC inside (export.py).

Needs the optional `flatbuffers` package (`pip install 'minicompress[tflite]'`); running a loaded model needs
only NumPy and Numba.
"""
from .errors import TFLiteExportError, TFLiteFormatError
from .export import export
from .importer import load, read

__all__ = ["TFLiteExportError", "TFLiteFormatError", "export", "load", "read"]

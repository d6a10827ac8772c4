class TFLiteFormatError(ValueError):
    """The file or bytes are not a TFLite model that can be read (truncated, foreign or inconsistent)."""


class TFLiteExportError(ValueError):
    """A model that `tflite.export` cannot write: a layer or operator with no TFLite form here, or a
    quantization TFLite's integer kernels do not take."""

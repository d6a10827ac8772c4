"""The error of `onnx.export`: a model, layer or node with no ONNX form here (the exporter and its quantized
half both raise it)."""


class ExportError(ValueError):
    """A model, layer or node that has no ONNX form here."""

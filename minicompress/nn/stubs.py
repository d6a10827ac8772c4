"""QuantStub and DeQuantStub: markers of where a model's float region ends and begins.

In a float model both are identities. `prepare` attaches an observer to QuantStub; `convert`
replaces it with a module that quantizes its input, and DeQuantStub with one that dequantizes.
"""
from .module import Module


class QuantStub(Module):
    """Identity in float; becomes `Quantize` (float -> quint8) after convert."""

    def __init__(self, qconfig=None):
        super().__init__()
        if qconfig is not None:
            self.qconfig = qconfig

    def forward(self, x):
        return x


class DeQuantStub(Module):
    """Identity in float; becomes `DeQuantize` (quantized -> float) after convert."""

    def __init__(self, qconfig=None):
        super().__init__()
        if qconfig is not None:
            self.qconfig = qconfig

    def forward(self, x):
        return x

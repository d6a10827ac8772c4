"""QConfig: which observer (or fake quantizer) watches a layer's output and which its weight, as
`torch.ao.quantization.qconfig`.

A QConfig holds two factories (`Observer.with_args(...)`), never instances: `prepare` calls each once
per layer. The defaults are torch's:

    get_default_qconfig("x86" | "fbgemm")   activation HistogramObserver(reduce_range=True) (7-bit quint8,
                                            headroom for x86's 16-bit intermediate sums), weight
                                            PerChannelMinMaxObserver(qint8, per_channel_symmetric)
    get_default_qconfig("qnnpack")          activation HistogramObserver(reduce_range=False), weight
                                            MinMaxObserver(qint8, per_tensor_symmetric)
    get_default_qat_qconfig(...)            the same choices as FakeQuantize modules over moving-average
                                            observers (the histogram is too slow to run every step)
    default_qconfig                         MinMaxObserver(quant_min=0, quant_max=127) / per-tensor qint8 weight
    default_dynamic_qconfig                 PlaceholderObserver(quint8, is_dynamic=True) / per-tensor qint8 weight
    per_channel_dynamic_qconfig             the same with PerChannelMinMaxObserver(qint8, per_channel_symmetric)

and two that are not torch's:

    get_default_qconfig("tflite")           TFLite's int8 quantization spec: activation MinMaxObserver over all
                                            8 bits (quint8 [0, 255], per tensor affine: the min and max seen,
                                            as TFLite's converter calibrates on its representative data),
                                            weight PerChannelMinMaxObserver(qint8, per_channel_symmetric,
                                            quant_min=-127, quant_max=127): zero point 0, codes in [-127, 127].
                                            A quint8 code q with zero point z is TFLite's int8 code q - 128 with
                                            zero point z - 128 (the same real value, the same integer sums), so
                                            `tflite.export` writes such a model as a fully-integer TFLite file

    full_range_dynamic_qconfig              per-channel qint8 weights and inputs quantized to all 8 bits (no
                                            reduce_range). torch's x86 kernels keep inputs to 7 bits because
                                            their AVX2 path adds uint8 x int8 pairs in saturating int16;
                                            minicompress's integer kernels are exact for 8 bits, and the extra
                                            bit halves the input's rounding error (on all-MiniLM-L6-v2 it lifts
                                            the embeddings' mean cosine to float from 0.92 to 0.99)
"""
from collections import namedtuple

from . import dtypes as qd
from .fake_quantize import (FakeQuantize, default_fake_quant, default_per_channel_weight_fake_quant,
                            default_weight_fake_quant)
from .observer import (HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
                       PlaceholderObserver)

BACKENDS = ("x86", "fbgemm", "qnnpack", "tflite")


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """(activation, weight): factories building the observers of a layer's output and of its weight."""

    __slots__ = ()

    def __new__(cls, activation, weight):
        for name, factory in (("activation", activation), ("weight", weight)):
            if not callable(factory) or isinstance(factory, type(None)):
                raise TypeError(f"QConfig {name}={factory!r} must be an observer class or a with_args factory")
        return super().__new__(cls, activation, weight)


default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
default_weight_observer = MinMaxObserver.with_args(dtype=qd.qint8, qscheme=qd.per_tensor_symmetric)
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(dtype=qd.qint8,
                                                                         qscheme=qd.per_channel_symmetric)
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
default_dynamic_quant_observer = PlaceholderObserver.with_args(dtype=qd.quint8, quant_min=0, quant_max=255,
                                                               is_dynamic=True)

default_qconfig = QConfig(activation=default_observer, weight=default_weight_observer)
default_per_channel_qconfig = QConfig(activation=default_observer, weight=default_per_channel_weight_observer)
default_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer, weight=default_weight_observer)
per_channel_dynamic_qconfig = QConfig(activation=default_dynamic_quant_observer,
                                      weight=default_per_channel_weight_observer)
full_range_dynamic_quant_observer = PlaceholderObserver.with_args(dtype=qd.quint8, quant_min=0, quant_max=255,
                                                                  is_dynamic=True, reduce_range=False)
full_range_dynamic_qconfig = QConfig(activation=full_range_dynamic_quant_observer,
                                     weight=default_per_channel_weight_observer)
default_qat_qconfig = QConfig(activation=default_fake_quant, weight=default_weight_fake_quant)


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; expected one of {list(BACKENDS)}")


tflite_weight_observer = PerChannelMinMaxObserver.with_args(dtype=qd.qint8, qscheme=qd.per_channel_symmetric,
                                                            quant_min=-127, quant_max=127)
tflite_qconfig = QConfig(activation=MinMaxObserver.with_args(reduce_range=False), weight=tflite_weight_observer)


def get_default_qconfig(backend="x86"):
    """The default post-training QConfig for `backend`: torch's for "x86", "fbgemm" or "qnnpack", TFLite's
    int8 spec for "tflite" (see the module docstring)."""
    _check_backend(backend)
    if backend == "tflite":
        return tflite_qconfig
    if backend == "qnnpack":
        return QConfig(activation=HistogramObserver.with_args(reduce_range=False), weight=default_weight_observer)
    return QConfig(activation=HistogramObserver.with_args(reduce_range=True),
                   weight=default_per_channel_weight_observer)


def get_default_qat_qconfig(backend="x86"):
    """torch's default quantization-aware-training QConfig for `backend`: moving-average observers inside
    FakeQuantize, quint8 [0, 255] activations (reduce_range except for qnnpack), qint8 weights."""
    _check_backend(backend)
    if backend == "tflite":
        raise ValueError("backend='tflite' has no QAT qconfig here; use get_default_qconfig('tflite') for "
                         "post-training quantization")
    reduce_range = backend != "qnnpack"
    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        reduce_range=reduce_range)
    weight = default_weight_fake_quant if backend == "qnnpack" else default_per_channel_weight_fake_quant
    return QConfig(activation=activation, weight=weight)

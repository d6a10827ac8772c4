"""Quantized dtypes and quantization schemes: the constants `torch.quint8`, `torch.per_tensor_affine`, ...

A quantized dtype names an integer storage type and the full range of levels it can hold:

    quint8  uint8 storage, levels [0, 255]
    qint8   int8  storage, levels [-128, 127]
    qint32  int32 storage, levels [-2**31, 2**31 - 1]   (biases and accumulators)

A scheme (qscheme) says how many (scale, zero_point) pairs a tensor has and whether the zero point
is pinned:

    per_tensor_affine       one pair for the whole tensor
    per_tensor_symmetric    one pair, zero point fixed (0 for signed dtypes, 128 for quint8)
    per_channel_affine      one pair per slice along `axis`
    per_channel_symmetric   one pair per slice, zero points fixed
    per_channel_affine_float_qparams
                            one pair per slice with a float zero point (embedding tables)

Every constant is a singleton: compare with `is` or `==`, look one up by name with `check_dtype` /
`check_qscheme`, which raise a clear error for anything else.

    >>> from minicompress.quant import dtypes
    >>> dtypes.qint8, dtypes.qint8.quant_min, dtypes.qint8.quant_max, dtypes.qint8.storage
    (minicompress.qint8, -128, 127, dtype('int8'))
    >>> dtypes.check_qscheme("per_channel_symmetric")
    minicompress.per_channel_symmetric
"""
import numpy as np


class QuantDtype:
    """An immutable quantized dtype: `name`, NumPy `storage` dtype, `bits`, `quant_min`, `quant_max`."""

    __slots__ = ("name", "storage", "bits", "quant_min", "quant_max")

    def __init__(self, name, storage):
        info = np.iinfo(storage)
        for attr, value in (("name", name), ("storage", np.dtype(storage)), ("bits", info.bits),
                            ("quant_min", int(info.min)), ("quant_max", int(info.max))):
            object.__setattr__(self, attr, value)

    @property
    def is_signed(self):
        return self.quant_min < 0

    def __setattr__(self, attr, value):
        raise AttributeError(f"{self!r} is immutable")

    def __reduce__(self):
        return (check_dtype, (self.name,))

    def __repr__(self):
        return f"minicompress.{self.name}"


class QScheme:
    """An immutable quantization scheme: `name`, `per_channel` and `symmetric` flags."""

    __slots__ = ("name", "per_channel", "symmetric")

    def __init__(self, name, per_channel, symmetric):
        for attr, value in (("name", name), ("per_channel", per_channel), ("symmetric", symmetric)):
            object.__setattr__(self, attr, value)

    def __setattr__(self, attr, value):
        raise AttributeError(f"{self!r} is immutable")

    def __reduce__(self):
        return (check_qscheme, (self.name,))

    def __repr__(self):
        return f"minicompress.{self.name}"


quint8 = QuantDtype("quint8", np.uint8)
qint8 = QuantDtype("qint8", np.int8)
qint32 = QuantDtype("qint32", np.int32)

per_tensor_affine = QScheme("per_tensor_affine", per_channel=False, symmetric=False)
per_tensor_symmetric = QScheme("per_tensor_symmetric", per_channel=False, symmetric=True)
per_channel_affine = QScheme("per_channel_affine", per_channel=True, symmetric=False)
per_channel_symmetric = QScheme("per_channel_symmetric", per_channel=True, symmetric=True)
per_channel_affine_float_qparams = QScheme("per_channel_affine_float_qparams", per_channel=True, symmetric=False)

_DTYPES = {d.name: d for d in (quint8, qint8, qint32)}
_QSCHEMES = {q.name: q for q in (per_tensor_affine, per_tensor_symmetric, per_channel_affine,
                                 per_channel_symmetric, per_channel_affine_float_qparams)}


def _lookup(value, table, kind, name):
    if isinstance(value, str):
        if value not in table:
            raise ValueError(f"{name}={value!r} is not a known {kind}; expected one of {sorted(table)}")
        return table[value]
    if any(value is known for known in table.values()):
        return value
    raise TypeError(f"{name}={value!r} (type {type(value).__name__}) is not a {kind}; "
                    f"expected one of {sorted(table)} or its name")


def check_dtype(dtype, name="dtype"):
    """The quantized dtype `dtype` (a constant or its name, e.g. "qint8").

    Raises:
        ValueError: an unknown name.
        TypeError: anything else (a NumPy dtype such as np.int8 is not a quantized dtype).
    """
    return _lookup(dtype, _DTYPES, "quantized dtype", name)


def check_qscheme(qscheme, name="qscheme"):
    """The quantization scheme `qscheme` (a constant or its name, e.g. "per_tensor_affine").

    Raises:
        ValueError: an unknown name.
        TypeError: anything else.
    """
    return _lookup(qscheme, _QSCHEMES, "qscheme", name)


def dtype_of_storage(storage, name="q"):
    """The quantized dtype stored as NumPy dtype `storage` (uint8 -> quint8, int8 -> qint8, int32 -> qint32)."""
    for dtype in _DTYPES.values():
        if np.dtype(storage) == dtype.storage:
            return dtype
    raise TypeError(f"{name} has dtype {np.dtype(storage)}; expected the storage of a quantized dtype: "
                    f"{', '.join(str(d.storage) for d in _DTYPES.values())}")

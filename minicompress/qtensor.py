"""QTensor: integer levels together with the (scale, zero_point) that give them meaning, as torch's
quantized tensors.

A QTensor holds the raw levels `int_repr()` (uint8 / int8 / int32 storage) and either one
(scale, zero_point) for the whole tensor or one pair per slice along `q_per_channel_axis()`; its
real value is `dequantize()` = scale * (int_repr - zero_point). It carries no autograd graph: it is
what quantized modules pass to each other after `convert`.

    >>> import minicompress as mc
    >>> q = quantize_per_tensor(mc.tensor([-1.0, 0.0, 0.5]), 0.5, 2, "quint8")
    >>> q.int_repr(), q.q_scale(), q.q_zero_point(), q.dequantize().numpy()
    (array([0, 2, 3], dtype=uint8), 0.5, 2, array([-1. ,  0. ,  0.5], dtype=float32))

The arithmetic is `affine.py`'s (torch's kernels, bit for bit); this module only keeps the pieces together.
"""
import numpy as np

from .tensor import Tensor
from .quant import affine
from .quant import dtypes as qd


class QTensor:
    """A quantized tensor; build one with `quantize_per_tensor` / `quantize_per_channel` or
    `QTensor.per_tensor(levels, scale, zero_point)` for levels that are already integers."""

    __slots__ = ("_levels", "_qscheme", "_scale", "_zero_point", "_axis")

    def __init__(self, levels, qscheme, scale, zero_point, axis=None):
        self._levels = levels if _dense(levels) else np.ascontiguousarray(levels)
        self._qscheme = qd.check_qscheme(qscheme)
        self._scale, self._zero_point, self._axis = scale, zero_point, axis

    @classmethod
    def per_tensor(cls, levels, scale, zero_point):
        """Wrap integer `levels` (uint8 / int8 / int32 storage) with one (scale, zero_point)."""
        levels = np.asarray(levels)
        dtype = qd.dtype_of_storage(levels.dtype, "levels")
        scale, zero_point = affine._per_tensor_qparams(scale, zero_point, dtype)
        return cls(levels, qd.per_tensor_affine, scale, zero_point)

    @classmethod
    def per_channel(cls, levels, scales, zero_points, axis):
        """Wrap integer `levels` with one (scale, zero_point) per slice along `axis`."""
        levels = np.asarray(levels)
        dtype = qd.dtype_of_storage(levels.dtype, "levels")
        axis = affine._axis(axis, levels.ndim)
        scales, zero_points = affine._per_channel_qparams(scales, zero_points, dtype, levels.shape[axis])
        return cls(levels, qd.per_channel_affine, scales, zero_points, axis)

    # ----- torch's accessors -----------------------------------------------------------------
    @property
    def dtype(self):
        return qd.dtype_of_storage(self._levels.dtype)

    @property
    def shape(self):
        return self._levels.shape

    @property
    def ndim(self):
        return self._levels.ndim

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return self._levels.size

    def __len__(self):
        return len(self._levels)

    def qscheme(self):
        return self._qscheme

    def is_per_channel(self):
        return self._qscheme.per_channel

    def int_repr(self):
        """The integer levels (a read-only view: copy before changing them)."""
        view = self._levels.view()
        view.flags.writeable = False
        return view

    def q_scale(self):
        self._require(per_channel=False, accessor="q_scale")
        return self._scale

    def q_zero_point(self):
        self._require(per_channel=False, accessor="q_zero_point")
        return self._zero_point

    def q_per_channel_scales(self):
        self._require(per_channel=True, accessor="q_per_channel_scales")
        return self._scale.copy()

    def q_per_channel_zero_points(self):
        self._require(per_channel=True, accessor="q_per_channel_zero_points")
        return self._zero_point.copy()

    def q_per_channel_axis(self):
        self._require(per_channel=True, accessor="q_per_channel_axis")
        return self._axis

    def dequantize(self):
        """The float32 Tensor scale * (int_repr - zero_point)."""
        if self.is_per_channel():
            return Tensor._wrap(affine.dequantize_per_channel(self._levels, self._scale, self._zero_point, self._axis))
        return Tensor._wrap(affine.dequantize_per_tensor(self._levels, self._scale, self._zero_point))

    # ----- shape changes that keep per-tensor qparams ----------------------------------------
    def reshape(self, *shape):
        self._require(per_channel=False, accessor="reshape")
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return QTensor(self._levels.reshape(shape), self._qscheme, self._scale, self._zero_point)

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        start, end = start_dim % max(len(shape), 1), end_dim % max(len(shape), 1)
        if not shape or start >= end:
            return self
        return self.reshape(shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:])

    def _require(self, per_channel, accessor):
        if self.is_per_channel() != per_channel:
            kind = "per-channel" if per_channel else "per-tensor"
            raise ValueError(f"{accessor}() needs a {kind} quantized tensor; this one is {self._qscheme!r}")

    def __repr__(self):
        if self.is_per_channel():
            qparams = f"axis={self._axis}, scales={self._scale}, zero_points={self._zero_point}"
        else:
            qparams = f"scale={self._scale}, zero_point={self._zero_point}"
        return f"QTensor(shape={self.shape}, dtype={self.dtype!r}, qscheme={self._qscheme!r}, {qparams})"


def _dense(levels):
    """C-contiguous, or a 4-D (N, C, H, W) view of channels-last (N, H, W, C) bytes: the layout the integer
    convolutions produce (torch's `channels_last`), kept as it is so the next layer reads it without a copy."""
    return (isinstance(levels, np.ndarray) and (levels.flags.c_contiguous or (
        levels.ndim == 4 and levels.transpose(0, 2, 3, 1).flags.c_contiguous)))


def _array(x, name="x"):
    if isinstance(x, QTensor):
        raise TypeError(f"{name} is already quantized; dequantize() it first")
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def quantize_per_tensor(x, scale, zero_point, dtype):
    """`torch.quantize_per_tensor`: a QTensor of float32 `x` with one (scale, zero_point).

    Raises:
        ValueError: NaN in x, scale <= 0, a zero point outside the dtype's range, an unknown dtype name.
        TypeError: x not float32, a dtype that is not a quantized dtype.
    """
    dtype = qd.check_dtype(dtype)
    levels = affine.quantize_per_tensor(_array(x), scale, zero_point, dtype)
    scale, zero_point = affine._per_tensor_qparams(scale, zero_point, dtype)
    return QTensor(levels, qd.per_tensor_affine, scale, zero_point)


def quantize_per_channel(x, scales, zero_points, axis, dtype):
    """`torch.quantize_per_channel`: a QTensor of float32 `x` with one (scale, zero_point) per slice
    along `axis`. Scales are kept in float64 and zero points in int64, as torch's accessors return them."""
    dtype = qd.check_dtype(dtype)
    x = _array(x)
    levels = affine.quantize_per_channel(x, scales, zero_points, axis, dtype)
    axis = affine._axis(axis, x.ndim)
    scales, zero_points = affine._per_channel_qparams(scales, zero_points, dtype, x.shape[axis])
    return QTensor(levels, qd.per_channel_affine, scales, zero_points, axis)


def dequantize(q):
    """`torch.dequantize`: the float32 Tensor that QTensor `q` stands for (a float Tensor passes through)."""
    if isinstance(q, Tensor):
        return q
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    return q.dequantize()

"""ONNX's quantized operators as a readable integer reference.

    QuantizeLinear        y = saturate(round_half_even(x / y_scale) + y_zero_point)   (per tensor or per axis)
    DequantizeLinear      y = (x - x_zero_point) * x_scale
    DynamicQuantizeLinear scale = (max(0, max x) - min(0, min x)) / 255, zp = saturate(round(-min(0, min x) / scale))
    MatMulInteger         y = (A - a_zp) @ (B - b_zp)                                   (int32)
    ConvInteger           y = conv(x - x_zp, w - w_zp)                                  (int32)
    QLinearMatMul         y = saturate(round_half_even(acc * (a_scale b_scale / y_scale)) + y_zp)
    QLinearConv           y = saturate(round_half_even((acc + B) * (x_scale w_scale / y_scale)) + y_zp)

Accumulators are exact (int64 in NumPy, or the project's int32 kernels). The requantization multiplier is
computed in float32 (float32(a_scale * b_scale) / y_scale, then acc * multiplier in float32) as
onnxruntime's MLAS kernels do on x86 (`MlasRequantizeOutput`, a float scale and round-to-nearest-even);
runtimes with fixed-point requantization (a 32-bit multiplier and a shift, as in gemmlowp / QNNPACK on ARM)
can round a value that lands within ~1e-7 of a half step the other way: one output step of difference.
uint8 activations with int8 weights run on `kernels.qlinear.quantized_linear` / `kernels.qconv.quantized_conv2d`;
other type combinations on the NumPy reference here.

Integer arithmetic (`ARITHMETICS`, chosen per node by `minicompress.onnx.load(..., arithmetic=...)`): "exact"
sums every product exactly, as onnxruntime does on CPUs with VNNI; "u8s8-saturating" sums uint8 x int8 byte
pairs into a saturating int16 as onnxruntime's MLAS does on AVX2-only CPUs (`kernels/saturating.py`), for
uint8 activations with int8 weights in MatMulInteger, QLinearMatMul, QGemm, QLinearConv (but depthwise),
DynamicQuantizeMatMul and DynamicQuantizeLSTM; `integer_matmul` is the one place that chooses. Other types
are exact either way, and so are ConvInteger and depthwise QLinearConv: onnxruntime 1.32 computes them
exactly on AVX2 too (measured).
"""
import numpy as np

from ...kernels import conv as conv_kernels
from ...kernels.qelementwise import INT32_MAX, check_accumulator_range
from ...kernels.saturating import u8s8_pair_saturating_matmul
from ..registry import Op, register
from .nn import _defaults, _pad_spatial, window_pads

_RANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.uint16): (0, 65535),
           np.dtype(np.int16): (-32768, 32767), np.dtype(np.int32): (-2 ** 31, 2 ** 31 - 1)}


def _scalar(value):
    """A per-tensor scale or zero point, given as a 0-d or a one-element 1-D array, as a Python number."""
    return np.asarray(value).reshape(-1)[0].item()


def _per_axis(value, ndim, axis):
    """A scale or zero point shaped to broadcast along `axis` (a scalar stays a scalar)."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = value.size
    return value.reshape(shape)


def quantize(x, scale, zero_point, dtype, axis=1):
    lo, hi = _RANGES[np.dtype(dtype)]
    s = _per_axis(scale, x.ndim, axis).astype(np.float32)
    z = _per_axis(zero_point, x.ndim, axis).astype(np.float64)
    q = np.rint(x.astype(np.float32) / s).astype(np.float64) + z
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(x, scale, zero_point, axis=1):
    s = _per_axis(scale, x.ndim, axis).astype(np.float32)
    z = 0 if zero_point is None else _per_axis(zero_point, x.ndim, axis).astype(np.int64)
    return ((x.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


@register("QuantizeLinear", 10)
class QuantizeLinear_10(Op):
    """Per tensor; the output type is the zero point's (uint8 when it is omitted)."""

    def run(self, x, y_scale, y_zero_point=None):
        zp = np.zeros((), np.uint8) if y_zero_point is None else y_zero_point
        return quantize(x, y_scale, zp, zp.dtype)


@register("QuantizeLinear", 13)
class QuantizeLinear_13(Op):
    """Opset 13 adds per-axis scales and zero points (`axis`, default 1)."""

    def run(self, x, y_scale, y_zero_point=None, *, axis=1):
        zp = np.zeros((), np.uint8) if y_zero_point is None else y_zero_point
        return quantize(x, y_scale, zp, zp.dtype, axis)


@register("QuantizeLinear", 19)
class QuantizeLinear_19(QuantizeLinear_13):
    """Opset 19 adds `saturate`, which only concerns float8 outputs (not supported)."""

    def run(self, x, y_scale, y_zero_point=None, *, axis=1, saturate=1):
        return super().run(x, y_scale, y_zero_point, axis=axis)


@register("DequantizeLinear", 10)
class DequantizeLinear_10(Op):
    def run(self, x, x_scale, x_zero_point=None):
        return dequantize(x, x_scale, x_zero_point)


@register("DequantizeLinear", 13)
class DequantizeLinear_13(Op):
    def run(self, x, x_scale, x_zero_point=None, *, axis=1):
        return dequantize(x, x_scale, x_zero_point, axis)


@register("DequantizeLinear", 19)
class DequantizeLinear_19(DequantizeLinear_13):
    """Opset 19 widens the types (float8, float16 scales); the formula is unchanged."""


@register("DynamicQuantizeLinear", 11)
class DynamicQuantizeLinear(Op):
    """uint8 quantization whose range always includes 0: scale = (max(0, x_max) - min(0, x_min)) / 255."""

    def run(self, x):
        lo, hi = min(float(x.min()), 0.0) if x.size else 0.0, max(float(x.max()), 0.0) if x.size else 0.0
        scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
        zp = np.uint8(np.clip(np.rint(np.float32(0) - np.float32(lo) / scale), 0, 255)) if scale else np.uint8(0)
        y = quantize(x, scale if scale else np.float32(1), zp, np.uint8)
        return y, np.array(scale, np.float32), np.array(zp, np.uint8)


def _shifted(q, zp, ndim_axis=None):
    return q.astype(np.int64) - (0 if zp is None else np.asarray(zp).astype(np.int64))


ARITHMETICS = ("exact", "u8s8-saturating")


def check_arithmetic(arithmetic):
    if arithmetic not in ARITHMETICS:
        raise ValueError(f"arithmetic must be one of {', '.join(map(repr, ARITHMETICS))}, got {arithmetic!r}")
    return arithmetic


def integer_matmul(a, a_zp, b, b_zp, arithmetic="exact"):
    """sum_k (a - a_zp)(b - b_zp) as int64, with np.matmul's broadcasting: a (..., M, K) and b (..., K, N)
    codes, a_zp a scalar or (M, 1) (per row), b_zp a scalar or (N,) (per column), None for 0.

    With arithmetic "u8s8-saturating", uint8 a and int8 b: the raw codes' products summed in saturating int16
    pairs along K (`kernels.saturating`), the zero points applied after from the row and column sums,
    sum ab - b_zp sum a - a_zp sum b + K a_zp b_zp, as onnxruntime's AVX2 kernels do."""
    if arithmetic == "exact" or a.dtype != np.uint8 or b.dtype != np.int8:
        return np.matmul(_shifted(a, a_zp), _shifted(b, b_zp))
    a_zp = np.int64(0) if a_zp is None else np.asarray(a_zp, np.int64)
    b_zp = np.int64(0) if b_zp is None else np.asarray(b_zp, np.int64).reshape(-1)
    k = a.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_b = np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:])
    b_b = np.broadcast_to(b, batch + b.shape[-2:]).reshape((-1,) + b.shape[-2:])
    raw = np.stack([u8s8_pair_saturating_matmul(x, 0, w, 0) for x, w in zip(a_b, b_b)]).astype(np.int64)
    raw = raw.reshape(batch + raw.shape[-2:])
    a_sums = np.broadcast_to(a, batch + a.shape[-2:]).astype(np.int64).sum(-1, keepdims=True)
    b_sums = np.broadcast_to(b, batch + b.shape[-2:]).astype(np.int64).sum(-2, keepdims=True)
    return raw - b_zp * a_sums - a_zp * b_sums + k * a_zp * b_zp


def _row_zero_point(zero_point):
    """A's zero point: None, a scalar, or per row of A as (M, 1)."""
    if zero_point is None:
        return None
    return np.asarray(zero_point).reshape(-1, 1) if np.asarray(zero_point).size > 1 else zero_point


@register("MatMulInteger", 10)
class MatMulInteger(Op):
    """(A - a_zero_point) @ (B - b_zero_point) in int32; a_zero_point per row of A (M) or scalar, b_zero_point
    per column of B (N) or scalar. Summed by `integer_matmul` in the node's arithmetic."""

    uses_arithmetic = True

    def run(self, a, b, a_zero_point=None, b_zero_point=None):
        return integer_matmul(a, _row_zero_point(a_zero_point), b, b_zero_point, self.arithmetic).astype(np.int32)


def _integer_conv(x, w, group, strides, dilations, pads):
    """An exact integer convolution: float64 holds every partial sum (|sum| < 2^53) exactly."""
    if x.ndim != 4:
        raise NotImplementedError(f"quantized convolution on {x.ndim - 2}-D input is not supported (2-D is)")
    xp = _pad_spatial(x.astype(np.float64), pads)
    y = conv_kernels.conv2d_forward(np.ascontiguousarray(xp), np.ascontiguousarray(w.astype(np.float64)),
                                    tuple(strides), (0, 0), tuple(dilations), int(group))
    return np.rint(y).astype(np.int64)


def _saturating_conv(x, x_zp, w, w_zps, group, strides, dilations, pads):
    """conv(x - x_zp, w - w_zp) as int64 with `integer_matmul`'s "u8s8-saturating" sums (uint8 x, int8 w,
    w_zps per output channel): per group, the im2col matrix of the raw codes, padded with x_zp as
    onnxruntime pads, times the weights, K ordered (kh, kw, c) -- onnxruntime's QLinearConv transposes the
    input to NHWC and reorders the filter to (kh, kw, c, out) (qlinearconv.cc: ReorderFilter, NHWC Im2col).
    Measured under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI): equal to onnxruntime 1.32 for 1 to 4 input
    channels (odd counts too, where pairs straddle two kernel positions), the input zero point a constant or
    a graph input."""
    from numpy.lib.stride_tricks import sliding_window_view
    n, c_out, (kh, kw) = x.shape[0], w.shape[0], w.shape[2:]
    cg, per = w.shape[1], w.shape[0] // group
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=x_zp)
    windows = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]                      # (N, C, OH, OW, kh, kw)
    oh, ow = windows.shape[2:4]
    out = np.empty((n, c_out, oh, ow), np.int64)
    for g in range(group):
        cols = windows[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 4, 5, 1).reshape(n * oh * ow, kh * kw * cg)
        wg = w[g * per:(g + 1) * per].transpose(0, 2, 3, 1).reshape(per, -1).T
        acc = integer_matmul(cols, x_zp, wg, w_zps[g * per:(g + 1) * per], "u8s8-saturating")
        out[:, g * per:(g + 1) * per] = acc.reshape(n, oh, ow, per).transpose(0, 3, 1, 2)
    return out


def _conv_geometry(x, w, auto_pad, dilations, pads, strides):
    kernel = list(w.shape[2:])
    strides, dilations = _defaults(x, kernel, strides, dilations)
    return strides, dilations, window_pads(x.shape[2:], kernel, strides, dilations, pads, auto_pad)


@register("ConvInteger", 10)
class ConvInteger(Op):
    """conv(x - x_zero_point, w - w_zero_point) in int32 (w_zero_point per tensor or per output channel).
    The padding is x_zero_point, i.e. zero after the shift, as the spec asks."""

    def run(self, x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
            kernel_shape=None, pads=None, strides=None):
        strides, dilations, pads = _conv_geometry(x, w, auto_pad, dilations, pads, strides)
        xs = _shifted(x, x_zero_point)
        wz = 0 if w_zero_point is None else _per_axis(w_zero_point, w.ndim, 0).astype(np.int64)
        return _integer_conv(xs, w.astype(np.int64) - wz, group, strides, dilations, pads).astype(np.int32)


def requantize(acc, multiplier, y_zero_point):
    """saturate(round_half_even(float32(acc) * multiplier) + y_zp) in y_zp's type."""
    lo, hi = _RANGES[y_zero_point.dtype]
    scaled = acc.astype(np.float32) * multiplier.astype(np.float32)
    return np.clip(np.rint(scaled).astype(np.float64) + _scalar(y_zero_point), lo, hi).astype(y_zero_point.dtype)


def _multiplier(x_scale, w_scale, y_scale):
    return (np.float32(x_scale) * np.asarray(w_scale, np.float32)) / np.float32(y_scale)


@register("QLinearMatMul", 10)
class QLinearMatMul(Op):
    """A (..., M, K) by B (..., K, N) on codes, requantized to y's qparams; b_scale / b_zero_point per column.

    uint8 A and int8 2-D B with per-tensor or per-column qparams run on `quantized_linear` in exact
    arithmetic; other cases, and "u8s8-saturating", on `integer_matmul` and `requantize`."""

    uses_arithmetic = True

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
        if a.dtype == np.uint8 and b.dtype == np.int8 and b.ndim == 2 and y_zero_point.dtype == np.uint8 \
                and a.ndim >= 1 and np.asarray(a_scale).size == 1 and self.arithmetic == "exact":
            from ...kernels.qlinear import quantized_linear
            n = b.shape[1]
            return quantized_linear(a, _scalar(a_scale), int(_scalar(a_zero_point)), np.ascontiguousarray(b.T),
                                    np.broadcast_to(np.asarray(b_scale, np.float32).reshape(-1), (n,)),
                                    np.broadcast_to(np.asarray(b_zero_point, np.int64).reshape(-1), (n,)),
                                    None, _scalar(y_scale), int(_scalar(y_zero_point)))
        acc = integer_matmul(a, _row_zero_point(a_zero_point), b, b_zero_point, self.arithmetic)
        return requantize(acc, _multiplier(np.asarray(a_scale).reshape(-1, 1) if np.asarray(a_scale).size > 1
                                           else a_scale, b_scale, y_scale), y_zero_point)


@register("QLinearMatMul", 21)
class QLinearMatMul_21(QLinearMatMul):
    """Opset 21 adds float8 and 16-bit types; the formula is unchanged."""


def check_accumulator_bound(w_centred, bias):
    """Refuse a convolution or matmul whose int32 accumulator can overflow, judged on its actual weights:
    for output channel c (the first axis of `w_centred` = w - w_zp),

        |acc_c| = |sum_k (x_k - x_zp) w_c,k + bias_c| <= 255 * sum_k |w_c,k| + |bias_c|   (|x - x_zp| <= 255)

    and the largest of these must fit int32, the accumulator onnxruntime's kernels use. This is tighter than
    `qelementwise.check_accumulator_range` (depth * 255 * 255 + max |bias|, a worst case over all weights):
    onnxruntime's quantizer stores a dead channel's bias at tiny weight scales as a value near 2^31, with
    weights near zero, which fits. Raises ValueError naming the channel and its bound."""
    bound = 255 * np.abs(w_centred.astype(np.int64)).reshape(w_centred.shape[0], -1).sum(axis=1)
    if bias is not None:
        bound = bound + np.abs(np.asarray(bias, np.int64).reshape(-1))
    worst = int(np.argmax(bound)) if bound.size else 0
    if bound.size and bound[worst] > INT32_MAX:
        raise ValueError(f"output channel {worst}: 255 * sum |w - w_zp| + |bias| = {int(bound[worst])} exceeds "
                         f"int32 ({INT32_MAX}): its accumulator can overflow")


def _kernel_takes(depth, bias):
    """Whether the int8 kernels' own (worst-case) accumulator check accepts a reduction of `depth` with `bias`."""
    try:
        check_accumulator_range(depth, bias)
    except ValueError:
        return False
    return True


@register("QLinearConv", 10)
class QLinearConv(Op):
    """conv(x - x_zp, w - w_zp) + B (int32, scale x_scale * w_scale), requantized to y's qparams; w_scale and
    w_zero_point per tensor or per output channel. uint8 x with int8 w and symmetric pads run on
    `quantized_conv2d` in exact arithmetic when its worst-case accumulator check holds; a layer that only
    the bound on its actual weights admits (`check_accumulator_bound`) runs on the exact NumPy route below.
    In "u8s8-saturating" a grouped or dense (not depthwise) conv runs on `_saturating_conv`, as onnxruntime's
    MLAS GEMM, while its depthwise kernel is exact."""

    uses_arithmetic = True

    def run(self, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b=None, *,
            auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
        strides, dilations, pads = _conv_geometry(x, w, auto_pad, dilations, pads, strides)
        c_out = w.shape[0]
        w_scales = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (c_out,))
        w_zps = np.broadcast_to(np.asarray(w_zero_point, np.int64).reshape(-1), (c_out,))
        within_worst_case = _kernel_takes(int(np.prod(w.shape[1:])), b)
        if not within_worst_case:        # the worst case bounds the actual one: only then look at the weights
            check_accumulator_bound(w.astype(np.int64) - w_zps.reshape(-1, 1, 1, 1), b)
        saturating = self.arithmetic == "u8s8-saturating" and x.dtype == np.uint8 and w.dtype == np.int8 \
            and x.ndim == 4 and not (w.shape[1] == 1 and c_out == group)
        if x.dtype == np.uint8 and w.dtype == np.int8 and y_zero_point.dtype == np.uint8 and x.ndim == 4 \
                and pads[:2] == pads[2:] and within_worst_case and not saturating:
            from ...kernels.qconv import quantized_conv2d
            return quantized_conv2d(x, _scalar(x_scale), int(_scalar(x_zero_point)), w, w_scales, w_zps,
                                    None if b is None else b.astype(np.int32), _scalar(y_scale), int(_scalar(y_zero_point)),
                                    tuple(strides), tuple(pads[:2]), tuple(dilations), int(group))
        if saturating:
            acc = _saturating_conv(x, int(_scalar(x_zero_point)), w, w_zps, group, strides, dilations, pads)
        else:
            acc = _integer_conv(_shifted(x, x_zero_point), w.astype(np.int64) - w_zps.reshape(-1, 1, 1, 1), group,
                                strides, dilations, pads)
        if b is not None:
            acc = acc + b.astype(np.int64).reshape(1, -1, 1, 1)
        return requantize(acc, _multiplier(x_scale, w_scales, y_scale).reshape(1, -1, 1, 1), y_zero_point)


# ----- com.microsoft operators that onnxruntime's quantizer emits (QOperator format) ----------------
# Formulas from onnxruntime's docs/ContribOperators.md; the float32 arithmetic follows its MLAS kernels.

MS = "com.microsoft"


def _real(q, scale, zero_point):
    return (q.astype(np.int64) - np.asarray(zero_point).astype(np.int64)).astype(np.float32)


def _store(real_over_scale, zero_point):
    lo, hi = _RANGES[zero_point.dtype]
    return np.clip(np.rint(real_over_scale).astype(np.float64) + float(zero_point), lo, hi).astype(zero_point.dtype)


@register("QLinearAdd", 1, domain=MS)
class QLinearAdd(Op):
    """C = saturate(round((A_scale (A - A_zp) + B_scale (B - B_zp)) / C_scale) + C_zp), computed as
    (A - A_zp) * float32(A_scale / C_scale) + (B - B_zp) * float32(B_scale / C_scale) as MLAS does."""

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
        zp = np.zeros((), a.dtype) if c_zero_point is None else c_zero_point
        ka = np.float32(np.float32(a_scale) / np.float32(c_scale))
        kb = np.float32(np.float32(b_scale) / np.float32(c_scale))
        return _store(_real(a, a_scale, a_zero_point) * ka + _real(b, b_scale, b_zero_point) * kb, zp)


@register("QLinearMul", 1, domain=MS)
class QLinearMul(Op):
    """C = saturate(round(A_scale B_scale / C_scale (A - A_zp)(B - B_zp)) + C_zp)."""

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
        zp = np.zeros((), a.dtype) if c_zero_point is None else c_zero_point
        k = np.float32(np.float32(a_scale) * np.float32(b_scale) / np.float32(c_scale))
        return _store(_real(a, a_scale, a_zero_point) * _real(b, b_scale, b_zero_point) * k, zp)


@register("QLinearGlobalAveragePool", 1, domain=MS)
class QLinearGlobalAveragePool(Op):
    """y = saturate(round((sum(x) - N x_zp) * x_scale / (N y_scale)) + y_zp) over the N spatial positions
    (channels_last=1: the channels are the last axis)."""

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point, *, channels_last=0):
        axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
        n = int(np.prod([x.shape[a] for a in axes]))
        acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - n * int(x_zero_point)
        k = np.float32(np.float32(x_scale) / (np.float32(y_scale) * np.float32(n)))
        return _store(acc.astype(np.float32) * k, y_zero_point)


@register("QGemm", 1, domain=MS)
class QGemm(Op):
    """acc = (A' - a_zp)(B' - b_zp) + C (C int32 at scale a_scale b_scale); with y_scale the output is
    saturate(round(alpha a_scale b_scale / y_scale acc) + y_zp), without it the float alpha a_scale b_scale acc.
    b_scale / b_zero_point per tensor or per output column."""

    uses_arithmetic = True

    def run(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None, y_zero_point=None, *,
            alpha=1.0, transA=0, transB=0):
        a = a.T if transA else a
        b = b.T if transB else b
        acc = integer_matmul(a, a_zero_point, b, b_zero_point, self.arithmetic)
        if c is not None:
            acc = acc + c.astype(np.int64)
        k = np.float32(alpha) * np.float32(a_scale) * np.asarray(b_scale, np.float32)
        if y_scale is None:
            return (acc.astype(np.float32) * k).astype(np.float32)
        zp = np.zeros((), a.dtype) if y_zero_point is None else y_zero_point
        return _store(acc.astype(np.float32) * (k / np.float32(y_scale)), zp)


def dynamic_matmul(a, w_q, w_scale, w_zero_point, arithmetic="exact"):
    """a (M, K) float32 @ int8 w_q (K, N): a quantized by DynamicQuantizeLinear, the int32 product (summed in
    `arithmetic`, see `integer_matmul`) scaled by float32(a_scale * w_scale) (w_scale / w_zero_point a scalar
    or per column)."""
    a_q, a_scale, a_zp = DynamicQuantizeLinear().run(a)
    acc = integer_matmul(a_q, a_zp, w_q, w_zero_point, arithmetic)
    if not a_scale:                      # an all-zero input: every code is the zero point
        return np.zeros(acc.shape, np.float32)
    return acc.astype(np.float32) * (np.float32(a_scale) * np.asarray(w_scale, np.float32))


@register("DynamicQuantizeMatMul", 1, domain=MS)
class DynamicQuantizeMatMul(Op):
    """Y = A @ B for float A (..., K) and int8 / uint8 B (K, N): A quantized per call by DynamicQuantizeLinear,
    the int32 product scaled by float32(a_scale * b_scale) (b_scale / b_zero_point per tensor or per column),
    then + bias: `dynamic_matmul`, what onnxruntime's optimizer fuses DynamicQuantizeLinear -> MatMulInteger
    -> Cast -> Mul into."""

    uses_arithmetic = True

    def run(self, a, b, b_scale, b_zero_point=None, bias=None):
        zp = np.zeros((), b.dtype) if b_zero_point is None else b_zero_point
        y = dynamic_matmul(a.reshape(-1, a.shape[-1]), b, np.asarray(b_scale).reshape(-1), np.asarray(zp).reshape(-1),
                           self.arithmetic).reshape(a.shape[:-1] + b.shape[-1:])
        return y if bias is None else (y + bias).astype(np.float32)


# Operators without an integer formula: dequantize, apply the float operator, quantize again. onnxruntime
# evaluates Sigmoid / LeakyRelu through a 256-entry table built the same way (one entry per code), so the
# results agree up to float32 rounding of f.

def _requantize_float(f, x, x_scale, x_zero_point, y_scale, y_zero_point, axis_shape=None):
    zp = np.zeros((), x.dtype) if y_zero_point is None else y_zero_point
    real = _real(x, x_scale, 0 if x_zero_point is None else x_zero_point) * np.float32(x_scale)
    return quantize(f(real), y_scale, zp, zp.dtype)


@register("QLinearSigmoid", 1, domain=MS)
class QLinearSigmoid(Op):
    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None):
        from .elementwise import Sigmoid
        return _requantize_float(Sigmoid().run, x, x_scale, x_zero_point, y_scale, y_zero_point)


@register("QLinearLeakyRelu", 1, domain=MS)
class QLinearLeakyRelu(Op):
    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, alpha=0.01):
        from .elementwise import LeakyRelu
        return _requantize_float(lambda r: LeakyRelu().run(r, alpha=alpha), x, x_scale, x_zero_point, y_scale,
                                 y_zero_point)


@register("QLinearConcat", 1, domain=MS)
class QLinearConcat(Op):
    """Y = concat(requantize(X_i) to (Y_scale, Y_zp)); inputs Y_scale, Y_zp, then (X, X_scale, X_zp) triples."""

    def run(self, y_scale, y_zero_point, *triples, axis):
        parts = [_requantize_float(lambda r: r, triples[i], triples[i + 1], triples[i + 2], y_scale, y_zero_point)
                 for i in range(0, len(triples), 3)]
        return np.concatenate(parts, axis=axis)


@register("QLinearAveragePool", 1, domain=MS)
class QLinearAveragePool(Op):
    """AveragePool of the dequantized input, quantized to y's qparams (channels_last: NHWC)."""

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, auto_pad="NOTSET", ceil_mode=0,
            channels_last=0, count_include_pad=0, kernel_shape, pads=None, strides=None):
        from .nn import AveragePool

        def pool(r):
            r = np.moveaxis(r, -1, 1) if channels_last else r
            out = AveragePool().run(r, auto_pad=auto_pad, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                    kernel_shape=kernel_shape, pads=pads, strides=strides)
            return np.moveaxis(out, 1, -1) if channels_last else out
        return _requantize_float(pool, x, x_scale, x_zero_point, y_scale, y_zero_point)


@register("QLinearSoftmax", 1, domain=MS)
class QLinearSoftmax(Op):
    """Softmax of the dequantized input with the semantics of ONNX opset `opset` (flattened before 13)."""

    def run(self, x, x_scale, x_zero_point, y_scale, y_zero_point, *, axis=-1, opset=13):
        from .nn import Softmax_1, Softmax_13
        op = (lambda r: Softmax_13().run(r, axis=axis)) if opset >= 13 else (lambda r: Softmax_1().run(r, axis=axis))
        return _requantize_float(op, x, x_scale, x_zero_point, y_scale, y_zero_point)


def matmul_nbits_arrays(b, scales, zero_points, g_idx, *, K, N, bits, block_size, node="MatMulNBits"):
    """MatMulNBits' constant inputs as the project's int4 arrays (`quant.int4`): packed uint8 (N, n_blocks,
    block_size / 2), scales float32 (N, n_blocks), packed zero points uint8 (N, ceil(n_blocks / 2)) or None.

    onnxruntime writes B as (N, n_blocks, blob), scales and zero points either (N, ...) or flat; the bytes
    are read in that order whatever the shape. 4-bit only; zero points as uint8 nibbles (a float zero point
    per block, which onnxruntime also accepts, is refused, as is a g_idx other than k // block_size: groups
    that are not runs of consecutive inputs have no place in the int4 layout here; and a g_idx beside zero
    points, which onnxruntime 1.32 does not read as it reads the same zero points without one: measured, its
    output differs by whole steps, so neither reading could be called MatMulNBits').

    Raises:
        UnsupportedOperatorError: bits other than 4, float zero points, a g_idx that reorders the groups.
        ValueError: an attribute or array whose value or shape MatMulNBits does not allow.
    """
    from ...quant.int4 import check_group_size, check_packed, n_groups
    from ..registry import UnsupportedOperatorError
    if bits != 4:
        raise UnsupportedOperatorError(f"MatMulNBits (node {node!r}): bits={bits}; minicompress reads bits=4 only")
    block_size = check_group_size(block_size, f"MatMulNBits (node {node!r}) block_size")
    if K < 1 or N < 1:
        raise ValueError(f"MatMulNBits (node {node!r}): K and N must be positive, got K={K}, N={N}")
    blocks = n_groups(K, block_size)

    def shaped(value, name, dtype, shape):
        value = np.asarray(value)
        if value.dtype != dtype or value.size != int(np.prod(shape)):
            raise ValueError(f"MatMulNBits (node {node!r}): {name} must hold {int(np.prod(shape))} {np.dtype(dtype).name} "
                             f"values for K={K}, N={N}, block_size={block_size}, got {value.dtype} of shape {value.shape}")
        return np.ascontiguousarray(value.reshape(shape))

    if zero_points is not None and np.asarray(zero_points).dtype != np.uint8:
        raise UnsupportedOperatorError(f"MatMulNBits (node {node!r}): zero_points of type {np.asarray(zero_points).dtype}; "
                                       f"minicompress reads uint8 (packed 4-bit) zero points only")
    if g_idx is not None:
        g_idx = np.asarray(g_idx)
        if g_idx.shape != (K,) or not np.array_equal(g_idx, np.arange(K) // block_size):
            raise UnsupportedOperatorError(f"MatMulNBits (node {node!r}): g_idx other than k // block_size (a group "
                                           f"order of act_order without static groups) is not supported")
        if zero_points is not None:
            raise UnsupportedOperatorError(f"MatMulNBits (node {node!r}): g_idx with zero_points is not supported "
                                           f"(onnxruntime reads the zero points otherwise when g_idx is given)")
    packed = shaped(b, "B", np.uint8, (N, blocks, block_size // 2))
    scales = shaped(scales, "scales", np.float32, (N, blocks))
    if zero_points is not None:
        zero_points = shaped(zero_points, "zero_points", np.uint8, (N, (blocks + 1) // 2))
    check_packed(packed, scales, zero_points, K, N, block_size, f"MatMulNBits (node {node!r})")
    return packed, scales, zero_points


@register("MatMulNBits", 1, domain=MS)
class MatMulNBits(Op):
    """Y = A dequantize(B)^T + bias for float32 A (..., K): B (N, K) in blocks of block_size along K, each
    W[n, k] = (q - zero_point) * scale (`quant.int4`; zero point 8 when none is given). The importer makes
    a node with constant B an `Int4Linear` (`onnx/lower.py`); this runs one whose B is computed. Computed in
    float32 (any accuracy_level: it is the least accuracy onnxruntime allows itself)."""

    def run(self, a, b, scales, zero_points=None, g_idx=None, bias=None, *, K, N, bits=4, block_size,
            accuracy_level=0):
        from ...kernels.int4 import int4_linear
        from ...quant.int4 import unpack_zero_points
        if a.dtype != np.float32 or a.ndim < 1 or a.shape[-1] != K:
            raise ValueError(f"MatMulNBits: A must be float32 (..., {K}), got {a.dtype} of shape {a.shape}")
        packed, scales, zero_points = matmul_nbits_arrays(b, scales, zero_points, g_idx, K=K, N=N, bits=bits,
                                                          block_size=block_size)
        bias = np.zeros(0, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32).reshape(N)
        rows = np.ascontiguousarray(a.reshape(-1, K))
        out = int4_linear(rows, packed, scales, unpack_zero_points(zero_points, scales.shape[1], N), bias)
        return out.reshape(*a.shape[:-1], N)

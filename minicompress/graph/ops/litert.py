"""TFLite's integer arithmetic as a readable reference (domain "tflite"), bit for bit LiteRT's reference kernels.

A real multiplier M = s_in s_w / s_out (double) is stored as a 32-bit fixed-point significand and a power of
two (`quantize_multiplier`, TFLite's QuantizeMultiplier: M = q 2^(shift - 31), q in [2^30, 2^31)); an int32
accumulator is rescaled by `multiply_by_quantized_multiplier` (common.h), which TFLite spells two ways:

- "double" (gemmlowp, TFLite's original): SaturatingRoundingDoublingHighMul (the high 32 bits of 2 x q,
  rounded half away from zero), then RoundingDivideByPOT (a right shift by -shift, rounding half away);
  two roundings, so a product just under k + 1/2 can end at k + 1.
- "single" (TFLITE_SINGLE_ROUNDING): (x q + 2^(30 - shift)) >> (31 - shift), one rounding, half up.

LiteRT's wheel (ai-edge-litert 2.3) uses both: its reference FULLY_CONNECTED rounds once, every other op
here twice; the importer sets each node's `rounding` to match, the ops default to gemmlowp's "double".
Either way the result is round(acc M) but for those ties, not round-half-even in float as onnxruntime's
MLAS does.

    Quantize          q = clamp(round_half_away(x / scale) + zp)                       (AffineQuantize)
    Conv2D            y = clamp(MBQM(sum (x - x_zp) w + bias, M[c]) + y_zp, act_min, act_max)   per channel c
    FullyConnected    the same over (x - x_zp)(w - w_zp), per tensor or per channel
    Add / Sub         both inputs (q - zp) 2^20 rescaled by s_i / (2 max s), summed (subtracted), rescaled by
                      2 max s / (2^20 s_out), + y_zp (TFLite's int8 Add / Sub, left_shift 20)
    Mul               y = clamp(MBQM((a - a_zp)(b - b_zp), s_a s_b / s_y) + y_zp)
    ReluX LeakyRelu PRelu   MBQM of x - x_zp by one multiplier or another, by the sign of x - x_zp
    Pool2D Mean       max / rounded average of the codes; MBQM of the sum with 1 / count folded into M
    LookupTable       LOGISTIC, TANH: table[q], the table filled in float32 (`lookup_table`)
    HardSwish         int16 fixed point; Softmax: gemmlowp's fixed-point exp and reciprocal
    ResizeBilinear    the codes weighted in 1/1024ths of a pixel, the sum rounded from 2^20ths

Inputs are int8 / int32 NumPy arrays; accumulators are int64 holding int32 values (the kernels' int32).

These formulas are the definition; int8 CONV_2D (one group), DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD and SUB
run them compiled (`kernels/tflite_int8.py`: the int8 GEMM's exact sums, the same fixed-point steps), each
op's `reference` staying the twin the tests hold the kernels to.
"""
import math

import numpy as np

from ...kernels import tflite_int8 as kernels
from ..registry import Op, register

DOMAIN = "tflite"


def quantize_multiplier(m):
    """(q, shift) with m = q 2^(shift - 31), q an int32 in [2^30, 2^31) (TFLite's QuantizeMultiplier)."""
    if m == 0.0:
        return 0, 0
    fraction, shift = math.frexp(m)
    q = int(math.floor(abs(fraction) * 2 ** 31 + 0.5)) * (1 if fraction > 0 else -1)   # std::round
    if q == 2 ** 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _trunc_div(a, d):
    """C's integer division (toward zero) of int64 arrays by a positive d."""
    return np.where(a >= 0, a // d, -((-a) // d))


def saturating_rounding_doubling_high_mul(a, b, bits=32):
    """gemmlowp: the high `bits` bits of 2 a b, i.e. a b / 2^(bits - 1), rounded to nearest with ties toward
    +inf (the nudge 1 - 2^(bits - 2) of a negative product, then C's truncating division, sends a negative tie
    toward zero: -0.5 -> 0, -1.5 -> -1); (MIN, MIN) -> MAX. bits=16 is its int16 form (HARD_SWISH)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << (bits - 2), 1 - (1 << (bits - 2)))
    high = _trunc_div(ab + nudge, 1 << (bits - 1))
    return np.where((a == b) & (a == -2 ** (bits - 1)), 2 ** (bits - 1) - 1, high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp: x / 2^exponent rounded to nearest, ties away from zero (an arithmetic shift and a nudge)."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, q, shift, rounding="double"):
    """round(x q 2^(shift - 31)) as TFLite's MultiplyByQuantizedMultiplier, per element or per channel:
    rounding="double" (gemmlowp's two steps) or "single" (TFLITE_SINGLE_ROUNDING)."""
    x, q, shift = np.asarray(x, np.int64), np.asarray(q, np.int64), np.asarray(shift, np.int64)
    if rounding == "single":
        total = 31 - shift
        return (x * q + (np.int64(1) << (total - 1))) >> total
    if rounding != "double":
        raise ValueError(f"rounding={rounding!r}: expected 'single' or 'double'")
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x << left, q), right)


def _requantize(acc, q, shift, zero_point, low, high, dtype, rounding):
    return np.clip(multiply_by_quantized_multiplier(acc, q, shift, rounding) + zero_point, low, high).astype(dtype)


def per_code(x, function):
    """function(x) for an elementwise function of int8 / uint8 codes, evaluated once on the type's 256 codes
    and looked up: the same values, without the fixed-point steps on every element."""
    info = np.iinfo(x.dtype)
    return function(np.arange(info.min, info.max + 1).astype(x.dtype))[x.astype(np.int64) - info.min]


@register("Quantize", 1, domain=DOMAIN)
class Quantize(Op):
    """q = clamp(round_half_away(x / scale) + zero_point) in the output type (x / scale in float32)."""

    def run(self, x, *, scale, zero_point, dtype="int8"):
        info = np.iinfo(np.dtype(dtype))
        scaled = x.astype(np.float32) / np.float32(scale)
        rounded = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))     # std::round
        return np.clip(rounded.astype(np.int64) + zero_point, info.min, info.max).astype(dtype)


@register("Conv2D", 1, domain=DOMAIN)
class Conv2D(Op):
    """Per-channel int8 convolution, NHWC input, OHWI filter (groups = C_in / filter's I), int32 bias.

    acc[n, y, x, o] = sum over taps inside the input of (in - in_zp) w[o, ky, kx, i] + bias[o]; the padding
    (before: pads[0], pads[1]) contributes nothing, as taps outside are skipped in TFLite's loops."""

    def run(self, x, w, bias=None, *, strides, dilations, pads, out_size, input_zero_point, multipliers, shifts,
            output_zero_point, activation_min, activation_max, depthwise=0, rounding="double"):
        depth = w.shape[1] * w.shape[2] * (1 if depthwise else w.shape[3])
        if _compiled_applies(x, w, bias, depth) and (depthwise or x.shape[3] == w.shape[3]):
            geometry = (strides, dilations, pads, out_size)
            acc = (kernels.depthwise_accumulators if depthwise else kernels.conv2d_accumulators)(
                x, input_zero_point, w, bias, *geometry)
            return kernels.requantize(acc, multipliers, shifts, output_zero_point, activation_min, activation_max,
                                      rounding, x.dtype)
        return self.reference(x, w, bias, strides=strides, dilations=dilations, pads=pads, out_size=out_size,
                              input_zero_point=input_zero_point, multipliers=multipliers, shifts=shifts,
                              output_zero_point=output_zero_point, activation_min=activation_min,
                              activation_max=activation_max, depthwise=depthwise, rounding=rounding)

    @staticmethod
    def reference(x, w, bias=None, *, strides, dilations, pads, out_size, input_zero_point, multipliers, shifts,
                  output_zero_point, activation_min, activation_max, depthwise=0, rounding="double"):
        acc = _conv_acc(x.astype(np.int64) - input_zero_point, w.astype(np.int64), strides, dilations, pads, out_size,
                        bool(depthwise))
        if bias is not None:
            acc = acc + bias.astype(np.int64)
        return _requantize(acc, np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64), output_zero_point,
                           activation_min, activation_max, x.dtype, rounding)


def _compiled_applies(x, w, bias, depth):
    """Whether the compiled kernels compute this op's sums: int8 codes, an int32 bias, and sums that fit
    the GEMM's exact int32 range (`qelementwise.check_accumulator_range`)."""
    largest_bias = 0 if bias is None or bias.size == 0 else int(np.abs(bias.astype(np.int64)).max())
    return (x.dtype == np.int8 and w.dtype == np.int8 and (bias is None or bias.dtype == np.int32)
            and depth * 255 * 255 + largest_bias <= 2**31 - 1)


def _conv_acc(x, w, strides, dilations, pads, out_size, depthwise):
    """int64 accumulators (N, OH, OW, O) of an NHWC convolution, zero-padded (x is already x - zp)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[1:3]
    oh, ow = out_size
    sh, sw = strides
    dh, dw = dilations
    need_h, need_w = (oh - 1) * sh + dh * (kh - 1) + 1, (ow - 1) * sw + dw * (kw - 1) + 1
    padded = np.zeros((n, max(need_h, h + pads[0]), max(need_w, wd + pads[1]), c), np.int64)
    padded[:, pads[0]:pads[0] + h, pads[1]:pads[1] + wd] = x
    taps = np.stack([np.stack([padded[:, ky * dh:ky * dh + (oh - 1) * sh + 1:sh, kx * dw:kx * dw + (ow - 1) * sw + 1:sw]
                               for kx in range(kw)], axis=3) for ky in range(kh)], axis=3)   # (N, OH, OW, KH, KW, C)
    if depthwise:                       # w (1, KH, KW, C * M): output channel c * M + m reads input channel c
        mult = w.shape[3] // c
        return np.einsum("nyxhwc,hwcm->nyxcm", taps, w[0].reshape(kh, kw, c, mult)).reshape(n, oh, ow, c * mult)
    groups = c // w.shape[3]
    per = w.shape[0] // groups
    outs = [np.einsum("nyxhwi,ohwi->nyxo", taps[..., g * w.shape[3]:(g + 1) * w.shape[3]], w[g * per:(g + 1) * per])
            for g in range(groups)]
    return np.concatenate(outs, axis=-1)


@register("FullyConnected", 1, domain=DOMAIN)
class FullyConnected(Op):
    """y = clamp(MBQM((x - x_zp) (w - w_zp)^T + bias, M) + y_zp): x (B, I), w (O, I), M per tensor or channel."""

    def run(self, x, w, bias=None, *, input_zero_point, weight_zero_point=0, multipliers, shifts, output_zero_point,
            activation_min, activation_max, rounding="double"):
        if x.ndim == 2 and _compiled_applies(x, w, bias, w.shape[1]) and -128 <= weight_zero_point <= 127:
            acc = kernels.fully_connected_accumulators(x, input_zero_point, w, weight_zero_point, bias)
            return kernels.requantize(acc, multipliers, shifts, output_zero_point, activation_min, activation_max,
                                      rounding, x.dtype)
        return self.reference(x, w, bias, input_zero_point=input_zero_point, weight_zero_point=weight_zero_point,
                              multipliers=multipliers, shifts=shifts, output_zero_point=output_zero_point,
                              activation_min=activation_min, activation_max=activation_max, rounding=rounding)

    @staticmethod
    def reference(x, w, bias=None, *, input_zero_point, weight_zero_point=0, multipliers, shifts, output_zero_point,
                  activation_min, activation_max, rounding="double"):
        acc = (x.astype(np.int64) - input_zero_point) @ (w.astype(np.int64) - weight_zero_point).T
        if bias is not None:
            acc = acc + bias.astype(np.int64)
        return _requantize(acc, np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64), output_zero_point,
                           activation_min, activation_max, x.dtype, rounding)


def _rescaled_sum(a, b, sign, zero_points, multipliers, shifts, output_zero_point, activation_min, activation_max,
                  left_shift, rounding):
    if a.dtype == b.dtype == np.int8 and np.ndim(multipliers[2]) == 0:
        return kernels.rescaled_sum(a, b, sign, zero_points, multipliers, shifts, output_zero_point, activation_min,
                                    activation_max, left_shift, rounding)
    return rescaled_sum_reference(a, b, sign, zero_points, multipliers, shifts, output_zero_point, activation_min,
                                  activation_max, left_shift, rounding)


def rescaled_sum_reference(a, b, sign, zero_points, multipliers, shifts, output_zero_point, activation_min,
                           activation_max, left_shift, rounding):
    """ADD / SUB's formula (module docstring): the twin of `kernels.tflite_int8.rescaled_sum`."""
    scaled = [multiply_by_quantized_multiplier((v.astype(np.int64) - zp) << left_shift, q, s, rounding)
              for v, zp, q, s in zip((a, b), zero_points, multipliers[:2], shifts[:2])]
    return _requantize(scaled[0] + sign * scaled[1], multipliers[2], shifts[2], output_zero_point, activation_min,
                       activation_max, a.dtype, rounding)


@register("Add", 1, domain=DOMAIN)
class Add(Op):
    """TFLite's int8 ADD (broadcasting): each (q - zp) 2^20 rescaled to the common scale, summed, rescaled."""

    def run(self, a, b, *, zero_points, multipliers, shifts, output_zero_point, activation_min, activation_max,
            left_shift=20, rounding="double"):
        return _rescaled_sum(a, b, 1, zero_points, multipliers, shifts, output_zero_point, activation_min,
                             activation_max, left_shift, rounding)


@register("Sub", 1, domain=DOMAIN)
class Sub(Op):
    """TFLite's int8 SUB (broadcasting): ADD's arithmetic with the second rescaled input subtracted."""

    def run(self, a, b, *, zero_points, multipliers, shifts, output_zero_point, activation_min, activation_max,
            left_shift=20, rounding="double"):
        return _rescaled_sum(a, b, -1, zero_points, multipliers, shifts, output_zero_point, activation_min,
                             activation_max, left_shift, rounding)


@register("Mul", 1, domain=DOMAIN)
class Mul(Op):
    """TFLite's int8 MUL (broadcasting): y = clamp(MBQM((a - a_zp)(b - b_zp), s_a s_b / s_y) + y_zp)."""

    def run(self, a, b, *, zero_points, multiplier, shift, output_zero_point, activation_min, activation_max,
            rounding="double"):
        product = (a.astype(np.int64) - zero_points[0]) * (b.astype(np.int64) - zero_points[1])
        return _requantize(product, multiplier, shift, output_zero_point, activation_min, activation_max, a.dtype,
                           rounding)


@register("ReluX", 1, domain=DOMAIN)
class ReluX(Op):
    """TFLite's int8 RELU, RELU6, RELU_N1_TO_1 (`ReluX`): the input rescaled to the output's scale, then
    clamped to the activation's range: y = clamp(MBQM(x - x_zp, s_x / s_y) + y_zp, act_min, act_max)."""

    def run(self, x, *, input_zero_point, multiplier, shift, output_zero_point, activation_min, activation_max,
            rounding="double"):
        return per_code(x, lambda c: _requantize(c.astype(np.int64) - input_zero_point, multiplier, shift,
                                                 output_zero_point, activation_min, activation_max, c.dtype,
                                                 rounding))


@register("LeakyRelu", 1, domain=DOMAIN)
class LeakyRelu(Op):
    """TFLite's int8 LEAKY_RELU: v = x - x_zp rescaled by s_x / s_y where v >= 0, by alpha s_x / s_y elsewhere
    (a negative alpha as the negated product of its magnitude), + y_zp, clamped to the type."""

    def run(self, x, *, input_zero_point, multipliers, shifts, output_zero_point, rounding="double"):
        return per_code(x, lambda c: self.formula(c, input_zero_point, multipliers, shifts, output_zero_point,
                                                  rounding))

    @staticmethod
    def formula(x, input_zero_point, multipliers, shifts, output_zero_point, rounding):
        v = x.astype(np.int64) - input_zero_point
        (q_identity, q_alpha), (s_identity, s_alpha) = multipliers, shifts
        alpha = multiply_by_quantized_multiplier(v, abs(q_alpha), s_alpha, rounding) * (-1 if q_alpha < 0 else 1)
        y = np.where(v >= 0, multiply_by_quantized_multiplier(v, q_identity, s_identity, rounding), alpha)
        info = np.iinfo(x.dtype)
        return np.clip(y + output_zero_point, info.min, info.max).astype(x.dtype)


@register("PRelu", 1, domain=DOMAIN)
class PRelu(Op):
    """TFLite's int8 PRELU (alpha broadcast against x): v = x - x_zp rescaled by s_x / s_y where v >= 0, else
    v (alpha - alpha_zp) rescaled by s_x s_alpha / s_y; + y_zp, clamped to the type."""

    def run(self, x, alpha, *, zero_points, multipliers, shifts, output_zero_point, rounding="double"):
        v = x.astype(np.int64) - zero_points[0]
        negative = multiply_by_quantized_multiplier(v * (alpha.astype(np.int64) - zero_points[1]), multipliers[1],
                                                    shifts[1], rounding)
        y = np.where(v >= 0, multiply_by_quantized_multiplier(v, multipliers[0], shifts[0], rounding), negative)
        info = np.iinfo(x.dtype)
        return np.clip(y + output_zero_point, info.min, info.max).astype(x.dtype)


def _pool_taps(x, kernel, strides, pads, out_size):
    """Each tap of the pooling window over every output, (N, OH, OW, C), with where it lies inside the input
    (OH, OW, 1): TFLite's loops skip the taps outside, so the padding is neither a value nor counted."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (oh, ow) = kernel, strides, out_size
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    padded = np.zeros((n, max(need_h, h + pads[0]), max(need_w, w + pads[1]), c), x.dtype)
    inside = np.zeros(padded.shape[1:3] + (1,), bool)
    padded[:, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x
    inside[pads[0]:pads[0] + h, pads[1]:pads[1] + w] = True
    for ky in range(kh):
        for kx in range(kw):
            rows, cols = slice(ky, ky + (oh - 1) * sh + 1, sh), slice(kx, kx + (ow - 1) * sw + 1, sw)
            yield padded[:, rows, cols], inside[rows, cols]


@register("Pool2D", 1, domain=DOMAIN)
class Pool2D(Op):
    """TFLite's int8 MAX_POOL_2D and AVERAGE_POOL_2D, NHWC, on the codes (input and output share scale and zero
    point). Max: the largest code inside the window. Average: sum / count over the taps inside the input,
    rounded half away from zero ((sum +- count / 2) / count in C's integer division). Then the fused
    activation's clamp [act_min, act_max]."""

    def run(self, x, *, mode, kernel, strides, pads, out_size, activation_min, activation_max):
        n, c = x.shape[0], x.shape[3]
        if mode == "max":
            y = np.full((n, *out_size, c), np.iinfo(x.dtype).min, x.dtype)
            for tap, inside in _pool_taps(x, kernel, strides, pads, out_size):
                y = np.where(inside, np.maximum(y, tap), y)
        else:
            total, count = np.zeros((n, *out_size, c), np.int64), np.zeros((*out_size, 1), np.int64)
            for tap, inside in _pool_taps(x, kernel, strides, pads, out_size):
                total += np.where(inside, tap, 0)
                count += inside
            y = _trunc_div(total + np.where(total > 0, count // 2, -(count // 2)), count)
        return np.clip(y, activation_min, activation_max).astype(x.dtype)


def mean_multiplier(q, shift, count):
    """MEAN's multiplier s_x / s_y with 1 / count folded in, as the reference's QuantizedMeanOrSum does:
    q' = (q << k) // count and shift' = shift - k, k = floor(log2 count) capped at 32 and at 31 + shift."""
    k = min(int(count).bit_length() - 1, 32, 31 + shift)
    return (q << k) // count, shift - k


@register("Mean", 1, domain=DOMAIN)
class Mean(Op):
    """TFLite's int8 MEAN: y = clamp(MBQM(sum x - count x_zp, (s_x / s_y) / count) + y_zp) over `axes`, the
    1 / count folded into the multiplier (`mean_multiplier`), so the result is one rounding of the sum."""

    def run(self, x, *, axes, keepdims, input_zero_point, multiplier, shift, output_zero_point, rounding="double"):
        axes = tuple(axes)
        count = int(np.prod([x.shape[a] for a in axes]))
        total = x.astype(np.int64).sum(axis=axes, keepdims=bool(keepdims))
        q, s = mean_multiplier(multiplier, shift, count)
        info = np.iinfo(x.dtype)
        y = multiply_by_quantized_multiplier(total - count * input_zero_point, q, s, rounding)
        return np.clip(y + output_zero_point, info.min, info.max).astype(x.dtype)


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + v.dtype.type(0.5))


def logistic_float(v):
    """LiteRT's float logistic of the tables, 1.0f / (1.0f + expf(-v)): each step rounded to float32 (expf
    taken as the float32 rounding of the exact exp, which glibc's expf returns)."""
    e = np.exp(-v.astype(np.float64)).astype(np.float32)
    return np.float32(1) / (np.float32(1) + e)


def tanh_float(v):
    """tanhf(v) as the float32 rounding of the exact tanh."""
    return np.tanh(v.astype(np.float64)).astype(np.float32)


def lookup_table(function, input_scale, input_zero_point, output_scale, output_zero_point, dtype="int8"):
    """TFLite's int8 / uint8 table of an elementwise function (LUTPopulate): for every code q,
    clamp(round_half_away(f(s_x (q - x_zp)) / s_y) + y_zp), each step in float32 as LiteRT computes it
    (1 / s_y once, then a product). Returns the table indexed by q - min(dtype)."""
    info = np.iinfo(np.dtype(dtype))
    codes = np.arange(info.min, info.max + 1)
    dequantized = np.float32(input_scale) * (codes - input_zero_point).astype(np.float32)
    rescaled = _round_half_away(function(dequantized) * (np.float32(1) / np.float32(output_scale)))
    return np.clip((rescaled + np.float32(output_zero_point)).astype(np.int64), info.min, info.max).astype(dtype)


@register("LookupTable", 1, domain=DOMAIN)
class LookupTable(Op):
    """y = table[x - min(dtype)]: TFLite's int8 LOGISTIC and TANH run their reference kernels as a 256-entry
    table filled when the model is prepared (`lookup_table`)."""

    def run(self, x, *, table):
        table = np.asarray(table, x.dtype)
        return table[x.astype(np.int64) - np.iinfo(x.dtype).min]


def downscale_multiplier_to_int16(q):
    """An int32 fixed-point multiplier as int16 (DownScaleInt32ToInt16Multiplier): (q + 2^15) >> 16,
    saturated at INT16_MAX."""
    return 2 ** 15 - 1 if q >= 2 ** 31 - 1 - 2 ** 15 else (q + 2 ** 15) >> 16


def _saturating_left_shift16(v, amount):
    return np.clip(v * (1 << amount), -2 ** 15, 2 ** 15 - 1)


@register("HardSwish", 1, domain=DOMAIN)
class HardSwish(Op):
    """TFLite's int8 HARD_SWISH, x relu6(x + 3) / 6, in int16 fixed point (reference_ops::HardSwish):

        v      = (x - x_zp) 2^7                                   x on the "hires" scale s_x / 128
        pre    = SRDHM16(v, M_out)                                v on the output scale, before its shift
        relu   = SRDHM16(v 2^(e - 1), M_relu) 2, or RDBPOT(SRDHM16(v, M_relu), -e)     x / 3 on [-1, 1] in Q0.15
        relu   = (relu + 2^15) >> 1                               (x + 3) / 6 clamped to [0, 1]
        y      = clamp(RDBPOT(pre relu / 2^15, -e_out) + y_zp)    the product truncated, then rounded

    with M_out = (s_x / 128) / s_y and M_relu = (s_x / 128) / (3 / 2^15) as int16 multipliers and exponents."""

    def run(self, x, *, input_zero_point, output_zero_point, output_multiplier, output_exponent, relu_multiplier,
            relu_exponent):
        return per_code(x, lambda c: self.formula(c, input_zero_point, output_zero_point, output_multiplier,
                                                  output_exponent, relu_multiplier, relu_exponent))

    @staticmethod
    def formula(x, input_zero_point, output_zero_point, output_multiplier, output_exponent, relu_multiplier,
                relu_exponent):
        v = (x.astype(np.int64) - input_zero_point) * (1 << 7)
        pre = saturating_rounding_doubling_high_mul(v, output_multiplier, bits=16)
        relu = _saturating_left_shift16(v, relu_exponent - 1) if relu_exponent > 0 else v
        relu = saturating_rounding_doubling_high_mul(relu, relu_multiplier, bits=16)
        if relu_exponent > 0:
            relu = _saturating_left_shift16(relu, 1)
        elif relu_exponent < 0:
            relu = rounding_divide_by_pot(relu, -relu_exponent)
        relu = (relu + (1 << 15)) >> 1
        product = np.where((relu == pre) & (relu == -2 ** 15), 2 ** 15 - 1, _trunc_div(relu * pre, 1 << 15))
        y = rounding_divide_by_pot(product, -output_exponent) + output_zero_point
        info = np.iinfo(x.dtype)
        return np.clip(y, info.min, info.max).astype(x.dtype)


def resize_bilinear_taps(in_size, out_size, align_corners, half_pixel_centers):
    """TFLite's integer sampling positions (ComputeInterpolationValuesInteger) along one axis, in 1/1024ths of a
    pixel: step = round(1024 in / out) (align_corners: round(1024 (in - 1) / (out - 1))), position p = o step
    (half_pixel_centers: + step / 2 - 512); the taps lo = max(p / 1024, 0) and hi = min(ceil(p / 1024), in - 1)
    weighted 1024 - (p - 1024 lo) and p - 1024 lo."""
    step = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        step = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    position = np.arange(out_size, dtype=np.int64) * step
    if half_pixel_centers:
        position = position + step // 2 - (1 << 9)
    low = np.minimum(np.maximum(_trunc_div(position, 1 << 10), 0), in_size - 1)
    high = np.minimum(_trunc_div(position + (1 << 10) - 1, 1 << 10), in_size - 1)
    frac = position - (1 << 10) * low
    return low, high, (1 << 10) - frac, frac


@register("ResizeBilinear", 1, domain=DOMAIN)
class ResizeBilinear(Op):
    """TFLite's int8 RESIZE_BILINEAR (reference_ops::ResizeBilinearInteger), NHWC, on the codes: the four taps
    weighted in 1/1024ths per axis (`resize_bilinear_taps`), their 2^20-scaled sum divided by 2^20 with ties
    away from zero ("double", C's division after a +-2^19 nudge) or up ("single", TFLITE_SINGLE_ROUNDING)."""

    def run(self, x, *, size, align_corners=0, half_pixel_centers=0, rounding="double"):
        y0, y1, wy0, wy1 = resize_bilinear_taps(x.shape[1], size[0], align_corners, half_pixel_centers)
        x0, x1, wx0, wx1 = resize_bilinear_taps(x.shape[2], size[1], align_corners, half_pixel_centers)
        v = x.astype(np.int64)
        # the four weighted taps summed as wy0 (wx0 a + wx1 b) + wy1 (wx0 c + wx1 d): the same integer, one axis
        # at a time
        across = v[:, :, x0] * wx0[None, None, :, None] + v[:, :, x1] * wx1[None, None, :, None]
        total = across[:, y0] * wy0[None, :, None, None] + across[:, y1] * wy1[None, :, None, None]
        if rounding == "single":
            return ((total + (1 << 19)) >> 20).astype(x.dtype)
        return (np.sign(total) * ((np.abs(total) + (1 << 19)) >> 20)).astype(x.dtype)   # (t +- 2^19) / 2^20 in C


# ----- gemmlowp's fixed-point exp and reciprocal (fixedpoint.h), as int8 SOFTMAX uses them ----------------
# A Qm.n value is an int32 raw r meaning r / 2^n, n = 31 - m; the product of Qa and Qb values is the
# SaturatingRoundingDoublingHighMul of their raws, a Q(a + b) value.

def _srdhm(a, b):
    return saturating_rounding_doubling_high_mul(a, b)


def _saturating_left_shift(x, exponent):
    """SaturatingRoundingMultiplyByPOT<exponent > 0> on int32: x 2^exponent, saturated."""
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, 2 ** 31 - 1, np.where(x < -threshold, -2 ** 31, x << exponent))


def _exp_on_quarter_interval(a):
    """exp(a) for a in [-1/4, 0), Q0.31: a Taylor expansion around -1/8 to fourth order."""
    constant_term, one_third = 1895147668, 715827883                   # exp(-1/8), 1/3 in Q0.31
    x = a + (1 << 28)                                                   # a + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4_over_4 = rounding_divide_by_pot(_srdhm(x2, x2), 2)
    tail = rounding_divide_by_pot(_srdhm(x4_over_4 + x3, one_third) + x2, 1)   # x^4/24 + x^3/6 + x^2/2
    return constant_term + _srdhm(constant_term, x + tail)


_EXP_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242)]                                                # exp(-2^k) in Q0.31


def exp_on_negative_values(a, integer_bits=5):
    """gemmlowp's exp(a) for a <= 0 given in Q(integer_bits), as Q0.31: a = q - r with q in [-1/4, 0) evaluated
    by `_exp_on_quarter_interval`, r a sum of powers of two 2^k whose factors exp(-2^k) multiply in one by one
    (the "barrel shifter"); exp(0) = INT32_MAX."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    a = np.asarray(a, np.int64)
    q = (a & (quarter - 1)) - quarter
    result = _exp_on_quarter_interval(_saturating_left_shift(q, integer_bits))     # Rescale<0>
    remainder = q - a
    for k, multiplier in _EXP_BARREL:
        if integer_bits > k:
            result = np.where(remainder & (1 << (fractional + k)), _srdhm(result, multiplier), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, 2 ** 31 - 1, result)


def _rounding_half_sum(a, b):
    total = a + b
    return _trunc_div(total + np.where(total >= 0, 1, -1), 2)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp's 1 / (1 + a) for a in [0, 1) in Q0.31: three Newton-Raphson steps x <- x + x (1 - d x) on
    d = (1 + a) / 2 from x = 48/17 - 32/17 d, in Q2.29; the result x / 2 in Q0.31."""
    half_denominator = _rounding_half_sum(a, 2 ** 31 - 1)
    x = 1515870810 + _srdhm(half_denominator, -1010580540)             # 48/17, -32/17 in Q2.29
    for _ in range(3):
        one_minus = (1 << 29) - _srdhm(half_denominator, x)
        x = x + _saturating_left_shift(_srdhm(x, one_minus), 2)        # Rescale<2> of a Q4 product
    return _saturating_left_shift(x, 1)                                 # Rescale<0>(ExactMulByPot<-1>(x))


def reciprocal(x, integer_digits):
    """TFLite's GetReciprocal of positive Q(integer_digits) values: (1 / x as a Q0.31 scale, the number of bits
    x has above 1), so that 1 / x = scale 2^-bits; x is normalized into [1, 2) by its leading zeros first."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = 32 - np.frexp(x.astype(np.float64))[1]          # count of leading zeros in 32 bits
    shifted_minus_one = (x << headroom_plus_one) - 2 ** 31
    return one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), integer_digits - headroom_plus_one


def softmax_input_scaling(beta, input_scale):
    """SOFTMAX's Prepare (PreprocessSoftmaxScaling with 5 integer bits): the multiplier and left shift that
    take a code difference to Q5.26 units of beta s_x (capped at 2^31 - 1), and diff_min, the most negative
    difference that still fits (CalculateInputRadius); differences below it give exactly 0."""
    q, shift = quantize_multiplier(min(float(beta) * float(input_scale) * (1 << 26), 2.0 ** 31 - 1))
    return q, shift, -math.floor((2 ** 5 - 1) * 2.0 ** 26 / 2.0 ** shift)


@register("Softmax", 1, domain=DOMAIN)
class Softmax(Op):
    """TFLite's int8 SOFTMAX over the last axis (reference_ops::Softmax, output scale 1/256, zero point -128):

        d     = x - max(x)                                   per row, in codes; d < diff_min contributes 0
        e     = exp_on_negative_values(SRDHM(d 2^shift, q))  exp(beta s_x d) in Q0.31
        total = sum of RDBPOT(e, 12)                         in Q12.19
        y     = clamp(RDBPOT(SRDHM(1 / total, e), bits + 23) - 128)     1 / total = reciprocal(total) 2^-bits

    LiteRT's kernel stops the process (TFLITE_CHECK) where bits + 23 > 31, i.e. total >= 512: a row of 512 or
    more nearly equal logits; the same formula carries on here, its last shift past 31 bits (outputs -128 or
    near it, the quantized 1 / total).
    """

    def run(self, x, *, multiplier, shift, diff_min):
        diff = x.astype(np.int64) - x.max(axis=-1, keepdims=True)
        inside = diff >= diff_min
        exps = exp_on_negative_values(_srdhm(np.where(inside, diff, 0) << shift, multiplier))
        total = np.where(inside, rounding_divide_by_pot(exps, 12), 0).sum(axis=-1, keepdims=True)
        scale, bits_over_unit = reciprocal(total, 12)
        y = rounding_divide_by_pot(_srdhm(scale, exps), bits_over_unit + 31 - 8) - 128
        return np.where(inside, np.clip(y, -128, 127), -128).astype(x.dtype)

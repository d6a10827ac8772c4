"""Integer 2-D convolution: uint8 activations (NCHW) times int8 weights, int32 accumulation, requantized to
uint8. Mirrors torch.ao.nn.quantized.Conv2d on the x86 / fbgemm engines (torch.ops.quantized.conv2d and
conv2d_relu); see qlinear for the arithmetic, which is the same with K = C_in / groups * kh * kw:

    acc[n, o, p, q] = sum_{c, i, j} (x_pad[n, g * Cg + c, p * sh + i * dh, q * sw + j * dw] - x_zp)
                                    * (wq[o, c, i, j] - w_zp[o])  +  bias_q[o]          (g = o // (O / groups))
    out[n, o, p, q] = clamp(round_half_even(float32(acc) * multiplier[o]) + out_zp, qmin, qmax)

x_pad is x padded with its zero point x_zp (the quantized 0.0), so a padded tap adds exactly nothing.

General path (any groups): im2row then the integer GEMM of qlinear. The input is laid out channels-last
and padded once; im2row then copies, for every output pixel, kh * kw runs of Cg contiguous bytes into one
row, so a row is the pixel's window in (i, j, c) order and the weight is reordered to match,
(O, kh, kw, Cg). The GEMM's (pixels, O) int32 result is requantized and transposed back to NCHW.

Depthwise path (groups == C_in, weight (m * C_in, 1, kh, kw)): each output plane reads one input plane,
so a direct loop over (n, o) accumulates tap by tap in an int32 plane buffer, with the zero points
subtracted up front; taps that fall on padding are skipped, which is the same as adding 0.
"""
import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import sliding_window_view

from .conv import conv_output_size, valid_range
from .qelementwise import (QUINT8_MAX, QUINT8_MIN, check_accumulator_range, check_output_range,
                           check_quantized, check_scale, check_weight_qparams, check_zero_point,
                           requantize_multiplier, requantize_rows, requantize_value)
from .qlinear import check_bias_q, qgemm
from .threads import ParallelKernel, threads_for

# Samples per im2row chunk keep the uint8 rows under this many bytes.
ROWS_MAX_BYTES = 1 << 24


# --------------------------------------------------------------------------------------------------
# im2row on channels-last uint8


def _im2row(x_pad, kernel_size, stride, dilation, out_size, channel_start, channels):
    """x_pad (N, Hp, Wp, C) uint8 (already padded) -> rows (N * Ho * Wo, kh * kw * channels):
    rows[(n, p, q), (i, j, c)] = x_pad[n, p * sh + i * dh, q * sw + j * dw, channel_start + c].
    Parallel over (n, p): each task fills its own Wo rows."""
    n_batch = x_pad.shape[0]
    kh, kw = kernel_size
    out_h, out_w = out_size
    rows = np.empty((n_batch * out_h * out_w, kh * kw * channels), dtype=np.uint8)
    for task in prange(n_batch * out_h):
        n, p = task // out_h, task % out_h
        for q in range(out_w):
            row = rows[task * out_w + q]
            for i in range(kh):
                line = x_pad[n, p * stride[0] + i * dilation[0]]
                for j in range(kw):
                    start = (i * kw + j) * channels
                    pixel = line[q * stride[1] + j * dilation[1]]
                    row[start:start + channels] = pixel[channel_start:channel_start + channels]
    return rows


im2row = ParallelKernel(_im2row)


def im2row_reference(x_pad, kernel_size, stride, dilation, out_size, channel_start, channels):
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    x_group = x_pad[..., channel_start:channel_start + channels]
    windows = sliding_window_view(x_group, span, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]   # (N, Ho, Wo, C, kh, kw)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * channels)


def pad_channels_last(xq, padding, fill):
    """(N, C, H, W) -> (N, H + 2 ph, W + 2 pw, C), the border filled with `fill`."""
    n_batch, channels, height, width = xq.shape
    (ph, pw) = padding
    x_pad = np.full((n_batch, height + 2 * ph, width + 2 * pw, channels), fill, dtype=np.uint8)
    x_pad[:, ph:ph + height, pw:pw + width] = xq.transpose(0, 2, 3, 1)
    return x_pad


# --------------------------------------------------------------------------------------------------
# Depthwise: a direct loop per (sample, output channel), requantized in place


def _depthwise_qconv2d(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax, stride, padding, dilation):
    """xq (N, C, H, W) uint8, wq (m * C, 1, kh, kw) int8 -> (N, m * C, Ho, Wo) uint8; output channel o
    reads input channel o // m (torch's order). Parallel over (n, o): each task owns one output plane
    and its int32 accumulator plane."""
    n_batch, channels, height, width = xq.shape
    out_channels, _, kh, kw = wq.shape
    per_input = out_channels // channels
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = conv_output_size(height, kh, sh, ph, dh)
    out_w = conv_output_size(width, kw, sw, pw, dw)
    out = np.empty((n_batch, out_channels, out_h, out_w), dtype=np.uint8)
    for task in prange(n_batch * out_channels):
        n, o = task // out_channels, task % out_channels
        plane = xq[n, o // per_input]
        acc = np.full((out_h, out_w), bias_q[o], dtype=np.int32)
        for i in range(kh):
            h_lo, h_hi = valid_range(i * dh - ph, sh, height, out_h)
            for j in range(kw):
                w_lo, w_hi = valid_range(j * dw - pw, sw, width, out_w)
                tap = np.int32(wq[o, 0, i, j] - w_zps[o])
                first = w_lo * sw + j * dw - pw                 # input column of output column w_lo
                for p in range(h_lo, h_hi):
                    line, dst = plane[p * sh + i * dh - ph], acc[p, w_lo:w_hi]
                    if sw == 1:                                 # contiguous: the loop vectorises
                        src = line[first:first + dst.size]
                        for q in range(dst.size):
                            dst[q] = np.int32(dst[q] + tap * (np.int32(src[q]) - x_zp))
                    else:
                        for q in range(dst.size):
                            dst[q] = np.int32(dst[q] + tap * (np.int32(line[first + q * sw]) - x_zp))
        for p in range(out_h):
            for q in range(out_w):
                out[n, o, p, q] = requantize_value(acc[p, q], multiplier[o], out_zp, qmin, qmax)
    return out


depthwise_qconv2d = ParallelKernel(_depthwise_qconv2d)


def depthwise_qconv2d_reference(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax, stride, padding, dilation):
    channels = xq.shape[1]
    out_channels, _, kh, kw = wq.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    centred = np.pad(xq.astype(np.int64) - x_zp, [(0, 0), (0, 0), (ph, ph), (pw, pw)])   # padding is x_zp - x_zp
    windows = sliding_window_view(centred, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]                                       # (N, C, Ho, Wo, kh, kw)
    w = (wq.astype(np.int64) - w_zps[:, None, None, None]).reshape(channels, out_channels // channels, kh, kw)
    acc = np.einsum("ncpqij,ckij->nckpq", windows, w).reshape(xq.shape[0], out_channels, *windows.shape[2:4])
    acc = acc + bias_q[:, None, None]
    scaled = acc.astype(np.float32) * multiplier[:, None, None]
    return np.clip(np.rint(scaled).astype(np.float64) + out_zp, qmin, qmax).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Public entry point


def _pair(name, value, minimum):
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def quantized_conv2d(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp,
                     stride=1, padding=0, dilation=1, groups=1, relu=False):
    """torch.ops.quantized.conv2d (relu=True: conv2d_relu) on raw integer data; see the module docstring.

    Args:
        xq: uint8 (N, C_in, H, W) input codes, per tensor (x_scale, x_zp in [0, 255]).
        wq: int8 (C_out, C_in / groups, kh, kw) weight codes; w_scales, w_zps per output channel (length
            C_out, or length 1 / scalar per tensor); w_zps in [-128, 127].
        bias_q: int32 (C_out,) from qlinear.quantize_bias, or None.
        out_scale, out_zp: the output's qparams (out_zp in [0, 255]).
        stride, dilation (>= 1), padding (>= 0): ints or pairs, as torch.nn.functional.conv2d.
        groups: C_in and C_out must both be multiples of it.
        relu: fuse a ReLU (clamp at out_zp).

    Returns:
        uint8 (N, C_out, Ho, Wo), Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (Wo likewise).

    Raises:
        TypeError: wrong dtype (nothing is cast), or a non-integer stride, padding, dilation or zero point.
        ValueError: shapes or groups do not match, a qparam is out of range, the output would be empty,
            or the reduction is so long that int32 could overflow.
    """
    xq, wq = check_quantized("xq", xq, np.uint8), check_quantized("wq", wq, np.int8)
    if xq.ndim != 4 or wq.ndim != 4:
        raise ValueError(f"xq must be (N, C, H, W) and wq (C_out, C_in / groups, kh, kw), "
                         f"got {xq.shape} and {wq.shape}")
    stride, padding, dilation = _pair("stride", stride, 1), _pair("padding", padding, 0), _pair("dilation", dilation, 1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    groups = int(groups)
    n_batch, in_channels, height, width = xq.shape
    out_channels, group_in, kh, kw = wq.shape
    if in_channels % groups or out_channels % groups or group_in * groups != in_channels:
        raise ValueError(f"with groups={groups}, xq's {in_channels} channels and wq {wq.shape} do not match: "
                         f"expected C_in = groups * wq.shape[1] and C_out divisible by groups")
    out_h = conv_output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = conv_output_size(width, kw, stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"the output would be empty: input {height}x{width}, kernel {kh}x{kw}, padding {padding}, "
                         f"dilation {dilation}")
    x_scale, out_scale = check_scale("x_scale", x_scale), check_scale("out_scale", out_scale)
    x_zp = check_zero_point("x_zp", x_zp, QUINT8_MIN, QUINT8_MAX)
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    w_scales, w_zps = check_weight_qparams(w_scales, w_zps, out_channels)
    bias_q = check_bias_q(bias_q, out_channels)
    depth = group_in * kh * kw
    check_accumulator_range(depth, bias_q)
    qmin, qmax = check_output_range(out_zp, relu)
    multiplier = requantize_multiplier(x_scale, w_scales, out_scale)

    if n_batch == 0:
        return np.empty((0, out_channels, out_h, out_w), dtype=np.uint8)
    with threads_for(n_batch * out_h * out_w * out_channels * depth):
        if groups == in_channels and group_in == 1:
            return depthwise_qconv2d(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax, stride, padding,
                                     dilation)
        return _grouped_qconv2d(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax, stride, padding,
                                dilation, groups, (out_h, out_w))


def _grouped_qconv2d(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax, stride, padding, dilation,
                     groups, out_size):
    """The general case of `quantized_conv2d` (checked arguments): per group, im2row then `qgemm`, in chunks
    of images small enough for the row matrix to stay under ROWS_MAX_BYTES."""
    n_batch, in_channels = xq.shape[:2]
    out_channels, group_in, kh, kw = wq.shape
    (out_h, out_w), depth = out_size, group_in * kh * kw
    group_out = out_channels // groups
    weight_rows = np.ascontiguousarray(wq.transpose(0, 2, 3, 1)).reshape(out_channels, depth)   # (i, j, c) order
    x_pad = pad_channels_last(xq, padding, x_zp)
    plane = out_h * out_w
    chunk = max(1, ROWS_MAX_BYTES // (plane * depth))
    out = np.empty((n_batch, out_channels, out_h, out_w), dtype=np.uint8)
    for start in range(0, n_batch, chunk):
        stop = min(n_batch, start + chunk)
        acc = np.empty(((stop - start) * plane, out_channels), dtype=np.int32)
        for g in range(groups):
            rows = im2row(x_pad[start:stop], (kh, kw), stride, dilation, (out_h, out_w), g * group_in, group_in)
            channels = slice(g * group_out, (g + 1) * group_out)
            acc[:, channels] = qgemm(rows, x_zp, weight_rows[channels], w_zps[channels], bias_q[channels])
        pixels = requantize_rows(acc, multiplier, out_zp, qmin, qmax)               # (pixels, C_out)
        out[start:stop] = pixels.reshape(stop - start, out_h, out_w, out_channels).transpose(0, 3, 1, 2)
    return out


def quantized_conv2d_reference(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp,
                               stride, padding, dilation, groups, relu=False):
    """The whole layer in plain NumPy, for every groups: int64 accumulators over the windows of the
    zero-point-padded input, then the float32 requantization. stride, padding, dilation are pairs."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_channels, group_in, kh, kw = wq.shape
    w_zps = np.broadcast_to(np.asarray(w_zps, dtype=np.int64).reshape(-1), (out_channels,))
    centred = np.pad(xq.astype(np.int64) - x_zp, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    windows = sliding_window_view(centred, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]                                       # (N, C, Ho, Wo, kh, kw)
    windows = windows.reshape(xq.shape[0], groups, group_in, *windows.shape[2:])
    w = (wq.astype(np.int64) - w_zps[:, None, None, None]).reshape(groups, out_channels // groups, group_in, kh, kw)
    acc = np.einsum("ngcpqij,gocij->ngopq", windows, w).reshape(xq.shape[0], out_channels, *windows.shape[3:5])
    if bias_q is not None:
        acc = acc + bias_q[:, None, None]
    multiplier = requantize_multiplier(x_scale, np.broadcast_to(w_scales, (out_channels,)), out_scale)
    scaled = acc.astype(np.float32) * multiplier[:, None, None]
    return np.clip(np.rint(scaled).astype(np.float64) + out_zp, out_zp if relu else 0, 255).astype(np.uint8)

"""Integer 2-D convolution: uint8 activations times int8 weights, int32 accumulation, requantized to uint8.
Mirrors torch.ao.nn.quantized.Conv2d on the x86 / fbgemm engines (torch.ops.quantized.conv2d and
conv2d_relu); see qlinear for the arithmetic, which is the same with K = C_in / groups * kh * kw:

    acc[n, o, p, q] = sum_{c, i, j} (x_pad[n, g * Cg + c, p * sh + i * dh, q * sw + j * dw] - x_zp)
                                    * (wq[o, c, i, j] - w_zp[o])  +  bias_q[o]          (g = o // (O / groups))
    out[n, o, p, q] = clamp(round_half_even(float32(acc) * multiplier[o]) + out_zp, qmin, qmax)

x_pad is x padded with its zero point x_zp (the quantized 0.0), so a padded tap adds exactly nothing.
qmin = out_zp fuses a ReLU; qmax = the code of 6.0 fuses a ReLU6's upper clamp as well.

The kernels work channels-last, (N, H, W, C) bytes, as fbgemm does (see qnhwc): every layer reads and
writes whole pixels, so there is no transpose between layers. `prepare_qconv2d` picks one of three
routes once, from the weight's shape, and prepares the weight for it (computed once per layer):

    pointwise   1x1, no padding, groups = 1: the activation *is* the GEMM's (pixels, C_in) matrix (strided
                1x1 convs first take every s-th row and column); one `qgemm_requant` call
    im2row      any other groups: for a band of output rows, im2row copies each output pixel's window in
                (i, j, c) order into one row, the border filled with x_zp, and `qgemm_requant` multiplies
                the rows by the weight reordered to (O, kh, kw, Cg), requantizing in its epilogue; bands are
                bounded (ROWS_CHUNK_BYTES) so the rows never take much memory
    depthwise   groups = C_in, weight (m * C_in, 1, kh, kw): a direct loop per output row whose inner loop
                runs over the channels of a pixel (vectorised), requantized in place; a channel multiplier
                m > 1 repeats each input channel m times first (output channel o reads input o // m)

With symmetric weights (the x86 qconfig's) the pointwise and im2row GEMMs run a conv GEMM of their own
instead of `qgemm_requant`, with the result kept in registers up to the uint8 store: `gemm16` (zmm,
AVX512-VNNI) or `gemm8` (ymm: AVX-VNNI, or AVX2's maddubs when the layer's weight and expected input
codes cannot saturate vpmaddubsw; the rare tiles with a larger code split each code in two).

`quantized_conv2d` is the validated entry point on (N, C, H, W) arrays of any layout; `qconv2d_nhwc` runs a
prepared convolution on channels-last bytes without checks (the quantized Conv2d module's forward).
"""
import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import sliding_window_view

from . import qgemm, simd
from .conv import conv_output_size, valid_range
from .epilogue import requantize_reference, requantize_store8, requantize_store16, requantize_value
from .qelementwise import (QUINT8_MAX, QUINT8_MIN, check_accumulator_range, check_output_range,
                           check_quantized, check_scale, check_weight_qparams, check_zero_point,
                           requantize_multiplier)
from .qgemm import pack_weight, qgemm_requant_unchecked as qgemm_requant
from .qlinear import check_bias_q
from .qnhwc import channels_last
from .threads import ParallelKernel, threads_for

# im2row builds at most this many bytes of rows at a time (a band of output rows), bounding the memory
# it takes. Smaller, L2-sized bands measured slower: each band pays two parallel launches (~50-100 us each
# on Numba's workqueue layer), more than the cache misses they save (3x3 64->64 at 56x56: 4 bands of
# 512 KB 1.16 ms, one band 0.81 ms, one thread).
ROWS_CHUNK_BYTES = 1 << 23


# --------------------------------------------------------------------------------------------------
# The channels-last GEMM of the convolutions on AVX512-VNNI, requantized by 16 columns at a time
#
# A conv's GEMM is long and thin: M = pixels (50,176 at 224x224), K = C_in * kh * kw (16 .. 576), N = C_out
# (16 .. 64). Its int32 results are few per pixel, so the cost is in the epilogue, not the dot products:
# this kernel keeps each 16-column result in a zmm register from vpdpbusd to the uint8 store, requantizing
# it with the shared epilogue's 16-lane spelling (`epilogue.requantize_store16`). Tiles are 8 pixels x 16 columns (8 independent
# accumulators, one weight load feeding 8 vpdpbusd); tasks are blocks of PIXEL_BLOCK pixels.

PIXEL_BLOCK = 128
def pack16(wq):
    """wq (N, K) int8 -> the vpdpbusd layout [N/16][K/4][16][4] as flat int32 words, K and N zero-padded."""
    n_rows, depth = wq.shape
    groups, panels = -(-depth // 4), -(-n_rows // 16)
    padded = np.zeros((panels * 16, groups * 4), np.int8)
    padded[:n_rows, :depth] = wq
    return np.ascontiguousarray(padded.reshape(panels, 16, groups, 4).transpose(0, 2, 1, 3)).reshape(-1).view(np.int32)


def _gemm16_requant_kernel(x, groups, w, col_term, multiplier, out_zp, qmin, qmax, n_cols, out):
    """x (M, groups) int32 words of 4 uint8 codes, w `_pack16`'s layout, col_term (panels * 16,) int32 =
    bias_q - x_zp * sum_k w -> out (M * n_cols,) uint8 requantized. Parallel over blocks of pixels."""
    m_rows = x.shape[0]
    panels = (n_cols + 15) // 16
    zp, lo, hi = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
    for block in prange((m_rows + PIXEL_BLOCK - 1) // PIXEL_BLOCK):
        scratch = np.empty(16, np.int32)
        stop = min(m_rows, (block + 1) * PIXEL_BLOCK)
        for m0 in range(block * PIXEL_BLOCK, stop, 8):
            last = stop - 1
            r0, r1, r2, r3 = m0, min(m0 + 1, last), min(m0 + 2, last), min(m0 + 3, last)
            r4, r5, r6, r7 = min(m0 + 4, last), min(m0 + 5, last), min(m0 + 6, last), min(m0 + 7, last)
            for panel in range(panels):
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = simd.zeros16()
                for g in range(groups):
                    wv = simd.load16(w, (panel * groups + g) * 16)
                    a0 = simd.vpdpbusd16(a0, simd.splat16(x[r0, g]), wv)
                    a1 = simd.vpdpbusd16(a1, simd.splat16(x[r1, g]), wv)
                    a2 = simd.vpdpbusd16(a2, simd.splat16(x[r2, g]), wv)
                    a3 = simd.vpdpbusd16(a3, simd.splat16(x[r3, g]), wv)
                    a4 = simd.vpdpbusd16(a4, simd.splat16(x[r4, g]), wv)
                    a5 = simd.vpdpbusd16(a5, simd.splat16(x[r5, g]), wv)
                    a6 = simd.vpdpbusd16(a6, simd.splat16(x[r6, g]), wv)
                    a7 = simd.vpdpbusd16(a7, simd.splat16(x[r7, g]), wv)
                n0 = panel * 16
                for i, acc in enumerate((a0, a1, a2, a3, a4, a5, a6, a7)):
                    if m0 + i >= stop:
                        break
                    if n0 + 16 <= n_cols:
                        requantize_store16(out, (m0 + i) * n_cols + n0, acc, col_term, multiplier, n0, zp, lo, hi)
                    else:                                   # the last, partial panel: one column at a time
                        simd.store16(scratch, 0, acc)
                        for j in range(n_cols - n0):
                            out[(m0 + i) * n_cols + n0 + j] = requantize_value(
                                np.int32(scratch[j] + col_term[n0 + j]), multiplier[n0 + j], out_zp, qmin, qmax)
    return out


gemm16_requant_kernel = ParallelKernel(_gemm16_requant_kernel)


# The same on ymm registers for AVX2 (maddubs: vpmaddubsw + vpmaddwd) and AVX-VNNI (vpdpbusd on ymm), on the
# same packed layout: 4 pixels x 16 columns (two 8-lane halves), 8 accumulators, the two weight halves and
# one broadcast in registers (12 of the 16 ymm), each half requantized by `epilogue.requantize_store8`.
# Before qgemm's 4 x 16 tiles did this GEMM: storing every tile to scratch and finishing it there cost
# more than the dot products (32 -> 32 channels at 224x224: 2.7 ms on maddubs, 0.66 ms for gemm16).


def _gemm8_kernel(step, name):
    def kernel(x, groups, w, col_term, multiplier, out_zp, qmin, qmax, n_cols, out, hot, limit):
        """As `_gemm16_requant_kernel`, on ymm. hot (one byte per 4-row tile, or empty: none) marks the tiles
        holding a code above `limit` (`hot_tiles`); there each code x is split into min(x, limit) and
        max(x - limit, 0), both at most `limit` (as 255 - limit <= limit), and both parts are accumulated:
        so maddubs never sees a code it could saturate on, and a rare outlier pixel costs one tile twice."""
        m_rows = x.shape[0]
        panels = (n_cols + 15) // 16
        zp, lo, hi = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
        cap = simd.splat8(np.int32(limit * 0x01010101 - (1 << 32) if limit >= 128 else limit * 0x01010101))
        for block in prange((m_rows + PIXEL_BLOCK - 1) // PIXEL_BLOCK):
            scratch = np.empty(8, np.int32)
            stop = min(m_rows, (block + 1) * PIXEL_BLOCK)
            for m0 in range(block * PIXEL_BLOCK, stop, 4):
                last = stop - 1
                r0, r1, r2, r3 = m0, min(m0 + 1, last), min(m0 + 2, last), min(m0 + 3, last)
                split = hot.shape[0] > 0 and hot[m0 // 4] != 0
                for panel in range(panels):
                    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = simd.zeros8()
                    for g in range(groups):
                        at = (panel * groups + g) * 16
                        w_lo, w_hi = simd.load8(w, at), simd.load8(w, at + 8)
                        v0, v1, v2, v3 = simd.splat8(x[r0, g]), simd.splat8(x[r1, g]), simd.splat8(x[r2, g]), simd.splat8(x[r3, g])
                        if split:
                            u0, u1, u2, u3 = simd.usubsat8(v0, cap), simd.usubsat8(v1, cap), simd.usubsat8(v2, cap), simd.usubsat8(v3, cap)
                            v0, v1, v2, v3 = simd.umin8(v0, cap), simd.umin8(v1, cap), simd.umin8(v2, cap), simd.umin8(v3, cap)
                            a0, b0, a1, b1 = step(a0, u0, w_lo), step(b0, u0, w_hi), step(a1, u1, w_lo), step(b1, u1, w_hi)
                            a2, b2, a3, b3 = step(a2, u2, w_lo), step(b2, u2, w_hi), step(a3, u3, w_lo), step(b3, u3, w_hi)
                        a0, b0, a1, b1 = step(a0, v0, w_lo), step(b0, v0, w_hi), step(a1, v1, w_lo), step(b1, v1, w_hi)
                        a2, b2, a3, b3 = step(a2, v2, w_lo), step(b2, v2, w_hi), step(a3, v3, w_lo), step(b3, v3, w_hi)
                    for i, halves in enumerate(((a0, b0), (a1, b1), (a2, b2), (a3, b3))):
                        if m0 + i >= stop:
                            break
                        for h, acc in enumerate(halves):
                            n0, row = panel * 16 + 8 * h, (m0 + i) * n_cols
                            if n0 + 8 <= n_cols:
                                requantize_store8(out, row + n0, acc, col_term, multiplier, n0, zp, lo, hi)
                            elif n0 < n_cols:                   # the last, partial half: one column at a time
                                simd.store8(scratch, 0, acc)
                                for j in range(n_cols - n0):
                                    out[row + n0 + j] = requantize_value(
                                        np.int32(scratch[j] + col_term[n0 + j]), multiplier[n0 + j], out_zp, qmin, qmax)
        return out

    kernel.__name__ = kernel.__qualname__ = f"_gemm8_{name}_requant_kernel"     # Numba names cache files after it
    return ParallelKernel(kernel)


def _hot_tiles(rows, limit):
    """One byte per 4-row tile of rows (M, K) uint8: 1 where some code exceeds limit."""
    tiles = (rows.shape[0] + 3) // 4
    hot = np.zeros(tiles, np.uint8)
    for t in prange(tiles):
        top = np.uint8(0)
        for m in range(4 * t, min(4 * t + 4, rows.shape[0])):
            line = rows[m]
            for k in range(line.shape[0]):
                top = max(top, line[k])
        hot[t] = top > limit
    return hot


hot_tiles = ParallelKernel(_hot_tiles)


def hot_tiles_reference(rows, limit):
    padded = np.zeros((-(-rows.shape[0] // 4) * 4, rows.shape[1]), np.uint8)
    padded[:rows.shape[0]] = rows
    return (padded.reshape(-1, 4 * rows.shape[1]) > limit).any(axis=1).astype(np.uint8)


_NO_TILES = np.zeros(0, np.uint8)

# route -> the ymm conv GEMM on it (compiled at first call, only on a CPU that has the route)
gemm8_requant_kernels = {"avxvnni": _gemm8_kernel(simd.vpdpbusd8, "avxvnni"),
                         "maddubs": _gemm8_kernel(simd.maddubs_add8, "maddubs")}


def gemm16_requant_reference(x, w_rows, col_term, multiplier, out_zp, qmin, qmax):
    """x (M, K) uint8, w_rows (N, K) int8: clamp(rint(float32(x @ w.T + col_term) * multiplier) + out_zp).
    The twin of the gemm16 kernel and of the gemm8 kernels (maddubs for codes within its limit)."""
    acc = x.astype(np.int64) @ w_rows.astype(np.int64).T + col_term[:w_rows.shape[0]]
    return requantize_reference(acc.astype(np.int32), multiplier, out_zp, qmin, qmax)


def _words(rows, groups):
    """(M, K) uint8 as (M, groups) int32 words of 4 codes, K zero-padded to 4 * groups (a view when K is)."""
    if rows.shape[1] == 4 * groups:
        return rows.view(np.int32)
    words = np.zeros((rows.shape[0], 4 * groups), np.uint8)
    words[:, :rows.shape[1]] = rows
    return words.view(np.int32)


# --------------------------------------------------------------------------------------------------
# im2row on channels-last uint8, the border filled with the zero point


def _im2row(x, x_zp, kernel_size, stride, padding, dilation, out_size, first, count, channel_start, channels,
            row_width):
    """x (N, H, W, C) uint8 -> rows (count * Wo, row_width) for the output rows t = first .. first + count - 1
    of the flattened (n, p) index (n = t // Ho, p = t % Ho):
    rows[(t - first) * Wo + q, (i, j, c)] = x[n, p * sh + i * dh - ph, q * sw + j * dw - pw, channel_start + c],
    x_zp where that lies outside x; the row_width - kh * kw * channels bytes after them are 0 (padding to
    the GEMM's 4-byte groups). Parallel over output rows: each task fills its own Wo rows."""
    height, width = x.shape[1], x.shape[2]
    kh, kw = kernel_size
    out_h, out_w = out_size
    fill = np.uint8(x_zp)
    rows = np.empty((count * out_w, row_width), dtype=np.uint8)
    x_flat, rows_flat = x.reshape(-1), rows.reshape(-1)
    c_in, depth = x.shape[3], kh * kw * channels
    whole_lines = dilation[1] == 1 and channels == c_in
    for t in prange(count):
        n, p = (first + t) // out_h, (first + t) % out_h
        for q in range(out_w):
            for k in range(depth, row_width):
                rows[t * out_w + q, k] = 0
        for i in range(kh):
            h = p * stride[0] + i * dilation[0] - padding[0]
            if whole_lines and 0 <= h < height:
                # Undilated taps of one whole channel range: where the window's row lies inside x, its kw
                # pixels are kw * C adjacent bytes in x and in the row (a 3-channel stem copies 9, not 3 x 3).
                whole_q_lo, whole_q_hi = valid_range(-padding[1], stride[1], width - kw + 1, out_w)
                for q in range(whole_q_lo, whole_q_hi):
                    dst = np.uint64((t * out_w + q) * row_width + i * kw * channels)
                    src = np.uint64(((n * height + h) * width + q * stride[1] - padding[1]) * c_in)
                    for c in range(np.uint64(kw * channels)):
                        rows_flat[dst + c] = x_flat[src + c]
            else:
                whole_q_lo = whole_q_hi = 0
            for j in range(kw):
                start = (i * kw + j) * channels
                q_lo, q_hi = valid_range(j * dilation[1] - padding[1], stride[1], width, out_w)
                if h < 0 or h >= height:
                    q_lo = q_hi = out_w
                for q in range(out_w):
                    if whole_q_lo <= q < whole_q_hi:
                        continue                                # copied with its whole window row above
                    # Unsigned flat indices: no negative-index check, so the copy vectorises.
                    dst = np.uint64((t * out_w + q) * row_width + start)
                    if q_lo <= q < q_hi:
                        w = q * stride[1] + j * dilation[1] - padding[1]
                        src = np.uint64(((n * height + h) * width + w) * c_in + channel_start)
                        for c in range(np.uint64(channels)):
                            rows_flat[dst + c] = x_flat[src + c]
                    else:
                        for c in range(np.uint64(channels)):
                            rows_flat[dst + c] = fill
    return rows


im2row = ParallelKernel(_im2row)


def im2row_reference(x, x_zp, kernel_size, stride, padding, dilation, out_size, first, count, channel_start,
                     channels, row_width):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    x_group = x[..., channel_start:channel_start + channels]
    x_pad = np.pad(x_group, [(0, 0), (ph, ph), (pw, pw), (0, 0)], constant_values=x_zp)
    windows = sliding_window_view(x_pad, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
    windows = windows[:, ::sh, ::sw, :, ::dh, ::dw][:, :out_size[0], :out_size[1]]       # (N, Ho, Wo, C, kh, kw)
    rows = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, out_size[1], kh * kw * channels)
    rows = rows[first:first + count].reshape(-1, kh * kw * channels)
    return np.pad(rows, [(0, 0), (0, row_width - rows.shape[1])])


# --------------------------------------------------------------------------------------------------
# Depthwise: a direct loop per output row, vectorised over channels, requantized in place


@njit(cache=True)
def _mac_rows(acc, src, tap, zx):
    """acc (L, C) int32 += (src (L, C) uint8 - zx) * tap (C,): a strided tap of the depthwise kernel."""
    for a in range(acc.shape[0]):
        for b in range(acc.shape[1]):
            acc[a, b] = np.int32(acc[a, b] + np.int32(np.int32(src[a, b]) - zx) * tap[b])


def _depthwise_qconv2d(x, x_zp, w_centred, bias_q, multiplier, out_zp, qmin, qmax, stride, padding, dilation,
                       out_size):
    """x (N, H, W, C) uint8, w_centred (kh, kw, C) int32 = wq - w_zp per channel -> (N, Ho, Wo, C) uint8:
    out[n, p, q, c] = requantize(sum_{i, j} (x[n, p sh + i dh - ph, q sw + j dw - pw, c] - x_zp) w[i, j, c]
    + bias_q[c]), taps outside x skipped (they would add (x_zp - x_zp) w = 0). Parallel over (n, p): each
    task owns one output row and its Wo * C int32 accumulators.

    With sw = 1 a tap's valid pixels are one contiguous run of bytes, so the tap is a single flat loop
    acc[k] += (x[k + offset] - x_zp) * w_row[k], with each tap's weights repeated along the row beforehand
    (w_row, kh * kw * Wo * C int32) so that no index wraps around C. The flat indices are unsigned, which
    spares Numba's negative-index check and lets LLVM vectorise the loop. Other strides use `_mac_rows`.
    The requantization is one flat loop too, over the row's multipliers repeated per pixel (m_row) with
    the zero point and clamp in float32, so that it vectorises (8 lanes on AVX2) instead of running one
    channel at a time."""
    n_batch, height, width, channels = x.shape
    kh, kw = w_centred.shape[0], w_centred.shape[1]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h, out_w = out_size
    zx = np.int32(x_zp)
    out = np.empty((n_batch, out_h, out_w, channels), dtype=np.uint8)
    row = out_w * channels
    x_flat, out_flat = x.reshape(-1), out.reshape(-1)
    w_row = np.empty(kh * kw * row if sw == 1 else 0, dtype=np.int32)
    m_row = np.empty(row, dtype=np.float32)
    for q in range(out_w):
        for c in range(channels):
            m_row[q * channels + c] = multiplier[c]
    zp, lo, hi = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
    if sw == 1:
        for t in range(kh * kw):
            for q in range(out_w):
                for c in range(channels):
                    w_row[t * row + q * channels + c] = w_centred[t // kw, t % kw, c]
    for task in prange(n_batch * out_h):
        n, p = task // out_h, task % out_h
        acc = np.empty(row, dtype=np.int32)
        for q in range(out_w):
            for c in range(channels):
                acc[q * channels + c] = bias_q[c]
        for i in range(kh):
            h = p * sh + i * dh - ph
            if h < 0 or h >= height:
                continue
            for j in range(kw):
                q_lo, q_hi = valid_range(j * dw - pw, sw, width, out_w)
                if q_hi <= q_lo:
                    continue
                first = q_lo * sw + j * dw - pw                 # input column of output column q_lo
                if sw == 1:
                    src = np.uint64(((n * height + h) * width + first) * channels)
                    dst = np.uint64(q_lo * channels)
                    tap = np.uint64((i * kw + j) * row + q_lo * channels)
                    for k in range(np.uint64((q_hi - q_lo) * channels)):
                        acc[dst + k] = np.int32(acc[dst + k] + np.int32(np.int32(x_flat[src + k]) - zx)
                                                * w_row[tap + k])
                else:
                    _mac_rows(acc[q_lo * channels:q_hi * channels].reshape(q_hi - q_lo, channels),
                              x[n, h, first:first + (q_hi - q_lo - 1) * sw + 1:sw], w_centred[i, j], zx)
        base = np.uint64(task * row)
        for k in range(np.uint64(row)):
            out_flat[base + k] = requantize_value(acc[k], m_row[k], zp, lo, hi)
    return out


depthwise_qconv2d = ParallelKernel(_depthwise_qconv2d)


def depthwise_qconv2d_reference(x, x_zp, w_centred, bias_q, multiplier, out_zp, qmin, qmax, stride, padding,
                                dilation, out_size):
    kh, kw = w_centred.shape[:2]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    centred = np.pad(x.astype(np.int64) - x_zp, [(0, 0), (ph, ph), (pw, pw), (0, 0)])      # padding is x_zp - x_zp
    windows = sliding_window_view(centred, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
    windows = windows[:, ::sh, ::sw, :, ::dh, ::dw][:, :out_size[0], :out_size[1]]          # (N, Ho, Wo, C, kh, kw)
    acc = np.einsum("npqcij,ijc->npqc", windows, w_centred.astype(np.int64)) + bias_q
    return requantize_reference(acc, multiplier, out_zp, qmin, qmax)


# --------------------------------------------------------------------------------------------------
# A convolution prepared once, run on channels-last bytes


class PreparedQConv2d:
    """An integer convolution's checked geometry and its weight prepared for the chosen route (see the
    module docstring): built once per layer by `prepare_qconv2d`, used by every `qconv2d_nhwc` call.

    route          'pointwise', 'im2row' or 'depthwise'
    packed         im2row / pointwise: one PackedWeight (qgemm) per group, weight rows in (i, j, c) order;
                   or, when `gemm16` (AVX512-VNNI and symmetric weights) or `gemm8` (the avxvnni or maddubs route
                   and symmetric weights), `pack16`'s layout per group
    w_sums         with gemm16 / gemm8: sum_k w per output channel (int64), for the x_zp term
    x_limit        with gemm8 = maddubs: the largest input code it is exact for (qgemm.maddubs_code_limit);
                   the 4-pixel tiles holding a larger code split their codes in two (`_gemm8_kernel`)
    w_centred      depthwise: (kh, kw, C_out) int32, wq - w_zp
    """

    def __init__(self, wq, w_zps, stride, padding, dilation, groups, x_max=QUINT8_MAX):
        self.out_channels, self.group_in, self.kh, self.kw = wq.shape
        self.in_channels = self.group_in * groups
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.depth = self.group_in * self.kh * self.kw
        self.packed, self.w_centred, self.gemm16, self.w_sums = None, None, False, None
        self.gemm8, self.x_limit = None, QUINT8_MAX
        pointwise = (self.kh, self.kw) == (1, 1) and padding == (0, 0) and groups == 1
        if groups == self.in_channels and self.group_in == 1 and not pointwise:
            self.route = "depthwise"
            self.w_centred = np.ascontiguousarray(
                (wq[:, 0].astype(np.int32) - w_zps.astype(np.int32)[:, None, None]).transpose(1, 2, 0))
        else:
            self.route = "pointwise" if pointwise else "im2row"
            rows = np.ascontiguousarray(wq.transpose(0, 2, 3, 1)).reshape(self.out_channels, self.depth)
            group_out = self.out_channels // groups
            parts = [rows[g * group_out:(g + 1) * group_out] for g in range(groups)]
            self.gemm16 = qgemm.QGEMM_ROUTE == "vnni512" and not np.any(w_zps)
            routes = {qgemm.choose_route(part, x_max) for part in parts}
            if not self.gemm16 and not np.any(w_zps) and len(routes) == 1 and routes <= set(gemm8_requant_kernels):
                self.gemm8 = routes.pop()
                if self.gemm8 == "maddubs":
                    self.x_limit = min(qgemm.maddubs_code_limit(part) for part in parts)
            if self.gemm16 or self.gemm8:
                self.packed = [pack16(part) for part in parts]
                self.w_sums = rows.sum(axis=1, dtype=np.int64)
            else:
                self.packed = [pack_weight(part, w_zps[g * group_out:(g + 1) * group_out], x_max=x_max)
                               for g, part in enumerate(parts)]
        self.groups4 = -(-self.depth // 4)
        # maddubs weights check their input's largest code (qgemm): done once per call, on x itself.
        self.guarded = self.x_limit < QUINT8_MAX or (self.packed is not None and not self.gemm16 and not self.gemm8
                                                     and any(part.x_limit < QUINT8_MAX for part in self.packed))

    def output_size(self, height, width):
        return (conv_output_size(height, self.kh, self.stride[0], self.padding[0], self.dilation[0]),
                conv_output_size(width, self.kw, self.stride[1], self.padding[1], self.dilation[1]))


def prepare_qconv2d(wq, w_zps, stride, padding, dilation, groups, x_max=QUINT8_MAX):
    """A PreparedQConv2d for checked arguments: wq int8 (C_out, C_in / groups, kh, kw), w_zps int64 (C_out,),
    stride / padding / dilation pairs of ints; x_max the largest input code expected (it steers the GEMM
    route, `qgemm.choose_route`)."""
    return PreparedQConv2d(wq, w_zps, stride, padding, dilation, groups, x_max)


def qconv2d_nhwc(x, x_zp, prepared, bias_q, multiplier, out_zp, qmin, qmax):
    """Run a prepared convolution: x (N, H, W, C_in) uint8 C-contiguous -> (N, Ho, Wo, C_out) uint8.
    bias_q int32 (C_out,), multiplier float32 (C_out,); no checks (the caller's), output at least 1x1."""
    n_batch, height, width, _ = x.shape
    out_h, out_w = prepared.output_size(height, width)
    c_out = prepared.out_channels
    with threads_for(n_batch * out_h * out_w * c_out * prepared.depth):
        if prepared.route == "depthwise":
            per_input = c_out // prepared.in_channels
            if per_input > 1:
                x = np.repeat(x, per_input, axis=3)
            return depthwise_qconv2d(x, x_zp, prepared.w_centred, bias_q, multiplier, out_zp, qmin, qmax,
                                     prepared.stride, prepared.padding, prepared.dilation, (out_h, out_w))
        x_max = None
        if prepared.guarded:        # im2row's rows also hold x_zp, the padding
            x_max = max(int(x.max()), x_zp if prepared.padding != (0, 0) else 0)
        if prepared.route == "pointwise":
            (sh, sw) = prepared.stride
            if (sh, sw) != (1, 1):
                x = np.ascontiguousarray(x[:, ::sh, ::sw][:, :out_h, :out_w])
            pixels = _gemm(x.reshape(-1, prepared.in_channels), x_zp, prepared, 0, bias_q, multiplier, out_zp,
                           qmin, qmax, x_max)
            return pixels.reshape(n_batch, out_h, out_w, c_out)
        return _im2row_qconv2d(x, x_zp, prepared, bias_q, multiplier, out_zp, qmin, qmax, (out_h, out_w), x_max)


def _gemm(rows, x_zp, prepared, group, bias_q, multiplier, out_zp, qmin, qmax, x_max=None):
    """rows (M, K or K padded to 4) uint8 times group `group`'s weight, requantized: (M, C_out / groups) uint8;
    x_max, when known, the largest code in rows."""
    if not (prepared.gemm16 or prepared.gemm8):
        return qgemm_requant(rows, x_zp, prepared.packed[group], bias_q, multiplier, out_zp, qmin, qmax, x_max)
    n_cols = bias_q.shape[0]
    w_sums = prepared.w_sums[group * n_cols:(group + 1) * n_cols]
    col_term = (bias_q - x_zp * w_sums).astype(np.int32)          # fits: check_accumulator_range
    out = np.empty(rows.shape[0] * n_cols, np.uint8)
    words = _words(rows, prepared.groups4)
    if prepared.gemm8:
        # maddubs could saturate on codes above x_limit: mark the tiles that hold one
        hot = hot_tiles(rows, prepared.x_limit) if x_max is not None and x_max > prepared.x_limit else _NO_TILES
        gemm8_requant_kernels[prepared.gemm8](words, prepared.groups4, prepared.packed[group], col_term,
                                              np.ascontiguousarray(multiplier), out_zp, qmin, qmax, n_cols, out, hot,
                                              prepared.x_limit)
    else:
        gemm16_requant_kernel(words, prepared.groups4, prepared.packed[group], col_term,
                              np.ascontiguousarray(multiplier), out_zp, qmin, qmax, n_cols, out)
    return out.reshape(rows.shape[0], n_cols)


def _im2row_qconv2d(x, x_zp, prepared, bias_q, multiplier, out_zp, qmin, qmax, out_size, x_max=None):
    """The im2row route: per band of output rows and per group, im2row then `qgemm_requant`."""
    n_batch = x.shape[0]
    out_h, out_w = out_size
    groups, group_in = prepared.groups, prepared.group_in
    group_out = prepared.out_channels // groups
    out = np.empty((n_batch * out_h * out_w, prepared.out_channels), dtype=np.uint8)
    band = max(1, ROWS_CHUNK_BYTES // (out_w * prepared.depth))
    geometry = ((prepared.kh, prepared.kw), prepared.stride, prepared.padding, prepared.dilation, out_size)
    for first in range(0, n_batch * out_h, band):
        count = min(band, n_batch * out_h - first)
        pixels = slice(first * out_w, (first + count) * out_w)
        row_width = 4 * prepared.groups4 if prepared.gemm16 or prepared.gemm8 else prepared.depth
        for g in range(groups):
            rows = im2row(x, x_zp, *geometry, first, count, g * group_in, group_in, row_width)
            channels = slice(g * group_out, (g + 1) * group_out)
            levels = _gemm(rows, x_zp, prepared, g, bias_q[channels], multiplier[channels], out_zp, qmin, qmax,
                           x_max)
            if groups == 1:
                out[pixels] = levels
            else:
                out[pixels, channels] = levels
    return out.reshape(n_batch, out_h, out_w, prepared.out_channels)


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


def check_conv_geometry(w_shape, stride, padding, dilation, groups):
    """stride, padding, dilation as pairs and groups as an int, checked against the weight's shape
    (C_out, C_in / groups, kh, kw)."""
    stride, padding, dilation = _pair("stride", stride, 1), _pair("padding", padding, 0), _pair("dilation", dilation, 1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if w_shape[0] % groups:
        raise ValueError(f"with groups={groups}, wq {w_shape} does not match: expected C_out divisible by groups")
    return stride, padding, dilation, int(groups)


def check_conv_input(x_shape, prepared):
    """The output size (Ho, Wo) of an (N, C, H, W) input, after checking it matches the prepared weight."""
    if len(x_shape) != 4 or x_shape[1] != prepared.in_channels:
        raise ValueError(f"xq must be (N, {prepared.in_channels}, H, W) to match the weight "
                         f"(groups={prepared.groups}, wq[1]={prepared.group_in}), got {tuple(x_shape)}")
    out_h, out_w = prepared.output_size(x_shape[2], x_shape[3])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"the output would be empty: input {x_shape[2]}x{x_shape[3]}, kernel {prepared.kh}x"
                         f"{prepared.kw}, padding {prepared.padding}, dilation {prepared.dilation}")
    return out_h, out_w


def quantized_conv2d(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp,
                     stride=1, padding=0, dilation=1, groups=1, relu=False, qmax=QUINT8_MAX):
    """torch.ops.quantized.conv2d (relu=True: conv2d_relu) on raw integer data; see the module docstring.

    Args:
        xq: uint8 (N, C_in, H, W) input codes, per tensor (x_scale, x_zp in [0, 255]); any memory layout.
        wq: int8 (C_out, C_in / groups, kh, kw) weight codes; w_scales, w_zps per output channel (length
            C_out, or length 1 / scalar per tensor); w_zps in [-128, 127].
        bias_q: int32 (C_out,) from qlinear.quantize_bias, or None.
        out_scale, out_zp: the output's qparams (out_zp in [0, 255]).
        stride, dilation (>= 1), padding (>= 0): ints or pairs, as torch.nn.functional.conv2d.
        groups: C_in and C_out must both be multiples of it.
        relu: fuse a ReLU (clamp at out_zp).
        qmax: the upper clamp, 255; the code of 6.0 (qelementwise.quantize_value) fuses a ReLU6.

    Returns:
        uint8 (N, C_out, Ho, Wo), Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (Wo likewise), laid out
        channels-last: the transposed view of a C-contiguous (N, Ho, Wo, C_out) array.

    Raises:
        TypeError: wrong dtype (nothing is cast), or a non-integer stride, padding, dilation or zero point.
        ValueError: shapes or groups do not match, a qparam is out of range, the output would be empty,
            or the reduction is so long that int32 could overflow.
    """
    if not isinstance(xq, np.ndarray) or xq.dtype != np.uint8:
        check_quantized("xq", xq, np.uint8)
    wq = check_quantized("wq", wq, np.int8)
    if xq.ndim != 4 or wq.ndim != 4:
        raise ValueError(f"xq must be (N, C, H, W) and wq (C_out, C_in / groups, kh, kw), "
                         f"got {xq.shape} and {wq.shape}")
    stride, padding, dilation, groups = check_conv_geometry(wq.shape, stride, padding, dilation, groups)
    x_scale, out_scale = check_scale("x_scale", x_scale), check_scale("out_scale", out_scale)
    x_zp = check_zero_point("x_zp", x_zp, QUINT8_MIN, QUINT8_MAX)
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    out_channels, group_in, kh, kw = wq.shape
    w_scales, w_zps = check_weight_qparams(w_scales, w_zps, out_channels)
    bias_q = check_bias_q(bias_q, out_channels)
    check_accumulator_range(group_in * kh * kw, bias_q)
    qmin, _ = check_output_range(out_zp, relu)
    qmax = check_zero_point("qmax", qmax, qmin, QUINT8_MAX)
    prepared = prepare_qconv2d(wq, w_zps, stride, padding, dilation, groups)
    out_h, out_w = check_conv_input(xq.shape, prepared)
    multiplier = requantize_multiplier(x_scale, w_scales, out_scale)
    if xq.shape[0] == 0:
        return np.empty((0, out_h, out_w, out_channels), dtype=np.uint8).transpose(0, 3, 1, 2)
    out = qconv2d_nhwc(channels_last(xq), x_zp, prepared, bias_q, multiplier, out_zp, qmin, qmax)
    return out.transpose(0, 3, 1, 2)


def quantized_conv2d_reference(xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp,
                               stride, padding, dilation, groups, relu=False, qmax=QUINT8_MAX):
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
    return requantize_reference(acc, multiplier[:, None, None], out_zp, out_zp if relu else 0, qmax)

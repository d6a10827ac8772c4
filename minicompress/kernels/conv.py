"""2-D convolution kernels: a general grouped convolution by im2col + BLAS matmul, and a direct depthwise
convolution, each beside its NumPy reference twin.

Shapes and formula (torch.nn.functional.conv2d with zero padding and no bias; the caller adds the bias):

    x (N, C, H, W), weight (O, C // groups, kh, kw)  ->  out (N, O, Ho, Wo)
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1          (Wo likewise)
    out[n, o, p, q] = sum_{c', i, j} weight[o, c', i, j] * x_pad[n, g * Cg + c', p * sh + i * dh, q * sw + j * dw]

where group g = o // Og owns input channels [g * Cg, (g + 1) * Cg) and output channels [g * Og, (g + 1) * Og).

im2col lays every window out as one column of a matrix `cols` (C * kh * kw, N * Ho * Wo), row (c, i, j),
column (n, p, q), so that the convolution and both of its gradients are matmuls, per group g:

    out_g        = W_g @ cols_g          W_g = the weights of group g as (Og, Cg * kh * kw)
    grad_cols_g  = W_g.T @ grad_g        grad_g = grad_out of group g laid out as (Og, N * Ho * Wo)
    grad_W_g     = grad_g @ cols_g.T

and col2im, the adjoint of im2col, adds every entry of grad_cols back onto the pixel it was read from.

Depthwise (groups == C, weight (m * C, 1, kh, kw), channel multiplier m): output channel o reads input
channel o // m only, torch's ordering. Every output plane depends on one input plane, so a direct loop over
planes beats building a C * kh * kw-row matrix for what are C tiny dot products.

Grouped convolutions (1 < groups, not depthwise) and dense ones with few output channels run a direct
kernel instead (`direct_conv2d_forward`): the padded input read in place, each output element summed in
(c, i, j) order, so identical weight rows give identical output channels; its twin is the grouped einsum.

Pointwise convolutions (1x1, stride 1, no padding, one group) skip im2col: a sample viewed as (C, H * W)
is already its cols, so each is one GEMM.

The BLAS calls use BLAS's own threads. Of the Numba kernels only the depthwise and direct forward passes
are threaded (over planes, or bands of output rows, through `threads.ParallelKernel`, serial below its work
cutoff); im2col, col2im and the gradients run on one thread. On a small machine a Numba parallel region
right next to a threaded BLAS call can make each wait on the other's spinning threads, so only kernels that
carry real work between BLAS calls (the depthwise and grouped layers of a mobile model) are split.

The public entry points (`conv2d_forward`, `conv2d_backward_input`, `conv2d_backward_weight`) pick the kernel;
kernels assume validated, C-contiguous input of one floating dtype, and return that dtype. The NumPy twins
are `im2col_reference`, `col2im_reference`, `conv2d_*_reference` (the grouped einsum, right for every case)
and `depthwise_conv2d_*_reference`.
"""
import numba
import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import sliding_window_view

from .threads import ParallelKernel, threads_for

# The samples of one im2col chunk are chosen so that `cols` stays under this many elements (16 MB in
# float32): big enough for BLAS to run at full speed, small enough that a large batch does not
# allocate N times that.
COLS_MAX_ELEMENTS = 1 << 22
# A sample whose cols reach this many elements (1 MB in float32) fills a BLAS call on its own: the forward
# pass then runs one matmul per sample, writing each product in place instead of reordering a batched one.
SAMPLE_COLS_ELEMENTS = 1 << 18
# A sample whose cols would pass this many elements (2 MB in float32) is unfolded one band of output rows at
# a time into a reused buffer, each band multiplied straight into its columns of `out`. The cols of a
# 96-channel 3x3 conv on a 120 x 120 map are 50 MB: allocating and page-faulting them took 118 ms of the
# layer's 147 ms in PP-OCRv4's text detector (the GEMM: 38 ms), where a band stays in cache.
BAND_COLS_ELEMENTS = 1 << 19


def _conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


conv_output_size = njit(cache=True)(_conv_output_size)


def _valid_range(offset, stride, size, n_out):
    """The output indices q in [lo, hi) whose input index q * stride + offset lies inside [0, size);
    outside it the tap reads zero padding."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = min((size - 1 - offset) // stride + 1, n_out) if size > offset else 0
    return min(lo, hi), hi


valid_range = njit(cache=True)(_valid_range)


def _windows(x, kernel_size, stride, padding, dilation):
    """View (..., Ho, Wo, kh, kw) of zero-padded x (..., H, W): entry [..., p, q, i, j] is
    x_pad[..., p * sh + i * dh, q * sw + j * dw]. Every reference below is built on it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    return sliding_window_view(padded, span, axis=(-2, -1))[..., ::sh, ::sw, ::dh, ::dw]


def _unwindow(grad_windows, input_shape, stride, padding, dilation):
    """Adjoint of `_windows`: add every tap of grad_windows (..., Ho, Wo, kh, kw) onto the pixel it was
    read from, then drop the padding. Returns (..., H, W)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    *lead, height, width = input_shape
    out_h, out_w, kh, kw = grad_windows.shape[-4:]
    grad = np.zeros((*lead, height + 2 * ph, width + 2 * pw), dtype=grad_windows.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            grad[..., rows, cols] += grad_windows[..., i, j]
    return np.ascontiguousarray(grad[..., ph:ph + height, pw:pw + width])


# --------------------------------------------------------------------------------------------------
# im2col / col2im
#
# The inner loops run over row views indexed from 0, which Numba compiles to vector loads and stores
# when the views are contiguous (stride 1); indexing the 4-D array at a computed offset instead costs a
# negative-index check per element and does not vectorise, and slice assignment (`a[i:j] = b`) goes
# through Numba's generic broadcasting copy, several times slower on rows this short. Hence the helpers.


def _copy_into(dst, src):
    """dst[k] = src[k] for every k of dst."""
    for k in range(dst.size):
        dst[k] = src[k]


copy_into = njit(cache=True, inline="always")(_copy_into)


def _add_into(dst, src):
    """dst[k] += src[k] for every k of src."""
    for k in range(src.size):
        dst[k] += src[k]


add_into = njit(cache=True, inline="always")(_add_into)


def _tap_geometry(row, height_width, kernel_size, stride, padding, dilation, out_h, out_w):
    """Where row (c, i, j) of cols reads: channel c, row offset off_h = i * dh - ph, the output rows
    [h_lo, h_hi) and columns [w_lo, w_hi) whose tap lies inside the image, and the image column `first`
    that output column w_lo reads (columns then step by sw)."""
    (height, width), (kh, kw) = height_width, kernel_size
    c, i, j = row // (kh * kw), row // kw % kh, row % kw
    off_h, off_w = i * dilation[0] - padding[0], j * dilation[1] - padding[1]
    h_lo, h_hi = valid_range(off_h, stride[0], height, out_h)
    w_lo, w_hi = valid_range(off_w, stride[1], width, out_w)
    return c, off_h, h_lo, h_hi, w_lo, w_hi, w_lo * stride[1] + off_w


tap_geometry = njit(cache=True, inline="always")(_tap_geometry)


def _im2col(x, kernel_size, stride, padding, dilation):
    """x (N, C, H, W) -> cols (C * kh * kw, N * Ho * Wo) with
    cols[(c, i, j), (n, p, q)] = x_pad[n, c, p * sh + i * dh, q * sw + j * dw]."""
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    out_h = conv_output_size(height, kh, sh, padding[0], dilation[0])
    out_w = conv_output_size(width, kw, sw, padding[1], dilation[1])
    plane = out_h * out_w
    cols = np.zeros((channels * kh * kw, n_batch * plane), dtype=x.dtype)
    for row in range(channels * kh * kw):
        c, off_h, h_lo, h_hi, w_lo, w_hi, first = tap_geometry(row, (height, width), kernel_size, stride, padding,
                                                               dilation, out_h, out_w)
        for n in range(n_batch):
            for p in range(h_lo, h_hi):
                start = n * plane + p * out_w
                image_row = x[n, c, p * sh + off_h]
                if sw == 1:
                    copy_into(cols[row, start + w_lo:start + w_hi], image_row[first:])
                else:
                    copy_into(cols[row, start + w_lo:start + w_hi], image_row[first::sw])
    return cols


im2col = njit(cache=True)(_im2col)


def _im2col_rows(x, kernel_size, stride, padding, dilation, p_lo, p_hi, cols):
    """The columns of output rows [p_lo, p_hi) of one sample x (C, H, W), written into every entry of
    cols (C * kh * kw, (p_hi - p_lo) * Wo): cols[(c, i, j), (p - p_lo, q)] = x_pad[c, p * sh + i * dh,
    q * sw + j * dw], the band of `im2col(x[None])` between columns p_lo * Wo and p_hi * Wo."""
    channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    out_h = conv_output_size(height, kh, sh, padding[0], dilation[0])
    out_w = conv_output_size(width, kw, sw, padding[1], dilation[1])
    for row in range(channels * kh * kw):
        c, off_h, h_lo, h_hi, w_lo, w_hi, first = tap_geometry(row, (height, width), kernel_size, stride, padding,
                                                               dilation, out_h, out_w)
        for p in range(p_lo, p_hi):
            dst = cols[row, (p - p_lo) * out_w:(p - p_lo + 1) * out_w]
            if p < h_lo or p >= h_hi:               # the whole row of taps reads padding
                for k in range(out_w):
                    dst[k] = 0
                continue
            for k in range(w_lo):
                dst[k] = 0
            for k in range(w_hi, out_w):
                dst[k] = 0
            image_row = x[c, p * sh + off_h]
            if w_hi > w_lo:
                if sw == 1:
                    copy_into(dst[w_lo:w_hi], image_row[first:])
                else:
                    copy_into(dst[w_lo:w_hi], image_row[first::sw])
    return cols


im2col_rows = njit(cache=True)(_im2col_rows)


def im2col_rows_reference(x, kernel_size, stride, padding, dilation, p_lo, p_hi):
    """The twin of `im2col_rows`: that band of the whole sample's im2col."""
    out_w = _conv_output_size(x.shape[2], kernel_size[1], stride[1], padding[1], dilation[1])
    return im2col_reference(x[None], kernel_size, stride, padding, dilation)[:, p_lo * out_w:p_hi * out_w]


def im2col_reference(x, kernel_size, stride, padding, dilation):
    windows = _windows(x, kernel_size, stride, padding, dilation)          # (N, C, Ho, Wo, kh, kw)
    n_batch, channels, out_h, out_w, kh, kw = windows.shape
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(channels * kh * kw, n_batch * out_h * out_w)


def _col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """Adjoint of im2col: cols (C * kh * kw, N * Ho * Wo) -> (N, C, H, W), every entry added onto the
    pixel it was read from; entries that read padding are dropped."""
    n_batch, channels, height, width = input_shape
    (kh, kw), (sh, sw) = kernel_size, stride
    out_h = conv_output_size(height, kh, sh, padding[0], dilation[0])
    out_w = conv_output_size(width, kw, sw, padding[1], dilation[1])
    plane = out_h * out_w
    x = np.zeros((n_batch, channels, height, width), dtype=cols.dtype)
    for row in range(channels * kh * kw):
        c, off_h, h_lo, h_hi, w_lo, w_hi, first = tap_geometry(row, (height, width), kernel_size, stride, padding,
                                                               dilation, out_h, out_w)
        for n in range(n_batch):
            for p in range(h_lo, h_hi):
                start = n * plane + p * out_w
                image_row = x[n, c, p * sh + off_h]
                if sw == 1:
                    add_into(image_row[first:], cols[row, start + w_lo:start + w_hi])
                else:
                    add_into(image_row[first::sw], cols[row, start + w_lo:start + w_hi])
    return x


col2im = njit(cache=True)(_col2im)


def col2im_reference(cols, input_shape, kernel_size, stride, padding, dilation):
    n_batch, channels, height, width = input_shape
    kh, kw = kernel_size
    out_h = _conv_output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = _conv_output_size(width, kw, stride[1], padding[1], dilation[1])
    windows = cols.reshape(channels, kh, kw, n_batch, out_h, out_w).transpose(3, 0, 4, 5, 1, 2)
    return _unwindow(windows, input_shape, stride, padding, dilation)


# --------------------------------------------------------------------------------------------------
# Fused epilogue: what the layers after a convolution do to each output element, applied in the pass that
# writes it (inference), instead of one more full-size pass per layer:
#
#     v = acc + bias[o]                                          with a bias
#     v = (v - mean[o]) * inv_std[o] * gamma[o] + beta[o]        with an eval BatchNorm (kernels/norm.py's formula)
#     v = min(max(v, lo), hi)                                    ReLU (0, inf), ReLU6 (0, 6), Clip; NaN stays NaN
#
# each step in that order and in x's dtype, with no fused multiply-add, so the result has the bits of the
# layers run one by one (conv + bias, then BatchNorm, then the activation). The kernels take the epilogue
# as arrays: params (5, O) = rows bias, mean, inv_std, gamma, beta; flags (has_bias, has_norm); bounds
# (lo, hi). A direct kernel (depthwise) applies it to each output plane right after computing it, while
# the plane is in cache; the GEMM paths apply it in one pass over each GEMM's output.


class Epilogue:
    """The per-output-channel tail fused into `conv2d_forward` (see the section comment above).

    Args:
        bias: (O,) added to the sum, or None.
        norm: (mean, inv_std, gamma, beta), each (O,), an eval BatchNorm with inv_std = 1 / sqrt(var + eps),
            or None.
        clip: (lo, hi) clamp, or None: (0, inf) is ReLU, (0, 6) ReLU6.
    """

    __slots__ = ("bias", "norm", "clip")

    def __init__(self, bias=None, norm=None, clip=None):
        self.bias, self.norm, self.clip = bias, norm, clip

    def is_identity(self):
        return self.bias is None and self.norm is None and self.clip is None

    def arrays(self, out_channels, dtype):
        """(params (5, O), flags (2,) int64, bounds (2,)) in `dtype`, as the kernels take them."""
        params = np.zeros((5, out_channels), dtype)
        if self.bias is not None:
            params[0] = self.bias
        if self.norm is not None:
            params[1:] = self.norm
        lo, hi = (-np.inf, np.inf) if self.clip is None else self.clip
        flags = np.array([self.bias is not None, self.norm is not None], np.int64)
        return params, flags, np.array([lo, hi], dtype)


NO_EPILOGUE = Epilogue()


def apply_epilogue_reference(out, epilogue):
    """The epilogue on out (N, O, ...) in NumPy, the twin of `finish_row`."""
    shape = (1, -1) + (1,) * (out.ndim - 2)
    t = out.dtype.type
    if epilogue.bias is not None:
        out = out + epilogue.bias.reshape(shape).astype(out.dtype)
    if epilogue.norm is not None:
        mean, inv_std, gamma, beta = (np.asarray(a, out.dtype).reshape(shape) for a in epilogue.norm)
        out = (out - mean) * inv_std * gamma + beta
    if epilogue.clip is not None:
        out = np.minimum(np.maximum(out, t(epilogue.clip[0])), t(epilogue.clip[1]))
    return out


def _finish_row(row, params, o, flags, bounds):
    """The epilogue of output channel o over one row, in place."""
    bias, mean, inv_std, gamma, beta = params[0, o], params[1, o], params[2, o], params[3, o], params[4, o]
    lo, hi = bounds[0], bounds[1]
    if flags[1]:
        for k in range(row.size):
            v = row[k] + bias if flags[0] else row[k]
            v = (v - mean) * inv_std * gamma + beta
            v = v if not v < lo else lo
            row[k] = v if not v > hi else hi
    else:
        for k in range(row.size):
            v = row[k] + bias if flags[0] else row[k]
            v = v if not v < lo else lo
            row[k] = v if not v > hi else hi


finish_row = njit(cache=True, inline="always")(_finish_row)


def _finish_planes(out, params, flags, bounds):
    """The epilogue over out (N, O, L), in place; the N * O rows in parallel above the work cutoff."""
    channels = out.shape[1]
    for task in prange(out.shape[0] * channels):
        n, o = task // channels, task % channels
        finish_row(out[n, o], params, o, flags, bounds)


finish_planes_kernel = ParallelKernel(_finish_planes)


def finish_planes(out, params, flags, bounds):
    """The epilogue over a GEMM's output (N, O, L) in one pass, after the GEMM. (Multiplying a block of
    columns at a time and finishing each block while it is in cache saved ~0.2 ms per 224x224 layer on one
    BLAS thread, but with BLAS's own threads on a loaded machine every extra call waited on them: 10x slower.)"""
    with threads_for(out.size):
        finish_planes_kernel(out, params, flags, bounds)
    return out


# --------------------------------------------------------------------------------------------------
# General grouped convolution: im2col, then one batched BLAS matmul over the groups per chunk of samples


def _sample_chunks(n_batch, cols_per_sample):
    step = max(1, COLS_MAX_ELEMENTS // max(1, cols_per_sample))
    return [(start, min(start + step, n_batch)) for start in range(0, n_batch, step)]


def grouped_conv2d_forward(x, weight, stride, padding, dilation, groups, epilogue_arrays=None, out=None):
    """out_g = W_g @ cols_g for every group g at once (np.matmul batches over the group axis), then the
    epilogue (`Epilogue.arrays`), if given; into `out` (N, O, Ho, Wo) C-contiguous when given.

    A sample whose cols fill at least SAMPLE_COLS_ELEMENTS is its own chunk, and its product is written
    straight into its slice of `out` (same layout, (G, Og, Ho * Wo)); smaller samples are batched into one
    matmul per chunk and the product is reordered into `out` afterwards. Each chunk is finished by the
    epilogue right after its GEMM."""
    n_batch, channels, height, width = x.shape
    out_channels, group_in, kh, kw = weight.shape
    out_h = _conv_output_size(height, kh, stride[0], padding[0], dilation[0])
    out_w = _conv_output_size(width, kw, stride[1], padding[1], dilation[1])
    plane = out_h * out_w
    w = weight.reshape(groups, out_channels // groups, group_in * kh * kw)
    result = np.empty((n_batch, out_channels, out_h, out_w), dtype=x.dtype) if out is None else out
    out = result.reshape(n_batch, out_channels, plane)
    cols_per_sample = channels * kh * kw * plane
    chunks = ([(n, n + 1) for n in range(n_batch)] if cols_per_sample >= SAMPLE_COLS_ELEMENTS
              else _sample_chunks(n_batch, cols_per_sample))
    for start, stop in chunks:
        if stop - start == 1 and cols_per_sample > BAND_COLS_ELEMENTS:
            _banded_sample_forward(x[start], w, out[start].reshape(groups, out_channels // groups, plane),
                                   (kh, kw), stride, padding, dilation, out_w)
            if epilogue_arrays is not None:
                finish_planes(out[start:stop], *epilogue_arrays)
            continue
        cols = im2col(x[start:stop], (kh, kw), stride, padding, dilation)
        cols = cols.reshape(groups, -1, cols.shape[1])
        if stop - start == 1:
            np.matmul(w, cols, out=out[start].reshape(groups, out_channels // groups, plane))
        else:
            out_g = np.matmul(w, cols)                                              # (G, Og, n * L)
            out[start:stop] = out_g.reshape(out_channels, stop - start, plane).swapaxes(0, 1)
        if epilogue_arrays is not None:
            finish_planes(out[start:stop], *epilogue_arrays)
    return result


def _banded_sample_forward(x, w, out, kernel_size, stride, padding, dilation, out_w):
    """out (G, Og, Ho * Wo) = W_g @ cols_g of one sample x (C, H, W), a band of output rows at a time: each
    band's cols (at most BAND_COLS_ELEMENTS, in one buffer reused for every band) multiplied into its
    columns of out. The sums are those of the whole-sample product, column by column."""
    groups, rows = w.shape[0], w.shape[0] * w.shape[2]
    band = max(1, BAND_COLS_ELEMENTS // (rows * out_w))
    out_h = out.shape[2] // out_w
    buffer = np.empty(rows * min(band, out_h) * out_w, dtype=x.dtype)
    for p_lo in range(0, out_h, band):
        p_hi = min(p_lo + band, out_h)
        cols = buffer[:rows * (p_hi - p_lo) * out_w].reshape(rows, (p_hi - p_lo) * out_w)
        im2col_rows(x, kernel_size, stride, padding, dilation, p_lo, p_hi, cols)
        np.matmul(w, cols.reshape(groups, rows // groups, cols.shape[1]), out=out[:, :, p_lo * out_w:p_hi * out_w])
    return out


def _grad_by_group(grad_out, start, stop, groups):
    """grad_out[start:stop] (n, O, Ho, Wo) as (G, Og, n * Ho * Wo), the column order of im2col."""
    chunk = grad_out[start:stop].reshape(stop - start, grad_out.shape[1], -1)
    return np.ascontiguousarray(chunk.swapaxes(0, 1)).reshape(groups, grad_out.shape[1] // groups, -1)


def grouped_conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation, groups):
    """grad_cols_g = W_g.T @ grad_g, folded back onto the image by col2im."""
    n_batch, channels, height, width = input_shape
    out_channels, group_in, kh, kw = weight.shape
    w_t = weight.reshape(groups, out_channels // groups, group_in * kh * kw).transpose(0, 2, 1)
    grad_x = np.empty((n_batch, channels, height, width), dtype=grad_out.dtype)
    for start, stop in _sample_chunks(n_batch, channels * kh * kw * grad_out.shape[2] * grad_out.shape[3]):
        grad_cols = np.matmul(w_t, _grad_by_group(grad_out, start, stop, groups))   # (G, Cg * kh * kw, n * L)
        grad_x[start:stop] = col2im(grad_cols.reshape(channels * kh * kw, -1), (stop - start, channels, height, width),
                                    (kh, kw), stride, padding, dilation)
    return grad_x


def grouped_conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation, groups):
    """grad_W_g = grad_g @ cols_g.T, summed over the chunks of samples."""
    n_batch, channels = x.shape[:2]
    out_channels, group_in, kh, kw = weight_shape
    grad_w = np.zeros((groups, out_channels // groups, group_in * kh * kw), dtype=x.dtype)
    for start, stop in _sample_chunks(n_batch, channels * kh * kw * grad_out.shape[2] * grad_out.shape[3]):
        cols = im2col(x[start:stop], (kh, kw), stride, padding, dilation)
        cols_t = cols.reshape(groups, -1, cols.shape[1]).transpose(0, 2, 1)       # (G, n * L, Cg * kh * kw)
        grad_w += np.matmul(_grad_by_group(grad_out, start, stop, groups), cols_t)
    return grad_w.reshape(weight_shape)


# --------------------------------------------------------------------------------------------------
# Pointwise convolution (1x1, stride 1, no padding, one group): im2col of a sample would be the sample
# itself viewed as (C, H * W), so each sample is one GEMM on that view, with no cols built or copied:
#     out[n] = W @ x[n]        grad_x[n] = W.T @ g[n]        grad_W = sum_n g[n] @ x[n].T
# with W the weights as (O, C) and g[n] = grad_out[n] as (O, H * W). MobileNet's pointwise layers are
# this case, and they carry most of its multiply-adds.


def is_pointwise(weight_shape, stride, padding, groups):
    """True for a 1x1 kernel with stride 1, no padding and one group (dilation does not matter)."""
    return tuple(weight_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and groups == 1


def pointwise_conv2d_forward(x, weight, epilogue_arrays=None, out=None):
    """out[n] = W @ x[n] for every sample in one batched GEMM, then the epilogue (`Epilogue.arrays`) if given;
    into `out` (N, O, H, W) C-contiguous when given."""
    n_batch, channels, height, width = x.shape
    result = np.empty((n_batch, weight.shape[0], height, width), dtype=x.dtype) if out is None else out
    planes = result.reshape(n_batch, weight.shape[0], height * width)
    np.matmul(weight.reshape(weight.shape[0], channels), x.reshape(n_batch, channels, height * width), out=planes)
    if epilogue_arrays is not None:
        finish_planes(planes, *epilogue_arrays)
    return result


def pointwise_conv2d_backward_input(grad_out, weight, input_shape):
    n_batch, out_channels, height, width = grad_out.shape
    w_t = weight.reshape(out_channels, input_shape[1]).T
    return np.matmul(w_t, grad_out.reshape(n_batch, out_channels, height * width)).reshape(input_shape)


def pointwise_conv2d_backward_weight(grad_out, x, weight_shape):
    n_batch, out_channels, height, width = grad_out.shape
    g = grad_out.reshape(n_batch, out_channels, height * width)
    x_t = x.reshape(n_batch, x.shape[1], height * width).transpose(0, 2, 1)
    return np.matmul(g, x_t).sum(axis=0).reshape(weight_shape)


# --------------------------------------------------------------------------------------------------
# Patch convolution's input gradient (kernel == stride, no padding, one group): the windows tile the image
# without overlapping, so col2im adds nothing to anything; every column of W.T @ g[n] is one patch of
# grad_x, put in place. This is the transposed convolution of upsampling heads (DBNet's 2x2 stride 2):
#     grad_x[n, c, i * kh + a, j * kw + b] = sum_o W[o, c, a, b] g[n, o, i, j]   (+ bias[c] when given)
# one GEMM per sample, then one pass that writes each output row whole.


def is_patchwise(weight_shape, stride, padding, groups):
    """True when the kernel equals the stride, with no padding and one group (dilation is then irrelevant
    only for 1x1, so it is required to be 1 by the callers that pass it)."""
    return tuple(weight_shape[2:]) == tuple(stride) and tuple(padding) == (0, 0) and groups == 1


def _scatter_patches(cols, bias, kh, kw, out):
    """out[n, c, i * kh + a, j * kw + b] = cols[n, (c * kh + a) * kw + b, i * Wo + j] (+ bias[c] if bias
    has elements), each output row written in one pass."""
    n_batch, channels, height, width = out.shape
    out_w = width // kw
    for n in range(n_batch):
        for c in range(channels):
            for i in range(height // kh):
                for a in range(kh):
                    row = out[n, c, i * kh + a]
                    for b in range(kw):
                        src = cols[n, (c * kh + a) * kw + b, i * out_w:(i + 1) * out_w]
                        if bias.size:
                            for j in range(out_w):
                                row[j * kw + b] = src[j] + bias[c]
                        else:
                            for j in range(out_w):
                                row[j * kw + b] = src[j]
    return out


scatter_patches = njit(cache=True)(_scatter_patches)


def scatter_patches_reference(cols, bias, kh, kw, out_shape):
    """The twin of `scatter_patches`: the columns reshaped into their patches (then the bias added)."""
    n_batch, channels, height, width = out_shape
    patches = cols.reshape(n_batch, channels, kh, kw, height // kh, width // kw).transpose(0, 1, 4, 2, 5, 3)
    out = np.ascontiguousarray(patches).reshape(out_shape)
    return out + bias.reshape(1, -1, 1, 1) if bias.size else out


def patch_conv2d_backward_input(grad_out, weight, input_shape, bias=None, out=None):
    """grad_x (N, C, Ho * kh, Wo * kw) of a patch convolution (`is_patchwise`): W.T @ g[n] per sample, its
    columns scattered into their patches, `bias` (C,) added in that pass; into `out` when given."""
    n_batch, out_channels, out_h, out_w = grad_out.shape
    _, channels, kh, kw = weight.shape
    if tuple(input_shape) != (n_batch, channels, out_h * kh, out_w * kw):
        raise ValueError(f"input_shape {tuple(input_shape)} is not tiled by {kh}x{kw} patches of "
                         f"{grad_out.shape}")
    w_t = weight.reshape(out_channels, channels * kh * kw).T
    cols = np.matmul(w_t, grad_out.reshape(n_batch, out_channels, out_h * out_w))
    if out is None:
        out = np.empty(input_shape, dtype=cols.dtype)
    bias = np.zeros(0, cols.dtype) if bias is None else np.ascontiguousarray(bias, dtype=cols.dtype)
    return scatter_patches(cols, bias, kh, kw, out)


def conv2d_forward_reference(x, weight, stride, padding, dilation, groups):
    """The grouped convolution as one einsum over the windows; covers every case, depthwise included."""
    n_batch, channels = x.shape[:2]
    out_channels, group_in, kh, kw = weight.shape
    windows = _windows(x, (kh, kw), stride, padding, dilation)              # (N, C, Ho, Wo, kh, kw)
    windows = windows.reshape(n_batch, groups, group_in, *windows.shape[2:])
    w = weight.reshape(groups, out_channels // groups, group_in, kh, kw)
    out = np.einsum("ngcpqij,gocij->ngopq", windows, w)
    return out.reshape(n_batch, out_channels, *out.shape[-2:])


def conv2d_backward_input_reference(grad_out, weight, input_shape, stride, padding, dilation, groups):
    n_batch, out_channels, out_h, out_w = grad_out.shape
    _, group_in, kh, kw = weight.shape
    grad = grad_out.reshape(n_batch, groups, out_channels // groups, out_h, out_w)
    w = weight.reshape(groups, out_channels // groups, group_in, kh, kw)
    grad_windows = np.einsum("ngopq,gocij->ngcpqij", grad, w)
    grad_windows = grad_windows.reshape(n_batch, groups * group_in, out_h, out_w, kh, kw)
    return _unwindow(grad_windows, input_shape, stride, padding, dilation)


def conv2d_backward_weight_reference(grad_out, x, weight_shape, stride, padding, dilation, groups):
    n_batch, out_channels, out_h, out_w = grad_out.shape
    _, group_in, kh, kw = weight_shape
    windows = _windows(x, (kh, kw), stride, padding, dilation)
    windows = windows.reshape(n_batch, groups, group_in, *windows.shape[2:])
    grad = grad_out.reshape(n_batch, groups, out_channels // groups, out_h, out_w)
    return np.einsum("ngcpqij,ngopq->gocij", windows, grad).reshape(weight_shape)


# --------------------------------------------------------------------------------------------------
# Depthwise convolution: a direct loop over planes
#
# Each input plane is first copied into a zero-bordered buffer with row pitch Wp = W + 2 * pw (padded rows
# stored one after another). MobileNet's 3x3 (stride 1 or 2 along W) has its own pass
# (`_depthwise_3x3_plane`): nine taps per output element in one loop over each output row. Every other
# kernel (the 5x5 of PP-OCR's and MobileNetV3's blocks, any stride or dilation) is computed a whole plane
# at a time: the padded plane split by (row % sh, column % sw) into phase planes (`_pad_phases_into`), so
# that every tap reads consecutive elements for consecutive outputs and is one vectorised axpy over the
# plane laid out with the phase planes' pitch (`_depthwise_phase_plane`); an output row of a 20x20 map is
# too short for a loop per row to pay. Every output element sums its taps in (i, j) order.
#
# The backward passes work on whole planes: with stride 1, output (p, q) read through tap (i, j) is
# buffer[(p + i * dh) * Wp + q + j * dw], so if the output is also laid out with pitch Wp, one tap is a
# single contiguous axpy over all Ho * Wp positions (the Wp - Wo extra positions per row are computed and
# thrown away; the buffer carries (kw - 1) * dw slack elements so that the last of them stays in bounds).
# Other strides index the buffer as a 2-D grid through a strided view.
#
# The forward planes are independent, so they are split over threads in contiguous runs, each run with
# its own padded buffer; the entry point picks the serial build for small work (see threads.py).


def _axpy(y, a, x):
    for k in range(y.size):
        y[k] += a * x[k]


axpy = njit(cache=True, inline="always")(_axpy)


def _dot(x, y):
    total = x.dtype.type(0)
    for k in range(x.size):
        total += x[k] * y[k]
    return total


# Reassociation lets the sum run in vector lanes; it changes the result only by rounding.
dot = njit(cache=True, fastmath={"reassoc"})(_dot)


def _pad_into(buffer, plane, padding, pitch):
    """Copy plane (H, W) into the interior of the flat zero-bordered buffer (row pitch `pitch`)."""
    height, width = plane.shape
    for h in range(height):
        start = (h + padding[0]) * pitch + padding[1]
        copy_into(buffer[start:start + width], plane[h])


pad_into = njit(cache=True)(_pad_into)


def _split_columns(halves, grid):
    """halves[0, h, k] = grid[h, 2k], halves[1, h, k] = grid[h, 2k + 1] (zero past the row's end); halves is
    (2, padded_h, pitch // 2 + 1), reused from plane to plane."""
    padded_h, pitch = grid.shape
    for h in range(padded_h):
        even, odd, row = halves[0, h], halves[1, h], grid[h]
        for k in range(pitch // 2):
            even[k], odd[k] = row[2 * k], row[2 * k + 1]
        even[pitch // 2], odd[pitch // 2] = (row[pitch - 1] if pitch % 2 else 0), 0
    return halves


split_columns = njit(cache=True)(_split_columns)


def _depthwise_3x3_plane(out_plane, grid, halves, taps, sh, sw, dh):
    """MobileNet's 3x3 (dilation 1 along W, stride 1 or 2 along W): all nine taps of an output element in
    one vectorised pass over the row, summed in (i, j) order.
    Tap column j of output q reads column q * sw + j: at stride 1 the rows themselves at offsets 0, 1, 2;
    at stride 2 the plane split once into even and odd columns (`halves`), read as even[q], odd[q],
    even[q + 1], so that every read is contiguous."""
    out_h, out_w = out_plane.shape
    if sw == 2:
        split_columns(halves, grid)
    a00, a01, a02 = taps[0, 0], taps[0, 1], taps[0, 2]
    a10, a11, a12 = taps[1, 0], taps[1, 1], taps[1, 2]
    a20, a21, a22 = taps[2, 0], taps[2, 1], taps[2, 2]
    for p in range(out_h):
        row_out, h = out_plane[p], p * sh
        if sw == 1:
            r0, r1, r2 = grid[h], grid[h + dh], grid[h + 2 * dh]
            for q in range(out_w):
                row_out[q] = (a00 * r0[q] + a01 * r0[q + 1] + a02 * r0[q + 2]
                              + a10 * r1[q] + a11 * r1[q + 1] + a12 * r1[q + 2]
                              + a20 * r2[q] + a21 * r2[q + 1] + a22 * r2[q + 2])
        else:
            e0, o0, e1 = halves[0, h], halves[1, h], halves[0, h + dh]
            o1, e2, o2 = halves[1, h + dh], halves[0, h + 2 * dh], halves[1, h + 2 * dh]
            for q in range(out_w):
                row_out[q] = (a00 * e0[q] + a01 * o0[q] + a02 * e0[q + 1]
                              + a10 * e1[q] + a11 * o1[q] + a12 * e1[q + 1]
                              + a20 * e2[q] + a21 * o2[q] + a22 * e2[q + 1])


depthwise_3x3_plane = njit(cache=True)(_depthwise_3x3_plane)


def _pad_phases_into(buffer, plane, padding, stride, rows, pitch):
    """Copy plane (H, W) into the zero-bordered buffer, split by (row % sh, column % sw) into sh * sw phase
    planes of `rows` x `pitch` elements: padded pixel (h, w) goes to phase (h % sh, w % sw) at
    (h // sh, w // sw). Output pixel (p, q) through tap (i, j) then reads phase (i dh % sh, j dw % sw) at
    (p + i dh // sh, q + j dw // sw): consecutive q are consecutive elements. With stride 1 it is the padded
    plane itself (`pad_into`). The border is never written: zero it once."""
    height, width = plane.shape
    sh, sw = stride
    if sh == 1 and sw == 1:
        pad_into(buffer, plane, padding, pitch)
        return
    size = rows * pitch
    for h in range(height):
        padded_row = h + padding[0]
        base = padded_row % sh * sw * size + padded_row // sh * pitch
        image_row = plane[h]
        for phase in range(sw):
            w0 = (phase - padding[1]) % sw                   # the first image column of this phase
            start = base + phase * size + (w0 + padding[1]) // sw
            for k in range((width - w0 + sw - 1) // sw):
                buffer[start + k] = image_row[w0 + k * sw]


pad_phases_into = njit(cache=True)(_pad_phases_into)


def _phase_offset(i, j, stride, dilation, rows, pitch):
    """Where tap (i, j) of output pixel (0, 0) sits in `pad_phases_into`'s buffer."""
    (sh, sw), (dh, dw) = stride, dilation
    return (i * dh % sh * sw + j * dw % sw) * rows * pitch + i * dh // sh * pitch + j * dw // sw


phase_offset = njit(cache=True, inline="always")(_phase_offset)


def _depthwise_phase_plane(out_plane, buffer, acc, taps, stride, dilation, rows, pitch):
    """Any kernel, stride and dilation: out_plane[p, q] = sum_{i, j} taps[i, j] * x_pad[p sh + i dh,
    q sw + j dw], summed in (i, j) order, the whole plane at once: with the input split into phase planes
    (`pad_phases_into`), output (p, q) of tap (i, j) reads buffer[offset(i, j) + p * pitch + q], so each
    tap is one contiguous axpy over acc's (Ho - 1) * pitch + Wo positions (the pitch - Wo columns between
    rows are computed and dropped); a 5x5 adds a kernel row's five taps per pass."""
    out_h, out_w = out_plane.shape
    kh, kw = taps.shape
    length = (out_h - 1) * pitch + out_w
    total = acc[:length]
    total[:] = 0
    for i in range(kh):
        if kw == 5:
            f0 = phase_offset(i, 0, stride, dilation, rows, pitch)
            f1 = phase_offset(i, 1, stride, dilation, rows, pitch)
            f2 = phase_offset(i, 2, stride, dilation, rows, pitch)
            f3 = phase_offset(i, 3, stride, dilation, rows, pitch)
            f4 = phase_offset(i, 4, stride, dilation, rows, pitch)
            s0, s1, s2 = buffer[f0:f0 + length], buffer[f1:f1 + length], buffer[f2:f2 + length]
            s3, s4 = buffer[f3:f3 + length], buffer[f4:f4 + length]
            w0, w1, w2, w3, w4 = taps[i, 0], taps[i, 1], taps[i, 2], taps[i, 3], taps[i, 4]
            for t in range(length):        # left to right: the j order
                total[t] = total[t] + w0 * s0[t] + w1 * s1[t] + w2 * s2[t] + w3 * s3[t] + w4 * s4[t]
            continue
        for j in range(kw):
            first = phase_offset(i, j, stride, dilation, rows, pitch)
            axpy(total, taps[i, j], buffer[first:first + length])
    for p in range(out_h):
        copy_into(out_plane[p], total[p * pitch:])


depthwise_phase_plane = njit(cache=True)(_depthwise_phase_plane)


def _depthwise_conv2d_forward(x, weight, stride, padding, dilation, n_runs, params, flags, bounds, out):
    """out[n, o] = sum_{i, j} weight[o, 0, i, j] * x_pad[n, o // m, p * sh + i * dh, q * sw + j * dw],
    then the epilogue (params, flags, bounds: `Epilogue.arrays`), the N * O planes split into n_runs
    contiguous runs; written into out (N, O, Ho, Wo), which is returned."""
    n_batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    out_h = conv_output_size(height, kh, sh, padding[0], dh)
    out_w = conv_output_size(width, kw, sw, padding[1], dw)
    pitch, padded_h = width + 2 * padding[1], height + 2 * padding[0]
    three = kh == 3 and kw == 3 and dw == 1 and sw <= 2                   # `_depthwise_3x3_plane`'s case
    phase_rows, phase_pitch = (padded_h + sh - 1) // sh, (pitch + sw - 1) // sw
    tasks = n_batch * out_channels
    identity = flags[0] == 0 and flags[1] == 0 and bounds[0] == -np.inf and bounds[1] == np.inf
    for run in prange(n_runs):
        if three:
            grid = np.zeros((padded_h, pitch), dtype=x.dtype)
            halves = np.zeros((2, padded_h, pitch // 2 + 1), dtype=x.dtype)
        else:
            grid = np.zeros((sh * sw * phase_rows, phase_pitch), dtype=x.dtype)
            halves = np.empty((1, 1, (out_h - 1) * phase_pitch + out_w), dtype=x.dtype)
        buffer = grid.reshape(-1)
        for task in range(run * tasks // n_runs, (run + 1) * tasks // n_runs):
            n, o = task // out_channels, task % out_channels
            plane = x[n, o // (out_channels // channels)]
            if three:
                pad_into(buffer, plane, padding, pitch)
                depthwise_3x3_plane(out[n, o], grid, halves, weight[o, 0], sh, sw, dh)
            else:
                pad_phases_into(buffer, plane, padding, stride, phase_rows, phase_pitch)
                depthwise_phase_plane(out[n, o], buffer, halves[0, 0], weight[o, 0], stride, dilation, phase_rows,
                                      phase_pitch)
            if not identity:
                finish_row(out[n, o].reshape(out_h * out_w), params, o, flags, bounds)
    return out


depthwise_conv2d_forward_kernel = ParallelKernel(_depthwise_conv2d_forward)

# Runs per thread: a few, so that a thread slowed by other work on the machine leaves less undone.
RUNS_PER_THREAD = 4


def depthwise_conv2d_forward(x, weight, stride, padding, dilation, epilogue_arrays=None, out=None):
    """The depthwise forward pass on validated input (see `conv2d_forward`), threaded when it is large; into
    `out` (N, O, Ho, Wo) when given."""
    if out is None:
        out = np.empty(conv_output_shape(x.shape, weight.shape, stride, padding, dilation), dtype=x.dtype)
    work = weight.shape[2] * weight.shape[3] * x.shape[0] * weight.shape[0] * x.shape[2] * x.shape[3]
    if epilogue_arrays is None:
        epilogue_arrays = NO_EPILOGUE.arrays(weight.shape[0], x.dtype)
    with threads_for(work):
        n_runs = max(1, min(x.shape[0] * weight.shape[0], RUNS_PER_THREAD * numba.get_num_threads()))
        return depthwise_conv2d_forward_kernel(x, weight, stride, padding, dilation, n_runs, *epilogue_arrays, out)


def depthwise_conv2d_forward_reference(x, weight, stride, padding, dilation):
    n_batch, channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    windows = _windows(x, (kh, kw), stride, padding, dilation)              # (N, C, Ho, Wo, kh, kw)
    w = weight.reshape(channels, out_channels // channels, kh, kw)         # o = c * m + k
    out = np.einsum("ncpqij,ckij->nckpq", windows, w)
    return out.reshape(n_batch, out_channels, *out.shape[-2:])


def _depthwise_conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation):
    """grad_x[n, c] collects weight[o, 0, i, j] * grad_out[n, o, p, q] from its m output channels
    o = c * m + k, each onto the pixel (p * sh + i * dh, q * sw + j * dw) of the padded plane."""
    n_batch, channels, height, width = input_shape
    out_channels, _, kh, kw = weight.shape
    multiplier = out_channels // channels
    (sh, sw), (dh, dw) = stride, dilation
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    pitch, padded_h = width + 2 * padding[1], height + 2 * padding[0]
    buffer = np.zeros(padded_h * pitch + (kw - 1) * dw, dtype=grad_out.dtype)
    grid = buffer[:padded_h * pitch].reshape(padded_h, pitch)
    pitched = np.zeros(out_h * pitch, dtype=grad_out.dtype)      # columns past Wo stay zero
    grad_x = np.empty((n_batch, channels, height, width), dtype=grad_out.dtype)
    for task in range(n_batch * channels):
        n, c = task // channels, task % channels
        buffer[:] = 0
        for o in range(c * multiplier, (c + 1) * multiplier):
            grad = grad_out[n, o]
            if sh == 1 and sw == 1:
                for p in range(out_h):
                    copy_into(pitched[p * pitch:p * pitch + out_w], grad[p])
                for i in range(kh):
                    for j in range(kw):
                        shift = i * dh * pitch + j * dw
                        axpy(buffer[shift:shift + pitched.size], weight[o, 0, i, j], pitched)
                continue
            for i in range(kh):
                for j in range(kw):
                    a, taps = weight[o, 0, i, j], grid[i * dh::sh, j * dw::sw]
                    for p in range(out_h):
                        for q in range(out_w):
                            taps[p, q] += a * grad[p, q]
        for h in range(height):
            copy_into(grad_x[n, c, h], buffer[(h + padding[0]) * pitch + padding[1]:])
    return grad_x


depthwise_conv2d_backward_input = njit(cache=True)(_depthwise_conv2d_backward_input)


def depthwise_conv2d_backward_input_reference(grad_out, weight, input_shape, stride, padding, dilation):
    n_batch, out_channels, out_h, out_w = grad_out.shape
    channels = input_shape[1]
    kh, kw = weight.shape[2:]
    grad = grad_out.reshape(n_batch, channels, out_channels // channels, out_h, out_w)
    w = weight.reshape(channels, out_channels // channels, kh, kw)
    grad_windows = np.einsum("nckpq,ckij->ncpqij", grad, w)
    return _unwindow(grad_windows, input_shape, stride, padding, dilation)


def _depthwise_conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation):
    """grad_w[o, 0, i, j] = sum_{n, p, q} grad_out[n, o, p, q] * x_pad[n, o // m, p * sh + i * dh, q * sw + j * dw]."""
    n_batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight_shape
    (sh, sw), (dh, dw) = stride, dilation
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    pitch, padded_h = width + 2 * padding[1], height + 2 * padding[0]
    buffer = np.zeros(padded_h * pitch + (kw - 1) * dw, dtype=x.dtype)
    grid = buffer[:padded_h * pitch].reshape(padded_h, pitch)
    pitched = np.zeros(out_h * pitch, dtype=x.dtype)             # columns past Wo stay zero
    grad_w = np.zeros(weight_shape, dtype=x.dtype)
    for task in range(n_batch * out_channels):
        n, o = task // out_channels, task % out_channels
        pad_into(buffer, x[n, o // (out_channels // channels)], padding, pitch)
        grad = grad_out[n, o]
        if sh == 1 and sw == 1:
            for p in range(out_h):
                copy_into(pitched[p * pitch:p * pitch + out_w], grad[p])
            for i in range(kh):
                for j in range(kw):
                    shift = i * dh * pitch + j * dw
                    grad_w[o, 0, i, j] += dot(pitched, buffer[shift:shift + pitched.size])
            continue
        for i in range(kh):
            for j in range(kw):
                taps, total = grid[i * dh::sh, j * dw::sw], x.dtype.type(0)
                for p in range(out_h):
                    for q in range(out_w):
                        total += grad[p, q] * taps[p, q]
                grad_w[o, 0, i, j] += total
    return grad_w


depthwise_conv2d_backward_weight = njit(cache=True)(_depthwise_conv2d_backward_weight)


def depthwise_conv2d_backward_weight_reference(grad_out, x, weight_shape, stride, padding, dilation):
    n_batch, out_channels, out_h, out_w = grad_out.shape
    channels = x.shape[1]
    kh, kw = weight_shape[2:]
    windows = _windows(x, (kh, kw), stride, padding, dilation)
    grad = grad_out.reshape(n_batch, channels, out_channels // channels, out_h, out_w)
    return np.einsum("ncpqij,nckpq->ckij", windows, grad).reshape(weight_shape)


# --------------------------------------------------------------------------------------------------
# Direct convolution: grouped (1 < groups, not depthwise) and dense convolutions without im2col
#
# im2col copies every input pixel kh * kw times into a (C * kh * kw, Ho * Wo) matrix before BLAS reads it
# again; for a 3x3 conv that copy moves nine times the input through memory, and for a grouped conv BLAS
# then runs one small product per group. The direct kernel reads the zero-padded input in place instead:
#
#     out[n, o, p, q] = sum_{c < Cg} sum_{i < kh} sum_{j < kw}
#                           weight[o, c, i, j] * x_pad[n, g * Cg + c, p * sh + i * dh, q * sw + j * dw]
#
# summed in exactly that (c, i, j) order for every output element, whichever channel, block, band, thread
# or path computes it: identical weight rows give bit-identical output channels, and the result does not
# depend on the thread count. (A reassociated or tiled sum, as a BLAS edge tile has, would break that.)
#
# A task is one (sample, group, band of output rows), and it computes every output channel of the group
# over the band. Each padded plane is split by (row % sh, column % sw) into phase planes of Wq = ceil(Wp /
# sw) columns (`pad_phases_into`, shared with the depthwise kernel), so that tap (i, j) of output pixel
# (p, q) is element (p + i dh // sh, q + j dw // sw) of phase plane (i dh % sh, j dw % sw): consecutive
# outputs read consecutive elements at every stride. A band p0 .. p0 + R is then one run of t = (p - p0) *
# Wq + q (the Wq - Wo columns between rows are computed and dropped), R rows filling DIRECT_BAND elements,
# and each tap is one vectorised pass over it. The channels are taken DIRECT_BLOCK at a time, so that each
# input element loaded feeds four sums (three taps per pass for kw == 3); a group's last block is filled up
# with zero-weight channels whose sums are dropped, so every channel runs through the same loop. The input
# channels are visited in chunks of DIRECT_CHANNELS, every block per chunk, so that the chunk's rows are
# read from cache by all blocks (each sum still adds its channels in ascending order). The band is then
# copied out and finished by the fused epilogue while it is in cache.

DIRECT_BLOCK = 4          # output channels per pass (an input element loaded feeds this many sums)
DIRECT_BAND = 512         # accumulator elements per channel and band
DIRECT_CHANNELS = 16      # input channels per chunk
DIRECT_MAX_OUT = 64       # dense convs with at most this many output channels take the direct kernel


def _pad_planes(x, padding, stride, rows, pitch):
    """x (N, C, H, W) -> (N, C, sh * sw * rows * pitch): each plane zero-bordered and split into phase
    planes (`pad_phases_into`) of `rows` x `pitch` elements."""
    n_batch, channels = x.shape[:2]
    planes = np.zeros((n_batch, channels, stride[0] * stride[1] * rows * pitch), dtype=x.dtype)
    for n in range(n_batch):
        for c in range(channels):
            pad_phases_into(planes[n, c], x[n, c], padding, stride, rows, pitch)
    return planes


pad_planes = njit(cache=True)(_pad_planes)


def _block_taps(acc, src, start, i, stride, dilation, rows, pitch, length, taps, c, kw):
    """acc[b, t] += taps[b, c, i, j] * src[phase_offset(i, j) + start + t] for j = 0 .. kw - 1 in turn,
    every b < DIRECT_BLOCK (4) and t < length: kernel row i of the band whose first output row starts at
    `start` in every phase plane; three taps per pass when kw == 3."""
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    if kw == 3:
        f0 = phase_offset(i, 0, stride, dilation, rows, pitch) + start
        f1 = phase_offset(i, 1, stride, dilation, rows, pitch) + start
        f2 = phase_offset(i, 2, stride, dilation, rows, pitch) + start
        s0, s1, s2 = src[f0:f0 + length], src[f1:f1 + length], src[f2:f2 + length]
        w00, w01, w02 = taps[0, c, i, 0], taps[0, c, i, 1], taps[0, c, i, 2]
        w10, w11, w12 = taps[1, c, i, 0], taps[1, c, i, 1], taps[1, c, i, 2]
        w20, w21, w22 = taps[2, c, i, 0], taps[2, c, i, 1], taps[2, c, i, 2]
        w30, w31, w32 = taps[3, c, i, 0], taps[3, c, i, 1], taps[3, c, i, 2]
        for t in range(length):
            x0, x1, x2 = s0[t], s1[t], s2[t]
            a0[t] = a0[t] + w00 * x0 + w01 * x1 + w02 * x2     # left to right: the j order
            a1[t] = a1[t] + w10 * x0 + w11 * x1 + w12 * x2
            a2[t] = a2[t] + w20 * x0 + w21 * x1 + w22 * x2
            a3[t] = a3[t] + w30 * x0 + w31 * x1 + w32 * x2
        return
    for j in range(kw):
        w0, w1, w2, w3 = taps[0, c, i, j], taps[1, c, i, j], taps[2, c, i, j], taps[3, c, i, j]
        first = phase_offset(i, j, stride, dilation, rows, pitch) + start
        s = src[first:first + length]
        for t in range(length):
            x0 = s[t]
            a0[t] += w0 * x0
            a1[t] += w1 * x0
            a2[t] += w2 * x0
            a3[t] += w3 * x0


block_taps = njit(cache=True, inline="always")(_block_taps)


def _direct_conv2d_forward(x, taps, out_channels, stride, padding, dilation, groups, rows, n_runs, params, flags,
                           bounds, out):
    """The direct convolution (see the section comment) of validated x (N, C, H, W) with the weights as
    blocks, taps (groups * n_blocks, DIRECT_BLOCK, C // groups, kh, kw) (`weight_blocks`), then the
    epilogue (`Epilogue.arrays`), written into out (N, O, Ho, Wo); the N * groups * bands tasks (bands of `rows` output rows) split into
    n_runs contiguous runs, each with its own accumulator."""
    n_batch, channels, height, width = x.shape
    _, _, group_in, kh, kw = taps.shape
    (sh, sw), (dh, dw) = stride, dilation
    out_h = conv_output_size(height, kh, sh, padding[0], dh)
    out_w = conv_output_size(width, kw, sw, padding[1], dw)
    phase_rows, pitch = (height + 2 * padding[0] + sh - 1) // sh, (width + 2 * padding[1] + sw - 1) // sw
    group_out = out_channels // groups
    n_blocks = taps.shape[0] // groups
    n_bands = (out_h + rows - 1) // rows
    span = (rows - 1) * pitch + out_w
    planes = pad_planes(x, padding, stride, phase_rows, pitch)
    tasks = n_batch * groups * n_bands
    identity = flags[0] == 0 and flags[1] == 0 and bounds[0] == -np.inf and bounds[1] == np.inf
    for run in prange(n_runs):
        acc = np.empty((n_blocks, DIRECT_BLOCK, span), dtype=x.dtype)
        for task in range(run * tasks // n_runs, (run + 1) * tasks // n_runs):
            n, g, p0 = task // (groups * n_bands), task // n_bands % groups, task % n_bands * rows
            band = min(rows, out_h - p0)
            length = (band - 1) * pitch + out_w
            acc[:] = 0
            for c0 in range(0, group_in, DIRECT_CHANNELS):
                for block in range(n_blocks):
                    block_acc, block_taps_ = acc[block], taps[g * n_blocks + block]
                    for c in range(c0, min(c0 + DIRECT_CHANNELS, group_in)):
                        src = planes[n, g * group_in + c]
                        for i in range(kh):
                            block_taps(block_acc, src, p0 * pitch, i, stride, dilation, phase_rows, pitch, length,
                                       block_taps_, c, kw)
            for o in range(group_out):
                for r in range(band):
                    row = out[n, g * group_out + o, p0 + r]
                    copy_into(row, acc[o // DIRECT_BLOCK, o % DIRECT_BLOCK, r * pitch:])
                    if not identity:
                        finish_row(row, params, g * group_out + o, flags, bounds)
    return out


direct_conv2d_forward_kernel = ParallelKernel(_direct_conv2d_forward)


def uses_direct(weight_shape, groups):
    """True when the forward pass takes the direct kernel rather than im2col + BLAS: every grouped conv
    (groups > 1; the depthwise case has its own kernel), and dense ones with at most DIRECT_MAX_OUT output
    channels, where the im2col copy costs more than BLAS saves over the direct loop (RESULTS.md)."""
    return groups > 1 or weight_shape[0] <= DIRECT_MAX_OUT


def band_rows(width, padding, stride):
    """Output rows per band: as many as fill DIRECT_BAND accumulator elements (rows of the phase planes'
    pitch)."""
    return max(1, DIRECT_BAND // -(-(width + 2 * padding[1]) // stride[1]))


def weight_blocks(weight, groups):
    """weight (O, Cg, kh, kw) as (groups * n_blocks, DIRECT_BLOCK, Cg, kh, kw): each group's output
    channels in blocks of DIRECT_BLOCK, the last block filled up with zero weights."""
    out_channels, group_in, kh, kw = weight.shape
    group_out = out_channels // groups
    n_blocks = -(-group_out // DIRECT_BLOCK)
    taps = np.zeros((groups, n_blocks * DIRECT_BLOCK, group_in, kh, kw), dtype=weight.dtype)
    taps[:, :group_out] = weight.reshape(groups, group_out, group_in, kh, kw)
    return taps.reshape(groups * n_blocks, DIRECT_BLOCK, group_in, kh, kw)


def direct_conv2d_forward(x, weight, stride, padding, dilation, groups, epilogue_arrays=None, out=None, taps=None):
    """The direct forward pass on validated input (see `conv2d_forward`), threaded when it is large; into
    `out` (N, O, Ho, Wo) when given; `taps` is `weight_blocks(weight, groups)` when the caller keeps it."""
    if out is None:
        out = np.empty(conv_output_shape(x.shape, weight.shape, stride, padding, dilation), dtype=x.dtype)
    work = weight.size * x.shape[0] * x.shape[2] * x.shape[3] // (stride[0] * stride[1])
    if epilogue_arrays is None:
        epilogue_arrays = NO_EPILOGUE.arrays(weight.shape[0], x.dtype)
    taps = weight_blocks(weight, groups) if taps is None else taps
    with threads_for(work):
        out_h = _conv_output_size(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0])
        rows = band_rows(x.shape[3], padding, stride)
        n_tasks = x.shape[0] * groups * -(-out_h // rows)
        n_runs = max(1, min(n_tasks, RUNS_PER_THREAD * numba.get_num_threads()))
        return direct_conv2d_forward_kernel(x, taps, weight.shape[0], stride, padding, dilation, groups, rows,
                                            n_runs, *epilogue_arrays, out)


# --------------------------------------------------------------------------------------------------
# Public entry points


def _int_pairs(stride, padding, dilation):
    """Plain-int tuples, so that every call reuses the same compiled specialisation."""
    return tuple((int(pair[0]), int(pair[1])) for pair in (stride, padding, dilation))


def is_depthwise(in_channels, weight_shape, groups):
    """True when every group is one input channel: groups == C_in and weight is (m * C_in, 1, kh, kw)."""
    return groups == in_channels and weight_shape[1] == 1


def conv_output_shape(x_shape, weight_shape, stride, padding, dilation):
    """(N, O, Ho, Wo) of the convolution of x_shape (N, C, H, W) with weight_shape (O, Cg, kh, kw)."""
    return (x_shape[0], weight_shape[0]) + tuple(
        _conv_output_size(x_shape[2 + i], weight_shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2))


def conv2d_forward(x, weight, stride, padding, dilation, groups, epilogue=None, out=None):
    """x (N, C, H, W), weight (O, C // groups, kh, kw) -> (N, O, Ho, Wo): torch.nn.functional.conv2d
    without bias. stride, padding and dilation are (int, int). `epilogue` (an `Epilogue`: bias, eval
    BatchNorm, clamp) is applied in the pass that writes each output block; its twin is
    `apply_epilogue_reference(conv2d_forward_reference(...), epilogue)`. `out`: a C-contiguous array of
    the result's shape and dtype to write into (a compiled plan's buffer), or None for a new one."""
    stride, padding, dilation = _int_pairs(stride, padding, dilation)
    arrays = None if epilogue is None or epilogue.is_identity() else epilogue.arrays(weight.shape[0], x.dtype)
    return conv2d_forward_arrays(x, weight, stride, padding, dilation, int(groups), arrays, out)


def conv2d_forward_arrays(x, weight, stride, padding, dilation, groups, epilogue_arrays, out=None, taps=None):
    """`conv2d_forward` with int pairs and the epilogue already as `Epilogue.arrays` (or None), so that a
    caller running the same layer many times builds them once; `taps` (`weight_blocks`) likewise, used
    when the direct kernel is the one chosen."""
    if is_pointwise(weight.shape, stride, padding, groups):
        return pointwise_conv2d_forward(x, weight, epilogue_arrays, out)
    if is_depthwise(x.shape[1], weight.shape, groups):
        return depthwise_conv2d_forward(x, weight, stride, padding, dilation, epilogue_arrays, out)
    if uses_direct(weight.shape, groups):
        return direct_conv2d_forward(x, weight, stride, padding, dilation, groups, epilogue_arrays, out, taps)
    return grouped_conv2d_forward(x, weight, stride, padding, dilation, groups, epilogue_arrays, out)


def conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation, groups):
    """dL/dx of shape input_shape from grad_out = dL/dout (N, O, Ho, Wo): torch.nn.grad.conv2d_input."""
    stride, padding, dilation = _int_pairs(stride, padding, dilation)
    input_shape = tuple(int(s) for s in input_shape)
    if is_pointwise(weight.shape, stride, padding, groups):
        return pointwise_conv2d_backward_input(grad_out, weight, input_shape)
    if is_patchwise(weight.shape, stride, padding, groups) and dilation == (1, 1) \
            and input_shape[2:] == (grad_out.shape[2] * stride[0], grad_out.shape[3] * stride[1]):
        return patch_conv2d_backward_input(np.ascontiguousarray(grad_out), weight, input_shape)
    if is_depthwise(input_shape[1], weight.shape, groups):
        return depthwise_conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation)
    return grouped_conv2d_backward_input(grad_out, weight, input_shape, stride, padding, dilation, int(groups))


def conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation, groups):
    """dL/dweight of shape weight_shape from grad_out = dL/dout (N, O, Ho, Wo): torch.nn.grad.conv2d_weight."""
    stride, padding, dilation = _int_pairs(stride, padding, dilation)
    weight_shape = tuple(int(s) for s in weight_shape)
    if is_pointwise(weight_shape, stride, padding, groups):
        return pointwise_conv2d_backward_weight(grad_out, x, weight_shape)
    if is_depthwise(x.shape[1], weight_shape, groups):
        return depthwise_conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation)
    return grouped_conv2d_backward_weight(grad_out, x, weight_shape, stride, padding, dilation, int(groups))

"""2-D pooling kernels (max, average, adaptive average) with their gradients, each beside its NumPy
reference twin.

Shapes and formulas (torch.nn.functional.max_pool2d / avg_pool2d / adaptive_avg_pool2d, NCHW):

    x (N, C, H, W) -> out (N, C, Ho, Wo), one window per output pixel, every (n, c) plane on its own.
    Window p along H reads rows  p * sh - ph + i * dh,  i = 0 .. kh - 1  (W likewise); rows outside
    [0, H) are padding: -inf for max pooling, 0 for average pooling.
    Ho = floor((H + 2 ph - dh (kh - 1) - 1 + (sh - 1 if ceil_mode else 0)) / sh) + 1, and with ceil_mode
    one less if the last window would start at or past H + ph, i.e. in the right padding
    (torch's pooling_output_shape).

max:      out = the largest tap; indices = h * W + w of the tap that won, as return_indices=True.
          The first maximum wins a tie and a NaN always wins (the last NaN of the window), because
          torch keeps tap v when `v > best or isnan(v)`, scanning rows then columns.
          dL/dx[n, c].flat[indices[n, c, p, q]] += dL/dout[n, c, p, q].
average:  out = sum of the window's in-bounds taps / divisor, with torch's divisor:
          divisor_override if given; else, with count_include_pad, the window's size clipped to the
          padded input (a ceil_mode window hanging past H + ph counts only up to there); else the number
          of in-bounds taps. dL/dx gets dL/dout / divisor at every in-bounds tap.
adaptive: window i along H is rows [floor(i H / Ho), ceil((i + 1) H / Ho)); out = window mean.

The public entry points (`max_pool2d_forward`, ..., `adaptive_avg_pool2d_backward`) validate and compute
output sizes; the kernels (`max_pool2d`, `max_pool2d_grad`, `avg_pool2d`, ...) assume validated,
C-contiguous float32/float64 input, run in parallel over the N * C planes (each task writes only its own
plane, so nothing races) and sum windows in float64.
"""
import numpy as np
from numba import njit, prange

from .threads import ParallelKernel, threads_for


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """Output length along one axis, torch's pooling_output_shape (see the module docstring)."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _tap_range(start, kernel, dilation, size):
    """First and end (exclusive) in-bounds tap of a window starting at `start`; taps are `dilation` apart."""
    end = min(start + (kernel - 1) * dilation + 1, size)
    while start < 0:
        start += dilation
    return start, end


tap_range = njit(cache=True)(_tap_range)


def _avg_window(start, kernel, padding, size):
    """(first, end, padded_size) of an average-pooling window along one axis, as torch's AvgPoolKernel:
    the size counts padding but stops at the end of the right padding."""
    end = min(start + kernel, size + padding)
    padded_size = end - start
    return max(start, 0), min(end, size), padded_size


avg_window = njit(cache=True)(_avg_window)


def _adaptive_window(i, out_size, size):
    """[floor(i * size / out_size), ceil((i + 1) * size / out_size)), torch's start_index / end_index."""
    return (i * size) // out_size, -((-(i + 1) * size) // out_size)


adaptive_window = njit(cache=True)(_adaptive_window)


# --------------------------------------------------------------------------------------------------
# The reference twins' building blocks: the taps of every window along one axis


def _taps(size, kernel, stride, padding, dilation, out_size):
    """(out_size, kernel) input positions read by each window along one axis; outside [0, size) is padding."""
    return np.arange(out_size)[:, None] * stride - padding + np.arange(kernel) * dilation


def _members(taps, size):
    """(out_size, size) 0/1 matrix A with A[p, h] = 1 when window p reads position h, so a window sum
    over the plane is A_h @ x @ A_w.T."""
    return (taps[:, :, None] == np.arange(size)).any(axis=1)


# --------------------------------------------------------------------------------------------------
# Max pooling


def _max_pool2d(x, kernel_size, stride, padding, dilation, out_size):
    n_batch, channels, height, width = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    out_h, out_w = out_size
    out = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    indices = np.empty((n_batch, channels, out_h, out_w), dtype=np.int64)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = x[n, c]
        for p in range(out_h):
            h0, h1 = tap_range(p * sh - ph, kh, dh, height)
            for q in range(out_w):
                w0, w1 = tap_range(q * sw - pw, kw, dw, width)
                best, best_index = -np.inf, h0 * width + w0
                for h in range(h0, h1, dh):
                    for w in range(w0, w1, dw):
                        value = plane[h, w]
                        if value > best or np.isnan(value):
                            best, best_index = value, h * width + w
                out[n, c, p, q] = best
                indices[n, c, p, q] = best_index
    return out, indices


max_pool2d = ParallelKernel(_max_pool2d)


def _max_pool2d_values(x, kernel_size, stride, padding, dilation, out_size):
    """The max-pool output without indices (inference: an ONNX MaxPool node), as a separable max: each
    plane's rows are first reduced over every window's columns (rowmax (H, Wo)), then rowmax over every
    window's rows, a contiguous pass over output rows that vectorises. max is exact and a NaN wins both
    reductions, so the values are those of `max_pool2d` (whose scan order only matters for its indices)."""
    n_batch, channels, height, width = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    out_h, out_w = out_size
    out = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = x[n, c]
        rowmax = np.empty((height, out_w), dtype=x.dtype)
        for h in range(height):
            row, dst = plane[h], rowmax[h]
            for q in range(out_w):
                w0, w1 = tap_range(q * sw - pw, kw, dw, width)
                best = -np.inf
                for w in range(w0, w1, dw):
                    value = row[w]
                    best = value if value > best or value != value else best
                dst[q] = best
        for p in range(out_h):
            h0, h1 = tap_range(p * sh - ph, kh, dh, height)
            row_out = out[n, c, p]
            for q in range(out_w):
                row_out[q] = -np.inf
            for h in range(h0, h1, dh):
                src = rowmax[h]
                for q in range(out_w):
                    value, best = src[q], row_out[q]
                    row_out[q] = value if value > best or value != value else best
    return out


max_pool2d_values = ParallelKernel(_max_pool2d_values)


def max_pool2d_reference(x, kernel_size, stride, padding, dilation, out_size):
    n_batch, channels, height, width = x.shape
    rows = _taps(height, kernel_size[0], stride[0], padding[0], dilation[0], out_size[0])[:, None, :, None]
    cols = _taps(width, kernel_size[1], stride[1], padding[1], dilation[1], out_size[1])[None, :, None, :]
    grid, shape = (*out_size, *kernel_size), (*out_size, kernel_size[0] * kernel_size[1])  # taps row-major
    valid = np.broadcast_to((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width), grid).reshape(shape)
    flat = np.clip(rows, 0, height - 1) * width + np.clip(cols, 0, width - 1)
    flat = np.broadcast_to(flat, grid).reshape(shape)                    # index into H * W of every tap
    values = x.reshape(n_batch, channels, height * width)[..., flat]     # (N, C, Ho, Wo, taps)
    nan = valid & np.isnan(values)
    best = np.where(valid & ~nan, values, -np.inf).max(axis=-1, keepdims=True)
    first_max = np.argmax(valid & (values == best), axis=-1)
    last_nan = shape[2] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    choice = np.where(nan.any(axis=-1), last_nan, first_max)[..., None]
    out = np.take_along_axis(values, choice, axis=-1)[..., 0]
    indices = np.take_along_axis(np.broadcast_to(flat, values.shape), choice, axis=-1)[..., 0]
    return out, indices.astype(np.int64)


def _max_pool2d_grad(grad_out, indices, input_shape):
    n_batch, channels, height, width = input_shape
    plane = grad_out.shape[2] * grad_out.shape[3]
    grad = grad_out.reshape(n_batch, channels, plane)
    index = indices.reshape(n_batch, channels, plane)
    grad_x = np.zeros((n_batch, channels, height * width), dtype=grad_out.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        for k in range(plane):
            grad_x[n, c, index[n, c, k]] += grad[n, c, k]
    return grad_x.reshape(input_shape)


max_pool2d_grad = ParallelKernel(_max_pool2d_grad)


def max_pool2d_grad_reference(grad_out, indices, input_shape):
    n_batch, channels, height, width = input_shape
    grad_x = np.zeros((n_batch * channels, height * width), dtype=grad_out.dtype)
    planes = np.arange(n_batch * channels)[:, None]
    np.add.at(grad_x, (planes, indices.reshape(n_batch * channels, -1)), grad_out.reshape(n_batch * channels, -1))
    return grad_x.reshape(input_shape)


# --------------------------------------------------------------------------------------------------
# Average pooling; `divisor` is divisor_override, 0 for none


def _avg_pool2d(x, kernel_size, stride, padding, out_size, count_include_pad, divisor):
    n_batch, channels, height, width = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    out_h, out_w = out_size
    out = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = x[n, c]
        for p in range(out_h):
            h0, h1, size_h = avg_window(p * sh - ph, kh, ph, height)
            for q in range(out_w):
                w0, w1, size_w = avg_window(q * sw - pw, kw, pw, width)
                total = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        total += plane[h, w]
                if divisor != 0:
                    out[n, c, p, q] = total / divisor
                elif count_include_pad:
                    out[n, c, p, q] = total / (size_h * size_w)
                else:
                    out[n, c, p, q] = total / ((h1 - h0) * (w1 - w0))
    return out


avg_pool2d = ParallelKernel(_avg_pool2d)


def _avg_divisor(input_shape, kernel_size, stride, padding, out_size, count_include_pad, divisor):
    """The (Ho, Wo) divisors and the two membership matrices A_h (Ho, H), A_w (Wo, W)."""
    members, sizes = [], []
    for axis in range(2):
        size, pad = input_shape[2 + axis], padding[axis]
        taps = _taps(size, kernel_size[axis], stride[axis], pad, 1, out_size[axis])
        members.append(_members(taps, size))
        sizes.append((taps < size + pad).sum(axis=1) if count_include_pad else members[-1].sum(axis=1))
    return (divisor if divisor != 0 else np.outer(*sizes)), members[0], members[1]


def avg_pool2d_reference(x, kernel_size, stride, padding, out_size, count_include_pad, divisor):
    divisor, a_h, a_w = _avg_divisor(x.shape, kernel_size, stride, padding, out_size, count_include_pad, divisor)
    sums = np.einsum("ph,nchw,qw->ncpq", a_h.astype(x.dtype), x, a_w.astype(x.dtype))
    return sums / np.asarray(divisor, dtype=x.dtype)


def _avg_pool2d_grad(grad_out, input_shape, kernel_size, stride, padding, count_include_pad, divisor):
    n_batch, channels, height, width = input_shape
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    grad_x = np.zeros((n_batch, channels, height, width), dtype=grad_out.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        for p in range(out_h):
            h0, h1, size_h = avg_window(p * sh - ph, kh, ph, height)
            for q in range(out_w):
                w0, w1, size_w = avg_window(q * sw - pw, kw, pw, width)
                if divisor != 0:
                    delta = grad_out[n, c, p, q] / divisor
                elif count_include_pad:
                    delta = grad_out[n, c, p, q] / (size_h * size_w)
                else:
                    delta = grad_out[n, c, p, q] / ((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        grad_x[n, c, h, w] += delta
    return grad_x


avg_pool2d_grad = ParallelKernel(_avg_pool2d_grad)


def avg_pool2d_grad_reference(grad_out, input_shape, kernel_size, stride, padding, count_include_pad, divisor):
    out_size = grad_out.shape[2:]
    divisor, a_h, a_w = _avg_divisor(input_shape, kernel_size, stride, padding, out_size, count_include_pad, divisor)
    scaled = grad_out / np.asarray(divisor, dtype=grad_out.dtype)
    return np.einsum("ph,ncpq,qw->nchw", a_h.astype(grad_out.dtype), scaled, a_w.astype(grad_out.dtype))


# --------------------------------------------------------------------------------------------------
# Adaptive average pooling


def _adaptive_avg_pool2d(x, out_size):
    n_batch, channels, height, width = x.shape
    out_h, out_w = out_size
    out = np.empty((n_batch, channels, out_h, out_w), dtype=x.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        plane = x[n, c]
        for p in range(out_h):
            h0, h1 = adaptive_window(p, out_h, height)
            for q in range(out_w):
                w0, w1 = adaptive_window(q, out_w, width)
                total = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        total += plane[h, w]
                out[n, c, p, q] = total / (h1 - h0) / (w1 - w0)
    return out


adaptive_avg_pool2d = ParallelKernel(_adaptive_avg_pool2d)


def _adaptive_divisor(input_shape, out_size):
    """The (oh, ow) window sizes and the membership matrices A_h (oh, H), A_w (ow, W)."""
    members = []
    for out, size in zip(out_size, input_shape[2:]):
        starts, ends = np.array([_adaptive_window(i, out, size) for i in range(out)]).T
        position = np.arange(size)
        members.append((position >= starts[:, None]) & (position < ends[:, None]))
    return np.outer(members[0].sum(axis=1), members[1].sum(axis=1)), members[0], members[1]


def adaptive_avg_pool2d_reference(x, out_size):
    divisor, a_h, a_w = _adaptive_divisor(x.shape, out_size)
    sums = np.einsum("ph,nchw,qw->ncpq", a_h.astype(x.dtype), x, a_w.astype(x.dtype))
    return sums / divisor.astype(x.dtype)


def _adaptive_avg_pool2d_grad(grad_out, input_shape):
    n_batch, channels, height, width = input_shape
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    grad_x = np.zeros((n_batch, channels, height, width), dtype=grad_out.dtype)
    for task in prange(n_batch * channels):
        n, c = task // channels, task % channels
        for p in range(out_h):
            h0, h1 = adaptive_window(p, out_h, height)
            for q in range(out_w):
                w0, w1 = adaptive_window(q, out_w, width)
                delta = grad_out[n, c, p, q] / (h1 - h0) / (w1 - w0)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        grad_x[n, c, h, w] += delta
    return grad_x


adaptive_avg_pool2d_grad = ParallelKernel(_adaptive_avg_pool2d_grad)


def adaptive_avg_pool2d_grad_reference(grad_out, input_shape):
    divisor, a_h, a_w = _adaptive_divisor(input_shape, grad_out.shape[2:])
    scaled = grad_out / divisor.astype(grad_out.dtype)
    return np.einsum("ph,ncpq,qw->nchw", a_h.astype(grad_out.dtype), scaled, a_w.astype(grad_out.dtype))


# --------------------------------------------------------------------------------------------------
# Validation


def _check_array(value, name):
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(value).__name__}")
    if value.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if value.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {value.shape}")
    return np.ascontiguousarray(value)


def _check_ints(value, name, minimum, length=2):
    """A tuple of `length` plain ints, each >= minimum."""
    if (not isinstance(value, (tuple, list)) or len(value) != length
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be a tuple of {length} ints, got {value!r}")
    if min(value, default=minimum) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in every entry, got {tuple(value)}")
    return tuple(int(v) for v in value)


def _check_window(input_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Validated int pairs and the output size (Ho, Wo); every window overlaps the input."""
    kernel_size = _check_ints(kernel_size, "kernel_size", 1)
    stride = _check_ints(stride, "stride", 1)
    padding = _check_ints(padding, "padding", 0)
    dilation = _check_ints(dilation, "dilation", 1)
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size {kernel_size}, got {padding}")
    out_size = []
    for axis in range(2):
        size, k, s, p, d = (input_shape[2 + axis], kernel_size[axis], stride[axis], padding[axis], dilation[axis])
        out = pool_output_size(size, k, s, p, d, bool(ceil_mode))
        if out < 1:
            raise ValueError(f"input size {input_shape[2:]} is too small for kernel_size {kernel_size}, "
                             f"padding {padding}, dilation {dilation}: output size would be {out}")
        # With dilation a window starting in the padding can step over the whole input.
        for o in range(out):
            first, end = _tap_range(o * s - p, k, d, size)
            if first >= end:
                raise ValueError(f"window {o} along axis {2 + axis} reads only padding (kernel_size "
                                 f"{kernel_size}, padding {padding}, dilation {dilation}, input {input_shape[2:]})")
        out_size.append(out)
    return kernel_size, stride, padding, dilation, tuple(out_size)


def _check_input_shape(input_shape, grad_out):
    input_shape = _check_ints(input_shape, "input_shape", 0, length=4)
    if input_shape[:2] != grad_out.shape[:2] or min(input_shape[2:]) < 1:
        raise ValueError(f"input_shape {input_shape} does not match grad_out of shape {grad_out.shape}")
    return input_shape


def _check_shape(value, name, expected):
    if value.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {value.shape}")


def _check_divisor(divisor_override):
    if divisor_override is None:
        return 0
    if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, bool):
        raise TypeError(f"divisor_override must be an int or None, got {divisor_override!r}")
    if divisor_override == 0:
        raise ValueError("divisor_override must be nonzero, got 0")
    return int(divisor_override)


# --------------------------------------------------------------------------------------------------
# Public entry points


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """x (N, C, H, W) -> (out (N, C, Ho, Wo), indices int64 (N, C, Ho, Wo) into H * W);
    torch.nn.functional.max_pool2d(..., return_indices=True). Pairs are (int, int)."""
    x = _check_array(x, "x")
    kernel_size, stride, padding, dilation, out_size = _check_window(x.shape, kernel_size, stride, padding,
                                                                     dilation, ceil_mode)
    with threads_for(x.size):
        return max_pool2d(x, kernel_size, stride, padding, dilation, out_size)


def max_pool2d_values_forward(x, kernel_size, stride, padding, dilation, ceil_mode):
    """x (N, C, H, W) -> out (N, C, Ho, Wo) of `max_pool2d_forward`, without the indices (inference)."""
    x = _check_array(x, "x")
    kernel_size, stride, padding, dilation, out_size = _check_window(x.shape, kernel_size, stride, padding,
                                                                     dilation, ceil_mode)
    with threads_for(x.size):
        return max_pool2d_values(x, kernel_size, stride, padding, dilation, out_size)


def max_pool2d_backward(grad_out, indices, input_shape):
    """dL/dx (input_shape) from dL/dout (N, C, Ho, Wo) and the indices max_pool2d_forward returned."""
    grad_out = _check_array(grad_out, "grad_out")
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64:
        raise TypeError(f"indices must be an int64 numpy.ndarray, got {getattr(indices, 'dtype', type(indices))}")
    _check_shape(indices, "indices", grad_out.shape)
    input_shape = _check_input_shape(input_shape, grad_out)
    if indices.size and (indices.min() < 0 or indices.max() >= input_shape[2] * input_shape[3]):
        raise ValueError(f"indices must lie in [0, {input_shape[2] * input_shape[3]}), got values in "
                         f"[{indices.min()}, {indices.max()}]")
    with threads_for(int(np.prod(input_shape))):
        return max_pool2d_grad(grad_out, np.ascontiguousarray(indices), input_shape)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """x (N, C, H, W) -> (N, C, Ho, Wo); torch.nn.functional.avg_pool2d. Pairs are (int, int);
    divisor_override is None or a nonzero int."""
    x = _check_array(x, "x")
    kernel_size, stride, padding, _, out_size = _check_window(x.shape, kernel_size, stride, padding, (1, 1),
                                                              ceil_mode)
    divisor = _check_divisor(divisor_override)
    with threads_for(x.size):
        return avg_pool2d(x, kernel_size, stride, padding, out_size, bool(count_include_pad), divisor)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override):
    """dL/dx (input_shape) from dL/dout (N, C, Ho, Wo), for avg_pool2d_forward with the same arguments."""
    grad_out = _check_array(grad_out, "grad_out")
    input_shape = _check_input_shape(input_shape, grad_out)
    kernel_size, stride, padding, _, out_size = _check_window(input_shape, kernel_size, stride, padding, (1, 1),
                                                              ceil_mode)
    _check_shape(grad_out, "grad_out", input_shape[:2] + out_size)
    divisor = _check_divisor(divisor_override)
    with threads_for(int(np.prod(input_shape))):
        return avg_pool2d_grad(grad_out, input_shape, kernel_size, stride, padding, bool(count_include_pad),
                               divisor)


def adaptive_avg_pool2d_forward(x, output_size):
    """x (N, C, H, W) -> (N, C, oh, ow); torch.nn.functional.adaptive_avg_pool2d with output_size (oh, ow)."""
    x = _check_array(x, "x")
    output_size = _check_ints(output_size, "output_size", 1)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"x must have nonzero height and width, got shape {x.shape}")
    with threads_for(x.size):
        return adaptive_avg_pool2d(x, output_size)


def adaptive_avg_pool2d_backward(grad_out, input_shape):
    """dL/dx (input_shape) from dL/dout (N, C, oh, ow) of adaptive_avg_pool2d_forward."""
    grad_out = _check_array(grad_out, "grad_out")
    input_shape = _check_input_shape(input_shape, grad_out)
    if min(grad_out.shape[2:]) < 1:
        raise ValueError(f"grad_out must have nonzero height and width, got shape {grad_out.shape}")
    with threads_for(int(np.prod(input_shape))):
        return adaptive_avg_pool2d_grad(grad_out, input_shape)

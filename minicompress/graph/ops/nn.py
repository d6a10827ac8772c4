"""Neural-network operators: Conv, ConvTranspose, Gemm, MatMul, the normalizations, the poolings, Softmax.

A Conv, Gemm, MatMul or normalization whose weights are constants becomes an `nn` module when the graph is
built (see `onnx/lower.py`); the classes here run the general case (weights computed in the graph, 1-D or
asymmetric geometry) and are the formula's reference.
"""
import numpy as np

from ...kernels import conv as conv_kernels
from ...kernels import pool as pool_kernels
from ...kernels.threads import threads_for
from ..registry import Op, register


# ----- geometry shared by Conv, ConvTranspose and the poolings ---------------------------------------

def window_pads(in_spatial, kernel, strides, dilations, pads, auto_pad, ceil_mode=0):
    """Explicit pads [b1, b2, ..., e1, e2, ...] for a sliding window, from `pads` or `auto_pad`.

    SAME_UPPER / SAME_LOWER: output = ceil(in / stride); the total padding
    (out - 1) * stride + dilated kernel - in is split evenly, the odd element at the end (UPPER) or the
    beginning (LOWER). VALID: no padding.
    """
    n = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("NOTSET", ""):
        raise ValueError(f"auto_pad={auto_pad!r}: expected NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    return list(pads) if pads is not None else [0] * (2 * n)


def _defaults(x, kernel, strides, dilations):
    n = x.ndim - 2
    return (list(strides) if strides else [1] * n), (list(dilations) if dilations else [1] * n)


def _to_2d(x, weight):
    """1-D convolutions run as 2-D ones over a height of 1."""
    return x[:, :, None, :], weight[:, :, None, :]


@register("Conv", 1)
class Conv(Op):
    """y[n, o] = sum_{c in group(o)} sum_k x_pad[n, c, s * p + d * k] w[o, c, k] + B[o] (1-D, 2-D, 3-D).

    1-D runs as 2-D with a height of one; 3-D as a sum over the kernel's depth taps of 2-D convolutions
    of the input's depth slices, y[:, :, t] = sum_j conv2d(x_pad[:, :, t * s + j * d], w[:, :, j])."""

    def run(self, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
            strides=None):
        kernel = list(w.shape[2:])
        strides, dilations = _defaults(x, kernel, strides, dilations)
        pads = window_pads(x.shape[2:], kernel, strides, dilations, pads, auto_pad)
        if x.ndim == 3:
            x, w = _to_2d(x, w)
            strides, dilations, pads = [1] + strides, [1] + dilations, [0, pads[0], 0, pads[1]]
        if x.ndim == 5:
            y = _conv3d(_pad_spatial(x, pads), w, strides, dilations, int(group))
            return y if b is None else y + b.reshape(1, -1, 1, 1, 1)
        if x.ndim != 4:
            raise NotImplementedError(f"Conv on {x.ndim - 2}-D input is not supported (1-D, 2-D and 3-D are)")
        x = _pad_spatial(x, pads)
        y = conv_kernels.conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), tuple(strides), (0, 0),
                                        tuple(dilations), int(group))
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return y[:, :, 0, :] if len(kernel) == 1 else y


def _conv3d(x, w, strides, dilations, group):
    depth, stride, dilation = w.shape[2], strides[0], dilations[0]
    out_depth = (x.shape[2] - dilation * (depth - 1) - 1) // stride + 1
    planes = []
    for t in range(out_depth):
        plane = 0
        for j in range(depth):
            plane = plane + conv_kernels.conv2d_forward(
                np.ascontiguousarray(x[:, :, t * stride + j * dilation]), np.ascontiguousarray(w[:, :, j]),
                tuple(strides[1:]), (0, 0), tuple(dilations[1:]), group)
        planes.append(plane)
    return np.stack(planes, axis=2)


def _pad_spatial(x, pads, value=0.0):
    n = x.ndim - 2
    if not any(pads):
        return x
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + n]) for i in range(n)]
    return np.pad(x, widths, constant_values=value)


@register("ConvTranspose", 1)
class ConvTranspose(Op):
    """The adjoint of Conv: out[n, o, s * i + d * k - pad_begin] += x[n, c, i] w[c, o, k] (1-D and 2-D).

    Output size: s (in - 1) + output_padding + d (k - 1) + 1 - pad_begin - pad_end, or `output_shape`, with
    the padding then chosen as the spec says (SAME_UPPER puts the extra element at the end). SAME padding
    without output_shape gives the unpadded size, as onnxruntime (see `transpose_window`).
    """

    def run(self, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
            output_padding=None, output_shape=None, pads=None, strides=None):
        from ...ops.conv import ConvTranspose2d
        from ...autograd import Context
        if x.ndim not in (3, 4):
            raise NotImplementedError(f"ConvTranspose on {x.ndim - 2}-D input is not supported (1-D and 2-D are)")
        kernel = list(w.shape[2:])
        strides, dilations = _defaults(x, kernel, strides, dilations)
        begin, size = transpose_window(x.shape[2:], kernel, strides, dilations, pads, auto_pad, output_padding,
                                       output_shape)
        one_d = x.ndim == 3                     # 1-D runs as 2-D with a height of one
        if one_d:
            x, w = x[:, :, None, :], w[:, :, None, :]
            strides, dilations, begin, size = [1] + strides, [1] + dilations, [0] + list(begin), [1] + list(size)
        ctx = Context((False,) * 3)
        y = ConvTranspose2d.forward(ctx, np.ascontiguousarray(x), np.ascontiguousarray(w), b, tuple(strides),
                                    tuple(dilations), int(group), tuple(begin), tuple(size))
        return y[:, :, 0, :] if one_d else y


def transpose_window(in_spatial, kernel, strides, dilations, pads, auto_pad, output_padding, output_shape):
    """(pad_begin, output size) of a transposed convolution, per the ONNX spec."""
    n = len(kernel)
    output_padding = list(output_padding) if output_padding else [0] * n
    full = [s * (i - 1) + op + d * (k - 1) + 1
            for i, k, s, d, op in zip(in_spatial, kernel, strides, dilations, output_padding)]
    if output_shape is not None:
        size = list(output_shape)[-n:]
        total = [f - o for f, o in zip(full, size)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        return begin, size
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # out = in * stride, by cropping total = full - out; onnxruntime clamps total at 0, so where the full
        # result is shorter than in * stride (kernel < stride) it stays unpadded. Follow the runtime.
        total = [max(f - i * s, 0) for f, i, s in zip(full, in_spatial, strides)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        return begin, [f - t for f, t in zip(full, total)]
    pads = list(pads) if pads is not None and auto_pad != "VALID" else [0] * (2 * n)
    return pads[:n], [f - pads[i] - pads[i + n] for i, f in enumerate(full)]


@register("Gemm", 7)
class Gemm(Op):
    """Y = alpha A' B' + beta C, with A' = A^T if transA, B' = B^T if transB, C broadcast to (M, N)."""

    def run(self, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
        a = a.T if transA else a
        b = b.T if transB else b
        t = a.dtype.type
        y = a @ b if alpha == 1.0 else t(alpha) * (a @ b)
        if c is not None:
            y = y + (c if beta == 1.0 else t(beta) * c)
        return y.astype(a.dtype, copy=False)


@register("MatMul", 1)
class MatMul(Op):
    """np.matmul: batched, with 1-D operands promoted and the added dimension removed."""

    def run(self, a, b):
        return np.matmul(a, b)


# ----- normalizations ----------------------------------------------------------------------------

def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@register("BatchNormalization", 6)
class BatchNormalization_6(Op):
    """Opset 6: `is_test` says inference (the only mode supported here)."""

    def run(self, x, scale, b, mean, var, *, epsilon=1e-5, is_test=0, momentum=0.9, spatial=1):
        if not spatial:
            raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
        return batch_norm(x, scale, b, mean, var, epsilon)


@register("Gemm", 6)
class Gemm_6(Op):
    """Opset 6: C broadcasts to (M, N) only with broadcast=1 (otherwise it must be (M, N) already)."""

    def run(self, a, b, c, *, alpha=1.0, beta=1.0, broadcast=0, transA=0, transB=0):
        return Gemm.run(self, a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)


@register("BatchNormalization", 7)
class BatchNormalization_7(Op):
    """Inference: y = scale (x - mean) / sqrt(var + epsilon) + B, per channel (axis 1).

    Opsets 7-13 always use the running mean and variance here: `momentum` only tells how a training
    runtime would update them (onnx's ReferenceEvaluator wrongly takes batch statistics when it is given).
    `spatial=0` (per-activation statistics, opset 7-8) is not supported.
    """

    def run(self, x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1, is_test=None):
        if not spatial:
            raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
        return batch_norm(x, scale, b, mean, var, epsilon)


@register("BatchNormalization", 9)
class BatchNormalization_9(BatchNormalization_7):
    def run(self, x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9):
        return batch_norm(x, scale, b, mean, var, epsilon)


@register("BatchNormalization", 14)
class BatchNormalization_14(BatchNormalization_7):
    """Opset 14 adds training_mode; training_mode=1 (batch statistics and updated running ones) is not
    supported, so an imported training graph raises instead of returning inference results."""

    def run(self, x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
        if training_mode:
            raise NotImplementedError("BatchNormalization with training_mode=1 is not supported")
        return batch_norm(x, scale, b, mean, var, epsilon)


@register("BatchNormalization", 15)
class BatchNormalization_15(BatchNormalization_14):
    """Opset 15 only widens the types of scale, B, mean and var."""


def batch_norm(x, scale, b, mean, var, epsilon):
    t = x.dtype.type
    inv = (scale / np.sqrt(var + t(epsilon))).astype(x.dtype, copy=False)
    shift = (b - mean * inv).astype(x.dtype, copy=False)
    return x * _channel(inv, x.ndim) + _channel(shift, x.ndim)


@register("InstanceNormalization", 6)
class InstanceNormalization(Op):
    """y = scale (x - mean) / sqrt(var + epsilon) + B, statistics per sample and channel over the spatial axes."""

    def run(self, x, scale, b, *, epsilon=1e-5):
        axes = tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + x.dtype.type(epsilon))
        return (y * _channel(scale, x.ndim) + _channel(b, x.ndim)).astype(x.dtype, copy=False)


@register("LayerNormalization", 17)
class LayerNormalization(Op):
    """y = (x - mean) / sqrt(var + epsilon) * Scale + B over the axes from `axis` on (biased variance).
    The optional outputs Mean and InvStdDev have the reduced shape (kept dimensions)."""

    def run(self, x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1):
        axes = tuple(range(axis % x.ndim, x.ndim))
        xf = x.astype(np.float32) if stash_type == 1 and x.dtype == np.float16 else x
        mean = xf.mean(axis=axes, keepdims=True)
        centered = xf - mean
        inv_std = 1 / np.sqrt((centered * centered).mean(axis=axes, keepdims=True) + xf.dtype.type(epsilon))
        y = centered * inv_std * scale
        if b is not None:
            y = y + b
        return y.astype(x.dtype, copy=False), mean, inv_std


@register("LRN", 1)
class LRN(Op):
    """y = x / (bias + alpha / size * sum_{c' in window(c)} x[c']^2) ** beta, window of `size` channels
    centred on c (floor((size - 1) / 2) before, ceil after)."""

    def run(self, x, *, size, alpha=1e-4, beta=0.75, bias=1.0):
        sq = (x * x).astype(np.float64)
        before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
        padded = np.pad(sq, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
        csum = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
        window = csum[:, size:size + x.shape[1]] - csum[:, :x.shape[1]]
        return (x / (bias + alpha / size * window) ** beta).astype(x.dtype)


# ----- softmax -----------------------------------------------------------------------------------

def _softmax(x, axis, log=False):
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=axis, keepdims=True)
    return (shifted - np.log(total)) if log else e / total


@register("Softmax", 1)
class Softmax_1(Op):
    """Opsets 1-12: the input is flattened to 2-D at `axis` (default 1), (d0 ... d_{axis-1}) x (the rest),
    and softmax runs over the whole second part (onnx's ReferenceEvaluator runs it over one axis only)."""

    log = False

    def run(self, x, *, axis=1):
        axis = axis % max(x.ndim, 1)
        flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
        return _softmax(flat, 1, self.log).reshape(x.shape)


@register("Softmax", 13)
class Softmax_13(Op):
    """From opset 13: softmax over the one axis `axis` (default -1)."""

    log = False

    def run(self, x, *, axis=-1):
        return _softmax(x, axis, self.log)


@register("LogSoftmax", 1)
class LogSoftmax_1(Softmax_1):
    log = True


@register("LogSoftmax", 13)
class LogSoftmax_13(Softmax_13):
    log = True


# ----- pooling -----------------------------------------------------------------------------------

def _pool_geometry(x, kernel, strides, pads, dilations, auto_pad, ceil_mode):
    n = len(kernel)
    strides = list(strides) if strides else [1] * n
    dilations = list(dilations) if dilations else [1] * n
    pads = window_pads(x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    out = []
    for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
        span = size + pads[i] + pads[i + n] - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + pads[i]:
            o -= 1   # the last window must start inside the input or its left padding (as torch/onnxruntime)
        out.append(o)
    return strides, dilations, pads, out


def _windows(x, kernel, strides, dilations, pads, out, fill):
    """x padded with `fill` (enough for the ceil-mode windows), as (N, C, *out, *kernel) views."""
    n = len(kernel)
    widths = [(0, 0), (0, 0)]
    for i in range(n):
        need = (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
        widths.append((pads[i], max(need - x.shape[2 + i] - pads[i], 0)))
    padded = np.pad(x, widths, constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(
        padded, [dilations[i] * (kernel[i] - 1) + 1 for i in range(n)], axis=tuple(range(2, 2 + n)))
    index = (slice(None), slice(None)) + tuple(slice(0, (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(n)) \
        + tuple(slice(None, None, dilations[i]) for i in range(n))
    return view[index], widths


@register("MaxPool", 1)
class MaxPool(Op):
    """y = max over each window; padding never wins (it is -inf). Opset 8 adds the Indices output: the
    position of each window's first maximum in the flattened input (N, C and padding-free spatial
    coordinates; storage_order=1 counts the spatial axes column-major), opset 10 dilations and ceil_mode."""

    needs_output_count = True

    def run(self, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None, storage_order=0,
            strides=None, n_outputs=1):
        strides, dilations, pads, out = _pool_geometry(x, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
        if n_outputs < 2 and len(kernel_shape) == 2 and x.dtype in (np.float32, np.float64):
            # the max-pool kernel (kernels/pool.py, values only) on the same windows: it reads from the begin pads
            # and clips taps to the input, so the end pads enter only through the output size.
            with threads_for(x.size):
                return pool_kernels.max_pool2d_values(np.ascontiguousarray(x), tuple(kernel_shape), tuple(strides),
                                                      tuple(pads[:2]), tuple(dilations), tuple(out))
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        windows, _ = _windows(x, kernel_shape, strides, dilations, pads, out, fill)
        axes = tuple(range(-len(kernel_shape), 0))
        y = windows.max(axis=axes)
        if n_outputs < 2:
            return y
        spatial = x.shape[2:]
        order = "F" if storage_order else "C"
        plane = np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial, order=order)
        flat = (np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * len(spatial))
                * plane.size + plane)
        index_windows, _ = _windows(flat, kernel_shape, strides, dilations, pads, out, -1)
        k = int(np.prod(kernel_shape))
        first = windows.reshape(windows.shape[:-len(axes)] + (k,)).argmax(axis=-1)[..., None]
        indices = np.take_along_axis(index_windows.reshape(index_windows.shape[:-len(axes)] + (k,)), first, axis=-1)
        return y, indices[..., 0]


@register("AveragePool", 1)
class AveragePool(Op):
    """y = mean over each window; count_include_pad=0 divides by the window's taps inside the input,
    count_include_pad=1 also counts the explicit padding (but not the extra ceil_mode positions)."""

    def run(self, x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape,
            pads=None, strides=None):
        strides, dilations, pads, out = _pool_geometry(x, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)
        axes = tuple(range(-len(kernel_shape), 0))
        windows, widths = _windows(x, kernel_shape, strides, dilations, pads, out, 0)
        total = windows.sum(axis=axes, dtype=np.float64)
        n = len(kernel_shape)
        inside = np.zeros((1, 1) + x.shape[2:], np.float64)
        inside[...] = 1
        if count_include_pad:
            inside = np.pad(inside, [(0, 0), (0, 0)] + [(pads[i], pads[i + n]) for i in range(n)], constant_values=1)
            widths = [(0, 0), (0, 0)] + [(0, w[1] - pads[i + n]) for i, w in enumerate(widths[2:])]
            count_windows, _ = _windows(inside, kernel_shape, strides, dilations, [0] * (2 * n), out, 0)
        else:
            count_windows, _ = _windows(inside, kernel_shape, strides, dilations, pads, out, 0)
        count = count_windows.sum(axis=axes)
        return (total / count).astype(x.dtype)


@register("GlobalAveragePool", 1)
class GlobalAveragePool(Op):
    def run(self, x):
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(x.dtype)


@register("GlobalMaxPool", 1)
class GlobalMaxPool(Op):
    def run(self, x):
        return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)

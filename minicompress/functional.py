"""The `torch.nn.functional`-shaped API: same names, argument order and defaults.

Each function validates its arguments (naming the one at fault) and then applies the matching
op from `ops/`. Losses that are compositions (cross-entropy, MSE, KL) are written here from
differentiable primitives, so their gradients need no code of their own.
"""
import math

import numpy as np

from . import random as _random
from .autograd import Function
from .ops import activation as act
from .ops import elementwise as ew
from .ops.attention import LinearAttention, ScaledDotProductAttention
from .ops.conv import Conv2d, ConvTranspose2d, conv2d_inference
from .ops.embedding import Embedding
from .ops.loss import NLLLoss
from .ops.matmul import Linear
from .ops.norm import BatchNorm, LayerNorm
from .ops.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .tensor import Tensor, where

__all__ = [
    "linear", "embedding", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm", "layer_norm",
    "relu", "relu6", "hardtanh", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax",
    "dropout", "cross_entropy", "nll_loss", "mse_loss", "kl_div", "scaled_dot_product_attention",
    "linear_attention", "pad",
]


# ----- validation helpers ----------------------------------------------------------------------

def _check_tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    return x


def _check_ndim(x, name, ndims):
    _check_tensor(x, name)
    if x.ndim not in ndims:
        expected = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {expected} dimensions, got shape {x.shape}")


def _check_same_dtype(op, **tensors):
    """Raise unless every given tensor (None skipped) has one dtype: torch's linear, conv2d, batch_norm,
    layer_norm, scaled_dot_product_attention and nll_loss / cross_entropy (with class weights) refuse
    mixed dtypes (a float64 input with float32 weights) rather than promote, and so do these.
    Elementwise ops and the other losses promote, in torch and here."""
    given = {name: t for name, t in tensors.items() if t is not None}
    dtypes = {name: t.dtype for name, t in given.items()}
    if len(set(dtypes.values())) > 1:
        first = next(iter(dtypes))
        odd = next(name for name, d in dtypes.items() if d != dtypes[first])
        raise TypeError(f"{op}: {odd} has dtype {dtypes[odd]} but {first} has dtype {dtypes[first]}; "
                        f"{', '.join(given)} must share one dtype (convert one with .to(dtype))")


def _pair(value, name, minimum=None):
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _window_fits(h, w, kernel, padding, dilation, name):
    eff = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    if eff[0] > h + 2 * padding[0] or eff[1] > w + 2 * padding[1]:
        raise ValueError(f"{name} {tuple(kernel)} (dilated {tuple(eff)}) is larger than the padded input "
                         f"({h + 2 * padding[0]}, {w + 2 * padding[1]})")


def _contiguous(x):
    return x.contiguous()


# ----- linear and convolution ------------------------------------------------------------------

def linear(input, weight, bias=None):
    """y = x W^T + b, with weight (out_features, in_features)."""
    _check_tensor(input, "input")
    _check_ndim(weight, "weight", (2,))
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input's last dimension ({input.shape[-1] if input.ndim else None}) must equal "
                         f"weight's in_features ({weight.shape[1]})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    _check_same_dtype("linear", input=input, weight=weight, bias=bias)
    return Linear.apply(input, weight, bias)


def embedding(input, weight, padding_idx=None):
    """weight[input]: the rows of weight (num_embeddings, embedding_dim) picked by integer indices `input`
    (any shape) -> (*input.shape, embedding_dim). With `padding_idx`, that row gets no gradient."""
    _check_ndim(weight, "weight", (2,))
    indices = input.data if isinstance(input, Tensor) else np.asarray(input)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"input must hold integer indices, got dtype {indices.dtype}")
    num = weight.shape[0]
    if indices.size and (indices.min() < 0 or indices.max() >= num):
        raise IndexError(f"input holds indices in [{indices.min()}, {indices.max()}], outside [0, {num}) "
                         f"(num_embeddings={num})")
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"padding_idx={padding_idx} must be within [-{num}, {num})")
        padding_idx = int(padding_idx) % num
    return Embedding.apply(weight, indices.astype(np.int64, copy=False), padding_idx=padding_idx)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation over (N, C, H, W) (or unbatched (C, H, W)) with weight (O, C/groups, kh, kw)."""
    _check_ndim(input, "input", (3, 4))
    _check_ndim(weight, "weight", (4,))
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    stride, padding, dilation = _check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    return Conv2d.apply(_contiguous(input), _contiguous(weight), bias, stride=stride, padding=padding,
                        dilation=dilation, groups=int(groups))


def conv2d_fused_inference(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, norm=None,
                           clip=None):
    """clip(batch_norm_eval(conv2d(input, weight, bias))) in one kernel, for inference: no graph is
    recorded, so callers use it only when no gradient is wanted. input (N, C, H, W); norm = (mean,
    inv_std, gamma, beta) arrays (O,) in input's dtype, or None; clip = (lo, hi) or None (ReLU is
    (0, inf)). Same arguments and checks as `conv2d`; the result has the bits of the layers one by one."""
    _check_ndim(input, "input", (4,))
    _check_ndim(weight, "weight", (4,))
    stride, padding, dilation = _check_conv2d(input, weight, bias, stride, padding, dilation, groups)
    out = conv2d_inference(_contiguous(input).data, _contiguous(weight).data, None if bias is None else bias.data,
                           stride, padding, dilation, int(groups), norm, clip)
    return Tensor._wrap(out)


def _check_conv2d(input, weight, bias, stride, padding, dilation, groups):
    """conv2d's argument checks on 4-D input; returns (stride, padding, dilation) as pairs."""
    stride, dilation = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r}: string padding is not supported; give ints")
    padding = _pair(padding, "padding", 0)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    channels, out_channels = input.shape[1], weight.shape[0]
    if weight.shape[1] * groups != channels:
        raise ValueError(f"the input has {channels} channels; the convolution expects {weight.shape[1] * groups} "
                         f"(weight {weight.shape}, groups={groups})")
    if out_channels % groups:
        raise ValueError(f"groups={groups} must divide both in_channels ({channels}) and out_channels ({out_channels})")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    _check_same_dtype("conv2d", input=input, weight=weight, bias=bias)
    _window_fits(input.shape[2], input.shape[3], weight.shape[2:], padding, dilation, "kernel size")
    return stride, padding, dilation


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The transposed convolution over (N, C_in, H, W) with weight (C_in, C_out/groups, kh, kw), as
    torch.nn.functional.conv_transpose2d (same argument order): the gradient of conv2d with respect to its
    input, H_out = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1."""
    _check_ndim(input, "input", (3, 4))
    _check_ndim(weight, "weight", (4,))
    if input.ndim == 3:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups,
                                dilation).squeeze(0)
    stride, dilation = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    padding, output_padding = _pair(padding, "padding", 0), _pair(output_padding, "output_padding", 0)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if input.shape[1] != weight.shape[0] or weight.shape[0] % groups:
        raise ValueError(f"input has {input.shape[1]} channels but weight of shape {weight.shape} expects "
                         f"{weight.shape[0]} (a multiple of groups={groups})")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}")
    out_channels = weight.shape[1] * groups
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    for i in range(2):
        size = (input.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1) \
            + output_padding[i] + 1
        if size < 1:
            raise ValueError(f"padding {padding} leaves an output of size {size} along spatial dimension {i}")
    out_size = tuple((input.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1)
                     + output_padding[i] + 1 for i in range(2))
    return ConvTranspose2d.apply(_contiguous(input), _contiguous(weight), bias, stride=stride, dilation=dilation,
                                 groups=int(groups), begin=padding, out_size=out_size)


# ----- pooling ---------------------------------------------------------------------------------

def _pool_args(input, kernel_size, stride, padding, dilation=1):
    _check_ndim(input, "input", (4,))
    kernel = _pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding {padding} must be at most half of kernel_size {kernel}")
    _window_fits(input.shape[2], input.shape[3], kernel, padding, dilation, "kernel_size")
    return kernel, stride, padding, dilation


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if input.ndim == 3:
        out = max_pool2d(input.unsqueeze(0), kernel_size, stride, padding, dilation, ceil_mode)
        return out.squeeze(0)
    kernel, stride, padding, dilation = _pool_args(input, kernel_size, stride, padding, dilation)
    if return_indices:
        raise ValueError("return_indices=True is not supported")
    return MaxPool2d.apply(_contiguous(input), kernel, stride, padding, dilation, bool(ceil_mode))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if input.ndim == 3:
        out = avg_pool2d(input.unsqueeze(0), kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)
        return out.squeeze(0)
    kernel, stride, padding, _ = _pool_args(input, kernel_size, stride, padding)
    if divisor_override is not None and divisor_override <= 0:
        raise ValueError(f"divisor_override must be positive, got {divisor_override}")
    return AvgPool2d.apply(_contiguous(input), kernel, stride, padding, bool(ceil_mode),
                           bool(count_include_pad), divisor_override)


def adaptive_avg_pool2d(input, output_size):
    _check_ndim(input, "input", (3, 4))
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(0), output_size).squeeze(0)
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    size = tuple(input.shape[2 + i] if s is None else int(s) for i, s in enumerate(size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output_size must be a positive int or pair, got {output_size!r}")
    return AdaptiveAvgPool2d.apply(_contiguous(input), size)


# ----- normalization ---------------------------------------------------------------------------

def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    _check_ndim(input, "input", (2, 3, 4, 5))
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) to match input channels, got {t.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when training=False")
    _check_same_dtype("batch_norm", input=input, running_mean=running_mean, running_var=running_var,
                      weight=weight, bias=bias)
    return BatchNorm.apply(input, running_mean, running_var, weight, bias, training=bool(training),
                           momentum=momentum if momentum is not None else 0.1, eps=eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    _check_tensor(input, "input")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(shape):] != shape:
        raise ValueError(f"normalized_shape {shape} does not match the trailing dims of input {input.shape}")
    _check_same_dtype("layer_norm", input=input, weight=weight, bias=bias)
    return LayerNorm.apply(input, shape, weight, bias, eps=eps)


# ----- activations -----------------------------------------------------------------------------

def relu(input, inplace=False):
    return act.ReLU.apply(input)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    return act.Hardtanh.apply(input, min_val=min_val, max_val=max_val)


def relu6(input, inplace=False):
    return act.Hardtanh.apply(input, min_val=0.0, max_val=6.0)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return act.LeakyReLU.apply(input, negative_slope=negative_slope)


def elu(input, alpha=1.0, inplace=False):
    return act.ELU.apply(input, alpha=alpha)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return act.GELU.apply(input, approximate=approximate)


def sigmoid(input):
    return act.Sigmoid.apply(input)


def tanh(input):
    return act.Tanh.apply(input)


def _dim(input, dim, name="dim"):
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1  # torch's legacy implicit choice
    if not -max(input.ndim, 1) <= dim < max(input.ndim, 1):
        raise ValueError(f"{name}={dim} is out of range for a tensor with {input.ndim} dimensions")
    return dim


def softmax(input, dim=None, dtype=None):
    x = input.to(dtype) if dtype is not None else input
    return act.Softmax.apply(x, dim=_dim(x, dim))


def log_softmax(input, dim=None, dtype=None):
    x = input.to(dtype) if dtype is not None else input
    return act.LogSoftmax.apply(x, dim=_dim(x, dim))


class _Dropout(Function):
    """Zero each element with probability p and scale the rest by 1 / (1 - p)."""

    @staticmethod
    def forward(ctx, x, keep):
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved
        return g * keep, None


def _keep_mask(shape, p, dtype):
    return ((_random.default_generator().random(shape) >= p) / (1 - p)).astype(dtype)


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return _Dropout.apply(input, _keep_mask(input.shape, p, input.dtype))


# ----- losses ----------------------------------------------------------------------------------

def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction={reduction!r} is not one of 'none', 'mean', 'sum'")


def _check_class_target(input, target):
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    expected = (input.shape[0],) + input.shape[2:] if input.ndim >= 2 else ()
    if input.ndim < 2 or target.shape != expected:
        raise ValueError(f"target shape {target.shape} does not match input shape {input.shape} "
                         f"(expected {expected})")


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    _check_class_target(input, target)
    _check_same_dtype("nll_loss", input=input, weight=weight)
    return NLLLoss.apply(input, target.data, None if weight is None else weight.data,
                         ignore_index=ignore_index, reduction=reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """log_softmax over dim 1 followed by nll_loss; class-index targets, optional label smoothing."""
    _check_class_target(input, target)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logp = log_softmax(input, dim=1)
    loss = nll_loss(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    if weight is not None:
        raise ValueError("label_smoothing together with weight is not supported")
    classes = input.shape[1]
    valid = Tensor._wrap((target.data != ignore_index).astype(input.dtype))
    smooth = -(logp.sum(dim=1)) * valid
    if reduction == "mean":
        smooth = smooth.sum() / valid.data.sum()
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)


def mse_loss(input, target, reduction="mean"):
    if input.shape != target.shape:
        raise ValueError(f"input shape {input.shape} and target shape {target.shape} must match")
    diff = input - target
    return _reduce(diff * diff, reduction)


def kl_div(input, target, reduction="mean", log_target=False):
    """KL divergence with input given as log-probabilities, as torch.nn.functional.kl_div:
    pointwise xlogy(target, target) - target * input, or exp(t) (t - input) with log_target.

    xlogy (torch.xlogy) makes a zero target contribute 0 * log 0 = 0, while a negative or NaN target
    gives NaN, which propagates through every reduction as in torch. 'batchmean' divides the sum by
    the batch size (the mathematically correct KL)."""
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"input shape {input.shape} and target shape {target.shape} must match")
    if log_target:
        pointwise = target.exp() * (target - input)
    else:
        pointwise = ew.Xlogy.apply(target, target) - target * input
    if reduction == "batchmean":
        return pointwise.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(pointwise, reduction)


# ----- attention -------------------------------------------------------------------------------

def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(q k^T / sqrt(E) + mask) v on (..., L, E) inputs, as torch's math path.

    A boolean `attn_mask` keeps positions that are True; a float mask is added to the scores.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_ndim(t, name, (2, 3, 4, 5))
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share the embedding dim, got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must share the sequence length, got {key.shape[-2]} and {value.shape[-2]}")
    _check_same_dtype("scaled_dot_product_attention", query=query, key=key, value=value)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    L, S = query.shape[-2], key.shape[-2]
    batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    bias = None
    if is_causal and attn_mask is not None:
        raise ValueError("attn_mask and is_causal=True cannot both be given")
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        try:
            np.broadcast_shapes(mask.shape, batch + (L, S))
        except ValueError:
            raise ValueError(f"attn_mask of shape {mask.shape} does not broadcast to the scores' shape "
                             f"{batch + (L, S)}") from None
        # kept in the mask's own shape: the op broadcasts it only where it has to
        bias = np.where(mask, 0.0, -np.inf).astype(query.dtype) if mask.dtype == bool else mask.astype(query.dtype)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    keep = None
    if dropout_p > 0.0:
        keep = _keep_mask(query.shape[:-1] + (S,), dropout_p, query.dtype)
    q, k, v = (t.expand(batch + t.shape[-2:]) if t.shape[:-2] != batch else t for t in (query, key, value))
    return ScaledDotProductAttention.apply(_contiguous(q), _contiguous(k), _contiguous(v), bias,
                                           scale=scale, keep=keep, is_causal=bool(is_causal))


def linear_attention(q, k, v):
    """Linear attention with the elu(x) + 1 feature map (Katharopoulos et al., 2020), non-causal:

        out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j)),

    computed as phi(q) (phi(k)^T v), so time and memory grow linearly with sequence length.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_ndim(t, name, (2, 3, 4, 5))
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the feature dim, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must share the sequence length, got {k.shape[-2]} and {v.shape[-2]}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(f"q, k, v must share the batch dims, got {q.shape}, {k.shape}, {v.shape}")
    _check_same_dtype("linear_attention", q=q, k=k, v=v)
    return LinearAttention.apply(_contiguous(q), _contiguous(k), _contiguous(v))


def pad(input, pad, mode="constant", value=0.0):
    from .ops.movement import Pad
    if mode != "constant":
        raise ValueError(f"mode={mode!r}: only 'constant' padding is supported")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad must have an even length of at most 2 * ndim, got {pad}")
    return Pad.apply(input, tuple(pad), value=value)

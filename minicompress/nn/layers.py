"""The basic layers, each a thin Module over a function in `functional.py`."""
import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def _validate_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x W^T + b with W (out_features, in_features), as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _validate_positive_int(in_features, "in_features")
        self.out_features = _validate_positive_int(out_features, "out_features")
        self.weight = Parameter(np.empty((out_features, in_features), np.float32))
        self.bias = Parameter(np.empty(out_features, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SmoothedLinear(Linear):
    """y = (x / s) W'^T + b with W' = W diag(s): a Linear whose input is smoothed on the layer itself
    (SmoothQuant's X diag(s)^-1 where no earlier layer can absorb it; see quant.smoothquant).

    Built by `SmoothedLinear.from_linear(linear, s)`; its outputs equal `linear`'s up to float rounding.
    `smooth_scales` (in_features,) is a buffer; `PerTokenDynamicQuantizedLinear.from_float` keeps it.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("smooth_scales", Tensor(np.ones(in_features, np.float32)))

    @classmethod
    def from_linear(cls, linear, scales):
        """A SmoothedLinear computing `linear` with factor `scales` (in_features,), finite and > 0."""
        scales = np.asarray(scales, np.float32)
        if scales.shape != (linear.in_features,) or not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"scales must be finite and > 0 with shape ({linear.in_features},), got shape "
                             f"{scales.shape}")
        previous = getattr(linear, "smooth_scales", None)
        total = scales if previous is None else previous.data * scales      # smoothing twice composes
        out = cls.__new__(cls)             # not cls(...): its random initialisation would draw from the RNG
        Module.__init__(out)
        out.in_features, out.out_features = linear.in_features, linear.out_features
        out.weight = Parameter(linear.weight.data * scales[None, :])
        if linear.bias is None:
            out.register_parameter("bias", None)
        else:
            out.bias = Parameter(linear.bias.data.copy())
        out.register_buffer("smooth_scales", Tensor(np.asarray(total, np.float32)))
        out.train(linear.training)
        return out

    def forward(self, x):
        return F.linear(x * Tensor(np.float32(1) / self.smooth_scales.data), self.weight, self.bias)


class Embedding(Module):
    """A lookup table of num_embeddings vectors of size embedding_dim, as torch.nn.Embedding:
    forward(indices (*)) -> (*, embedding_dim). Initialised N(0, 1), the padding row (if any) zero."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        self.num_embeddings = _validate_positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _validate_positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx={padding_idx} must be within [-{num_embeddings}, {num_embeddings})")
            padding_idx = int(padding_idx) % num_embeddings
        self.padding_idx = padding_idx
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), np.float32))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Conv2d(Module):
    """2-D convolution with zero padding, as torch.nn.Conv2d (weight (out, in/groups, kh, kw))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        self.in_channels = _validate_positive_int(in_channels, "in_channels")
        self.out_channels = _validate_positive_int(out_channels, "out_channels")
        self.groups = _validate_positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode={padding_mode!r}: only 'zeros' is supported")
        self.kernel_size = F._pair(kernel_size, "kernel_size", 1)
        self.stride = F._pair(stride, "stride", 1)
        self.padding = F._pair(padding, "padding", 0)
        self.dilation = F._pair(dilation, "dilation", 1)
        self.padding_mode = padding_mode
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, np.float32))
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
        else:
            self.register_parameter("bias", None)
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class ConvTranspose2d(Module):
    """2-D transposed convolution, as torch.nn.ConvTranspose2d (weight (in, out/groups, kh, kw))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1):
        super().__init__()
        self.in_channels = _validate_positive_int(in_channels, "in_channels")
        self.out_channels = _validate_positive_int(out_channels, "out_channels")
        self.groups = _validate_positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.kernel_size = F._pair(kernel_size, "kernel_size", 1)
        self.stride = F._pair(stride, "stride", 1)
        self.padding = F._pair(padding, "padding", 0)
        self.output_padding = F._pair(output_padding, "output_padding", 0)
        self.dilation = F._pair(dilation, "dilation", 1)
        self.weight = Parameter(np.empty((in_channels, out_channels // groups) + self.kernel_size, np.float32))
        if bias:
            self.bias = Parameter(np.empty(out_channels, np.float32))
        else:
            self.register_parameter("bias", None)
        # torch draws from fan_in = weight.size(1) * kh * kw for transposed convolutions too.
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class _BatchNorm(Module):
    """Batch normalization with running statistics; buffers and their names as torch."""

    _input_ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features = _validate_positive_int(num_features, "num_features")
        self.eps, self.momentum, self.affine = eps, momentum, affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, np.float32))
            self.bias = Parameter(np.zeros(num_features, np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, np.float32)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, np.float32)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        if x.ndim not in self._input_ndims:
            raise ValueError(f"{type(self).__name__} expects input with {' or '.join(map(str, self._input_ndims))} "
                             f"dimensions, got shape {x.shape}")
        momentum = self.momentum
        use_batch = self.training or self.running_mean is None
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.item())
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_batch,
                            momentum if momentum is not None else 0.0, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    _input_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _input_ndims = (4,)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        if elementwise_affine:
            self.weight = Parameter(np.ones(shape, np.float32))
            if bias:
                self.bias = Parameter(np.zeros(shape, np.float32))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Dropout(Module):
    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Add(Module):
    """a + b as a module, so that a residual addition is a named layer that quantization can
    observe and replace (torch's eager mode needs `FloatFunctional` for this)."""

    def forward(self, a, b):
        return a + b

"""Dynamic quantization with one activation scale and zero point per token (row), for Linear layers:
int8 weights per output channel chosen once, each row of the input quantized on the fly with its own
(scale, zero point), float in and float out.

    qmodel = quantize_dynamic(model, {nn.Linear}, per_token=True)

Per-tensor dynamic quantization (`dynamic.py`) gives the whole batch one range, so one token with large
values coarsens every other token's levels. Per token, each row keeps its own
range. It is one of the activation granularities SmoothQuant (Xiao et al. 2023) compares, and the one of
torch's decomposed `choose_qparams_per_token_asymmetric` / `quantize_per_token`, whose arithmetic it
follows exactly (kernels.pertoken). One layer, x (M, K) float32, W (N, K) qint8 with scales w_scale[n]:

    1. (xq, x_scale[m], x_zp[m]) = quantize_per_token(x * (1 / s))   s: the SmoothQuant factor, or 1
    2. acc[m, n] = sum_k (xq[m, k] - x_zp[m]) * (wq[n, k] - w_zp[n])           exact int32
       -- the int8 GEMM (kernels.qgemm) with x_zp = 0, then minus x_zp[m] * sum_k (wq[n, k] - w_zp[n])
    3. y[m, n] = float32(acc[m, n]) * float32(x_scale[m] * w_scale[n]) + bias[n]   in float32

The input is used at all 8 bits ([0, 255]): the int32 GEMM has no int16 pairs to saturate.
"""
import numpy as np

from ..autograd import no_grad
from ..kernels.pertoken import dequantize_per_token, quantize_per_token, quantize_per_token_reference
from ..kernels.qgemm import qgemm_packed_unchecked
from ..kernels.threads import threads_for
from ..nn import layers as nn_layers
from ..nn.module import Module
from ..tensor import Tensor
from . import dtypes as qd
from .dynamic import check_float_input, check_weight_and_bias, pack_dynamic_weight
from .modules import quantize_weight
from .qconfig import QConfig, default_per_channel_weight_observer, full_range_dynamic_quant_observer

# The activation observer only says "dynamic, 8 bits": each call computes every row's range itself.
per_token_dynamic_qconfig = QConfig(activation=full_range_dynamic_quant_observer,
                                    weight=default_per_channel_weight_observer)


def _weight_terms(weight):
    """(w_scales float32 (N,), PackedWeight, colsums int64 (N,) = sum_k (wq[n, k] - w_zp[n]))."""
    w_scales, packed = pack_dynamic_weight(weight)
    return w_scales, packed, packed.w_sums - packed.k * packed.w_zps


def linear_dynamic_per_token(x, weight, bias=None, inv_smooth=None, terms=None):
    """y = (x / s) (W diag(s))^T + b with x quantized per row (module docstring, steps 1-3).

    Args:
        x: float32 array (*, in_features); NaN or infinite values are an error.
        weight: qint8 QTensor (out_features, in_features), per tensor or per output channel.
        bias: float32 (out_features,) or None.
        inv_smooth: float32 (in_features,), 1 / s, multiplied into x before it is quantized; None: none.
        terms: `_weight_terms(weight)` when the caller keeps it (layers pack once).

    Returns:
        float32 array (*, out_features); `linear_dynamic_per_token_reference` is the same in NumPy.
    """
    out_features, in_features = weight.shape
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"linear_dynamic_per_token: x must be a float32 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    rows = np.ascontiguousarray(x.reshape(-1, in_features))
    w_scales, packed, colsums = _weight_terms(weight) if terms is None else terms
    with threads_for(rows.size):
        xq, x_scales, x_zps = quantize_per_token(rows, inv_smooth)
    if not np.isfinite(x_scales).all():
        raise ValueError("linear_dynamic_per_token: the input contains NaN or infinite values, which have no "
                         "quantized range")
    acc0 = qgemm_packed_unchecked(xq, 0, packed, None)
    with threads_for(acc0.size):
        out = dequantize_per_token(acc0, x_scales, x_zps, colsums, w_scales, bias)
    return out.reshape(*x.shape[:-1], out_features)


def linear_dynamic_per_token_reference(x, weight, bias=None, inv_smooth=None):
    """`linear_dynamic_per_token` in NumPy: per-row quantization, the int64 product, float32 scaling."""
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features)
    xq, x_scales, x_zps = quantize_per_token_reference(rows, inv_smooth)
    if not np.isfinite(x_scales).all():
        raise ValueError("linear_dynamic_per_token: the input contains NaN or infinite values, which have no "
                         "quantized range")
    w_scales, packed = pack_dynamic_weight(weight, "portable")     # the checked (N,) scales and zero points
    acc = (xq.astype(np.int64) - x_zps[:, None]) @ (weight.int_repr().astype(np.int64) - packed.w_zps[:, None]).T
    out = acc.astype(np.float32) * (x_scales[:, None] * w_scales[None, :])
    out = out if bias is None else out + np.asarray(bias, np.float32)
    return out.reshape(*x.shape[:-1], out_features)


class PerTokenDynamicQuantizedLinear(Module):
    """Linear with an int8 weight and each input row quantized with its own range (module docstring).

    forward(x) with x float32 (*, in_features) -> float32 (*, out_features); inference only.
    `weight()` is the qint8 QTensor (of W diag(s) when smoothed), `bias()` the float32 bias or None,
    `smooth_scales` the SmoothQuant factor s (in_features,) or None.

    >>> qlinear = PerTokenDynamicQuantizedLinear.from_float(nn.Linear(4, 3))
    >>> qlinear(mc.randn(2, 4)).shape
    (2, 3)
    """

    def __init__(self, weight, bias=None, smooth_scales=None):
        super().__init__()
        self.out_features, self.in_features, bias = check_weight_and_bias(weight, bias)
        if smooth_scales is not None:
            smooth_scales = np.asarray(smooth_scales.data if isinstance(smooth_scales, Tensor) else smooth_scales,
                                       np.float32)
            positive = np.all(np.isfinite(smooth_scales) & (smooth_scales > 0))
            if smooth_scales.shape != (self.in_features,) or not positive:
                raise ValueError(f"smooth_scales must be finite and > 0 with shape ({self.in_features},), got "
                                 f"shape {smooth_scales.shape}")
            smooth_scales = Tensor(smooth_scales)
        self._weight = weight
        self.register_buffer("_bias", bias)
        self.register_buffer("smooth_scales", smooth_scales)
        self._terms()

    def weight(self):
        return self._weight

    def bias(self):
        return None if self._bias is None else self._bias.data

    def _terms(self):
        """(w_scales, PackedWeight, colsums, inv_smooth) of the current weight, prepared once (at
        construction, or on the first call after `load`); not saved (io.TRANSIENT_ATTRIBUTES)."""
        memo = self.__dict__.get("_packed_weight")
        if memo is None or memo[0] is not self._weight:
            inv = None if self.smooth_scales is None else np.float32(1) / self.smooth_scales.data
            memo = (self._weight, (*_weight_terms(self._weight), inv))
            self.__dict__["_packed_weight"] = memo
        return memo[1]

    def forward(self, x):
        x = check_float_input(x, type(self).__name__, self.in_features)
        *terms, inv_smooth = self._terms()
        return Tensor._wrap(linear_dynamic_per_token(x, self._weight, self.bias(), inv_smooth, terms))

    @classmethod
    def from_float(cls, mod):
        """Quantize a float nn.Linear (or a SmoothedLinear, keeping its factor) with its qconfig's weight
        observer; default per output channel, symmetric (`per_token_dynamic_qconfig`)."""
        if not isinstance(mod, nn_layers.Linear):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.Linear, got {type(mod).__name__}")
        observer = (getattr(mod, "qconfig", None) or per_token_dynamic_qconfig).weight()
        if observer.dtype is not qd.qint8:
            raise ValueError(f"per-token dynamic quantization needs a qint8 weight observer; {type(mod).__name__}'s "
                             f"qconfig weight observer produces {observer.dtype!r}")
        with no_grad():
            observer(mod.weight.detach())
        bias = None if mod.bias is None else mod.bias.data.copy()
        smooth = getattr(mod, "smooth_scales", None)
        return cls(quantize_weight(mod.weight.data, observer), bias, None if smooth is None else smooth.data.copy())

    def extra_repr(self):
        smoothed = "" if self.smooth_scales is None else ", smoothed"
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype=qint8, "
                f"qscheme={self._weight.qscheme()!r}, per_token=True{smoothed}")

"""Dynamic quantization, as `torch.ao.quantization.quantize_dynamic`: int8 weights chosen once, activations
quantized batch by batch while the model runs, float in and float out.

    qmodel = quantize_dynamic(model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=qint8)

No calibration data is needed: each call of a dynamic layer looks at its own input. This mirrors
`torch.ops.quantized.linear_dynamic` on the x86 / fbgemm engine, step by step:

    1. x_min, x_max = min(x), max(x) over the whole input (every row of the batch)
    2. (x_scale, x_zp) = choose_quantization_params(x_min, x_max, 0, 255, reduce_range=True)
       -- fbgemm's rule (below), not the observers' `calculate_qparams`; reduce_range halves the range
       to [0, 127], because fbgemm's AVX2 kernel adds pairs of uint8 x int8 products in int16 with
       saturation (vpmaddubsw): 2 * 127 * 128 < 2**15 is exact, 2 * 255 * 128 is not
    3. xq = quantize_per_tensor(x, x_scale, x_zp, quint8)                         (affine.py)
       -- clamped to quint8's full [0, 255] (fbgemm quantizes with precision 8), so with reduce_range
       the ends of the range can round one level past [0, 127]
    4. acc = sum_k (xq - x_zp) * (wq - w_zp)       exact int32                     (kernels.qgemm)
    5. y = fma(float32(acc), float32(x_scale * w_scale), bias)      fbgemm's ReQuantizeForFloat (AVX2): one
       fused multiply-add in float32, so one rounding; without bias the float32 product

fbgemm's `ChooseQuantizationParams` (torch's quant_utils.h, identical) for the observed [min, max]:

    min, max   = min(min, 0), max(max, 0)                           0.0 stays exactly representable
    scale      = (max - min) / (qmax - qmin)                        in float64
                 -> 0.1 when float32(scale) is 0 or has an infinite reciprocal
                 -> 6.1e-5 when below that (min and max stretched by the same factor)
    zero_point = qmin - min / scale  or  qmax - max / scale         whichever adds smaller terms,
                 rounded half to even and clamped to [qmin, qmax]   (float64 scale, before float32)
    the scale used from then on is float32(scale)

The weight is quantized ahead of time by the qconfig's weight observer: `default_dynamic_qconfig`'s
MinMaxObserver(qint8, per_tensor_symmetric), i.e. scale = max|W| / 127.5 and zero point 0.
`full_range_dynamic_qconfig` (not torch's) quantizes the weight per output channel and step 2 with
reduce_range=False: all of [0, 255], exact here because step 4 sums in int32 without int16 pairs.
LSTM, GRU and their cells are in `dynamic_rnn.py`: the same `linear_dynamic` for their two projections.
"""
import numpy as np

from ..autograd import no_grad
from ..kernels.qelementwise import check_accumulator_range, check_weight_qparams, quantize_uint8, requantize_multiplier
from ..kernels.qgemm import pack_weight, qgemm_dequant_unchecked, qgemm_reference
from ..kernels.threads import threads_for
from ..nn import layers as nn_layers
from ..nn.module import Module
from ..tensor import Tensor
from . import dtypes as qd
from .affine import fma_float32, quantize_per_tensor
from .modules import quantize_weight
from .observer import PlaceholderObserver
from .qconfig import default_dynamic_qconfig
from ..qtensor import QTensor

SMALL_SCALE_THRESHOLD = float(np.float32(6.1e-5))   # fbgemm / quant_utils.h, a float32 constant


# --------------------------------------------------------------------------------------------------
# The arithmetic of one dynamic linear layer


def choose_quantization_params(min_val, max_val, qmin=0, qmax=255, reduce_range=False):
    """(scale, zero_point) for inputs in [min_val, max_val], as fbgemm's `ChooseQuantizationParams`.

    See the module docstring for the formula. `reduce_range` halves qmin and qmax (C++ integer division,
    rounding towards zero). Returns (float32 scale, int zero_point).

    >>> scale, zero_point = choose_quantization_params(-1.0, 3.0, reduce_range=True)   # [0, 127]
    >>> float(scale), zero_point                                                    # 4 / 127
    (0.031496062874794006, 32)
    """
    if reduce_range:
        qmin, qmax = int(qmin / 2), int(qmax / 2)
    lo, hi = np.float32(min_val), np.float32(max_val)
    if not lo <= hi:
        raise ValueError(f"min_val={min_val} must not exceed max_val={max_val} (and neither may be NaN)")
    lo, hi = min(lo, np.float32(0)), max(hi, np.float32(0))
    scale = (float(hi) - float(lo)) / (qmax - qmin)
    narrow = float(np.float32(scale))
    if narrow < 1e-30:                  # only then can 1 / float32(scale) overflow (errstate costs ~5 us a call)
        with np.errstate(divide="ignore", over="ignore"):
            if narrow == 0 or np.isinf(np.float32(1) / np.float32(scale)):
                scale = 0.1
    if scale < SMALL_SCALE_THRESHOLD:
        original = np.float32(scale)
        scale = SMALL_SCALE_THRESHOLD
        if lo == 0:
            hi = np.float32(SMALL_SCALE_THRESHOLD * (qmax - qmin))
        elif hi == 0:
            lo = np.float32(-SMALL_SCALE_THRESHOLD * (qmax - qmin))
        else:
            amplifier = np.float32(SMALL_SCALE_THRESHOLD) / original
            lo, hi = lo * amplifier, hi * amplifier
    from_min, from_max = qmin - float(lo) / scale, qmax - float(hi) / scale
    from_min_error = abs(qmin) - abs(float(lo) / scale)
    from_max_error = abs(qmax) - abs(float(hi) / scale)
    initial = from_min if from_min_error < from_max_error else from_max
    zero_point = qmin if initial < qmin else qmax if initial > qmax else int(np.rint(initial))
    return np.float32(scale), zero_point


def quantize_input(x, reduce_range=True):
    """float32 x (any shape) -> (uint8 levels, float32 scale, int zero_point): steps 1-3 of the module
    docstring, one (scale, zero_point) for the whole array."""
    if x.size == 0:
        scale, zero_point = choose_quantization_params(0.0, 0.0, reduce_range=reduce_range)
    else:
        scale, zero_point = choose_quantization_params(x.min(), x.max(), reduce_range=reduce_range)
    return quantize_per_tensor(x, scale, zero_point, qd.quint8), scale, zero_point


def pack_dynamic_weight(weight, route=None, reduce_range=True):
    """(w_scales float32 (N,), PackedWeight) of a qint8 QTensor weight (N, K): its qparams checked and its
    codes packed for the GEMM (kernels.qgemm.pack_weight), once per weight; 7-bit inputs (reduce_range)
    let an AVX2 CPU take the maddubs route."""
    out_features, in_features = weight.shape
    if weight.is_per_channel():
        w_scales, w_zps = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
    else:
        w_scales, w_zps = np.array([weight.q_scale()]), np.array([weight.q_zero_point()])
    w_scales, w_zps = check_weight_qparams(w_scales, w_zps, out_features)
    check_accumulator_range(in_features, None)
    return w_scales, pack_weight(weight.int_repr(), w_zps, route, x_max=127 if reduce_range else 255)


def linear_dynamic(x, weight, bias=None, reduce_range=True, packed=None):
    """y = x W^T + b with W int8 and x quantized on the fly, as `torch.ops.quantized.linear_dynamic`.

    Args:
        x: float32 array (*, in_features); NaN or infinite values are an error (no range to quantize).
        weight: qint8 QTensor (out_features, in_features), per tensor or per output channel.
        bias: float32 array (out_features,) or None; added in float after the integer product.
        reduce_range: quantize x to 7 bits [0, 127] (torch's x86 / fbgemm choice, see the module docstring).
        packed: `pack_dynamic_weight(weight)`, when the caller keeps it; otherwise the weight's codes are
            taken as they are (the portable GEMM route, no packing) on this call.

    Returns:
        float32 array (*, out_features). `linear_dynamic_reference` is the same in plain NumPy.
    """
    out_features, in_features = weight.shape
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"linear_dynamic: x must be a float32 array, got {getattr(x, 'dtype', type(x).__name__)}")
    rows = np.ascontiguousarray(x.reshape(-1, in_features))
    low, high = (rows.min(), rows.max()) if rows.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):         # min / max are NaN or infinite if any element is
        raise ValueError("linear_dynamic: the input contains NaN or infinite values, which have no quantized range")
    w_scales, packed = pack_dynamic_weight(weight, "portable") if packed is None else packed
    x_scale, x_zp = choose_quantization_params(low, high, reduce_range=reduce_range)
    inv_scale = np.float32(1) / x_scale
    with threads_for(rows.size):
        xq = quantize_uint8(rows.reshape(-1), inv_scale, x_zp).reshape(rows.shape)
    # Quantizing is monotonic, so the largest code is that of the largest value: the GEMM's route check
    # (kernels.qgemm, maddubs) needs no pass over the codes.
    x_max = int(quantize_uint8(np.array([high], np.float32), inv_scale, x_zp)[0])
    multiplier = requantize_multiplier(x_scale, w_scales, 1.0)
    out = qgemm_dequant_unchecked(xq, x_zp, packed, multiplier, None if bias is None else np.asarray(bias, np.float32),
                                  x_max)
    return out.reshape(*x.shape[:-1], out_features)


def linear_dynamic_reference(x, weight, bias=None, reduce_range=True):
    """`linear_dynamic` step by step in NumPy: quantize_input, the int64 product, fma_float32."""
    out_features, in_features = weight.shape
    if not np.isfinite(x).all():
        raise ValueError("linear_dynamic: the input contains NaN or infinite values, which have no quantized range")
    rows = x.reshape(-1, in_features)
    w_scales, packed = pack_dynamic_weight(weight, "portable")
    xq, x_scale, x_zp = quantize_input(rows, reduce_range)
    acc = qgemm_reference(xq, x_zp, weight.int_repr(), packed.w_zps, None).astype(np.float32)
    multiplier = requantize_multiplier(x_scale, w_scales, 1.0)
    out = acc * multiplier if bias is None else fma_float32(acc, multiplier, np.asarray(bias, np.float32))
    return out.reshape(*x.shape[:-1], out_features)


# --------------------------------------------------------------------------------------------------
# The module


def weight_observer_for(mod):
    """A fresh weight observer from `mod.qconfig` (default_dynamic_qconfig's when there is none),
    checked to produce qint8."""
    qconfig = getattr(mod, "qconfig", None) or default_dynamic_qconfig
    observer = qconfig.weight()
    if observer.dtype is not qd.qint8:
        raise ValueError(f"dynamic quantization needs a qint8 weight observer; {type(mod).__name__}'s qconfig "
                         f"weight observer produces {observer.dtype!r}")
    return observer


def input_reduce_range_for(mod):
    """Whether `mod`'s inputs are quantized to 7 bits: True (torch's x86 choice) unless its qconfig's activation
    observer sets reduce_range=False (`full_range_dynamic_qconfig`)."""
    qconfig = getattr(mod, "qconfig", None) or default_dynamic_qconfig
    observer = qconfig.activation()
    return not (isinstance(observer, PlaceholderObserver) and observer.reduce_range is False)


def check_float_input(x, name, in_features):
    """x must be a float32 Tensor whose last dimension is `in_features`; returns its array."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name}: input must be float32 (it is quantized on the fly), got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"{name}: input must have shape (*, {in_features}), got {x.shape}")
    return x.data


def check_weight_and_bias(weight, bias):
    """(out_features, in_features, bias as a float32 Tensor or None) of a dynamic Linear's 2-D qint8 weight
    and float bias; TypeError / ValueError naming the argument otherwise."""
    if not isinstance(weight, QTensor) or weight.dtype is not qd.qint8 or weight.ndim != 2:
        raise TypeError(f"weight must be a 2-D qint8 QTensor, got {weight!r}")
    out_features, in_features = weight.shape
    if bias is not None:
        bias = np.asarray(bias.data if isinstance(bias, Tensor) else bias, np.float32)
        if bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
        bias = Tensor(bias)
    return out_features, in_features, bias


class DynamicQuantizedLinear(Module):
    """Linear with an int8 weight and inputs quantized per call, as `torch.ao.nn.quantized.dynamic.Linear`.

    forward(x) with x float32 (*, in_features) -> float32 (*, out_features); inference only (no gradient).
    `weight()` returns the qint8 QTensor, `bias()` the float32 bias array (or None), as torch.

    >>> qlinear = DynamicQuantizedLinear.from_float(nn.Linear(4, 3))
    >>> qlinear(mc.randn(2, 4)).shape
    (2, 3)
    """

    def __init__(self, weight, bias=None, reduce_range=True):
        super().__init__()
        if not isinstance(reduce_range, bool):
            raise TypeError(f"reduce_range must be a bool, got {reduce_range!r}")
        self.reduce_range = reduce_range
        self.out_features, self.in_features, bias = check_weight_and_bias(weight, bias)
        self._weight = weight
        self.register_buffer("_bias", bias)
        self._packed()

    def weight(self):
        return self._weight

    def bias(self):
        return None if self._bias is None else self._bias.data

    def _packed(self):
        """(w_scales, PackedWeight) of the current weight, prepared once (at construction, or on the first
        call after `load`: model files hold the plain codes); not saved (io.TRANSIENT_ATTRIBUTES)."""
        memo = self.__dict__.get("_packed_weight")
        if memo is None or memo[0] is not self._weight:
            memo = (self._weight, pack_dynamic_weight(self._weight, reduce_range=self.reduce_range))
            self.__dict__["_packed_weight"] = memo
        return memo[1]

    def forward(self, x):
        x = check_float_input(x, type(self).__name__, self.in_features)
        return Tensor._wrap(linear_dynamic(x, self._weight, self.bias(), self.reduce_range, packed=self._packed()))

    @classmethod
    def from_float(cls, mod):
        """Quantize a float nn.Linear's weight with its qconfig's weight observer (torch's from_float); inputs
        use 7 bits unless the qconfig's activation observer says reduce_range=False."""
        if not isinstance(mod, nn_layers.Linear):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.Linear, got {type(mod).__name__}")
        observer = weight_observer_for(mod)
        with no_grad():
            observer(mod.weight.detach())
        bias = None if mod.bias is None else mod.bias.data.copy()
        return cls(quantize_weight(mod.weight.data, observer), bias, input_reduce_range_for(mod))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype=qint8, "
                f"qscheme={self._weight.qscheme()!r}" + ("" if self.reduce_range else ", reduce_range=False"))

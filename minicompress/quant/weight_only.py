"""Weight-only int4 quantization: `Int4Linear`, a Linear whose weight is stored as packed int4 groups
(onnxruntime's MatMulNBits layout, `quant.int4`) and multiplied with float32 activations by a kernel that
unpacks the nibbles inside the GEMM (`kernels.int4`); and `quantize_int4_weights`, which swaps every Linear
of a model for one, rounding each weight to nearest or with GPTQ (`quant.gptq`).

    model = quantize_int4_weights(model, group_size=64, method="gptq", calibrate=lambda m: m.encode(texts))

y = x dequantize(W)^T + b, where dequantize(W) is `quant.int4.dequantize_int4`: the same float32 product
torch computes from the dequantized weight, up to float32 summation order. The arrays are buffers (saved
by `minicompress.io` as they are, counted by `quant.model_size_bytes`): `weight_packed` (N, n_groups,
group_size / 2) uint8, `weight_scales` (N, n_groups) float32, `weight_zero_points` (N, ceil(n_groups / 2))
uint8 (absent for symmetric weights: zero point 8), and the float32 `bias`.
"""
import copy
import warnings

import numpy as np

from ..autograd import no_grad
from ..kernels.int4 import int4_linear
from ..kernels.threads import threads_for
from ..nn import layers as nn_layers
from ..nn.module import Module
from ..tensor import Tensor
from .gptq import gptq_quantize
from .gptq import hessian as gptq_hessian
from .int4 import check_group_size, check_packed, dequantize_int4, n_groups, quantize_int4, unpack_zero_points

METHODS = ("rtn", "gptq")


class Int4Linear(Module):
    """y = x W^T + b with W (out_features, in_features) in int4 groups of `group_size` along in_features,
    symmetric (zero point 8) or asymmetric (a zero point per group). Build with `from_float`."""

    def __init__(self, in_features, out_features, bias=True, group_size=64, symmetric=True):
        super().__init__()
        self.in_features = nn_layers._validate_positive_int(in_features, "in_features")
        self.out_features = nn_layers._validate_positive_int(out_features, "out_features")
        self.group_size = check_group_size(group_size)
        self.symmetric = bool(symmetric)
        groups = n_groups(in_features, group_size)
        self.register_buffer("weight_packed", Tensor(np.full((out_features, groups, group_size // 2), 0x88, np.uint8)))
        self.register_buffer("weight_scales", Tensor(np.zeros((out_features, groups), np.float32)))
        self.register_buffer("weight_zero_points", None if symmetric else
                             Tensor(np.full((out_features, (groups + 1) // 2), 0x88, np.uint8)))
        self.register_buffer("bias", Tensor(np.zeros(out_features, np.float32)) if bias else None)

    @classmethod
    def from_float(cls, linear, group_size=64, symmetric=True, method="rtn", inputs=None, hessian=None, *,
                   mse=False, **gptq_options):
        """An Int4Linear computing what float `linear` does, its weight rounded by `method`: "rtn" (round
        to nearest) or "gptq" with the layer's calibration `inputs` (*, in_features) or their `hessian`
        (`quant.gptq.hessian`, (in_features, in_features)). `mse` clips each group's range where its
        rounding error is least (either method); `gptq_options` (act_order, static_groups, damp,
        block_size) go to `quant.gptq.gptq_quantize`."""
        if not isinstance(linear, nn_layers.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        weight = np.asarray(linear.weight.data, np.float32)
        if method == "gptq":
            if (inputs is None) == (hessian is None):
                raise ValueError("method='gptq' needs exactly one of inputs (calibration rows) and hessian")
            arrays = gptq_quantize(weight, gptq_hessian(inputs) if hessian is None else hessian, group_size, symmetric,
                                   mse=mse, **gptq_options)
        else:
            arrays = quantize_int4(weight, group_size, symmetric, mse)
        bias = None if linear.bias is None else np.asarray(linear.bias.data, np.float32)
        return cls.from_packed(*arrays, linear.in_features, group_size, bias)

    @classmethod
    def from_packed(cls, packed, scales, zero_points, in_features, group_size, bias=None):
        """An Int4Linear holding MatMulNBits' arrays as they are (checked: `quant.int4.check_packed`)."""
        out_features = np.shape(packed)[0]
        module = cls(in_features, out_features, bias is not None, group_size, zero_points is None)
        check_packed(packed, scales, zero_points, in_features, out_features, module.group_size, "Int4Linear")
        module.weight_packed.data = np.ascontiguousarray(packed)
        module.weight_scales.data = np.ascontiguousarray(scales)
        if zero_points is not None:
            module.weight_zero_points.data = np.ascontiguousarray(zero_points)
        if bias is not None:
            bias = np.asarray(bias, np.float32)
            if bias.shape != (out_features,):
                raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
            module.bias.data = bias.copy()
        return module

    def zero_points(self):
        """Per-group zero points uint8 (N, n_groups) (8 everywhere for symmetric weights)."""
        packed = None if self.weight_zero_points is None else self.weight_zero_points.data
        return unpack_zero_points(packed, self.weight_scales.shape[1], self.out_features)

    def dequantized_weight(self):
        """float32 (out_features, in_features): (q - z) * s, the weight the layer multiplies by."""
        packed = None if self.weight_zero_points is None else self.weight_zero_points.data
        return dequantize_int4(self.weight_packed.data, self.weight_scales.data, packed, self.in_features)

    def forward(self, x):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype != np.float32 or data.ndim == 0 or data.shape[-1] != self.in_features:
            raise ValueError(f"Int4Linear: input must be float32 (*, {self.in_features}), got {data.dtype} "
                             f"of shape {data.shape}")
        rows = np.ascontiguousarray(data.reshape(-1, self.in_features))
        bias = self.bias.data if self.bias is not None else np.zeros(0, np.float32)
        with threads_for(rows.shape[0] * self.in_features * self.out_features):
            out = int4_linear(rows, self.weight_packed.data, self.weight_scales.data, self.zero_points(), bias)
        return Tensor(out.reshape(*data.shape[:-1], self.out_features))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}")


def _linears(model):
    return [(name, m) for name, m in model.named_modules() if type(m) is nn_layers.Linear]


def _replace(model, name, new):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def quantize_int4_weights(model, group_size=64, symmetric=False, method="rtn", calibrate=None, inplace=False, *,
                          mse=True, act_order=True, static_groups=True, damp=0.1, sequential=True):
    """`model` with every nn.Linear replaced by an Int4Linear (weights rounded by `method`; `mse`,
    `act_order`, `static_groups`, `damp` as `Int4Linear.from_float` and `quant.gptq.gptq_quantize` take them).

    The defaults are what measured best on all-MiniLM-L6-v2 (benchmarks/RESULTS.md, bench_int4.py): a zero
    point per group (onnxruntime's `MatMulNBitsQuantizer` default too), each group's range clipped where its
    rounding error is least, and for GPTQ act_order with static groups and damp 0.1. The layer-level
    functions keep the paper's reference defaults (no act_order, damp 0.01) and onnxruntime's rounding.

    method="gptq" needs `calibrate`, a function that runs calibration data through the model it is given
    (e.g. `lambda m: m.encode(sentences)`). With `sequential` (the default) the layers are quantized one at
    a time in the order the model lists them; each one's Hessian comes from its inputs in the model where
    the layers before it are already int4 (as the reference quantizes a transformer block after the ones
    before it, its `true_sequential` taken to single layers), so each layer's rounding also absorbs what the
    earlier layers' rounding changed: one calibration pass per layer. Without it, every Hessian comes from
    one pass of the float model. A Linear that calibration never reaches (a BERT pooler under mean
    pooling) has no Hessian: it is rounded to nearest, with a warning naming it.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_group_size(group_size)
    if method == "gptq" and not callable(calibrate):
        raise ValueError("method='gptq' needs calibrate, a function running calibration data through the model")
    if act_order and not static_groups:
        raise ValueError("act_order=True needs static_groups=True (groups of the permuted order need g_idx)")
    gptq_options = {"act_order": act_order, "static_groups": static_groups, "damp": damp} if method == "gptq" else {}
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    linears = _linears(model)
    hessians = [None] * len(linears)
    if method == "gptq" and not sequential:
        hessians = _accumulate_hessians(model, [linear for _, linear in linears], calibrate)
    for index, (name, linear) in enumerate(linears):
        H = hessians[index]
        if method == "gptq" and sequential:
            H = _accumulate_hessians(model, [linear], calibrate)[0]
        if method == "gptq" and H is None:
            warnings.warn(f"quantize_int4_weights: layer {name!r} received no inputs while calibrate ran; "
                          f"it is rounded to nearest")
        _replace(model, name, Int4Linear.from_float(linear, group_size, symmetric, "rtn" if H is None else method,
                                                    hessian=H, mse=mse, **(gptq_options if H is not None else {})))
    return model


def _accumulate_hessians(model, linears, calibrate):
    """[H = 2 / n X^T X] of the rows each of `linears` receives while `calibrate(model)` runs (float64,
    summed as it goes, so no inputs are kept); None for a layer that received none."""
    states = [{"xtx": np.zeros((m.in_features, m.in_features)), "rows": 0} for m in linears]

    def recorder(state, k):
        def record(module, args, output):
            x = np.asarray(args[0].data if isinstance(args[0], Tensor) else args[0], np.float64).reshape(-1, k)
            state["xtx"] += x.T @ x
            state["rows"] += x.shape[0]
        return record

    handles = [m.register_forward_hook(recorder(state, m.in_features)) for m, state in zip(linears, states)]
    try:
        with no_grad():
            calibrate(model)
    finally:
        for handle in handles:
            handle.remove()
    return [None if state["rows"] == 0 else 2.0 / state["rows"] * state["xtx"] for state in states]

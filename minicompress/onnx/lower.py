"""Which ONNX nodes become `nn` layers, and how their weights map onto the layer's parameters.

    Conv (2-D, constant W and B)          -> nn.Conv2d        (asymmetric pads: a Pad node before it)
    ConvTranspose (2-D, symmetric pads)   -> nn.ConvTranspose2d
    Gemm (constant B and a per-column C)  -> nn.Linear        weight = alpha B' (N, K), bias = beta C
    MatMul (constant 2-D right operand)   -> nn.Linear        weight = B^T, no bias
    BatchNormalization (constant stats)   -> nn.BatchNorm2d / 1d in eval mode, torch momentum = 1 - momentum
    LayerNormalization (constant Scale)   -> nn.LayerNorm     over the trailing Scale.shape dimensions
    com.microsoft MatMulNBits (constant B, scales, zero points, bias)
                                          -> quant.Int4Linear  the packed bytes as they are

Everything else (and these when their weights are computed in the graph) runs as an operator node. The
functions here take plain values (NumPy arrays, Python attributes) and need no onnx import.
"""
import numpy as np

from .. import nn
from ..graph.ops.nn import window_pads
from ..tensor import Tensor


def _param(module, name, array):
    getattr(module, name).data = np.ascontiguousarray(array, dtype=np.float32)


def _float32(*arrays):
    return all(a is None or a.dtype == np.float32 for a in arrays)


def lower(op_type, version, attrs, inputs, outputs, constant, rank, spatial, domain=""):
    """(layer, [pre-op node specs]) for a node that becomes a layer, or None to keep it an operator.

    `constant(value)` returns the constant array of a value name or None, `rank(value)` / `spatial(value)`
    what shape inference knows (None when unknown)."""
    fn = _LOWERINGS.get((domain, op_type))
    return None if fn is None else fn(version, attrs, inputs, outputs, constant, rank, spatial)


def _conv(version, attrs, inputs, outputs, constant, rank, spatial):
    w = constant(inputs[1])
    b = constant(inputs[2]) if len(inputs) > 2 and inputs[2] else None
    if w is None or w.ndim != 4 or (len(inputs) > 2 and inputs[2] and b is None) or not _float32(w, b):
        return None
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides") or [1, 1])
    dilations = list(attrs.get("dilations") or [1, 1])
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        size = spatial(inputs[0])
        if size is None:
            return None       # the padding depends on a size only known when the graph runs
        pads = window_pads(size, kernel, strides, dilations, None, auto_pad)
    else:
        pads = window_pads(None, kernel, strides, dilations, attrs.get("pads"), auto_pad)
    group = int(attrs.get("group", 1))
    layer = nn.Conv2d(w.shape[1] * group, w.shape[0], tuple(kernel), tuple(strides),
                      (pads[0], pads[1]) if pads[:2] == pads[2:] else 0, tuple(dilations), group, bias=b is not None)
    _param(layer, "weight", w)
    if b is not None:
        _param(layer, "bias", b)
    pre = [] if pads[:2] == pads[2:] else [("Pad", 2, {"pads": [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]})]
    return layer, pre


def _conv_transpose(version, attrs, inputs, outputs, constant, rank, spatial):
    w = constant(inputs[1])
    b = constant(inputs[2]) if len(inputs) > 2 and inputs[2] else None
    if w is None or w.ndim != 4 or (len(inputs) > 2 and inputs[2] and b is None) or not _float32(w, b):
        return None
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or attrs.get("output_shape") is not None:
        return None
    pads = list(attrs.get("pads") or [0] * 4) if attrs.get("auto_pad", "NOTSET") == "NOTSET" else [0] * 4
    if pads[:2] != pads[2:]:
        return None
    group = int(attrs.get("group", 1))
    layer = nn.ConvTranspose2d(w.shape[0], w.shape[1] * group, tuple(w.shape[2:]),
                               tuple(attrs.get("strides") or [1, 1]), tuple(pads[:2]),
                               tuple(attrs.get("output_padding") or [0, 0]), group, b is not None,
                               tuple(attrs.get("dilations") or [1, 1]))
    if any(op >= max(s, d) for op, s, d in zip(layer.output_padding, layer.stride, layer.dilation)):
        return None
    _param(layer, "weight", w)
    if b is not None:
        _param(layer, "bias", b)
    return layer, []


def _gemm(version, attrs, inputs, outputs, constant, rank, spatial):
    w = constant(inputs[1])
    c = constant(inputs[2]) if len(inputs) > 2 and inputs[2] else None
    if w is None or w.ndim != 2 or attrs.get("transA", 0) or (len(inputs) > 2 and inputs[2] and c is None):
        return None
    if not _float32(w, c):
        return None
    weight = w if attrs.get("transB", 0) else w.T                   # (N, K)
    n = weight.shape[0]
    if c is not None and not (c.size in (1, n) and (c.ndim <= 1 or c.shape in ((1, n), (1, 1)))):
        return None                                                 # a (M, N) C is not a per-feature bias
    layer = nn.Linear(weight.shape[1], n, bias=c is not None)
    _param(layer, "weight", np.float32(attrs.get("alpha", 1.0)) * weight)
    if c is not None:
        _param(layer, "bias", np.float32(attrs.get("beta", 1.0)) * np.broadcast_to(c.reshape(-1), (n,)))
    return layer, []


def _matmul(version, attrs, inputs, outputs, constant, rank, spatial):
    w = constant(inputs[1])
    r = rank(inputs[0])
    if w is None or w.ndim != 2 or not _float32(w) or r is None or r < 2:
        return None    # a 1-D left operand, or one of unknown rank, keeps numpy's matmul promotion rules
    layer = nn.Linear(w.shape[0], w.shape[1], bias=False)
    _param(layer, "weight", w.T)
    return layer, []


def _batch_norm(version, attrs, inputs, outputs, constant, rank, spatial):
    values = [constant(v) for v in inputs[1:5]]
    r = rank(inputs[0])
    if any(v is None for v in values) or not _float32(*values) or r not in (2, 3, 4) or attrs.get("training_mode", 0):
        return None
    if not attrs.get("spatial", 1) or any(outputs[1:]):
        return None
    scale, bias, mean, var = values
    layer = (nn.BatchNorm2d if r == 4 else nn.BatchNorm1d)(scale.shape[0], eps=float(attrs.get("epsilon", 1e-5)),
                                                          momentum=1.0 - float(attrs.get("momentum", 0.9)))
    _param(layer, "weight", scale)
    _param(layer, "bias", bias)
    layer.running_mean = Tensor(np.ascontiguousarray(mean, np.float32))
    layer.running_var = Tensor(np.ascontiguousarray(var, np.float32))
    layer.eval()
    return layer, []


def _layer_norm(version, attrs, inputs, outputs, constant, rank, spatial):
    scale = constant(inputs[1])
    bias = constant(inputs[2]) if len(inputs) > 2 and inputs[2] else None
    if scale is None or (len(inputs) > 2 and inputs[2] and bias is None) or any(outputs[1:]):
        return None
    if not _float32(scale, bias) or (bias is not None and bias.shape != scale.shape):
        return None
    axis, r = int(attrs.get("axis", -1)), rank(inputs[0])
    normalized = -axis if axis < 0 else (None if r is None else r - axis)
    if normalized != scale.ndim:
        return None          # a Scale that only broadcasts over the normalized axes
    layer = nn.LayerNorm(scale.shape, eps=float(attrs.get("epsilon", 1e-5)), bias=bias is not None)
    _param(layer, "weight", scale)
    if bias is not None:
        _param(layer, "bias", bias)
    return layer, []


def _matmul_nbits(version, attrs, inputs, outputs, constant, rank, spatial):
    from ..graph.ops.quantized import matmul_nbits_arrays
    from ..quant.weight_only import Int4Linear
    given = (inputs + [""] * 6)[1:6]                       # B, scales, zero_points, g_idx, bias
    values = [constant(v) if v else None for v in given]
    if any(v and value is None for v, value in zip(given, values)):
        return None                                        # a weight computed in the graph: the operator runs it
    b, scales, zero_points, g_idx, bias = values
    if bias is not None and bias.dtype != np.float32:
        return None
    K, N = int(attrs["K"]), int(attrs["N"])
    arrays = matmul_nbits_arrays(b, scales, zero_points, g_idx, K=K, N=N, bits=int(attrs.get("bits", 4)),
                                 block_size=int(attrs["block_size"]), node=outputs[0])
    return Int4Linear.from_packed(*arrays, K, int(attrs["block_size"]), None if bias is None else bias.reshape(N)), []


_LOWERINGS = {("", "Conv"): _conv, ("", "ConvTranspose"): _conv_transpose, ("", "Gemm"): _gemm,
              ("", "MatMul"): _matmul, ("", "BatchNormalization"): _batch_norm,
              ("", "LayerNormalization"): _layer_norm, ("com.microsoft", "MatMulNBits"): _matmul_nbits}

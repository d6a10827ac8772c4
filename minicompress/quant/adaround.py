"""AdaRound: learned up-or-down rounding of weights, layer by layer on calibration data, after Nagel, Amjad,
van Baalen, Louizos and Blankevoort, "Up or Down? Adaptive Rounding for Post-Training Quantization" (ICML 2020,
arXiv:2004.10568). The name and defaults follow AIMET's `Adaround.apply_adaround`.

    adaround(model, calibration, qconfig)              # in place: each weight now lies on its grid
    int4 = quantize_static(model, calibration, qconfig)

Round-to-nearest picks, for every weight alone, the grid point closest to it. What matters is the layer's
output, and there the rounding errors of a row add up; AdaRound chooses floor or ceil for each weight to make
the layer's output closest to the float one. With the grid of the qconfig's weight observer (scale s and
zero point z, per tensor or per channel, levels [qmin, qmax]):

    round to nearest   W_q = s (clip(round(W / s) + z, qmin, qmax) - z)
    soft AdaRound      W~(V) = s (clip(floor(W / s) + h(V) + z, qmin, qmax) - z)
                       h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1),  zeta = 1.1, gamma = -0.1
                       (the rectified sigmoid: it reaches 0 and 1 exactly, with a gradient until it does)
    objective          min_V  mean over samples of || f(W x + b) - f(W~(V) x~ + b) ||^2  +  lambda f_reg(V)
                       f_reg(V) = sum_ij 1 - |2 h(V_ij) - 1|^beta
    hard AdaRound      W_q = s (clip(floor(W / s) + [V >= 0] + z, qmin, qmax) - z)

x is the layer's input in the float model, x~ its input in the model whose earlier layers already hold their
rounded weights (the paper's asymmetric reconstruction: each layer also corrects what came before it); f is
the ReLU fused with the layer (ConvReLU2d, LinearReLU), or nothing. The squared error is summed over channels
and averaged over samples and positions (as AIMET). A layer called on inputs of several shapes (a detector's
head conv, shared by the pyramid levels) keeps one set of samples per shape; each step draws its batch from
one of them, chosen with probability proportional to its samples x positions, so the steps still average
over every position of every call. f_reg pushes every h(V) to 0 or 1; beta starts at 20
(only h far from 0 and 1 are pushed) and decays to 2 on a cosine schedule after a warm-up of
`warm_start` of the iterations without the regulariser (AIMET's schedule). V starts where h(V) equals the
fractional part of W / s, so the soft weight starts at W itself. The weights that set the observer's range
(each channel's or the tensor's min and max) keep their nearest level, so `convert`, which observes the rounded
weight again, finds the same grid. V is optimised with minicompress's autograd and `optim.Adam`.
"""
from __future__ import annotations

import copy
import math

import numpy as np

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v):
    """h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1) on a Tensor (its gradient flows where 0 < h < 1)."""
    return (v.sigmoid() * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def rounding_regularizer(h, beta):
    """f_reg = sum 1 - |2 h - 1|^beta: 0 when every h is 0 or 1, largest at h = 1/2."""
    return (1.0 - ((h * 2.0 - 1.0).abs() ** beta)).sum()


def annealed_beta(iteration, iterations, warm_start=0.2, beta_range=(20.0, 2.0)):
    """beta at `iteration`: None during the warm-up (no regulariser), then a cosine decay from
    beta_range[0] to beta_range[1] (AIMET's AdaroundLoss)."""
    start = warm_start * iterations
    if iteration < start:
        return None
    t = (iteration - start) / max(iterations - start, 1)
    high, low = beta_range
    return low + 0.5 * (high - low) * (1 + math.cos(t * math.pi))


def _grid(weight, weight_observer):
    """(scale, zero_point, qmin, qmax) of the observer's grid for `weight`, shaped to broadcast against it."""
    from ..tensor import Tensor
    observer = weight_observer()
    observer(Tensor(weight))
    scale, zero_point = observer.calculate_qparams()
    shape = (-1,) + (1,) * (weight.ndim - 1) if observer.qscheme.per_channel else (1,) * weight.ndim
    return (scale.astype(np.float32).reshape(shape), zero_point.astype(np.float32).reshape(shape),
            observer.quant_min, observer.quant_max, observer.qscheme.per_channel)


def _range_setters(weight, per_channel):
    """Where a weight equals its channel's (or the tensor's) min or max: those keep round-to-nearest."""
    flat = weight.reshape(weight.shape[0], -1) if per_channel else weight.reshape(1, -1)
    mask = (flat == flat.min(axis=1, keepdims=True)) | (flat == flat.max(axis=1, keepdims=True))
    return mask.reshape(weight.shape)


def _layer_forward(layer, x, weight, activation):
    from .. import functional as F
    from ..nn.layers import Linear
    if isinstance(layer, Linear):
        out = F.linear(x, weight, layer.bias)
    else:
        out = F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return out.relu() if activation else out


def round_layer(layer, inputs, targets, weight_observer, activation=False, iterations=1000, reg_param=0.01,
                beta_range=(20.0, 2.0), warm_start=0.2, lr=1e-3, batch_size=64, seed=0):
    """The AdaRound integer levels (float32 array, weight's shape) of one Conv2d / Linear: `inputs` (the
    layer's x~, N samples) should map to `targets` (f(W x + b)); see the module docstring. `inputs` and
    `targets` may also be equal-length lists of such arrays, one per input shape the layer is called on."""
    from ..autograd import no_grad
    from ..nn.module import Parameter
    from ..optim import Adam
    from ..tensor import Tensor

    if isinstance(inputs, np.ndarray):
        inputs, targets = [inputs], [targets]
    if not isinstance(targets, (list, tuple)) or len(inputs) != len(targets) or not inputs:
        raise ValueError(f"inputs and targets must be two arrays, or two lists of the same length (one array per "
                         f"input shape), got {len(inputs)} inputs and "
                         f"{len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__} targets")
    for k, (x, t) in enumerate(zip(inputs, targets)):
        if x.shape[0] != t.shape[0]:
            raise ValueError(f"inputs[{k}] has {x.shape[0]} samples but targets[{k}] has {t.shape[0]}")
    positions = np.array([t.size / t.shape[1] for t in targets], np.float64)   # samples x positions per shape
    w = layer.weight.data.astype(np.float32)
    scale, zero_point, qmin, qmax, per_channel = _grid(w, weight_observer)
    scaled = w * (np.float32(1) / scale)
    floor = np.floor(scaled)
    rest = np.clip(scaled - floor, 1e-6, 1 - 1e-6)
    v = Parameter(-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1).astype(np.float32))   # h(v) = rest
    optimizer = Adam([v], lr=lr)
    rng = np.random.default_rng(seed)
    base, scale_t, zp_t = Tensor(floor + zero_point), Tensor(scale), Tensor(zero_point)
    for iteration in range(iterations):
        g = rng.choice(len(inputs), p=positions / positions.sum()) if len(inputs) > 1 else 0
        pick = rng.choice(inputs[g].shape[0], size=min(batch_size, inputs[g].shape[0]), replace=False)
        h = rectified_sigmoid(v)
        soft = ((base + h).clamp(float(qmin), float(qmax)) - zp_t) * scale_t
        out = _layer_forward(layer, Tensor(inputs[g][pick]), soft, activation)
        diff = out - Tensor(targets[g][pick])
        loss = (diff * diff).sum(dim=1).mean()
        beta = annealed_beta(iteration, iterations, warm_start, beta_range)
        if beta is not None:
            loss = loss + rounding_regularizer(h, beta) * reg_param
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with no_grad():
        up = (v.data >= 0).astype(np.float32)
    levels = np.clip(floor + up + zero_point, qmin, qmax)
    nearest = np.clip(np.rint(scaled) + zero_point, qmin, qmax)
    keep = _range_setters(w, per_channel)
    return np.where(keep, nearest, levels).astype(np.float32), scale, zero_point


def _inputs_of(model, name, batches):
    """The inputs of submodule `name` on every batch (the model run in eval mode): one array per input
    shape, each the calls of that shape concatenated along the batch, in the order the shapes first came."""
    from .static import calibrate
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(
        lambda layer, args: seen.append(np.asarray(args[0].data, np.float32)))
    try:
        calibrate(model, batches)
    finally:
        handle.remove()
    by_shape = {}
    for x in seen:
        by_shape.setdefault(x.shape[1:], []).append(x)
    return [np.concatenate(calls) for calls in by_shape.values()]


def _forward_order(model, batch):
    from ..nn.layers import Conv2d, Linear
    from .static import calibrate
    order, handles = [], []
    for name, module in model.named_modules():
        if type(module) in (Conv2d, Linear):
            handles.append(module.register_forward_pre_hook(lambda layer, args, name=name: order.append(name)))
    try:
        calibrate(model, [batch])
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def adaround(model, data, qconfig=None, iterations=1000, reg_param=0.01, beta_range=(20.0, 2.0), warm_start=0.2,
             lr=1e-3, batch_size=64, seed=0):
    """AdaRound every float Conv2d / Linear of a (BN-folded: `quant.fuse_mobile_classifier` or
    `dfq.fold_all_batch_norms`) model, in place, layer by layer in forward order on the calibration
    batches `data`; afterwards each weight lies on the grid of `qconfig`'s weight observer, so
    `quantize_static(model, data, qconfig)` keeps the learned rounding. Returns {layer name: levels}.

    Args:
        qconfig: `model.qconfig`, else torch's x86 default (per-channel 8-bit; 4-bit is where it matters:
            `PerChannelMinMaxObserver.with_args(dtype=qint8, qscheme=per_channel_symmetric, quant_min=-7,
            quant_max=7)`).
        iterations, reg_param, beta_range, warm_start, lr, batch_size: the optimisation (module docstring;
            AIMET's defaults but for 10000 iterations).
    Raises:
        ValueError: bad hyper-parameters or no calibration batch, before any work.
    """
    from ..autograd import no_grad
    from ..nn.fused import ConvReLU2d, LinearReLU
    from ..tensor import Tensor
    from .qconfig import get_default_qconfig
    from .static import _batches

    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations={iterations!r} must be a positive int")
    if not (isinstance(beta_range, (tuple, list)) and len(beta_range) == 2 and beta_range[0] >= beta_range[1] > 0):
        raise ValueError(f"beta_range={beta_range!r} must be (start, end) with start >= end > 0")
    if not 0 <= warm_start < 1:
        raise ValueError(f"warm_start={warm_start!r} must be in [0, 1)")
    if not reg_param >= 0 or not lr > 0 or not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"reg_param={reg_param!r} must be >= 0, lr={lr!r} > 0 and batch_size={batch_size!r} "
                         f"a positive int")
    from .dfq import _check_folded
    _check_folded(model, "adaround")
    batches = [np.asarray(x.data, np.float32) for x in _batches(data)]
    if not batches:
        raise ValueError("data holds no batches; AdaRound needs calibration data")
    qconfig = qconfig or getattr(model, "qconfig", None) or get_default_qconfig("x86")
    reference = copy.deepcopy(model).eval()
    result = {}
    for name in _forward_order(model, batches[0]):
        layer = model.get_submodule(name)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        activation = isinstance(parent, (ConvReLU2d, LinearReLU)) and parent[0] is layer
        float_layer = reference.get_submodule(name)
        with no_grad():
            targets = [_layer_forward(float_layer, Tensor(x), float_layer.weight, activation).data
                       for x in _inputs_of(reference, name, batches)]
        inputs = _inputs_of(model, name, batches)
        levels, scale, zero_point = round_layer(layer, inputs, targets, qconfig.weight, activation, iterations,
                                                reg_param, beta_range, warm_start, lr, batch_size, seed)
        layer.weight.data = ((levels - zero_point) * scale).astype(np.float32)
        result[name] = levels
    return result

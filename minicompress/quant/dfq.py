"""Data-free quantization: cross-layer equalization, high-bias absorption and bias correction, after
Nagel, van Baalen, Blankevoort and Welling, "Data-Free Quantization Through Weight Equalization and Bias
Correction" (ICCV 2019, arXiv:1906.04721); the sections and appendices named below are the paper's, and
each formula is written out in full rather than cited by equation number. The names follow AIMET
(`aimet_torch.cross_layer_equalization`, `aimet_torch.bias_correction`).

    stats = fold_all_batch_norms(model, example)     # BN folded (quant.fuse), its (beta, |gamma|) kept
    pairs = equalize(model, example, stats)          # cross-layer equalization, in place
    absorb_high_bias(model, pairs, stats)
    correct_bias(model, qconfig, data=calibration)   # or stats=stats for the analytic, data-free version
    int8 = quantize_static(model, calibration, qconfig)

    equalize_model(model, example) is the first three lines.

Why: with one scale per tensor, a layer whose output channels have very different weight ranges (common
after BN folding, and in depthwise convs) quantizes its small channels to a few levels. All of this runs
on the float model before quantization; `quantize_static` then quantizes it as usual.

Cross-layer equalization (sec. 4.1, appendix A). For y = f(W2 f(W1 x + b1) + b2) with f ReLU (or no
activation), f(s z) = s f(z) for s > 0, so for any positive diagonal S

    W1' = S^-1 W1,   b1' = S^-1 b1,   W2' = W2 S                      (output channel c of layer 1 divided
                                                                       by s_c, input channel c of layer 2
                                                                       multiplied by it)

computes the same function. With r1_c the range of output channel c of W1 and r2_c the range of input
channel c of W2 (here max |w|: the symmetric range, up to a factor 2 that cancels), the choice that
maximises the summed per-channel precision  sum_c (r1_c / R1) (r2_c / R2)  (R the whole tensor's range) is

    s_c = (1 / r2_c) sqrt(r1_c r2_c) = sqrt(r1_c / r2_c),     so that  r1_c' = r2_c' = sqrt(r1_c r2_c).

A channel with r1_c = 0 or r2_c = 0 keeps s_c = 1. For a grouped or depthwise second conv, r2_c is the
range over every weight that reads input channel c (for depthwise: that channel's k x k kernel). A chain
conv -> conv -> conv has two pairs sharing the middle conv; equalizing one moves the other, so all pairs
are swept again until every s_c is within `tol` of 1 (the paper's "iterate until convergence").

ReLU6 is not scale-equivariant: s * relu6(z / s) = clamp(z, 0, 6 s), which equals clamp(z, 0, 6) only
where z <= 6 min(1, s). So a channel behind a ReLU6 is scaled only when the batch norm statistics put the
clamp out of reach, z <= beta + 3 |gamma| < 6 (the paper's 3-sigma bound, as for bias absorption), and
then with s_c >= (beta + 3 |gamma|) / 6; a channel that can reach 6, or has no statistics, keeps s_c = 1.

High-bias absorption (sec. 4.1, "absorbing high biases"). Equalizing divides b1 by s as well, and a
large bias widens the activation range. Where the pre-activation of channel c is ~ N(beta_c, gamma_c^2)
(the folded batch norm), relu(z - c) = relu(z) - c whenever z >= c, which holds for 99.87 % of values with

    c = max(0, beta - 3 |gamma|),     b1' = b1 - c,     b2' = b2 + W2 c      (W2 c summed over kernel taps)

exact but for the values below beta - 3 |gamma|, and for a padded k x k second conv, at the border
(where the zero padding is not shifted by c). Absorbed through ReLU only (and a ReLU6 out of reach).

Bias correction (sec. 4.2, appendix B). Quantizing W to W~ = W + eps shifts the output's mean by
E[y~] - E[y] = eps E[x]; subtracting that from the bias removes it:

    empirical (appendix D): b' = b - mean over calibration batches and positions of conv(x, eps)
                            = b - (E[W~ x] - E[W x]), x the layer's input in the float model
    analytic:               E[x_c] from the batch norm before the ReLU that feeds the layer: the mean of
                            a normal N(beta, gamma^2) clipped to [a, b] (appendix C), a = 0, b = inf for
                            ReLU (6 for ReLU6):
        E[clip(z, a, b)] = sigma (phi(alpha) - phi(beta')) + mu (Phi(beta') - Phi(alpha))
                           + a Phi(alpha) + b (1 - Phi(beta')),   alpha = (a - mu) / sigma, beta' = (b - mu) / sigma
                            and b' = b - eps E[x] (eps summed over kernel taps; exact away from padding).
    The layer's quantized weight W~ is what `convert` will use: the qconfig's weight observer on W.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..nn.activation import ReLU, ReLU6
from ..nn.fused import ConvReLU2d
from ..nn.layers import BatchNorm2d, Conv2d, Linear
from ..nn.module import Parameter

PreActivation = namedtuple("PreActivation", ["mean", "std"])
PreActivation.__doc__ = """A conv's output channels ~ N(mean, std^2), from the batch norm folded into it
(mean = beta, std = |gamma|); (C,) float64 arrays. Equalization and absorption keep them up to date."""

EqualizationPair = namedtuple("EqualizationPair", ["first", "activation", "second"])
EqualizationPair.__doc__ = """Two convs whose weights can be rescaled against each other: `first` (a dotted
module name) feeds `second` through `activation` (None, "relu" or "relu6") and nothing else reads it."""

_ACTIVATIONS = {ReLU: "relu", ReLU6: "relu6"}
_UPPER = {None: None, "relu": math.inf, "relu6": 6.0}


# ----- finding the layers ------------------------------------------------------------------------------

def _conv_and_activation(module):
    """(the float Conv2d, the activation inside it or None) of a conv node's layer, else (None, None)."""
    if type(module) is Conv2d:
        return module, None
    if type(module) is ConvReLU2d and type(module[0]) is Conv2d:
        return module[0], _ACTIVATIONS.get(type(module[1]))
    return None, None


def _graph(model, example_inputs):
    from ..graph.patterns import consumers
    from ..graph.trace import trace
    graph = trace(model, example_inputs)
    return graph, consumers(graph), set(graph.outputs)


def _links(model, example_inputs):
    """(first, activation, second, exclusive) for every conv whose input is another conv's output through
    Identity nodes and at most one ReLU / ReLU6; exclusive: no other node reads the values on the way."""
    graph, readers, outputs = _graph(model, example_inputs)
    nodes, links = graph.nodes, []
    for node in nodes:
        if node["kind"] != "module":
            continue
        conv, activation = _conv_and_activation(graph.get_submodule(node["target"]))
        if conv is None:
            continue
        value, exclusive = node["outputs"][0], True
        while value not in outputs and readers.get(value):
            after = [nodes[i] for i in readers[value]]
            exclusive = exclusive and len(after) == 1
            layers = [graph.get_submodule(n["target"]) if n["kind"] == "module" else None for n in after]
            if len(after) == 1 and after[0]["inputs"][:1] == [value] and layers[0] is not None:
                if after[0]["op_type"] == "Identity":
                    value = after[0]["outputs"][0]
                    continue
                if type(layers[0]) in _ACTIVATIONS and activation is None:
                    activation, value = _ACTIVATIONS[type(layers[0])], after[0]["outputs"][0]
                    continue
            for nxt, layer in zip(after, layers):
                if layer is not None and nxt["inputs"][:1] == [value] and _conv_and_activation(layer)[0] is not None:
                    links.append((node["target"], activation, nxt["target"], exclusive))
            break
    return links


def find_equalization_pairs(model, example_inputs):
    """The `EqualizationPair`s of a BN-folded float model, found in its traced data flow: conv (or
    ConvReLU2d) -> [ReLU / ReLU6] -> conv with no other reader of the first conv's output (a residual
    branch ends a pair: its sum needs both sides unscaled)."""
    return [EqualizationPair(a, act, b) for a, act, b, exclusive in _links(model, example_inputs) if exclusive]


def _check_folded(model, method):
    """A batch norm left in the model would sit between the layers a method rescales or rounds."""
    left = [name for name, m in model.named_modules() if isinstance(m, BatchNorm2d)]
    if left:
        names = ", ".join(left[:3]) + (", ..." if len(left) > 3 else "")
        raise ValueError(f"model still has BatchNorm2d layers ({names}); {method} works on a folded model: "
                         f"call fold_all_batch_norms(model, example_inputs) first")


def _conv(model, name):
    return _conv_and_activation(model.get_submodule(name))[0]


def fold_all_batch_norms(model, example_inputs):
    """Fold every conv -> BatchNorm2d of an eval-mode float model into the conv, in place (`quant.fuse`:
    conv+bn+relu -> ConvReLU2d, conv+bn -> Conv2d, the batch norm left as Identity), and return the
    batch norms' statistics {conv name: PreActivation(beta, |gamma|)} that absorption and analytic bias
    correction need (as AIMET's `fold_all_batch_norms`)."""
    from ..graph.patterns import CONV_BN, find_chains
    from ..graph.trace import trace
    from .fuse import fuse_mobile_classifier

    if model.training:
        raise ValueError("model: folding batch norm needs eval mode (call model.eval() first)")
    graph = trace(model, example_inputs)
    stats = {}
    for conv_node, bn_node in find_chains(graph, [CONV_BN]):
        conv_name = next(n["target"] for n in graph.nodes if n["name"] == conv_node)
        bn = graph.get_submodule(next(n["target"] for n in graph.nodes if n["name"] == bn_node))
        if type(bn) is not BatchNorm2d:
            continue
        gamma = np.ones(bn.num_features) if bn.weight is None else bn.weight.data.astype(np.float64)
        beta = np.zeros(bn.num_features) if bn.bias is None else bn.bias.data.astype(np.float64)
        stats[conv_name] = PreActivation(beta, np.abs(gamma))
    fuse_mobile_classifier(model, inplace=True, example_inputs=example_inputs)
    return stats


# ----- cross-layer equalization ------------------------------------------------------------------------

def output_ranges(weight):
    """max |w| of each output channel of a conv weight (O, C/g, kh, kw): r1 of the paper."""
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def input_ranges(weight, groups):
    """max |w| over every weight reading input channel c (c = group * C/g + i): r2 of the paper."""
    out, per_group = weight.shape[0], weight.shape[1]
    a = np.abs(weight).reshape(groups, out // groups, per_group, -1)
    return a.max(axis=(1, 3)).reshape(-1)


def _scale_inputs(weight, groups, s):
    """weight with input channel c multiplied by s_c (grouped layout as `input_ranges`)."""
    out, per_group = weight.shape[0], weight.shape[1]
    w = weight.reshape(groups, out // groups, per_group, -1) * s.reshape(groups, 1, per_group, 1)
    return w.reshape(weight.shape)


def _input_sum(weight, groups, c):
    """sum over input channels and taps of W[o, i, k] c[input channel of i]: W2 c per output channel o."""
    out, per_group = weight.shape[0], weight.shape[1]
    w = weight.astype(np.float64).reshape(groups, out // groups, per_group, -1).sum(axis=3)
    return np.einsum("goi,gi->go", w, np.asarray(c, np.float64).reshape(groups, per_group)).reshape(-1)


def equalization_scales(r1, r2, upper=None, clip=None):
    """s_c = sqrt(r1_c / r2_c) (1 where either range is 0); behind a ReLU6 (`clip` = 6) limited to
    s_c >= upper_c / 6 where the pre-activation bound `upper` < 6, and 1 elsewhere (module docstring)."""
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    live = (r1 > 0) & (r2 > 0)
    s = np.where(live, np.sqrt(np.where(live, r1, 1.0) / np.where(live, r2, 1.0)), 1.0)
    if clip is not None and math.isfinite(clip):
        if upper is None:
            return np.ones_like(s)
        upper = np.asarray(upper, np.float64)
        s = np.where(upper < clip, np.maximum(s, upper / clip), 1.0)
    return s


def equalize_pair(first, second, activation=None, upper=None):
    """Rescale conv `first` (output channels / s) against conv `second` (input channels * s) in place and
    return s (float64, (C,)); `upper` bounds first's pre-activation per channel, needed behind a ReLU6.

    The float function is unchanged (module docstring); the arithmetic is float64, stored in each
    weight's dtype."""
    if first.out_channels != second.in_channels:
        raise ValueError(f"first has {first.out_channels} output channels but second reads {second.in_channels}")
    w1, w2 = first.weight.data, second.weight.data
    if not (np.isfinite(w1).all() and np.isfinite(w2).all()):
        raise ValueError("equalization needs finite weights: a NaN or infinite weight has no range to equalize "
                         f"(first {first!r}, second {second!r})")
    s = equalization_scales(output_ranges(w1), input_ranges(w2, second.groups), upper, _UPPER[activation])
    first.weight.data = (w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))).astype(w1.dtype)
    if first.bias is not None:
        first.bias.data = (first.bias.data / s).astype(first.bias.data.dtype)
    second.weight.data = _scale_inputs(w2.astype(np.float64), second.groups, s).astype(w2.dtype)
    return s


def equalize(model, example_inputs, stats=None, max_iter=100, tol=1e-6):
    """Cross-layer equalization of every `find_equalization_pairs` pair of a BN-folded float model, in place,
    swept until max |s_c - 1| < tol (at most `max_iter` sweeps). `stats` (from `fold_all_batch_norms`)
    are rescaled with their channels; they also decide the ReLU6 channels. Returns the pairs."""
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive int")
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be positive")
    _check_folded(model, "equalize")
    stats = {} if stats is None else stats
    pairs = find_equalization_pairs(model, example_inputs)
    for _ in range(max_iter):
        change = 0.0
        for pair in pairs:
            pre = stats.get(pair.first)
            upper = None if pre is None else pre.mean + 3 * pre.std
            s = equalize_pair(_conv(model, pair.first), _conv(model, pair.second), pair.activation, upper)
            if pre is not None:
                stats[pair.first] = PreActivation(pre.mean / s, pre.std / s)
            change = max(change, float(np.abs(s - 1).max(initial=0.0)))
        if change < tol:
            break
    return pairs


def absorb_high_bias(model, pairs, stats):
    """High-bias absorption through each pair's ReLU, in place: c = max(0, beta - 3 |gamma|) moves from
    first's bias into second's (module docstring). Pairs without statistics, without an activation, or
    behind a ReLU6 its channels can reach are left alone. Returns {first name: c}."""
    absorbed = {}
    for pair in pairs:
        pre = stats.get(pair.first)
        if pre is None or pair.activation is None:
            continue
        if pair.activation == "relu6" and not (pre.mean + 3 * pre.std < 6.0).all():
            continue
        first, second = _conv(model, pair.first), _conv(model, pair.second)
        if first.bias is None:
            continue
        c = np.maximum(0.0, pre.mean - 3 * pre.std)
        first.bias.data = (first.bias.data - c).astype(first.bias.data.dtype)
        shift = _input_sum(second.weight.data, second.groups, c)
        if second.bias is None:
            second.bias = Parameter(np.zeros(second.out_channels, second.weight.data.dtype))
        second.bias.data = (second.bias.data + shift).astype(second.bias.data.dtype)
        stats[pair.first] = PreActivation(pre.mean - c, pre.std)
        absorbed[pair.first] = c
    return absorbed


def equalize_model(model, example_inputs, max_iter=100, tol=1e-6):
    """fold_all_batch_norms -> equalize -> absorb_high_bias on an eval-mode float model, in place (AIMET's
    `equalize_model`). Returns (pairs, stats) for `correct_bias`."""
    stats = fold_all_batch_norms(model, example_inputs)
    pairs = equalize(model, example_inputs, stats, max_iter, tol)
    absorb_high_bias(model, pairs, stats)
    return pairs, stats


# ----- bias correction ---------------------------------------------------------------------------------

def quantized_weight(weight, weight_observer):
    """W~: `weight` quantized and dequantized with a fresh observer from `weight_observer` (a qconfig's
    weight factory), exactly as `convert` will quantize it."""
    from ..qtensor import dequantize
    from ..tensor import Tensor
    from .modules import quantize_weight
    observer = weight_observer()
    observer(Tensor(np.asarray(weight, np.float32)))
    return np.asarray(dequantize(quantize_weight(np.asarray(weight, np.float32), observer)), np.float64)


def _phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x):
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x, np.float64) / math.sqrt(2)))


def clipped_normal_mean(mean, std, low=0.0, high=math.inf):
    """E[clip(z, low, high)] for z ~ N(mean, std^2) per element (appendix C); std = 0 gives clip(mean)."""
    mu, sigma = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    safe = np.where(sigma > 0, sigma, 1.0)
    alpha = (low - mu) / safe
    result = safe * _phi(alpha) + mu * (1 - _Phi(alpha)) + low * _Phi(alpha)
    if math.isfinite(high):
        beta = (high - mu) / safe
        result = (safe * (_phi(alpha) - _phi(beta)) + mu * (_Phi(beta) - _Phi(alpha)) + low * _Phi(alpha)
                  + high * (1 - _Phi(beta)))
    return np.where(sigma > 0, result, np.clip(mu, low, high))


def _float_layers(model):
    return [(name, m) for name, m in model.named_modules() if type(m) in (Conv2d, Linear)]


def _empirical_shift(layer, eps, x):
    """sum over the batch and positions of layer(x; weight eps, no bias), per output channel."""
    from .. import functional as F
    from ..tensor import Tensor
    x = np.asarray(x.data if hasattr(x, "data") else x, np.float32)
    e = Tensor(eps.astype(np.float32))
    if isinstance(layer, Linear):
        out = F.linear(Tensor(x), e).data.astype(np.float64)
        return out.reshape(-1, out.shape[-1]).sum(axis=0), out.size // out.shape[-1]
    out = F.conv2d(Tensor(x), e, None, layer.stride, layer.padding, layer.dilation, layer.groups).data
    out = out.astype(np.float64)
    return out.sum(axis=(0, 2, 3)), out.shape[0] * out.shape[2] * out.shape[3]


def correct_bias(model, qconfig=None, data=None, stats=None, example_inputs=None):
    """Bias correction of every float Conv2d / Linear of a (BN-folded) model, in place (module docstring).

    Args:
        model: the float model `quantize_static` will quantize.
        qconfig: whose weight observer decides W~; `model.qconfig`, else torch's x86 default.
        data: calibration batches (as `calibrate` takes them): empirical correction of every layer.
        stats: without data, `fold_all_batch_norms`' statistics: analytic correction of each conv whose
            input is a conv's output through ReLU / ReLU6 (or nothing); other layers are left alone.
        example_inputs: the forward's input to trace the model, needed for the analytic correction.
    Returns:
        {layer name: the correction subtracted from its bias} (float64).
    Raises:
        ValueError: neither data nor stats given, or stats without example_inputs.
    """
    from .qconfig import get_default_qconfig
    qconfig = qconfig or getattr(model, "qconfig", None) or get_default_qconfig("x86")
    if data is None and stats is None:
        raise ValueError("correct_bias needs data (empirical correction) or stats (analytic correction)")
    if data is None and example_inputs is None:
        raise ValueError("example_inputs: the analytic correction traces the model to find each layer's input")
    if data is not None:
        corrections = _empirical_corrections(model, qconfig, data)
    else:
        corrections = _analytic_corrections(model, qconfig, stats, example_inputs)
    for name, delta in corrections.items():
        layer = model.get_submodule(name)
        if layer.bias is None:
            layer.bias = Parameter(np.zeros(delta.shape[0], layer.weight.data.dtype))
        layer.bias.data = (layer.bias.data - delta).astype(layer.bias.data.dtype)
    return corrections


def _empirical_corrections(model, qconfig, data):
    from .static import calibrate
    layers = _float_layers(model)
    eps = {name: quantized_weight(m.weight.data, qconfig.weight) - m.weight.data for name, m in layers}
    sums, counts, handles = {}, {}, []

    def hook_for(name):
        def hook(layer, args):
            total, count = _empirical_shift(layer, eps[name], args[0])
            sums[name] = sums.get(name, 0.0) + total
            counts[name] = counts.get(name, 0) + count
        return hook

    for name, layer in layers:
        handles.append(layer.register_forward_pre_hook(hook_for(name)))
    try:
        calibrate(model, data)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name, _ in layers if counts.get(name)}


def _analytic_corrections(model, qconfig, stats, example_inputs):
    corrections = {}
    for first, activation, second, _ in _links(model, example_inputs):
        pre = stats.get(first)
        if pre is None:
            continue
        if activation is None:
            expected = pre.mean
        else:
            expected = clipped_normal_mean(pre.mean, pre.std, 0.0, _UPPER[activation])
        conv = _conv(model, second)
        eps = quantized_weight(conv.weight.data, qconfig.weight) - conv.weight.data
        name = second if type(model.get_submodule(second)) is Conv2d else f"{second}.0"   # inside ConvReLU2d
        corrections[name] = _input_sum(eps, conv.groups, expected)
    return corrections

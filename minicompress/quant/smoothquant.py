"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
Language Models", arXiv:2211.10438): move the quantization difficulty from the activations, whose few
outlier channels stretch every token's range, to the weights, which are easy to quantize.

For a Linear y = X W^T with X (tokens, K) and W (N, K), and per input channel j, from calibration data:

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)          alpha: the paper's migration strength, 0.5 default
    Y   = (X diag(s)^-1) (W diag(s))^T                   the same product in exact arithmetic

max|X_j| is the largest |x| of channel j over every calibration token (`get_act_scales`); max|W_j| the
largest |w| of column j over the layers that share the input (q, k and v: one s for all three). As the
reference implementation (mit-han-lab/smoothquant, smoothquant/smooth.py), both maxima are clamped to at
least 1e-5 (so s is finite and > 0) and so is s.

Where X diag(s)^-1 goes: the paper folds it into the LayerNorm before q/k/v and fc1 (`smooth_ln_fcs`:
gamma / s, beta / s), exact and free in a pre-norm transformer (OPT, BLOOM, Llama), where that LayerNorm's
output feeds only those Linears. BERT (MiniLM) is post-norm: the LayerNorm's output is also the residual
added before the next LayerNorm, LayerNorm(h + f(h)), so dividing it by s would change the model.
There, and before fc2 (after GELU, which does not commute with a scale) and the attention's output dense,
`smooth_lm` keeps the division on the layer (`nn.SmoothedLinear`); the per-token quantized layer multiplies
by 1 / s while it finds each row's range and quantizes it (kernels.pertoken), one pass it makes anyway.

    act_scales = get_act_scales(encoder, lambda m: m.encode(calibration_sentences))
    smooth_lm(encoder, act_scales, alpha=0.5)                       in place; float outputs unchanged
    qmodel = quantize_dynamic(encoder, {nn.Linear}, per_token=True)   int8 weights of W diag(s)

`smooth_quant` does the three steps on a copy.
"""
import copy

import numpy as np

from ..autograd import no_grad
from ..nn import layers as nn_layers
from ..nn.bert import BertLayer
from ..nn.layers import SmoothedLinear
from ..nn.module import Module
from ..tensor import Tensor
from .dynamic_quantize import quantize_dynamic

CLAMP = 1e-5      # the reference implementation's lower bound on max|X_j|, max|W_j| and s_j


def get_act_scales(model, calibrate):
    """{name: max|x_j| (in_features,) float32} for every Linear of `model`, over all the inputs it sees
    while `calibrate(model)` runs (as the reference's `calibration.get_act_scales`, with forward hooks).

    >>> act_scales = get_act_scales(encoder, lambda m: m.encode(sentences))
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if not callable(calibrate):
        raise TypeError(f"calibrate must be a callable taking the model, got {type(calibrate).__name__}")
    scales, handles = {}, []

    def hook(name):
        def record(module, args):
            x = args[0].data if isinstance(args[0], Tensor) else np.asarray(args[0])
            seen = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0).astype(np.float32)
            scales[name] = seen if name not in scales else np.maximum(scales[name], seen)
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn_layers.Linear):
            handles.append(module.register_forward_pre_hook(hook(name)))
    try:
        with no_grad():
            calibrate(model)
    finally:
        for handle in handles:
            handle.remove()
    if not scales:
        raise ValueError("calibrate(model) ran no Linear layer of the model: no activation scales")
    return scales


def check_alpha(alpha):
    """The migration strength must be a number in [0, 1] (0: no smoothing of X, 1: all of it into W)."""
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")


def smoothing_factors(act_scales, fcs, alpha=0.5):
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), clamped to >= 1e-5 (module docstring), float32 (K,);
    max|W_j| over the columns j of every Linear in `fcs` (they share the input)."""
    check_alpha(alpha)
    act = np.maximum(np.asarray(act_scales, np.float64), CLAMP)
    weight = np.max([np.abs(fc.weight.data).max(axis=0) for fc in fcs], axis=0).astype(np.float64)
    if act.shape != weight.shape:
        raise ValueError(f"act_scales has shape {act.shape}, the layers take {weight.shape[0]} input channels")
    return np.maximum(act ** alpha / np.maximum(weight, CLAMP) ** (1 - alpha), CLAMP).astype(np.float32)


def smooth_ln_fcs(ln, fcs, act_scales, alpha=0.5):
    """Fold X diag(s)^-1 into LayerNorm `ln` (gamma / s, beta / s) and diag(s) into each Linear of `fcs`
    (W diag(s)), in place, as the reference's `smooth_ln_fcs`. Exact only when `ln`'s output feeds nothing
    but `fcs` (a pre-norm block; not BERT's post-norm layers, see the module docstring). Returns s."""
    if not isinstance(ln, nn_layers.LayerNorm) or ln.weight is None:
        raise TypeError(f"ln must be a LayerNorm with a weight, got {type(ln).__name__}")
    fcs = list(fcs)
    for fc in fcs:
        if not isinstance(fc, nn_layers.Linear) or fc.in_features != ln.weight.shape[0]:
            raise ValueError(f"fcs must be Linears taking the LayerNorm's {ln.weight.shape[0]} features, got {fc!r}")
    scales = smoothing_factors(act_scales, fcs, alpha)
    ln.weight.data[...] = ln.weight.data / scales
    if ln.bias is not None:
        ln.bias.data[...] = ln.bias.data / scales
    for fc in fcs:
        fc.weight.data[...] = fc.weight.data * scales[None, :]
    return scales


def smooth_fcs(parent, names, act_scales, alpha=0.5):
    """Replace the Linears `parent.<name>` (sharing one input) by SmoothedLinears with one factor s; returns s."""
    fcs = [getattr(parent, name) for name in names]
    scales = smoothing_factors(act_scales, fcs, alpha)
    for name, fc in zip(names, fcs):
        setattr(parent, name, SmoothedLinear.from_linear(fc, scales))
    return scales


def smooth_lm(model, act_scales, alpha=0.5):
    """Smooth every BERT layer of `model` in place (as the reference's `smooth_lm` for its model types):
    q, k and v with one factor from their shared input, the attention's output dense, fc1 and fc2 each
    with their own. `act_scales` is `get_act_scales(model, ...)` (names relative to `model`). Returns
    `model`; its float outputs are unchanged up to rounding."""
    check_alpha(alpha)
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BertLayer)]
    if not layers:
        raise ValueError(f"smooth_lm found no BertLayer in {type(model).__name__}")
    prefix = lambda name, child: f"{name}.{child}" if name else child      # noqa: E731
    for name, layer in layers:
        attention = layer.attention.self
        groups = [(attention, ("query", "key", "value"), prefix(name, "attention.self")),
                  (layer.attention.output, ("dense",), prefix(name, "attention.output")),
                  (layer.intermediate, ("dense",), prefix(name, "intermediate")),
                  (layer.output, ("dense",), prefix(name, "output"))]
        for parent, names, where in groups:
            missing = [f"{where}.{n}" for n in names if f"{where}.{n}" not in act_scales]
            if missing:
                raise ValueError(f"act_scales has no entry for {missing}; compute it with get_act_scales(model, ...)")
            act = np.max([act_scales[f"{where}.{n}"] for n in names], axis=0)
            smooth_fcs(parent, names, act, alpha)
    return model


def smooth_quant(model, calibrate, alpha=0.5):
    """A copy of `model` smoothed (`smooth_lm`, factors from `calibrate(model)`) with every Linear quantized
    dynamically per token (int8 weights per output channel). `model` is left as it is.

    >>> qencoder = smooth_quant(encoder, lambda m: m.encode(calibration_sentences))
    """
    check_alpha(alpha)                      # before the copy and the calibration run
    smoothed = copy.deepcopy(model)
    smooth_lm(smoothed, get_act_scales(smoothed, calibrate), alpha)
    return quantize_dynamic(smoothed, {nn_layers.Linear}, per_token=True, inplace=True)

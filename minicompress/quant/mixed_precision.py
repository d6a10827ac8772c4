"""Mixed precision from sensitivity: each Conv2d / Linear weight stored at float32, int8 or int4, chosen
per layer to meet a target on the drop of a metric (`max_drop`) or on the model's bytes (`max_bytes`).

    sensitivity = layer_sensitivity(model, evaluate)              # {layer: {precision: drop}}, measured
    sizes = layer_sizes(model, sensitivity)                       # {layer: {precision: bytes}}, exact
    choice = choose_precisions(sensitivity, sizes, max_drop=0.01) # {layer: precision}, predicted
    mixed = apply_precisions(model, choice)                       # a copy with those weights
    result = search_precisions(model, evaluate, max_drop=0.01)    # all of it, the drop measured, stepping back

Precisions (weights only; activations stay float32, see `quant.weight_only`):

    float32   the layer as it is
    int8      per output channel symmetric int8 (Int8WeightOnlyLinear / Int8WeightOnlyConv2d: torch's
              default per-channel weight observer, round to nearest)
    int4      round-to-nearest int4 in groups of `group_size` along the input dimension (Int4Linear;
              Int4Conv2d over C / groups * kh * kw), MatMulNBits' layout, stored packed; a layer whose
              input dimension K is shorter takes the smallest group (a power of two >= 16) holding K, so a
              3x3 depthwise conv (K = 9) is padded to 16, not to 32 (`int4_group_size`)

Prediction. The drop of an assignment is predicted as the sum of the drops each layer causes when it alone
is at its precision and every other layer is float32 (`layer_sensitivity`: drop = metric(float model) -
metric(model with that one layer quantized), in the metric's own units); its bytes are the bytes of the
layers not chosen plus each chosen layer's bytes at its precision (`quant.model_size_bytes`), which is
exact. Additivity is the assumption of sensitivity-based mixed precision (HAWQ, Dong et al. 2019, sums
per-layer perturbations the same way); it is only a prediction, hence the measurement below.

Search: exact. `pareto_frontier` goes through the layers one at a time, keeping every (bytes, predicted
drop) that an assignment of the layers so far reaches and that no other reaches with no more bytes and no
more drop. Both sums are additive, so an assignment dominated on the first layers stays dominated
whatever the later layers take: the frontier after the last layer is exactly the Pareto set over all
precisions^layers assignments (a multiple-choice knapsack solved by dynamic programming over Pareto sets,
without enumerating them). `choose_precisions` then takes, with `max_drop`, the frontier point of fewest
bytes whose predicted drop is <= max_drop; with `max_bytes`, the point of least predicted drop whose
bytes are <= max_bytes. Each is the optimum over all assignments of the additive prediction.

Measurement and stepping back (`search_precisions`): the chosen assignment is applied and the metric
measured on the real model. With `max_drop`, if the measured drop exceeds max_drop, the search steps back
along the frontier to the next point with more bytes (a smaller predicted drop), applies and measures it,
and so on; the all-float32 model (measured drop 0) ends the walk, so the result always meets max_drop as
measured. With `max_bytes` the bytes are exact, so the chosen point meets the target on the real model by
construction (checked); its drop is measured and reported.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..nn import layers as nn_layers
from ..nn.module import Module
from .int4 import check_group_size
from .size import model_size_bytes
from .weight_only import Int4Conv2d, Int4Linear, Int8WeightOnlyConv2d, Int8WeightOnlyLinear

PRECISIONS = ("float32", "int8", "int4")
DEFAULT_GROUP_SIZE = 32


def int4_group_size(layer, group_size=DEFAULT_GROUP_SIZE):
    """`group_size`, or the smallest power of two >= 16 that holds the layer's whole input dimension K
    (in_features, or C / groups * kh * kw) when that is smaller: less padding, the same single group."""
    k = int(np.prod(layer.weight.shape[1:]))
    return min(check_group_size(group_size), max(16, 1 << (k - 1).bit_length()))


def quantize_layer(layer, precision, group_size=DEFAULT_GROUP_SIZE, symmetric=True):
    """Float Conv2d / Linear `layer` at `precision` (a new module; the layer itself for float32)."""
    if precision == "float32":
        return layer
    linear = type(layer) is nn_layers.Linear
    if precision == "int8":
        return (Int8WeightOnlyLinear if linear else Int8WeightOnlyConv2d).from_float(layer)
    if precision == "int4":
        return (Int4Linear if linear else Int4Conv2d).from_float(layer, int4_group_size(layer, group_size), symmetric)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def quantizable_layers(model):
    """{name: layer} of every float nn.Conv2d and nn.Linear of `model` (exact types: fused or quantized
    layers are not float layers any more), in the module tree's order."""
    return {name: m for name, m in model.named_modules() if type(m) in (nn_layers.Conv2d, nn_layers.Linear)}


class PrecisionSensitivity(dict):
    """{layer: {precision: drop}}, plus `baseline` (the metric of the float model); prints as a table."""

    def __init__(self, *args, baseline=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline = baseline

    def __str__(self):
        precisions = [p for p in PRECISIONS if any(p in row for row in self.values())]
        width = max([len("layer")] + [len(n) for n in self])
        lines = [f"drop of the metric when one layer alone is quantized (baseline {self.baseline:.4f})",
                 "layer".ljust(width) + "".join(p.rjust(10) for p in precisions)]
        for name, row in self.items():
            lines.append(name.ljust(width) + "".join(f"{row[p]:10.4f}" if p in row else " " * 10 for p in precisions))
        return "\n".join(lines)


def _check_model_layers(model, layers):
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    candidates = quantizable_layers(model)
    if layers is None:
        return candidates
    for name in layers:
        if name not in candidates:
            raise ValueError(f"layers: {name!r} is not a float Conv2d or Linear of the model "
                             f"(choose from {list(candidates)})")
    return {name: candidates[name] for name in layers}


def _check_precisions(precisions):
    precisions = tuple(precisions)
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precisions must be a non-empty subset of {PRECISIONS}, got {precisions!r}")
    return precisions


def _replace(model, name, new):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def layer_sensitivity(model, evaluate, layers=None, precisions=PRECISIONS, group_size=DEFAULT_GROUP_SIZE,
                      symmetric=True):
    """The drop of `evaluate` when each layer alone is at each precision, the other layers float.

    Args:
        model: a Module in eval mode; each layer is swapped in place for its quantized twin, evaluated,
            and put back (the same module object), so the model is left as it was.
        evaluate: callable(model) -> float, higher is better (e.g. test accuracy).
        layers: qualified names of float Conv2d / Linear layers; default all of them.
        precisions: a subset of ("float32", "int8", "int4"); float32's drop is 0 without evaluating.

    Returns:
        PrecisionSensitivity {layer: {precision: baseline - metric}} with `.baseline`.
    """
    chosen = _check_model_layers(model, layers)
    precisions = _check_precisions(precisions)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float, got {type(evaluate).__name__}")
    baseline = float(evaluate(model))
    result = PrecisionSensitivity(baseline=baseline)
    for name, layer in chosen.items():
        result[name] = {}
        for precision in precisions:
            if precision == "float32":
                result[name][precision] = 0.0
                continue
            _replace(model, name, quantize_layer(layer, precision, group_size, symmetric))
            try:
                result[name][precision] = baseline - float(evaluate(model))
            finally:
                _replace(model, name, layer)
    return result


def layer_sizes(model, layers, precisions=PRECISIONS, group_size=DEFAULT_GROUP_SIZE, symmetric=True):
    """{layer: {precision: bytes}}: `quant.model_size_bytes` of each layer at each precision (`layers`:
    names, or a sensitivity whose keys are the names)."""
    chosen = _check_model_layers(model, list(layers))
    precisions = _check_precisions(precisions)
    return {name: {p: model_size_bytes(quantize_layer(layer, p, group_size, symmetric)) for p in precisions}
            for name, layer in chosen.items()}


@dataclass
class FrontierPoint:
    """One assignment on the Pareto frontier: its layers' bytes, predicted drop and {layer: precision}."""

    bytes: int
    predicted_drop: float
    choice: dict


def _check_tables(sensitivity, sizes):
    if not isinstance(sensitivity, dict) or not sensitivity:
        raise ValueError("sensitivity must be a non-empty {layer: {precision: drop}} mapping")
    if not isinstance(sizes, dict) or set(sizes) != set(sensitivity):
        raise ValueError(f"sizes must have the same layers as sensitivity, got {sorted(sizes)} and "
                         f"{sorted(sensitivity)}")
    for name, row in sensitivity.items():
        common = [p for p in row if p in sizes[name]]
        if not common:
            raise ValueError(f"layer {name!r}: no precision has both a drop (sensitivity) and bytes (sizes)")
        for p in common:
            drop, size = row[p], sizes[name][p]
            if not isinstance(drop, numbers.Real) or not math.isfinite(drop):
                raise ValueError(f"sensitivity[{name!r}][{p!r}] must be a finite number, got {drop!r}")
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
                raise ValueError(f"sizes[{name!r}][{p!r}] must be a non-negative int, got {size!r}")


def pareto_frontier(sensitivity, sizes):
    """Every assignment not dominated in (bytes, predicted drop): FrontierPoints by bytes ascending, the
    predicted drop strictly descending (the dynamic programme of the module docstring)."""
    _check_tables(sensitivity, sizes)
    names = list(sensitivity)
    states = [(0, 0.0, ())]
    for name in names:
        options = [(sizes[name][p], float(sensitivity[name][p]), p) for p in sensitivity[name] if p in sizes[name]]
        expanded = sorted(((b + ob, d + od, c + (p,)) for b, d, c in states for ob, od, p in options),
                          key=lambda s: (s[0], s[1]))
        states = []
        for state in expanded:
            if not states or state[1] < states[-1][1]:
                states.append(state)
    return [FrontierPoint(b, d, dict(zip(names, c))) for b, d, c in states]


def _check_target(max_drop, max_bytes):
    if (max_drop is None) == (max_bytes is None):
        raise ValueError("give exactly one of max_drop and max_bytes")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real)
                                 or not math.isfinite(max_drop) or max_drop < 0):
        raise ValueError(f"max_drop must be a finite number >= 0 (in the metric's units), got {max_drop!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral)
                                  or max_bytes < 1):
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")


def _pick(frontier, max_drop, max_bytes, fixed_bytes=0):
    if max_drop is not None:
        feasible = [p for p in frontier if p.predicted_drop <= max_drop]
        if not feasible:
            raise ValueError(f"max_drop={max_drop!r}: no assignment is predicted to lose so little (the least "
                             f"predicted drop is {frontier[-1].predicted_drop!r})")
        return feasible[0]
    feasible = [p for p in frontier if fixed_bytes + p.bytes <= max_bytes]
    if not feasible:
        raise ValueError(f"max_bytes={max_bytes!r} is below the smallest model any assignment reaches "
                         f"({fixed_bytes + frontier[0].bytes} bytes)")
    return feasible[-1]


def choose_precisions(sensitivity, sizes, max_drop=None, max_bytes=None):
    """{layer: precision} meeting one target on the additive prediction, optimally (module docstring).

    max_drop: the largest predicted drop (sum of the layers' drops, the metric's units): the assignment
        of fewest bytes within it. max_bytes: the most bytes of the layers in `sizes`: the assignment of
        least predicted drop within it. Exactly one is given; ValueError when no assignment meets it.
    """
    _check_target(max_drop, max_bytes)
    return dict(_pick(pareto_frontier(sensitivity, sizes), max_drop, max_bytes).choice)


def apply_precisions(model, choice, group_size=DEFAULT_GROUP_SIZE, symmetric=True):
    """A copy of `model` with each layer named in `choice` ({layer: precision}) at that precision; layers
    not named stay as they are."""
    chosen = _check_model_layers(model, list(choice))
    for name, precision in choice.items():
        if precision not in PRECISIONS:
            raise ValueError(f"choice[{name!r}] must be one of {PRECISIONS}, got {precision!r}")
    model = copy.deepcopy(model)
    copies = quantizable_layers(model)
    for name in chosen:
        _replace(model, name, quantize_layer(copies[name], choice[name], group_size, symmetric))
    return model


@dataclass
class MixedPrecisionResult:
    """What `search_precisions` found: the chosen `model` and its `choice`, its measured `metric`, `drop`
    (baseline - metric) and `bytes` (the whole model's), the `predicted_drop`, every point `tried` on the
    way ((FrontierPoint, measured drop) pairs, in order), the `frontier`, `sensitivity` and `sizes`."""

    model: Module
    choice: dict
    metric: float
    drop: float
    predicted_drop: float
    bytes: int
    baseline: float
    tried: list = field(default_factory=list)
    frontier: list = field(default_factory=list, repr=False)
    sensitivity: dict = field(default_factory=dict, repr=False)
    sizes: dict = field(default_factory=dict, repr=False)
    fixed_bytes: int = 0


def search_precisions(model, evaluate, max_drop=None, max_bytes=None, layers=None, precisions=PRECISIONS,
                      group_size=DEFAULT_GROUP_SIZE, symmetric=True, sensitivity=None, log=None):
    """Measure the sensitivity (unless given), choose on the frontier, apply, measure, step back as the
    module docstring says; returns a MixedPrecisionResult.

    max_drop is in `evaluate`'s units (0.01 = one accuracy point for an accuracy in [0, 1]); max_bytes
    counts the whole model (`quant.model_size_bytes`), the layers left out of `layers` included.
    """
    _check_target(max_drop, max_bytes)
    chosen = _check_model_layers(model, layers)
    precisions = _check_precisions(precisions)
    say = log or (lambda *_: None)
    if sensitivity is None:
        sensitivity = layer_sensitivity(model, evaluate, list(chosen), precisions, group_size, symmetric)
    baseline = sensitivity.baseline if getattr(sensitivity, "baseline", None) is not None else float(evaluate(model))
    sizes = layer_sizes(model, list(sensitivity), precisions, group_size, symmetric)
    fixed_bytes = model_size_bytes(model) - sum(row["float32"] if "float32" in row else
                                                model_size_bytes(chosen[name]) for name, row in sizes.items())
    frontier = pareto_frontier(sensitivity, sizes)
    start = _pick(frontier, max_drop, max_bytes, fixed_bytes)
    if max_drop is not None:
        # fewest bytes first; the all-float model (drop 0 by definition) closes the walk
        walk = frontier[frontier.index(start):]
        all_float = {name: "float32" for name in sensitivity}
        if walk[-1].choice != all_float:
            walk.append(FrontierPoint(sum(model_size_bytes(chosen[n]) for n in sensitivity), 0.0, all_float))
    else:
        walk = [start]
    tried = []
    for point in walk:
        candidate = apply_precisions(model, point.choice, group_size, symmetric)
        metric = float(evaluate(candidate))
        tried.append((point, baseline - metric))
        say(f"mixed precision: {fixed_bytes + point.bytes:,} bytes, predicted drop {point.predicted_drop:.4f}, "
            f"measured {baseline - metric:.4f}")
        if max_drop is None or baseline - metric <= max_drop:
            break
    total = model_size_bytes(candidate)
    if total != fixed_bytes + point.bytes:
        raise RuntimeError(f"the mixed model has {total} bytes where its layers add up to {fixed_bytes + point.bytes}")
    return MixedPrecisionResult(candidate, dict(point.choice), metric, baseline - metric, point.predicted_drop,
                                total, baseline, tried, frontier, sensitivity, sizes, fixed_bytes)

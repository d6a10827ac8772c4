"""Fusion as graph rewrites: the one place that knows which chains of nodes run as one step.

Two rules, both over the data flow (a chain's intermediate values read by the next node only and not
graph outputs, as `patterns.find_chains` matches them):

- CONV_CHAINS: Conv -> BatchNormalization -> Relu/Clip, Conv -> BatchNormalization and Conv -> Relu/Clip
  become the convolution kernel with the rest in its epilogue (`conv_chain_parts` says whether a matched
  chain can: a plain float conv, an eval batch norm, constant clip bounds). The interpreter's inference
  plan (`graph/inference.py`) runs the same chains with the same kernel, so both paths give one answer.
- elementwise chains: an `Expression` step whose output only the next `Expression` reads, first thing,
  at the same shape and dtype, is merged into it: hard-swish as Add, Clip, Mul, Div (or HardSigmoid,
  Mul), SiLU as Sigmoid, Mul, run as one step writing one buffer, with no value in between; the
  Add, Clip, Mul, Div hard-swish by scalar constants as one pass (`kernels.fused_elementwise`).

- conv -> Mul -> Add (-> Relu / Clip) by per-channel constants (a batch norm an exporter folded into
  Mul and Add) joins the conv kernel's epilogue as its norm (`absorb_affine`).

`rewrite(...)` turns the node list into the steps of a plan; every node no rule or lowering takes runs
interpreted (`steps.interpreted_step`).
"""
from __future__ import annotations

import math

from .. import nn
from ..nn.fused import ACTIVATION_CLIPS
import numpy as np

from ..kernels.fused_elementwise import hard_swish
from .lowering import ConvKernel, conv_step, lower_node
from .patterns import clip_bounds, find_chains
from .steps import ACC, Call, Const, Expression, interpreted_step

CONV_CHAINS = ((nn.Conv2d, nn.BatchNorm2d, ("Relu", "Clip")), (nn.Conv2d, nn.BatchNorm2d),
               (nn.Conv2d, ("Relu", "Clip")))

# The names a reader knows for fused elementwise chains (by the labels of the steps merged).
CHAIN_NAMES = {("Add", "Clip", "Mul", "Div"): "hard-swish", ("HardSigmoid", "Mul"): "hard-swish",
               ("Sigmoid", "Mul"): "SiLU", ("Add", "Clip", "Div", "Mul"): "hard-swish"}


class NodeList:
    """A GraphModule's layers and outputs with another node list (what find_chains reads)."""

    def __init__(self, graph_module, nodes):
        self.nodes, self.outputs, self.constants = nodes, graph_module.outputs, graph_module.constants
        self._graph_module = graph_module
        self._buffers = graph_module._buffers

    def get_submodule(self, target):
        return self._graph_module.get_submodule(target)


def conv_chain_parts(graph_module, nodes):
    """(conv layer, batch norm layer or None, clip (lo, hi) or None) of a matched CONV_CHAINS chain, or
    None when the activation's bounds are computed in the graph."""
    conv = graph_module.get_submodule(nodes[0]["target"])
    bn, clip = None, None
    for node in nodes[1:]:
        layer = graph_module.get_submodule(node["target"]) if node["kind"] == "module" else None
        if isinstance(layer, nn.BatchNorm2d):
            bn = layer
        else:
            clip = _activation_clip(graph_module, node, layer)
            if clip is None:
                return None
    return conv, bn, clip


def _activation_clip(graph_module, node, layer):
    if layer is not None:
        return ACTIVATION_CLIPS.get(type(layer))
    if node["op_type"] == "Relu":
        return (0.0, math.inf)
    if any(v and v not in graph_module.constants for v in (node["inputs"] + ["", ""])[1:3]):
        return None
    lo, hi = clip_bounds(graph_module, node)
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def rewrite(graph_module, nodes, values, constants):
    """The steps of `nodes` (live, not folded; in order): fused chains, lowered nodes, interpreted nodes."""
    view = NodeList(graph_module, nodes)
    by_name = {node["name"]: node for node in nodes}
    fused, skipped = {}, set()
    for chain in find_chains(view, CONV_CHAINS):
        chain_nodes = [by_name[name] for name in chain]
        parts = conv_chain_parts(graph_module, chain_nodes)
        step = None if parts is None else conv_step(graph_module, chain_nodes, *parts, values)
        if step is not None:
            fused[chain[0]] = step
            skipped.update(chain[1:])
    steps = []
    for node in nodes:
        if node["name"] in skipped:
            continue
        step = fused.get(node["name"]) or lower_node(graph_module, node, values, constants)
        steps.append(step if step is not None else interpreted_step(graph_module, node, values))
    steps = merge_elementwise(steps, set(graph_module.outputs), values)
    for step in steps:
        if isinstance(step, Expression):
            step.calls = one_pass_hard_swish(step, values, constants)
    return absorb_affine(steps, set(graph_module.outputs), values, constants)


def one_pass_hard_swish(step, values, constants):
    """The Expression's calls with a leading Add, Clip, Mul, Div hard-swish (scalar constants, x read by
    the Add and the Mul) as one call of the one-pass kernel (`kernels.fused_elementwise.hard_swish`)."""
    calls = step.calls
    if len(calls) < 5 or [c[0] for c in calls[:5]] != [np.add, np.maximum, np.minimum, np.multiply, np.divide]:
        return calls
    (_, add), (_, low), (_, high), (_, mul), (_, div) = calls[:5]
    x = next((o for o in add if isinstance(o, int)), None)
    array = values.get(step.inputs[x]) if x is not None else None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.shape != values[step.outputs[0]].shape:
        return calls
    again = [o for o in mul if o is not ACC]           # the Mul's other operand: x again (any position naming it)
    if not (low[0] is ACC and high[0] is ACC and ACC in mul and len(again) == 1 and isinstance(again[0], int)
            and step.inputs[again[0]] == step.inputs[x] and div[0] is ACC):
        return calls
    scalars = [_scalar(o, step, constants, array.dtype) for o in (add[1 - add.index(x)], low[1], high[1], div[1])]
    if any(v is None for v in scalars):
        return calls
    return [(hard_swish, [x] + [Const(v) for v in scalars])] + list(calls[5:])


def _scalar(operand, step, constants, dtype):
    """A one-element constant operand (a Const, or an input naming a constant) as a scalar of `dtype`."""
    if isinstance(operand, Const):
        array = operand.value
    elif isinstance(operand, int) and isinstance(step.inputs[operand], str):
        array = constants.get(step.inputs[operand])
    else:
        return None
    if not isinstance(array, (np.ndarray, np.generic)) or np.size(array) != 1 or np.asarray(array).dtype != dtype:
        return None
    return np.asarray(array).reshape(()).astype(dtype)[()]


def absorb_affine(steps, graph_outputs, values, constants):
    """The steps with each conv -> Mul -> Add (-> Relu / Clip) by per-channel constants run as the conv
    kernel's epilogue: an exporter's folded batch norm (PaddlePaddle writes it as Mul and Add), taken as
    the epilogue's norm with mean 0, inv_std the scale, gamma 1, beta the shift, so (v - 0) * s * 1 + t
    has the bits of v * s + t."""
    readers = {}
    for step in steps:
        for v in step.inputs:
            if isinstance(v, str):
                readers[v] = readers.get(v, 0) + 1
    producer = {step.outputs[0]: k for k, step in enumerate(steps) if len(step.outputs) == 1}
    out, dropped = list(steps), set()
    for k, step in enumerate(steps):
        if not isinstance(step, Expression) or step.label not in ("Mul+Add", "Mul+Add+Relu", "Mul+Add+Clip"):
            continue
        source = [v for v in step.inputs if isinstance(v, str) and v in producer and isinstance(
            getattr(steps[producer[v]], "fn", None), ConvKernel)]
        if len(source) != 1 or readers.get(source[0]) != 1 or source[0] in graph_outputs:
            continue
        conv_index = producer[source[0]]
        kernel = steps[conv_index].fn
        affine = _affine_of(step, source[0], values, constants, kernel.weight.shape[0], kernel.weight.dtype)
        if kernel.norm is not None or kernel.clip is not None or affine is None or conv_index in dropped:
            continue
        scale, shift, clip = affine
        norm = (np.zeros_like(scale), scale, np.ones_like(scale), shift)
        conv = steps[conv_index]
        fused = Call(conv.label + "+" + step.label, conv.nodes + step.nodes, ConvKernel(kernel.conv, norm, clip, kernel.x_shape),
                     conv.inputs, step.outputs, writes_out=True)
        out[k] = fused
        dropped.add(conv_index)
    return [step for k, step in enumerate(out) if k not in dropped]


def _affine_of(step, value, values, constants, channels, dtype):
    """(scale (O,), shift (O,), clip or None) of an Expression Mul(value, s) -> Add(acc, t) (-> max/min by
    constants), s and t per-channel or scalar constants of `dtype`; None otherwise."""
    calls = step.calls
    (mul, mul_ops), (add, add_ops) = calls[0], calls[1]
    if mul is not np.multiply or add is not np.add:
        return None
    operands = [step.inputs[o] if isinstance(o, int) else o for o in mul_ops]
    if operands.count(value) != 1:
        return None
    s = _channel_vector(operands[1 - operands.index(value)], values, constants, channels, dtype)
    if ACC not in add_ops:
        return None
    t_ref = add_ops[1 - add_ops.index(ACC)]
    t = _channel_vector(step.inputs[t_ref] if isinstance(t_ref, int) else t_ref, values, constants, channels, dtype)
    if s is None or t is None or values[value].shape != values[step.outputs[0]].shape:
        return None
    lo, hi = -math.inf, math.inf
    for ufunc, ops in calls[2:]:
        bound = ops[1] if len(ops) == 2 and ops[0] is ACC and isinstance(ops[1], Const) else None
        if bound is None or np.ndim(bound.value) != 0:
            return None
        if ufunc is np.maximum:
            lo = float(bound.value)
        elif ufunc is np.minimum:
            hi = float(bound.value)
        else:
            return None
    return s, t, (None if len(calls) == 2 else (lo, hi))


def _channel_vector(ref, values, constants, channels, dtype):
    """The constant `ref` (a value name or Const) as an (O,) vector when it broadcasts per output channel
    over (N, O, H, W) (shape (O, 1, 1), (1, O, 1, 1), (1,) or scalar) and has `dtype`; else None."""
    array = ref.value if isinstance(ref, Const) else constants.get(ref) if isinstance(ref, str) else None
    if not isinstance(array, np.ndarray) and not isinstance(array, np.generic):
        return None
    array = np.asarray(array)
    if array.dtype != dtype or array.ndim > 4:
        return None
    shape = (1,) * (4 - array.ndim) + array.shape
    if shape[0] != 1 or shape[2:] != (1, 1) or shape[1] not in (1, channels):
        return None
    return np.ascontiguousarray(np.broadcast_to(array.reshape(-1), (channels,)), dtype=dtype)


def merge_elementwise(steps, graph_outputs, values):
    """The steps with each elementwise chain merged into one `Expression` (module docstring)."""
    readers = {}
    for step in steps:
        for v in step.inputs:
            if isinstance(v, str):
                readers[v] = readers.get(v, 0) + 1
    merged, pending = [], {}      # pending: output value -> Expression step not yet placed (waiting for its reader)
    for step in steps:
        if isinstance(step, Expression):
            for v in [v for v in step.inputs if isinstance(v, str) and v in pending]:
                if _mergeable(pending[v], step, v, values):
                    step = _merge(pending.pop(v), step, v)
                    break
        for v in [v for v in step.inputs if isinstance(v, str) and v in pending]:
            merged.append(pending.pop(v))      # read by a step it cannot merge into: placed before it
        out = step.outputs[0] if len(step.outputs) == 1 else None
        if (isinstance(step, Expression) and out and readers.get(out) == 1 and out not in graph_outputs):
            pending[out] = step
        else:
            merged.append(step)
    merged.extend(pending.values())
    return merged


def _mergeable(first, second, value, values):
    """Whether `second` can take `first`'s output as its accumulator: it reads it in its first call only,
    and writes a result of the same shape and dtype."""
    a, b = values.get(value), values.get(second.outputs[0])
    if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
        return False
    positions = {p for p, v in enumerate(second.inputs) if v == value}
    later = {o for _, operands in second.calls[1:] for o in operands if isinstance(o, int)}
    return not positions & later


def _merge(first, second, value):
    """One Expression: first's calls, then second's with `value` read as the accumulator."""
    inputs = list(first.inputs)
    remap = {}
    for p, v in enumerate(second.inputs):
        if v == value:
            remap[p] = ACC
        else:
            remap[p] = len(inputs)
            inputs.append(v)
    calls = list(first.calls) + [(ufunc, [remap[o] if isinstance(o, int) else o for o in operands])
                                 for ufunc, operands in second.calls]
    labels = first.label.split("+") + second.label.split("+")
    later = {o for _, operands in calls[1:] for o in operands if isinstance(o, int)}
    step = Expression("+".join(labels), first.nodes + second.nodes, calls, inputs, second.outputs,
                      in_place=tuple(p for p in range(len(inputs)) if p not in later))
    step.name = chain_name(labels)
    return step


def chain_name(labels):
    """The known chains within a merged chain's labels by name, the rest as labels ("hard-swish, Mul+Add"),
    or None when none is known."""
    parts, rest, k = [], [], 0
    while k < len(labels):
        known = next(((p, n) for p, n in CHAIN_NAMES.items() if tuple(labels[k:k + len(p)]) == p), None)
        if known is None:
            rest.append(labels[k])
            k += 1
            continue
        if rest:
            parts.append("+".join(rest))
            rest = []
        parts.append(known[1])
        k += len(known[0])
    if len(parts) == 0:
        return None
    return ", ".join(parts + (["+".join(rest)] if rest else []))

"""The inference plan of a GraphModule: what its interpreter loop does differently when no gradient is wanted.

onnxruntime rewrites a graph when a session starts: it folds BatchNorm into the conv before it and runs a
following Relu / Clip in the conv's epilogue, and it reuses buffers. The GraphModule keeps its nodes and
layers as they are (prune, quantize and export still see ordinary layers) and instead runs, under no_grad,

- every Conv -> BatchNormalization -> Relu/Clip, Conv -> BatchNormalization and Conv -> Relu/Clip chain of
  the data flow (found by `patterns.find_chains`: each intermediate value read by the next node only, the
  nodes consecutive in the node list) as
  one convolution kernel with the rest in its output pass (`nn.fused.fused_conv_clip_forward`, the bits
  of the nodes one by one); a chain whose layers cannot be fused at run time (a hook, a quantized
  replacement, another dtype) runs node by node;
- a Relu or Add operator node in place, over an input that is a fresh array (written by a Conv, Gemm,
  MatMul, BatchNormalization, Relu or elementwise arithmetic node, not a view of anything) that no other node
  reads and that is not a graph output (an Add only when that input already has the result's shape and
  dtype: checked at run time).

The plan is built once per graph and rebuilt when the nodes change (`signature`).
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..nn.fused import ACTIVATION_CLIPS
from .patterns import clip_bounds, consumers, find_chains

INFERENCE_CHAINS = ((nn.Conv2d, nn.BatchNorm2d, ("Relu", "Clip")), (nn.Conv2d, nn.BatchNorm2d),
                    (nn.Conv2d, ("Relu", "Clip")))

# Nodes whose output is a new array (never a view of an input): a Relu after one may overwrite it.
FRESH_OUTPUT_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu"}


def signature(graph_module):
    """What the plan depends on: the nodes' identities, names, wiring and targets, and the graph outputs."""
    return (tuple((id(n), n["name"], n["kind"], n.get("target"), n.get("op_type"), tuple(n["inputs"]),
                   tuple(n["outputs"])) for n in graph_module.nodes), tuple(graph_module.outputs),
            tuple(graph_module.constants))


class InferencePlan:
    """chains: {first node index: (last node index, batch-norm node index or None, clip (lo, hi) or None)};
    inplace: {index of a Relu or Add node: position of the input it may write over}; last_use: {value:
    index of the last node reading it}."""

    def __init__(self, graph_module):
        nodes = graph_module.nodes
        index_of = {node["name"]: i for i, node in enumerate(nodes)}
        self.last_use = {}
        for index, node in enumerate(nodes):
            for v in node["inputs"]:
                self.last_use[v] = index
        self.chains = {}
        for chain in find_chains(graph_module, INFERENCE_CHAINS):
            indices = [index_of[name] for name in chain]
            if indices != list(range(indices[0], indices[-1] + 1)):
                continue      # the loop runs a chain in place of its nodes: another node between them would be skipped
            last = nodes[indices[-1]]
            clip = None
            if last.get("op_type") in ("Relu", "Clip"):
                clip = _clip_of(graph_module, last)
                if clip is False:
                    continue
            second = nodes[indices[1]]
            is_bn = second["kind"] == "module" and isinstance(graph_module.get_submodule(second["target"]), nn.BatchNorm2d)
            bn = indices[1] if is_bn else None
            self.chains[indices[0]] = (indices[-1], bn, clip)
        readers = consumers(graph_module)
        producer = {v: node for node in nodes for v in node["outputs"] if v}
        protected = set(graph_module.outputs) | set(graph_module.constants)
        self.inplace = {}
        for index, node in enumerate(nodes):
            if node["kind"] != "op" or node["op_type"] not in ("Relu", "Add"):
                continue
            for position, value in enumerate(node["inputs"][:2]):
                source = producer.get(value)
                if (source is not None and source.get("op_type") in FRESH_OUTPUT_OPS
                        and len(readers.get(value, [])) == 1 and node["inputs"].count(value) == 1
                        and value not in protected):
                    self.inplace[index] = position
                    break


def run_in_place(node, args, position):
    """The Relu / Add node's result written over args[position]'s array, or None when it does not fit
    (an Add whose result would broadcast past that input or change its dtype)."""
    target = args[position].data
    if node["op_type"] == "Relu":
        return np.maximum(target, target.dtype.type(0), out=target)
    other = args[1 - position].data
    if other.dtype != target.dtype or np.broadcast_shapes(target.shape, other.shape) != target.shape:
        return None
    return np.add(target, other, out=target)     # addition commutes: the same bits as a + b


def _clip_of(graph_module, node):
    """(lo, hi) of the Relu / Clip node ending a chain, or False when a bound is computed in the graph."""
    if node["kind"] == "module":
        layer = graph_module.get_submodule(node["target"])
        return ACTIVATION_CLIPS.get(type(layer), False)
    if node["op_type"] == "Relu":
        return (0.0, math.inf)
    given = [v for v in (node["inputs"] + ["", ""])[1:3]]
    if any(v and v not in graph_module.constants for v in given):
        return False
    lo, hi = clip_bounds(graph_module, node)
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)

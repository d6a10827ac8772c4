"""The inference plan of a GraphModule: what its interpreter loop does differently when no gradient is wanted.

onnxruntime rewrites a graph when a session starts: it folds BatchNorm into the conv before it and runs a
following Relu / Clip in the conv's epilogue, and it reuses buffers. The GraphModule keeps its nodes and
layers as they are (prune, quantize and export still see ordinary layers) and instead runs, under no_grad,

- every Conv -> BatchNormalization -> Relu/Clip, Conv -> BatchNormalization and Conv -> Relu/Clip chain of
  the data flow (the rule `rewrite.CONV_CHAINS` a compiled plan fuses too, found by `patterns.find_chains`:
  each intermediate value read by the next node only; here the nodes also consecutive in the node list) as
  one convolution kernel with the rest in its output pass (`nn.fused.fused_conv_clip_forward`, the bits
  of the nodes one by one); a chain whose layers cannot be fused at run time (a hook, a quantized
  replacement, another dtype) runs node by node;
- a Relu, Clip (opset 11 on, constant bounds), Add, Sub, Mul or Div (opset 7 on) operator node in place,
  over an input that is a fresh array (written by a Conv, Gemm, MatMul, BatchNormalization, Relu or
  elementwise arithmetic node, or by a node run in place over a fresh array; never a view of anything)
  that no other node reads and that is not a graph output (a binary node only when that input already
  has the result's shape and dtype, and a Div only on floats: checked at run time). The elementwise
  chains of an imported graph (hard-swish as Add, Clip, Mul, Div) then allocate once instead of four
  times; on the large maps of a detector every allocation is page-faulted in afresh.

The plan is built once per graph and rebuilt when the nodes change (`signature`).
"""
from __future__ import annotations

import numpy as np

from .patterns import clip_bounds, consumers, find_chains
from .rewrite import CONV_CHAINS, conv_chain_parts

# Nodes whose output is a new array (never a view of an input): a Relu after one may overwrite it.
FRESH_OUTPUT_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu"}


def signature(graph_module):
    """What the plan depends on: the nodes' identities, names, wiring and targets, and the graph outputs."""
    return (tuple((id(n), n["name"], n["kind"], n.get("target"), n.get("op_type"), tuple(n["inputs"]),
                   tuple(n["outputs"])) for n in graph_module.nodes), tuple(graph_module.outputs),
            tuple(graph_module.constants))


class InferencePlan:
    """chains: {first node index: (last node index, batch-norm node index or None, clip (lo, hi) or None)};
    inplace: {index of a node run in place: position of the input it may write over}; clips: {index of
    a Clip node in inplace: its (lo, hi), None for an absent bound}; last_use: {value: index of the last
    node reading it}."""

    def __init__(self, graph_module):
        nodes = graph_module.nodes
        index_of = {node["name"]: i for i, node in enumerate(nodes)}
        self.last_use = {}
        for index, node in enumerate(nodes):
            for v in node["inputs"]:
                self.last_use[v] = index
        self.chains = {}
        for chain in find_chains(graph_module, CONV_CHAINS):
            indices = [index_of[name] for name in chain]
            if indices != list(range(indices[0], indices[-1] + 1)):
                continue      # the loop runs a chain in place of its nodes: another node between them would be skipped
            parts = conv_chain_parts(graph_module, [nodes[i] for i in indices])
            if parts is None:
                continue
            self.chains[indices[0]] = (indices[-1], indices[1] if parts[1] is not None else None, parts[2])
        readers = consumers(graph_module)
        protected = set(graph_module.outputs) | set(graph_module.constants)
        fresh = set()           # values that are new arrays when the plan runs
        self.inplace, self.clips = {}, {}
        for index, node in enumerate(nodes):
            if _in_place_kind(graph_module, node):
                span = 1 if node["op_type"] in ("Relu", "Clip") else 2
                for position, value in enumerate(node["inputs"][:span]):
                    if (value in fresh and len(readers.get(value, [])) == 1 and node["inputs"].count(value) == 1
                            and value not in protected):
                        self.inplace[index] = position
                        if node["op_type"] == "Clip":
                            self.clips[index] = clip_bounds(graph_module, node)
                        break
            if node.get("op_type") in FRESH_OUTPUT_OPS or index in self.inplace:
                fresh.update(v for v in node["outputs"][:1] if v)


BINARY_IN_PLACE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _in_place_kind(graph_module, node):
    """True for an operator node the plan may run over one of its inputs: Relu; Clip from opset 11 (Clip-6
    clamps to float32's range by default, which `clip_bounds` reads as no bound) with constant bounds;
    Add, Sub, Mul, Div from opset 7 (before it, a broadcast attribute is not NumPy's broadcasting)."""
    if node["kind"] != "op" or node.get("domain", "") != "":
        return False
    op_type, version = node["op_type"], node["version"]
    if op_type == "Relu":
        return True
    if op_type == "Clip":
        given = [v for v in (node["inputs"] + ["", ""])[1:3] if v]
        return version >= 11 and all(v in graph_module.constants for v in given)
    return op_type in BINARY_IN_PLACE and version >= 7


def run_in_place(node, args, position, clip=None):
    """The node's result written over args[position]'s array, or None when it does not fit (a binary
    result that would broadcast past that input or change its dtype; a Div of integers, which truncates).
    The ufuncs are the operators' own (Relu: max(x, 0); Clip: max then min with the bounds in x's dtype;
    a + b, a - b, a * b, a / b), so the bits are those of the node run normally."""
    target = args[position].data
    op_type = node["op_type"]
    t = target.dtype.type
    if op_type == "Relu":
        return np.maximum(target, t(0), out=target)
    if op_type == "Clip":
        lo, hi = clip
        if lo is not None:
            np.maximum(target, t(lo), out=target)
        if hi is not None:
            np.minimum(target, t(hi), out=target)
        return target
    other = args[1 - position].data
    if (other.dtype != target.dtype or np.broadcast_shapes(target.shape, other.shape) != target.shape
            or (op_type == "Div" and target.dtype.kind != "f")):
        return None
    a, b = (target, other) if position == 0 else (other, target)
    return BINARY_IN_PLACE[op_type](a, b, out=target)

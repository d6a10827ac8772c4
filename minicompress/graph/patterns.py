"""Find chains of nodes by pattern in a GraphModule's data flow (as torch.fx's pattern matching for fusion).

A pattern is a tuple of steps; a chain matches when node k+1 reads node k's output as its first input,
and that output is read by no other node and is not a graph output (so the chain can become one node
without anything else losing a value). A step is

    "Conv"                  an op_type: matches operator nodes and module nodes alike (a module node
                            carries the ONNX op_type of its layer: "Conv" for nn.Conv2d, "Gemm" for a
                            traced nn.Linear, "Relu" for nn.ReLU; see `trace.layer_op_type`)
    nn.Conv2d               a layer type: matches module nodes whose layer is an instance of it
    ("Relu", "Clip")        any one of several steps

    >>> find_chains(model, [CONV_BN_RELU, CONV_BN, CONV_RELU])
    [['conv1', 'bn1', 'relu1'], ['conv2', 'bn2']]

Patterns are tried in the order given at each node (list the longer first); a node belongs to at most one
chain. Only the op_type is matched: a "Clip" step matches any Clip, whatever its bounds (read them with
`clip_bounds` when it matters).
"""
from __future__ import annotations

import numpy as np

CONV_BN_RELU = ("Conv", "BatchNormalization", ("Relu", "Clip"))
CONV_BN = ("Conv", "BatchNormalization")
CONV_RELU = ("Conv", ("Relu", "Clip"))
LINEAR_RELU = (("Gemm", "MatMul"), ("Relu", "Clip"))
DEFAULT_PATTERNS = (CONV_BN_RELU, CONV_BN, CONV_RELU, LINEAR_RELU)


def consumers(graph_module):
    """{value name: [indices of the nodes reading it]} over the node list."""
    readers = {}
    for index, node in enumerate(graph_module.nodes):
        for v in node["inputs"]:
            if v:
                readers.setdefault(v, []).append(index)
    return readers


def step_matches(graph_module, node, step):
    """Whether `node` matches one step of a pattern (see the module docstring)."""
    if isinstance(step, tuple):
        return any(step_matches(graph_module, node, s) for s in step)
    if isinstance(step, str):
        return node.get("op_type") == step
    return node["kind"] == "module" and isinstance(graph_module.get_submodule(node["target"]), step)


def _single_output(node):
    outputs = [v for v in node["outputs"] if v]
    return outputs[0] if len(outputs) == 1 and len(node["outputs"]) == 1 else None


def find_chains(graph_module, patterns=DEFAULT_PATTERNS):
    """Node-name chains matching `patterns` (a list of step tuples), in node order.

    Args:
        graph_module: a GraphModule (imported with `onnx.load` or made by `trace`).
        patterns: patterns as described in the module docstring, tried in order at each node.

    Returns:
        list of lists of node names, each one chain; no node is in two chains.
    """
    if not patterns or isinstance(patterns[0], (str, type)):
        raise ValueError("patterns must be a list of step tuples, e.g. [('Conv', 'BatchNormalization')]")
    nodes = graph_module.nodes
    readers = consumers(graph_module)
    outputs = set(graph_module.outputs)
    used, chains = set(), []
    for start in range(len(nodes)):
        if start in used:
            continue
        for pattern in patterns:
            chain = _match(graph_module, nodes, readers, outputs, used, start, pattern)
            if chain:
                used.update(chain)
                chains.append([nodes[i]["name"] for i in chain])
                break
    return chains


def _match(graph_module, nodes, readers, outputs, used, start, pattern):
    chain, index = [], start
    for k, step in enumerate(pattern):
        node = nodes[index]
        if index in used or not step_matches(graph_module, node, step):
            return None
        chain.append(index)
        if k == len(pattern) - 1:
            return chain
        value = _single_output(node)
        if value is None or value in outputs or len(readers.get(value, [])) != 1:
            return None
        index = readers[value][0]
        if nodes[index]["inputs"][:1] != [value]:
            return None
    return chain


def node_by_name(graph_module, name):
    for node in graph_module.nodes:
        if node["name"] == name:
            return node
    raise KeyError(f"the graph has no node named {name!r}")


def clip_bounds(graph_module, node):
    """(min, max) of a Clip node (attributes before opset 11, constant inputs after; None when a bound is
    absent or computed in the graph), or of a traced nn.ReLU6 / nn.ReLU module node."""
    if node["kind"] == "module":
        return (0.0, 6.0) if node["op_type"] == "Clip" else (0.0, None)
    if node.get("version", 11) < 11:
        attrs = node.get("attrs", {})
        return attrs.get("min", -3.4028234663852886e38), attrs.get("max", 3.4028234663852886e38)
    bounds = []
    for v in (node["inputs"] + ["", ""])[1:3]:
        entry = graph_module.constants.get(v) if v else None
        bounds.append(None if entry is None else float(np.asarray(graph_module._buffers[entry[0]].data).reshape(-1)[0]))
    return tuple(bounds)

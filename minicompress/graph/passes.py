"""The graph passes a compiled plan starts from, each a small function over a GraphModule's node list:

    propagate(graph_module, arrays)        every value's array on the example inputs: shapes and dtypes
                                           (torch.fx's ShapeProp: the interpreter run once, keeping all)
    fold_constants(graph_module, values)   the nodes whose result does not depend on the inputs, for this
                                           input signature: every input a constant or folded, or a Shape /
                                           Size node (the shapes are bound by the signature)
    eliminate_dead_code(nodes, outputs, constants)
                                           the nodes some graph output needs, in their order

A plan is specialised to one input signature (dtypes and shapes), so a folded Shape is a constant of the
plan and the Reshape / Gather / Concat arithmetic an exporter writes around it folds with it.
"""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor

# Nodes whose result depends on the input's shape alone (bound by the signature), not on its values.
SHAPE_ONLY_OPS = {"Shape", "Size"}
# Nodes that draw random numbers: never folded, each run draws afresh.
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def value_of(entry):
    """A graph value as a compiled plan holds it: a Tensor's array; a QTensor (a quantized layer's output)
    as it is."""
    return entry.data if isinstance(entry, Tensor) else entry


def propagate(graph_module, arrays):
    """{value name: array (or QTensor)} of every value of the graph run on `arrays` (the interpreter with
    keep="all", under no_grad): the shapes and dtypes of one input signature."""
    with no_grad():
        _, env = graph_module.run(*arrays, keep="all")
    return {name: value_of(entry) for name, entry in env.items()}


def is_foldable(node, known):
    """True when `node`'s outputs are the same on every input of the signature: an operator node (not a
    random one) whose inputs are all in `known` (constants and folded values), or a Shape / Size node."""
    if node["kind"] != "op" or node["op_type"] in RANDOM_OPS:
        return False
    if node["op_type"] in SHAPE_ONLY_OPS and node.get("domain", "") == "":
        return True
    return all(v in known for v in node["inputs"] if v)


def fold_constants(graph_module, values):
    """({value: array} of the graph's constants and of every folded node's outputs, [indices of the folded
    nodes]). The folded values are those `propagate` computed (`values`)."""
    constants = {name: values[name] for name in graph_module.constants}
    folded = []
    for index, node in enumerate(graph_module.nodes):
        if is_foldable(node, constants):
            folded.append(index)
            constants.update((v, values[v]) for v in node["outputs"] if v)
    return constants, folded


def eliminate_dead_code(nodes, outputs, constants):
    """The nodes, in order, that compute a value some graph output needs (constants are known already)."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(v in needed and v not in constants for v in node["outputs"] if v):
            kept.append(node)
            needed.update(v for v in node["inputs"] if v)
    return kept[::-1]


def signature_of(arrays):
    """The input signature a plan is specialised to: (dtype, shape) per input."""
    return tuple((np.dtype(a.dtype).str, tuple(a.shape)) for a in arrays)

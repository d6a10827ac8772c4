"""`fuse(model)`: Conv+BN+ReLU fusion found by pattern in the graph, as `torch.ao.quantization.quantize_fx.fuse_fx`.

The runs are found in the data flow (`patterns.find_chains`: each intermediate value read by the next node
only), never by the order in which layers were registered, and each run is fused by the eager code
(`nn.fused.fuse_known_modules`: BN folded into the conv in eval mode, or kept inside ConvBn2d /
ConvBnReLU2d for QAT; the ReLU merged into ConvReLU2d / LinearReLU):

    conv -> bn -> relu    ConvReLU2d(conv with BN folded, ReLU)       conv -> relu    ConvReLU2d
    conv -> bn            Conv2d with BN folded                         linear -> relu  LinearReLU
    linear -> bn1d        Linear with BN folded

The fused module takes the first layer's place (same dotted name), the others become Identity, as in
`fuse_modules`; in the graph the run becomes one node writing the last node's output. A Relu operator node
of an imported graph fuses like an nn.ReLU layer. A Clip (ReLU6) ends no run: conv -> bn before it folds.
"""
from __future__ import annotations

import copy

from .. import nn
from .module import GraphModule
from .patterns import find_chains
from .trace import layer_op_type, trace

FUSION_PATTERNS = ((nn.Conv2d, nn.BatchNorm2d, "Relu"), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, "Relu"),
                   (nn.Linear, "Relu"), (nn.Linear, nn.BatchNorm1d))


def _layer(graph_module, node):
    if node["kind"] == "module":
        return graph_module.get_submodule(node["target"])
    return nn.ReLU()              # a Relu operator node (the only operator a fusion pattern admits)


def fuse(model, example_inputs=None, inplace=False, is_qat=False):
    """The GraphModule of `model` with every run of `FUSION_PATTERNS` fused (see the module docstring).

    Args:
        model: a GraphModule, or a Module to `trace` on `example_inputs`.
        example_inputs: the forward's inputs, needed to trace a Module (ignored for a GraphModule).
        inplace: fuse `model`'s own layers (a traced Module then holds the fused layers too, under the
            same names: this is how `quant.fuse_mobile_classifier` fuses a model in place); otherwise
            a deep copy is fused.
        is_qat: keep BN (ConvBn2d / ConvBnReLU2d) for `prepare_qat`, in training mode.

    Returns:
        the fused GraphModule.
    """
    from ..nn.fused import fuse_known_modules, replace_submodule
    if not isinstance(model, GraphModule):
        if example_inputs is None:
            raise ValueError("example_inputs is needed to trace a model that is not a GraphModule")
    if not inplace:
        model = copy.deepcopy(model)
    graph = model if isinstance(model, GraphModule) else trace(model, example_inputs)
    by_name = {node["name"]: node for node in graph.nodes}
    removed = set()
    for chain in find_chains(graph, FUSION_PATTERNS):
        nodes = [by_name[name] for name in chain]
        fused = fuse_known_modules([_layer(graph, node) for node in nodes], is_qat)
        for node, module in zip(nodes, fused):
            if node["kind"] == "module":
                replace_submodule(graph, node["target"], module)
                if model is not graph:        # the traced module's own tree (nested parents are shared)
                    replace_submodule(model, node["target"], module)
        first = nodes[0]
        first["outputs"] = list(nodes[-1]["outputs"])
        first["op_type"] = layer_op_type(fused[0])
        removed.update(chain[1:])
    graph.nodes = [node for node in graph.nodes if node["name"] not in removed]
    graph.validate()
    return graph

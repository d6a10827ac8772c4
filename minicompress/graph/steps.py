"""The steps of a compiled plan: what one line of its generated source calls.

A step reads values and constants and writes values. Three kinds:

- `Call`: one function call, `fn(*args)` or, when `writes_out`, `fn(*args, out=buffer)` writing its one
  output into a buffer the memory plan gives (a kernel: the fused convolution, a GEMM);
- `Expression`: a run of NumPy ufunc calls (`np.add(a, b, out=acc)`, then `np.minimum(acc, 6, out=acc)`,
  ...) over the step's inputs and the accumulator `acc`, the output being written; an elementwise node is
  one such run, a fused elementwise chain (hard-swish as Add, Clip, Mul, Div) the runs of its nodes in
  one step with no value in between;
- the interpreted step (`InterpretedOp`, `InterpretedModule`): a node the plan does not lower, run by its
  registered operator or its layer exactly as the interpreter runs it (a fresh output each call).

Every input of a step is a value name or a `Const` (an array, a scalar or None bound when compiling).
`in_place` lists the input positions whose memory the output may share: an input read only before the
first write (a Relu over its input, the first operand of an Add).
"""
from __future__ import annotations

import numpy as np

from ..nn.module import Module
from ..qtensor import QTensor
from ..tensor import Tensor
from . import registry


class Const:
    """A value fixed when compiling (an array, a NumPy scalar, None), bound as a name in the plan."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class Step:
    """Common fields: `label` (what the step runs: "Conv+BatchNormalization+Relu"), `nodes` (the graph
    node names it stands for), `inputs` (value names or Consts), `outputs` (value names; "" for an
    omitted one), `writes_out`, `in_place` (input positions the output may share memory with)."""

    writes_out = False
    interpreted = False
    name = None          # the name a reader knows a fused chain by ("hard-swish"), when it has one

    def __init__(self, label, nodes, inputs, outputs, in_place=()):
        self.label, self.nodes = label, list(nodes)
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.in_place = tuple(in_place)


class Call(Step):
    """`fn(*inputs)`; with writes_out, `fn(*inputs, out=buffer)` returns the buffer it wrote."""

    def __init__(self, label, nodes, fn, inputs, outputs, writes_out=False, in_place=()):
        super().__init__(label, nodes, inputs, outputs, in_place)
        self.fn, self.writes_out = fn, writes_out


ACC = "acc"     # an Expression operand: the output as written so far


class Expression(Step):
    """ufunc calls [(ufunc, [operand, ...])], operands being input positions (int), ACC or Consts; each
    call writes the output (the first may be the one allocating it)."""

    writes_out = True

    def __init__(self, label, nodes, calls, inputs, outputs, in_place=()):
        super().__init__(label, nodes, inputs, outputs, in_place)
        self.calls = calls


class InterpretedOp:
    """An operator node run by its registered class (as `GraphModule._run_node`): arrays in, the node's
    outputs as arrays (a QTensor as it is) out."""

    def __init__(self, node, n_outputs, quantized_inputs):
        cls = registry.lookup(node.get("domain", ""), node["op_type"], node["version"])
        self.op = cls()
        if "arithmetic" in node:
            self.op.arithmetic = node["arithmetic"]
        self.attrs = dict(node.get("attrs", {}))
        if getattr(cls, "needs_output_count", False):
            self.attrs["n_outputs"] = len(node["outputs"])
        self.name, self.op_type, self.n_outputs = node["name"], node["op_type"], n_outputs
        self.quantized_inputs = quantized_inputs

    def __call__(self, *values):
        if self.quantized_inputs:
            values = [v.data if isinstance(v, QTensor) else v for v in values]
        try:
            out = self.op.run(*values, **self.attrs)
        except (ValueError, IndexError, TypeError) as exc:
            raise type(exc)(f"node {self.name!r} ({self.op_type}): {exc}") from exc
        return _outputs(out, self.n_outputs)


class InterpretedModule:
    """A module node run by calling its layer on Tensors (an omitted input dropped, as the interpreter)."""

    def __init__(self, module, n_outputs):
        assert isinstance(module, Module)
        self.module, self.n_outputs = module, n_outputs

    def __call__(self, *values):
        out = self.module(*[Tensor._wrap(v) if isinstance(v, np.ndarray) else v for v in values if v is not None])
        return _outputs(out, self.n_outputs)


def _outputs(out, n_outputs):
    """The first n_outputs results as plan values: arrays, and QTensors as they are."""
    results = out if isinstance(out, tuple) else (out,)
    if len(results) < n_outputs:
        raise NotImplementedError(f"the optional output(s) {n_outputs - len(results)} of the node are not supported")
    values = tuple(r.data if isinstance(r, Tensor) else r if isinstance(r, QTensor) else np.asarray(r)
                   for r in results[:n_outputs])
    return values[0] if n_outputs == 1 else values


def interpreted_step(graph_module, node, values):
    """The `Call` running `node` as the interpreter does (the fallback of every node the plan does not lower)."""
    n_outputs = len(node["outputs"])
    if node["kind"] == "module":
        fn = InterpretedModule(graph_module.get_submodule(node["target"]), n_outputs)
        label = type(fn.module).__name__
    else:
        quantized = any(isinstance(values.get(v), QTensor) for v in node["inputs"] if v)
        fn = InterpretedOp(node, n_outputs, quantized)
        label = node["op_type"]
    inputs = [v if v else Const(None) for v in node["inputs"]]
    step = Call(label, [node["name"]], fn, inputs, node["outputs"])
    step.interpreted = True
    return step

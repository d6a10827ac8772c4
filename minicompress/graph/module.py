"""`GraphModule`: a Module whose forward is an interpreter loop over a list of nodes.

As torch.fx's GraphModule, it holds submodules plus a graph; unlike it, nothing is compiled to Python:
`forward` walks the nodes in topological order, keeping the values in a dict keyed by value name. A node
is a plain dict, so a graph module saves and loads through `minicompress.save` / `load` like any layer:

    {"name": "conv1", "kind": "module", "target": "conv1", "inputs": ["x"], "outputs": ["h"], "op_type": "Conv"}
    {"name": "relu1", "kind": "op", "op_type": "Relu", "domain": "", "version": 14, "attrs": {},
     "inputs": ["h"], "outputs": ["y"]}

`kind == "module"` calls the submodule `target` (a dotted name, as torch.fx's call_module; an `nn.Conv2d`,
`nn.Linear`, `nn.BatchNorm2d`, `nn.LayerNorm`, ...: prune, quantize and shrink see ordinary layers; `trace`
keeps a traced model's own names), `kind == "op"` runs the registered
operator class (domain, op_type, version) on the values' arrays (an optional "arithmetic" key, written by
`onnx.load(..., arithmetic=...)` on the integer operators, says how they sum uint8 x int8 products). Constants that are not layer weights are
buffers; `constants` maps their value names to [buffer name, shape] (the shape is kept because a model
file stores a 0-d array as shape (1,)). `print(model.graph)` lists the nodes.

Gradients flow through the submodules; the operator nodes compute on arrays (inference), so a loss
through an operator node does not reach the layers before it.
"""
from __future__ import annotations

import numpy as np

from ..autograd import is_grad_enabled
from ..nn.fused import fused_conv_clip_forward
from ..nn.module import Module
from ..qtensor import QTensor
from ..tensor import Tensor
from . import inference, registry
from .listing import Graph, format_shape


def _tensor(value):
    """A node's result as a graph value: Tensors and QTensors (a quantized layer's output) as they are."""
    return value if isinstance(value, (Tensor, QTensor)) else Tensor._wrap(np.asarray(value))


class GraphModule(Module):
    """A model as a graph: `inputs` (specs), `nodes` (topological order), `outputs` (value names).

    Args:
        inputs: [{"name": str, "dtype": str, "shape": [int | str | None, ...] or None}] in call order.
        outputs: value names returned, in order (a single output is returned as a Tensor, several as a tuple).
        nodes: node dicts as described in the module docstring.
        modules: {name: Module} the "module" nodes call.
        constants: {value name: array} constant values the operator nodes read.
    """

    def __init__(self, inputs, outputs, nodes, modules=None, constants=None, opset_import=None):
        super().__init__()
        self.inputs = [dict(spec) for spec in inputs]
        self.outputs = list(outputs)
        self.nodes = [dict(node) for node in nodes]
        self.opset_import = dict(opset_import or {})
        self.constants = {}
        for name, module in (modules or {}).items():
            self.add_module(name, module)
        for value, array in (constants or {}).items():
            self.add_constant(value, array)
        self.validate()

    # ----- construction ------------------------------------------------------------------------
    def add_constant(self, value, array, buffer_name=None):
        """Register `array` as a buffer that the graph reads under the value name `value`."""
        buffer_name = buffer_name or unique_name("const_" + sanitize(value), self._buffers)
        tensor = _tensor(array)
        self.register_buffer(buffer_name, tensor)
        self.constants[value] = [buffer_name, list(tensor.shape)]
        return buffer_name

    def validate(self):
        """Every node reads values defined before it (inputs, constants or earlier outputs), every
        "module" node names a submodule, every "op" node a registered operator."""
        defined = {spec["name"] for spec in self.inputs} | set(self.constants)
        for node in self.nodes:
            missing = [v for v in node["inputs"] if v and v not in defined]
            if missing:
                raise ValueError(f"node {node['name']!r} reads {missing}, which no earlier node, input or "
                                 "constant defines (nodes must be in topological order)")
            if node["kind"] == "module":
                try:
                    self.get_submodule(node["target"])
                except AttributeError:
                    raise ValueError(f"node {node['name']!r} calls submodule {node['target']!r}, which does not "
                                     "exist") from None
            elif node["kind"] == "op":
                registry.lookup(node.get("domain", ""), node["op_type"], node["version"])
            else:
                raise ValueError(f"node {node['name']!r} has kind {node['kind']!r}; expected 'module' or 'op'")
            defined.update(v for v in node["outputs"] if v)
        missing = [v for v in self.outputs if v not in defined]
        if missing:
            raise ValueError(f"graph outputs {missing} are not computed by any node")

    @property
    def graph(self):
        return Graph(self)

    # ----- running -----------------------------------------------------------------------------
    def _bind(self, args):
        if len(args) != len(self.inputs):
            names = [spec["name"] for spec in self.inputs]
            raise TypeError(f"the graph takes {len(self.inputs)} input(s) {names}, got {len(args)}")
        env = {}
        for spec, value in zip(self.inputs, args):
            env[spec["name"]] = _check_input(spec, value)
        return env

    def inference_plan(self):
        """The `graph.inference.InferencePlan` of the current nodes (built again when they change)."""
        key = inference.signature(self)
        cached = self.__dict__.get("_inference_plan")
        if cached is None or cached[0] != key:
            cached = (key, inference.InferencePlan(self))
            self.__dict__["_inference_plan"] = cached
        return cached[1]

    def run(self, *args, keep=None):
        """Run the graph; returns (outputs tuple, {value name: Tensor}) where the dict holds the values
        named in `keep` (every value when keep="all"). Without grad and keep, the inference plan applies
        (fused conv chains, in-place Relu: `graph/inference.py`)."""
        env = self._bind(args)
        for value, (buffer, shape) in self.constants.items():
            tensor = self._buffers[buffer]
            env[value] = tensor if list(tensor.shape) == shape else Tensor._wrap(tensor.data.reshape(shape))
        plan = self.inference_plan()
        last_use = plan.last_use
        fast = keep is None and not is_grad_enabled()
        pinned = set(self.outputs) | (set() if keep in (None, "all") else set(keep))
        nodes, index = self.nodes, 0
        while index < len(nodes):
            node, last = nodes[index], index
            if fast and index in plan.chains:
                last, bn, clip = plan.chains[index]
                out = fused_conv_clip_forward(self.get_submodule(node["target"]),
                                              None if bn is None else self.get_submodule(nodes[bn]["target"]), clip,
                                              env[node["inputs"][0]])
                if out is None:
                    last = index
                else:
                    env[nodes[last]["outputs"][0]] = out
            if last == index:
                args_ = [env[v] if v else None for v in node["inputs"]]
                result = None
                if fast and index in plan.inplace:
                    result = inference.run_in_place(node, args_, plan.inplace[index], plan.clips.get(index))
                results = self._run_node(node, args_) if result is None else (Tensor._wrap(result),)
                names = node["outputs"]
                if len([n for n in names if n]) > len(results) and any(names[len(results):]):
                    raise NotImplementedError(f"node {node['name']!r} ({node.get('op_type')}): the optional "
                                              f"output(s) {names[len(results):]} are not supported")
                for name, value in zip(names, results):
                    if name:
                        env[name] = _tensor(value)
            if keep != "all":
                for v in node["inputs"]:
                    if v and last_use.get(v, -1) <= last and v not in pinned and v not in self.constants:
                        env.pop(v, None)
            index = last + 1
        return tuple(env[v] for v in self.outputs), env

    def _run_node(self, node, args):
        if node["kind"] == "module":
            out = self.get_submodule(node["target"])(*[a for a in args if a is not None])
            return out if isinstance(out, tuple) else (out,)
        cls = registry.lookup(node.get("domain", ""), node["op_type"], node["version"])
        attrs = node.get("attrs", {})
        if getattr(cls, "needs_output_count", False):
            attrs = dict(attrs, n_outputs=len(node["outputs"]))
        arrays = [None if a is None else a.data for a in args]
        op = cls()
        if "arithmetic" in node:
            op.arithmetic = node["arithmetic"]
        try:
            out = op.run(*arrays, **attrs)
        except (ValueError, IndexError, TypeError) as exc:
            raise type(exc)(f"node {node['name']!r} ({node['op_type']}): {exc}") from exc
        return out if isinstance(out, tuple) else (out,)

    def forward(self, *args):
        outputs, _ = self.run(*args)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self):
        return f"inputs={[s['name'] for s in self.inputs]}, outputs={self.outputs}, nodes={len(self.nodes)}"


_NUMPY_KINDS = {"f": "floating-point", "i": "integer", "u": "unsigned integer", "b": "boolean"}


def _check_input(spec, value):
    """A Tensor for `value`, after checking its rank and static dimensions against the input's spec (a
    negative dimension, as a str or None, is dynamic)."""
    if isinstance(value, Tensor):
        tensor = value
    else:
        array = np.asarray(value)
        want = np.dtype(spec["dtype"]) if spec.get("dtype") else array.dtype
        if array.dtype != want and (array.dtype.kind == want.kind or not isinstance(value, np.ndarray)):
            array = array.astype(want)   # float64 -> float32 and Python lists: a cast, not a different value kind
        tensor = Tensor._wrap(array)
    want = spec.get("dtype")
    if want and tensor.dtype != np.dtype(want):
        raise TypeError(f"input {spec['name']!r} must have dtype {want}, got {tensor.dtype}")
    shape = spec.get("shape")
    if shape is not None:
        if tensor.ndim != len(shape) or any(isinstance(d, int) and d >= 0 and d != n for d, n in zip(shape, tensor.shape)):
            raise ValueError(f"input {spec['name']!r} must have shape {format_shape(shape)}, got {tensor.shape}")
    return tensor


def sanitize(name):
    """A value or node name as a Python identifier (module and buffer names): non-alphanumerics become _."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name)).strip("_") or "node"
    return "_" + out if out[0].isdigit() else out


def unique_name(base, taken):
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name

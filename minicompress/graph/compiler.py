"""`minicompress.compile(model, example_inputs)`: a model turned into compiled inference plans, one per
input signature (dtypes and shapes), as onnxruntime prepares a session and torch.fx recompiles `forward`.

A plan is built from the graph by passes one can read one at a time:

1. `passes.propagate`: the interpreter runs once on the example inputs, giving every value's shape and
   dtype (torch.fx's ShapeProp);
2. `passes.fold_constants`: nodes whose result is fixed for the signature (constant inputs; Shape, Size)
   are computed then, once; `passes.eliminate_dead_code`: nodes no output needs are dropped;
3. `rewrite.rewrite`: fused chains (conv + batch norm + activation, elementwise chains), lowered nodes
   (`lowering.py`) and, for every other node, the interpreted step that runs its operator or layer;
4. `memory.plan_memory`: every value's buffer in an arena allocated now, reused by values whose
   lifetimes do not overlap, and in place where safe;
5. `codegen.generate`: the Python source of the plan, one line per step, compiled to a function.

`print(plan)` shows the steps (fused ones named), the shapes and dtypes, and the buffer of each value.
The plan holds the model's weights as they are when it is compiled (compile again after changing
them); it runs without gradients. The interpreted `GraphModule` stays for training and for reading.

    >>> plan = minicompress.compile(model, (x,))
    >>> y = plan(x)                       # the model's outputs: a Tensor, or a tuple of them
    >>> print(plan)                       # the steps of the plan for x's signature
"""
from __future__ import annotations

import builtins
import linecache
import threading
import time

import numpy as np

from ..autograd import no_grad
from ..nn.module import Module
from ..tensor import Tensor
from .codegen import generate
from .memory import plan_memory
from .module import GraphModule, _check_input
from .passes import eliminate_dead_code, fold_constants, propagate, signature_of
from .rewrite import rewrite


def compile(model, example_inputs):
    """A `CompiledModel` of `model` (a GraphModule, or a Module traced on `example_inputs`), with the plan
    for the example inputs' signature built now.

    Args:
        model: a GraphModule (`minicompress.onnx.load`, `graph.trace`) or a Module (traced).
        example_inputs: a tuple (or list) of the inputs, arrays or Tensors, one per graph input; a single
            array or Tensor is taken as the one input.

    Raises:
        TypeError, ValueError: example_inputs that do not match the graph's inputs, naming the input.
    """
    from .trace import trace
    if not isinstance(model, Module):
        raise TypeError(f"model must be a GraphModule or a Module, got {type(model).__name__}")
    inputs = _as_tuple(example_inputs)
    graph_module = model if isinstance(model, GraphModule) else trace(model, inputs)
    return CompiledModel(graph_module, inputs)


def _as_tuple(example_inputs):
    if isinstance(example_inputs, (np.ndarray, Tensor)):
        return (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(f"example_inputs must be a tuple of arrays or Tensors, got {type(example_inputs).__name__}")
    return tuple(example_inputs)


class CompiledModel:
    """Callable like the model (`model(*inputs)` -> a Tensor or a tuple); `run(*arrays)` returns the
    outputs as a tuple of arrays. A new input signature compiles a new plan (kept in `plans`)."""

    def __init__(self, graph_module, example_inputs):
        self.graph_module = graph_module
        self.plans = {}
        self.plan_for(self.check_inputs(example_inputs, "example_inputs"))

    def check_inputs(self, inputs, what="inputs"):
        """The inputs as C-contiguous arrays, checked against the graph's input specs (count, dtype, rank,
        fixed dims), each error naming the input."""
        specs = self.graph_module.inputs
        if len(inputs) != len(specs):
            raise TypeError(f"{what}: the graph takes {len(specs)} input(s) {[s['name'] for s in specs]}, "
                            f"got {len(inputs)}")
        arrays = []
        for k, (spec, value) in enumerate(zip(specs, inputs)):
            if not isinstance(value, (np.ndarray, Tensor, list, tuple, float, int)):
                raise TypeError(f"{what}[{k}] (input {spec['name']!r}) must be an array or Tensor, "
                                f"got {type(value).__name__}")
            try:
                tensor = _check_input(spec, value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{what}[{k}]: {exc}") from None
            arrays.append(np.ascontiguousarray(tensor.data))
        return arrays

    def plan_for(self, arrays):
        key = signature_of(arrays)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = Plan(self.graph_module, arrays)
        return plan

    def run(self, *inputs):
        """The graph's outputs, a tuple of arrays, for `inputs` (arrays or Tensors)."""
        arrays = self.check_inputs(inputs)
        return self.plan_for(arrays)(*arrays)

    def __call__(self, *inputs):
        outputs = tuple(Tensor._wrap(v) if isinstance(v, np.ndarray) else v for v in self.run(*inputs))
        return outputs[0] if len(outputs) == 1 else outputs

    def __repr__(self):
        return "\n\n".join(str(plan) for plan in self.plans.values()) or "CompiledModel(no plan)"


class Plan:
    """The compiled plan of one input signature: `steps`, `memory` (MemoryPlan), `arena` (the buffers),
    `views` ({value: its buffer view}), `source` (the generated function's text), `compile_seconds` (of
    which `propagate_seconds` ran the interpreter on the example inputs).
    Calling it with arrays of the signature returns the outputs as a tuple of arrays (calls from several
    threads take turns: they share the arena)."""

    def __init__(self, graph_module, arrays):
        start = time.perf_counter()
        self.signature = signature_of(arrays)
        self.input_names = [spec["name"] for spec in graph_module.inputs]
        self.outputs = list(graph_module.outputs)
        values = propagate(graph_module, arrays)
        self.propagate_seconds = time.perf_counter() - start      # the one interpreted run, part of compile_seconds
        constants, folded = fold_constants(graph_module, values)
        folded_names = {graph_module.nodes[i]["name"] for i in folded}
        nodes = [n for n in graph_module.nodes if n["name"] not in folded_names]
        nodes = eliminate_dead_code(nodes, self.outputs, constants)
        self.n_nodes, self.n_folded = len(graph_module.nodes), len(folded)
        self.steps = rewrite(graph_module, nodes, values, constants)
        self.memory = plan_memory(self.steps, values, self.outputs)
        self.arena, self.views = self.memory.allocate(values)
        self.values = {v: (tuple(a.shape), a.dtype) if isinstance(a, np.ndarray) else (None, type(a).__name__)
                       for v, a in values.items()}
        used = {v for step in self.steps for v in step.inputs if isinstance(v, str)} | set(self.outputs)
        self._constants = {v: a for v, a in constants.items() if v in used}
        self.source, namespace = generate(self.steps, self.input_names, self.outputs, self._constants, self.views)
        filename = f"<minicompress plan {id(self):x}>"
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        builtins.exec(builtins.compile(self.source, filename, "exec"), namespace)  # noqa: S102  (generated source only)
        self._function = namespace["plan"]
        self._interpreted = any(step.interpreted for step in self.steps)
        self._lock = threading.Lock()
        self.compile_seconds = time.perf_counter() - start

    def __call__(self, *arrays):
        with self._lock:            # one arena: calls from several threads take turns
            if self._interpreted:
                with no_grad():
                    return self._function(*arrays)
            return self._function(*arrays)

    def profile(self, *arrays, repeat=5):
        """[(seconds, step)] per step, the median over `repeat` calls of a timed copy of the plan's source
        (the same steps and buffers, a clock read around each line), slowest first: where a call's time goes."""
        source, namespace = generate(self.steps, self.input_names, self.outputs, self._constants, self.views,
                                     timed=True)
        builtins.exec(builtins.compile(source, f"<minicompress timed plan {id(self):x}>", "exec"), namespace)  # noqa: S102
        runs = []
        for _ in range(repeat):
            seconds = [0.0] * len(self.steps)
            with no_grad():
                namespace["plan"](*arrays, seconds)
            runs.append(seconds)
        medians = np.median(np.array(runs), axis=0)
        return sorted(zip(medians.tolist(), self.steps), key=lambda pair: -pair[0])

    def buffer_ids(self):
        """{value: id of the arena buffer it is written into} (the same on every call)."""
        return {v: id(self.arena[i]) for v, i in self.memory.assignment.items()}

    def __str__(self):
        shape_text = ", ".join(f"{dtype}{list(shape)}" for dtype, shape in
                               ((np.dtype(d).name, s) for d, s in self.signature))
        head = (f"plan({shape_text}): {len(self.steps)} steps from {self.n_nodes} nodes ({self.n_folded} folded); "
                f"arena {len(self.arena)} buffers, {self.memory.total_bytes / 2**20:.2f} MiB; "
                f"compiled in {self.compile_seconds * 1e3:.0f} ms")
        lines = [head]
        for index, step in enumerate(self.steps):
            kind = "interpreted" if step.interpreted else (step.name or ("fused" if len(step.nodes) > 1 else "lowered"))
            outs = []
            for v in step.outputs:
                if not v:
                    continue
                shape, dtype = self.values.get(v, (None, "?"))
                where = "new array"
                if v in self.memory.assignment:
                    where = f"b{self.memory.assignment[v]}" + (" in place" if v in self.memory.in_place else "")
                shown = f"{np.dtype(dtype).name}{list(shape)}" if shape is not None else str(dtype)
                outs.append(f"{shown} -> {where}")
            lines.append(f"  {index:>3} {step.label:<40} {kind:<12} {'; '.join(outs):<44} nodes: {', '.join(step.nodes)}")
        return "\n".join(lines)

    __repr__ = __str__


__all__ = ["CompiledModel", "Plan", "compile"]

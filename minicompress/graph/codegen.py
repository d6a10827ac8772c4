"""The generated Python source of a compiled plan (as torch.fx's `GraphModule.recompile` writes `forward`).

One line per step, each one call on local variables:

    def plan(v0):
        v1 = f0(v0, out=m1)                                   # 0 Conv+BatchNormalization+Relu
        v2 = np.add(v1, k0, out=m2); np.maximum(v2, k1, out=v2); ...   # 1 Add+Clip+Mul+Div
        v3 = f2(v2)                                            # 2 Resize (interpreted)
        return (v3,)

Every identifier is generated: values v0, v1, ... in the order they are defined, graph constants c0, ...,
bound constants k0, ..., step functions f0, ..., buffers m0, ... (each a view of the arena with the value's
shape and dtype); `np` is NumPy. No node or value name read from a model file reaches the source; the
comment after a step names its operator types, reduced to letters, digits and `_+-()` so it stays a comment.
"""
from __future__ import annotations

import re

import numpy as np

from .steps import ACC, Const, Expression

_SAFE_COMMENT = re.compile(r"[^A-Za-z0-9_+\-() ]")


class Names:
    """Generated identifiers for values, graph constants, bound constants, functions and buffers."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.values = {}
        self._bound = {}

    def value(self, name):
        if name not in self.values:
            self.values[name] = f"v{len(self.values)}"
        return self.values[name]

    def bind(self, prefix, obj, key=None):
        key = id(obj) if key is None else key
        if (prefix, key) not in self._bound:
            ident = f"{prefix}{sum(1 for p, _ in self._bound if p == prefix)}"
            self._bound[(prefix, key)] = ident
            self.namespace[ident] = obj
        return self._bound[(prefix, key)]


def _callable_name(names, fn):
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name.isidentifier() and getattr(np, name, None) is fn:
        return f"np.{name}"
    return names.bind("k", fn)


def generate(steps, input_names, graph_outputs, constants, views, timed=False):
    """(source, namespace) of the plan function `plan(*inputs) -> tuple of outputs`.

    steps: the plan's steps; input_names: the graph's input value names in call order; constants:
    {value: array} of the graph's constants and folded values; views: {planned value: its buffer view}.
    timed: the function also takes `seconds`, a list with an entry per step, and adds each step's wall
    time to it (`Plan.profile`)."""
    namespace = {"np": np}
    if timed:
        import time
        namespace["clock"] = time.perf_counter
    names = Names(namespace)
    args = [names.value(v) for v in input_names]
    for value, array in constants.items():
        names.values.setdefault(value, None)
        names.values[value] = names.bind("c", array, key=("constant", value))
    last_read = {}
    for index, step in enumerate(steps):
        for v in step.inputs:
            if isinstance(v, str):
                last_read[v] = index
    keep = set(graph_outputs) | set(views) | set(constants)
    lines = [f"def plan({', '.join(args + (['seconds'] if timed else []))}):"]
    for index, step in enumerate(steps):
        operands = [names.bind("k", v.value, key=("const", id(v))) if isinstance(v, Const) else names.value(v)
                    for v in step.inputs]
        if isinstance(step, Expression):
            text = _expression(names, step, operands, views)
        else:
            text = _call(names, step, index, operands, views)
        dead = sorted({v for v in step.inputs if isinstance(v, str) and last_read.get(v) == index and v not in keep})
        if dead:
            text += "; del " + ", ".join(names.value(v) for v in dead)
        note = _SAFE_COMMENT.sub("_", step.label + (" (interpreted)" if step.interpreted else ""))
        if timed:
            text = f"t = clock(); {text}; seconds[{index}] += clock() - t"
        lines.append(f"    {text:<72}  # {index} {note}")
    # an output that is a constant is copied: the caller owns what a run returns
    results = [names.value(v) + (".copy()" if v in constants else "") for v in graph_outputs]
    lines.append(f"    return ({', '.join(results)}{',' if len(results) == 1 else ''})")
    return "\n".join(lines) + "\n", namespace


def _buffer(names, value, views):
    return names.bind("m", views[value], key=("buffer", value)) if value in views else None


def _expression(names, step, operands, views):
    out = names.value(step.outputs[0])
    buffer = _buffer(names, step.outputs[0], views)
    parts = []
    for k, (ufunc, refs) in enumerate(step.calls):
        args = [out if r is ACC else names.bind("k", r.value, key=("const", id(r))) if isinstance(r, Const)
                else operands[r] for r in refs]
        fn = _callable_name(names, ufunc)
        if k == 0:
            parts.append(f"{out} = {fn}({', '.join(args)}" + (f", out={buffer})" if buffer else ")"))
        else:
            parts.append(f"{fn}({', '.join(args)}, out={out})")
    return "; ".join(parts)


def _call(names, step, index, operands, views):
    fn = names.bind("f", step.fn, key=("step", index))
    outs = [names.value(v) if v else "_" for v in step.outputs]
    target = outs[0] if len(outs) == 1 else ", ".join(outs)
    buffer = _buffer(names, step.outputs[0], views) if step.writes_out else None
    args = ", ".join(operands + ([f"out={buffer}"] if buffer else []))
    return f"{target} = {fn}({args})"

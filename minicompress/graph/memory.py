"""The memory plan of a compiled plan: which buffer of an arena each value is written into.

As onnxruntime's allocation planner: every value a step writes into a given buffer (`Step.writes_out`)
is *planned*, unless a graph output is, or may view, it (the caller keeps the outputs, so they are new
arrays each call). A planned value lives from the step writing it to the last step reading it or any
value that may view it (an interpreted Reshape, Transpose or Slice may return a view of its input, so its
output keeps the input's buffer alive). Walking the steps in order, a value takes

1. the buffer of an input it may overwrite (`Step.in_place`), when that input dies at this step, has the
   same shape and dtype, and no later operand of the step reads it; else
2. the smallest free buffer large enough; else the largest free one, grown; else a new buffer.

A buffer is free again after the last step that reads a value living in it. The arena is allocated once,
when compiling; a run then writes the planned values into the same memory every time (no page faults).
"""
from __future__ import annotations

import numpy as np


class MemoryPlan:
    """buffers: [size in bytes]; assignment: {value: buffer index}; in_place: {value written over an input}."""

    def __init__(self, buffers, assignment, in_place):
        self.buffers, self.assignment, self.in_place = buffers, assignment, in_place

    def allocate(self, values):
        """(arena: [np.uint8 arrays], {value: view of its buffer with the value's shape and dtype})."""
        arena = [np.empty(max(size, 1), np.uint8) for size in self.buffers]
        views = {}
        for value, index in self.assignment.items():
            example = values[value]
            views[value] = arena[index][:example.nbytes].view(example.dtype).reshape(example.shape)
        return arena, views

    @property
    def total_bytes(self):
        return sum(self.buffers)


def plan_memory(steps, values, graph_outputs):
    """The MemoryPlan of `steps` (see the module docstring); `values` holds each value's example array."""
    produced_by = {}
    for index, step in enumerate(steps):
        for v in step.outputs:
            if v:
                produced_by[v] = index
    candidates = {step.outputs[0] for step in steps if step.writes_out and isinstance(values.get(step.outputs[0]), np.ndarray)}
    # may_view[v]: the candidate values whose memory v may be (a view of)
    may_view = {}
    for step in steps:
        if step.writes_out:
            may_view[step.outputs[0]] = {step.outputs[0]}
            continue
        sources = set().union(*[may_view.get(v, set()) for v in step.inputs if isinstance(v, str)])
        for v in step.outputs:
            if v:
                may_view[v] = sources
    planned = candidates - set().union(*[may_view.get(v, set()) for v in graph_outputs])
    end = {v: produced_by[v] for v in planned}
    for index, step in enumerate(steps):
        for v in step.inputs:
            if isinstance(v, str):
                for root in may_view.get(v, ()):
                    if root in planned:
                        end[root] = max(end[root], index)

    buffers, assignment, in_place = [], {}, set()
    buffer_end = []          # the last step index using each buffer
    for index, step in enumerate(steps):
        out = step.outputs[0] if step.outputs else None
        if out in planned:
            need = values[out].nbytes
            chosen = _in_place_buffer(step, index, values, assignment, buffer_end, planned, end)
            if chosen is not None:
                in_place.add(out)
            else:
                free = [b for b in range(len(buffers)) if buffer_end[b] < index]
                fitting = [b for b in free if buffers[b] >= need]
                if fitting:
                    chosen = min(fitting, key=lambda b: buffers[b])
                elif free:
                    chosen = max(free, key=lambda b: buffers[b])
                    buffers[chosen] = need
                else:
                    chosen = len(buffers)
                    buffers.append(need)
                    buffer_end.append(index)
            assignment[out] = chosen
            buffer_end[chosen] = max(buffer_end[chosen], end[out])
    return MemoryPlan(buffers, assignment, in_place)


def _in_place_buffer(step, index, values, assignment, buffer_end, planned, end):
    """The buffer of an input `step` may write its output over (module docstring, rule 1), or None."""
    out = values[step.outputs[0]]
    later = {v for p, v in enumerate(step.inputs) if p not in step.in_place}
    for position in step.in_place:
        v = step.inputs[position]
        if (isinstance(v, str) and v in planned and v not in later and end[v] == index
                and buffer_end[assignment[v]] == index and values[v].shape == out.shape and values[v].dtype == out.dtype):
            return assignment[v]
    return None

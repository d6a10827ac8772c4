"""Reverse-mode automatic differentiation: the `Function` base class, grad mode and backward.

Every differentiable op is a `Function` subclass with two static methods side by side:

    forward(ctx, *arrays, **params) -> ndarray      computes the output on raw NumPy arrays
    backward(ctx, grad_output) -> tuple of ndarray   one gradient (or None) per tensor input

`Function.apply` unwraps tensors, runs `forward`, and, when gradients are needed, records the
call on the output tensor so that `Tensor.backward` can replay it in reverse.

Broadcasting is undone in one place, here: a backward may return a gradient in the broadcast
shape of its output and the engine sums it back to the input's shape (`sum_to_shape`).

The graph is walked iteratively (`topological_order`), so a chain of 10,000 ops does not hit
Python's recursion limit.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

_grad_enabled = True  # the documented global grad mode, as torch.is_grad_enabled()


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    """Context manager and decorator that sets the grad mode and restores it on exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        global _grad_enabled
        self.previous = _grad_enabled
        _grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous
        return False


def no_grad():
    """Disable graph recording, as `torch.no_grad()`: usable with `with` or as a decorator."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


def set_grad_enabled(mode: bool):
    return _GradMode(bool(mode))


class Context:
    """What a Function's forward leaves for its backward."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """One recorded call: the function, its context, and the inputs it was applied to."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function, ctx, inputs):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class Function:
    """Base class of differentiable ops. Subclasses define `forward` and `backward`."""

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor

        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = _grad_enabled and any(needs)
        ctx = Context(needs if record else (False,) * len(needs))  # forward may skip what backward needs
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        out = cls.forward(ctx, *raw, **kwargs)
        result = Tensor._wrap(out, requires_grad=record)
        if record:
            result._node = Node(cls, ctx, args)
        return result


def sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient back to `shape` (the inverse of NumPy broadcasting)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def topological_order(root):
    """Tensors reachable from `root` through recorded nodes, each after every tensor it feeds.

    Iterative depth-first search with an explicit stack (no recursion).
    """
    from .tensor import Tensor

    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node.inputs:
                if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()
    return order


def run_backward(root, gradient: np.ndarray) -> None:
    """Propagate `gradient` from `root` to every leaf that requires grad, accumulating `.grad`."""
    from .tensor import Tensor

    pending = {id(root): gradient}
    with no_grad():
        for tensor in topological_order(root):
            grad = pending.pop(id(tensor), None)
            if grad is None:
                continue
            node = tensor._node
            if node is None or tensor._retains_grad:
                tensor._accumulate_grad(grad)
            if node is None:
                continue
            input_grads = node.function.backward(node.ctx, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, parent_grad in zip(node.inputs, input_grads):
                if parent_grad is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                    continue
                parent_grad = sum_to_shape(np.asarray(parent_grad), parent.shape)
                parent_grad = parent_grad.astype(parent.dtype, copy=False)
                key = id(parent)
                pending[key] = pending[key] + parent_grad if key in pending else parent_grad


def function_alias(fn_class):
    """A functional alias `f(*args, **kw)` for `fn_class.apply`, keeping its docstring."""

    @functools.wraps(fn_class.forward)
    def alias(*args, **kwargs):
        return fn_class.apply(*args, **kwargs)

    alias.__doc__ = fn_class.__doc__
    return alias

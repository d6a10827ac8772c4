"""Reductions (ReduceMean, ReduceSum, ReduceMax, ...), ArgMax / ArgMin and TopK.

The axes are an attribute up to one opset (13 for ReduceSum, 18 for the others) and an optional input
afterwards, where `noop_with_empty_axes=1` turns an empty axes list into the identity instead of a
reduction over every axis."""
import numpy as np

from ..registry import Op, register


def _reduce(fn, x, axes, keepdims, noop_with_empty_axes=0):
    if axes is None or len(axes) == 0:
        if noop_with_empty_axes:
            return x
        axes = None
    else:
        axes = tuple(int(a) for a in np.asarray(axes).reshape(-1))
    return fn(x, axes, bool(keepdims))


def _sum(x, axes, keep):
    return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _mean(x, axes, keep):
    return np.mean(x, axis=axes, keepdims=keep, dtype=np.float64 if x.dtype == np.float64 else None) \
        .astype(x.dtype, copy=False)


def _lowest(dtype):
    return -np.inf if dtype.kind == "f" else (False if dtype.kind == "b" else np.iinfo(dtype).min)


def _highest(dtype):
    return np.inf if dtype.kind == "f" else (True if dtype.kind == "b" else np.iinfo(dtype).max)


def _max(x, axes, keep):
    """Over an empty set: -inf, or the type's lowest value (False for bool), as the spec says since opset 18."""
    return np.max(x, axis=axes, keepdims=keep, **({"initial": _lowest(x.dtype)} if x.size == 0 else {}))


def _min(x, axes, keep):
    return np.min(x, axis=axes, keepdims=keep, **({"initial": _highest(x.dtype)} if x.size == 0 else {}))


_FUNCTIONS = {
    "ReduceSum": _sum,
    "ReduceMean": _mean,
    "ReduceMax": _max,
    "ReduceMin": _min,
    "ReduceProd": lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype),
    "ReduceL1": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=x.dtype),
    "ReduceL2": lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceSumSquare": lambda x, a, k: np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype),
    "ReduceLogSumExp": lambda x, a, k: np.log(np.sum(np.exp(x), axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceLogSum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k, dtype=x.dtype)),
}
# the opset at which the axes move from attribute to input
_AXES_INPUT_FROM = {name: 18 for name in _FUNCTIONS}
_AXES_INPUT_FROM["ReduceSum"] = 13


def _make(op_type, fn, since_input):
    def run_attribute(self, data, *, axes=None, keepdims=1):
        return _reduce(fn, data, axes, keepdims)

    def run_input(self, data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return _reduce(fn, data, axes, keepdims, noop_with_empty_axes)

    old = register(op_type, 1)(type(f"{op_type}_1", (Op,), {"run": run_attribute,
                                                              "__doc__": f"{op_type} with axes as an attribute."}))
    new = register(op_type, since_input)(type(f"{op_type}_{since_input}", (Op,), {
        "run": run_input, "__doc__": f"{op_type} with axes as an optional input (opset {since_input})."}))
    return old, new


for _name, _fn in _FUNCTIONS.items():
    _make(_name, _fn, _AXES_INPUT_FROM[_name])


@register("ArgMax", 1)
class ArgMax(Op):
    """Index of the first maximum (the last with select_last_index=1, opset 12) as int64."""

    sign = 1

    def run(self, data, *, axis=0, keepdims=1, select_last_index=0):
        x = data * self.sign if data.dtype.kind != "b" else data
        if select_last_index:
            flipped = np.flip(x, axis=axis)
            index = x.shape[axis] - 1 - np.argmax(flipped, axis=axis)
        else:
            index = np.argmax(x, axis=axis)
        index = index.astype(np.int64)
        return np.expand_dims(index, axis) if keepdims else index


@register("ArgMin", 1)
class ArgMin(ArgMax):
    sign = -1


@register("TopK", 1)
class TopK_1(Op):
    def run(self, x, *, axis=-1, k):
        return _topk(x, k, axis, True)


@register("TopK", 10)
class TopK_10(Op):
    def run(self, x, k, *, axis=-1):
        return _topk(x, int(np.asarray(k).reshape(-1)[0]), axis, True)


@register("TopK", 11)
class TopK_11(Op):
    """Opset 11 adds largest and sorted. Ties keep the lower index first, as onnxruntime."""

    def run(self, x, k, *, axis=-1, largest=1, sorted=1):
        return _topk(x, int(np.asarray(k).reshape(-1)[0]), axis, bool(largest))


def _topk(x, k, axis, largest):
    # ~x orders integers (signed or not) in reverse without the overflow of -x
    keys = (~x if x.dtype.kind in "iub" else -x) if largest else x
    order = np.argsort(keys, axis=axis, kind="stable")
    index = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, index, axis=axis), index.astype(np.int64)

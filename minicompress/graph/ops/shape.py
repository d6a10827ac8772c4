"""Operators that move, select or make data: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split,
Slice, Gather, Shape, Size, Constant, ConstantOfShape, Identity, Dropout (inference), Pad, Expand, Tile,
Range, Resize and Upsample. Shapes travel as int64 arrays, as in ONNX, so shape arithmetic between these
operators runs in the graph like any other computation (dynamic dimensions need nothing special)."""
import numpy as np

from ..registry import Op, register
from .elementwise import numpy_dtype


def _ints(array):
    return [int(v) for v in np.asarray(array).reshape(-1)]


def _axis(axis, ndim):
    return axis + ndim if axis < 0 else axis


@register("Identity", 1)
class Identity(Op):
    def run(self, x):
        return x


@register("Dropout", 7)
class Dropout_7(Op):
    """Inference: the identity, and a mask of ones; in opsets 7 to 9 the mask has the input's type (T).
    `ratio` is an attribute up to opset 11."""

    def run(self, x, *, ratio=0.5, seed=None):
        return x, np.ones(x.shape, dtype=x.dtype)


@register("Dropout", 10)
class Dropout_10(Op):
    """Opset 10 makes the mask boolean (T1): all true at inference."""

    def run(self, x, *, ratio=0.5, seed=None):
        return x, np.ones(x.shape, dtype=np.bool_)


@register("Dropout", 12)
class Dropout_12(Op):
    """From opset 12 ratio and training_mode are inputs; training_mode=True is not supported (random)."""

    def run(self, x, ratio=None, training_mode=None, *, seed=None):
        if training_mode is not None and bool(training_mode):
            raise NotImplementedError("Dropout with training_mode=True draws random masks: not supported")
        return x, np.ones(x.shape, dtype=np.bool_)


@register("Reshape", 5)
class Reshape(Op):
    """0 copies the input's dimension (unless allowzero=1, opset 14), -1 is inferred."""

    def run(self, data, shape, *, allowzero=0):
        shape = _ints(shape)
        if not allowzero:
            shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return data.reshape(shape)


@register("Flatten", 1)
class Flatten(Op):
    """(d0 ... d_{axis-1}, d_axis ... d_n) -> (prod of the first, prod of the rest)."""

    def run(self, x, *, axis=1):
        axis = _axis(axis, x.ndim)
        return x.reshape(int(np.prod(x.shape[:axis])), -1) if x.size else \
            x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@register("Transpose", 1)
class Transpose(Op):
    def run(self, x, *, perm=None):
        return np.ascontiguousarray(np.transpose(x, perm))


@register("Squeeze", 1)
class Squeeze_1(Op):
    def run(self, x, *, axes=None):
        return np.squeeze(x, axis=None if axes is None else tuple(_axis(a, x.ndim) for a in axes))


@register("Squeeze", 13)
class Squeeze_13(Op):
    """From opset 13 the axes are an optional input."""

    def run(self, x, axes=None):
        return np.squeeze(x, axis=None if axes is None else tuple(_axis(a, x.ndim) for a in _ints(axes)))


@register("Unsqueeze", 1)
class Unsqueeze_1(Op):
    def run(self, x, *, axes):
        return _unsqueeze(x, axes)


@register("Unsqueeze", 13)
class Unsqueeze_13(Op):
    def run(self, x, axes):
        return _unsqueeze(x, _ints(axes))


def _unsqueeze(x, axes):
    ndim = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axis(a, ndim) for a in axes)))


@register("Concat", 4)
class Concat(Op):
    def run(self, *xs, axis):
        return np.concatenate(xs, axis=axis)


@register("Split", 2)
class Split_2(Op):
    """Without `split`, as many equal parts as the node has outputs (the graph passes n_outputs)."""

    needs_output_count = True

    def run(self, x, *, axis=0, split=None, n_outputs=1):
        return _split(x, axis, split, n_outputs)


@register("Split", 13)
class Split_13(Split_2):
    def run(self, x, split=None, *, axis=0, n_outputs=1):
        return _split(x, axis, None if split is None else _ints(split), n_outputs)


@register("Split", 18)
class Split_18(Split_2):
    """Opset 18 adds num_outputs: parts of ceil(size / num_outputs), the last one smaller."""

    def run(self, x, split=None, *, axis=0, num_outputs=None, n_outputs=1):
        return _split(x, axis, None if split is None else _ints(split), num_outputs or n_outputs)


def _split(x, axis, split, n):
    size = x.shape[axis]
    if split is None:
        step = -(-size // n)
        split = [min(step, size - i * step) for i in range(n)]
    bounds = np.cumsum([0] + list(split))
    return tuple(np.take(x, np.arange(bounds[i], bounds[i + 1]), axis=axis) for i in range(len(split)))


@register("Slice", 1)
class Slice_1(Op):
    def run(self, data, *, starts, ends, axes=None):
        return _slice(data, starts, ends, axes, None)


@register("Slice", 10)
class Slice_10(Op):
    """From opset 10 starts, ends, axes and steps are inputs; bounds clamp as Python slices do."""

    def run(self, data, starts, ends, axes=None, steps=None):
        return _slice(data, _ints(starts), _ints(ends), None if axes is None else _ints(axes),
                      None if steps is None else _ints(steps))


def _slice(data, starts, ends, axes, steps):
    """The spec's clamping: start into [0, dim] ([0, dim - 1] for a negative step), end into [0, dim]
    ([-1, dim - 1]: -1 is "past the first element"), INT_MAX as end meaning "to the far end" either way."""
    index = [slice(None)] * data.ndim
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, data.ndim)
        dim = data.shape[axis]
        if step == 0:
            raise ValueError("Slice steps must not be 0")
        start = start + dim if start < 0 else start
        start = min(max(start, 0), dim if step > 0 else dim - 1)
        if end in (2 ** 31 - 1, 2 ** 63 - 1):
            end = dim if step > 0 else -1
        else:
            end = end + dim if end < 0 else end
            end = min(max(end, 0), dim) if step > 0 else min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return data[tuple(index)]


@register("Gather", 1)
class Gather(Op):
    """np.take along `axis`; negative indices count from the end."""

    def run(self, data, indices, *, axis=0):
        return np.take(data, indices.astype(np.int64), axis=axis)


@register("GatherElements", 11)
class GatherElements(Op):
    def run(self, data, indices, *, axis=0):
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return np.take_along_axis(data, indices, axis=axis)


@register("Shape", 1)
class Shape_1(Op):
    def run(self, data):
        return np.array(data.shape, dtype=np.int64)


@register("Shape", 15)
class Shape_15(Op):
    """Opset 15 adds start and end (clamped, negative from the back)."""

    def run(self, data, *, start=0, end=None):
        return np.array(data.shape[slice(start, end)], dtype=np.int64)


@register("Size", 1)
class Size(Op):
    def run(self, data):
        return np.array(data.size, dtype=np.int64)


@register("Constant", 1)
class Constant(Op):
    """The value (a tensor; from opset 12 also value_float(s), value_int(s), value_string(s))."""

    def run(self, *, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
            sparse_value=None, value_string=None, value_strings=None):
        if value is not None:
            return value
        for v, dtype in ((value_float, np.float32), (value_floats, np.float32), (value_int, np.int64),
                         (value_ints, np.int64)):
            if v is not None:
                return np.array(v, dtype=dtype)
        raise NotImplementedError("Constant: only tensor, float and int values are supported")


@register("ConstantOfShape", 9)
class ConstantOfShape(Op):
    """A tensor of the given shape filled with `value` (a one-element tensor; float32 zero by default)."""

    def run(self, shape, *, value=None):
        value = np.zeros(1, np.float32) if value is None else np.asarray(value)
        return np.full(_ints(shape), value.reshape(-1)[0], dtype=value.dtype)


@register("Expand", 8)
class Expand(Op):
    """Bidirectional broadcast of the input and the shape (a 1 in the shape keeps the input's size)."""

    def run(self, x, shape):
        return x * np.ones(_ints(shape), dtype=x.dtype) if x.dtype != np.bool_ else \
            np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(_ints(shape)))).copy()


@register("Tile", 6)
class Tile(Op):
    def run(self, x, repeats):
        return np.tile(x, _ints(repeats))


@register("Range", 11)
class Range(Op):
    """start, start + delta, ... while < limit (> for negative delta): ceil((limit - start) / delta) items."""

    def run(self, start, limit, delta):
        n = max(int(np.ceil((limit - start) / delta)), 0)
        return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)


# ----- Pad ---------------------------------------------------------------------------------------

@register("Pad", 2)
class Pad_2(Op):
    """pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...] as an attribute (negative pads crop)."""

    def run(self, data, *, pads, mode="constant", value=0.0):
        return _pad(data, list(pads), mode, np.array(value, dtype=data.dtype), None)


@register("Pad", 11)
class Pad_11(Op):
    """From opset 11 pads and constant_value are inputs; opset 18 adds `axes`, opset 19 mode 'wrap'."""

    def run(self, data, pads, constant_value=None, axes=None, *, mode="constant"):
        value = np.zeros((), data.dtype) if constant_value is None else constant_value
        return _pad(data, _ints(pads), mode, value, None if axes is None else _ints(axes))


def _pad(data, pads, mode, value, axes):
    axes = list(range(data.ndim)) if axes is None else [_axis(a, data.ndim) for a in axes]
    n = len(axes)
    widths = [(0, 0)] * data.ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + n])
    crop = tuple(slice(-min(b, 0), data.shape[k] + min(e, 0)) for k, (b, e) in enumerate(widths))
    data = data[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        return np.pad(data, widths, mode="constant", constant_values=np.asarray(value).reshape(-1)[0]
                      if np.asarray(value).size else 0)
    if mode in ("reflect", "edge", "wrap"):
        return np.pad(data, widths, mode=mode)
    raise NotImplementedError(f"Pad mode {mode!r} is not supported")


# ----- Resize and Upsample -------------------------------------------------------------------------

def _source_coordinates(out_size, in_size, scale, mode, roi=None):
    """The input coordinate of every output index, by coordinate_transformation_mode (ONNX Resize)."""
    x = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        center = in_size / 2
        offset = center * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_size > 1:
            return start * (in_size - 1) + x * (end - start) * (in_size - 1) / (out_size - 1)
        return np.full(out_size, 0.5 * (start + end) * (in_size - 1))
    raise NotImplementedError(f"Resize coordinate_transformation_mode {mode!r} is not supported")


def _nearest(coords, rule):
    if rule == "round_prefer_floor":
        return np.ceil(coords - 0.5)
    if rule == "round_prefer_ceil":
        return np.floor(coords + 0.5)
    if rule == "floor":
        return np.floor(coords)
    if rule == "ceil":
        return np.ceil(coords)
    raise NotImplementedError(f"Resize nearest_mode {rule!r} is not supported")


def _cubic_weights(t, a):
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(coordinate)."""
    def w(d):
        d = np.abs(d)
        return np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                        np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    return np.stack([w(t + 1), w(t), w(1 - t), w(2 - t)], axis=-1)


def resize(x, out_shape, scales, mode, coordinate_mode, nearest_mode, cubic_coeff_a=-0.75,
           exclude_outside=0, extrapolation_value=0.0, roi=None):
    """Separable resize, one axis at a time (nearest, linear or cubic)."""
    out = x.astype(np.float64) if mode != "nearest" else x
    for axis in range(x.ndim):
        in_size, size = x.shape[axis], int(out_shape[axis])
        if in_size == size and scales[axis] == 1.0 and coordinate_mode != "tf_crop_and_resize":
            continue
        r = None if roi is None else (roi[axis], roi[axis + x.ndim])
        coords = _source_coordinates(size, in_size, scales[axis], coordinate_mode, r)
        outside = (coords < 0) | (coords > in_size - 1) if coordinate_mode == "tf_crop_and_resize" else None
        if mode == "nearest":
            index = np.clip(_nearest(coords, nearest_mode).astype(np.int64), 0, in_size - 1)
            out = np.take(out, index, axis=axis)
        else:
            base = np.floor(coords).astype(np.int64)
            if mode == "linear":
                # onnxruntime clamps the coordinate into the input before interpolating
                offsets = np.array([0, 1])
                coords_c = np.clip(coords, 0, in_size - 1) if coordinate_mode != "tf_crop_and_resize" else coords
                base = np.floor(coords_c).astype(np.int64)
                t = coords_c - base
                weights = np.stack([1 - t, t], axis=-1)
            elif mode == "cubic":
                offsets = np.array([-1, 0, 1, 2])
                weights = _cubic_weights(coords - base, cubic_coeff_a)
            else:
                raise NotImplementedError(f"Resize mode {mode!r} is not supported")
            taps = base[:, None] + offsets[None, :]
            if exclude_outside:
                weights = np.where((taps < 0) | (taps >= in_size), 0.0, weights)
                weights = weights / weights.sum(axis=1, keepdims=True)
            taps = np.clip(taps, 0, in_size - 1)
            moved = np.moveaxis(out, axis, -1)
            out = np.moveaxis((moved[..., taps] * weights).sum(axis=-1), -1, axis)
        if outside is not None:
            shape = [1] * x.ndim
            shape[axis] = size
            out = np.where(outside.reshape(shape), extrapolation_value, out)
    return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else np.round(out).astype(x.dtype)


@register("Upsample", 7)
class Upsample_7(Op):
    """Nearest or linear upsampling by `scales` (attribute), asymmetric coordinates, floor for nearest."""

    def run(self, x, *, scales, mode="nearest"):
        return _upsample(x, list(scales), mode)


@register("Upsample", 9)
class Upsample_9(Op):
    """From opset 9 the scales are an input; the operator is deprecated at opset 10 (Resize replaces it)."""

    def run(self, x, scales, *, mode="nearest"):
        return _upsample(x, [float(s) for s in scales], mode)


def _upsample(x, scales, mode):
    out_shape = [int(np.floor(n * s)) for n, s in zip(x.shape, scales)]
    return resize(x, out_shape, scales, "linear" if mode in ("linear", "bilinear") else mode, "asymmetric", "floor")


@register("Resize", 10)
class Resize_10(Op):
    """Opset 10: scales input only, asymmetric coordinates, nearest rounds down ('floor' for opset 10)."""

    def run(self, x, scales, *, mode="nearest"):
        return _upsample(x, [float(s) for s in scales], mode)


@register("Resize", 11)
class Resize_11(Op):
    """Opset 11-12: roi, scales, sizes inputs and the coordinate_transformation_mode/nearest_mode/cubic attributes."""

    def run(self, x, roi=None, scales=None, sizes=None, *, coordinate_transformation_mode="half_pixel",
            cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, mode="nearest",
            nearest_mode="round_prefer_floor"):
        if sizes is not None and sizes.size:
            out_shape = _ints(sizes)
            scale_list = [o / i for o, i in zip(out_shape, x.shape)]
        else:
            scale_list = [float(s) for s in scales]
            out_shape = [int(np.floor(n * s)) for n, s in zip(x.shape, scale_list)]
        roi_list = None if roi is None or not roi.size else [float(r) for r in roi]
        return resize(x, out_shape, scale_list, mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a,
                      exclude_outside, extrapolation_value, roi_list)


@register("Resize", 13)
class Resize_13(Resize_11):
    """Opset 13: roi and scales become optional (semantics as opset 11)."""


@register("Resize", 18)
class Resize_18(Resize_11):
    """Opset 18 adds `axes` (scales, sizes and roi then name only those axes; the others keep their size)
    and `keep_aspect_ratio_policy` for sizes: "stretch" (each axis to its size), "not_larger" /
    "not_smaller" (one scale, the smallest / largest of sizes[i] / in[i] over the axes, and
    out[i] = floor(scale * in[i] + 0.5)). Opset 19 adds the half_pixel_symmetric mode (handled above).
    `antialias=1` is not implemented (refused)."""

    def run(self, x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None, coordinate_transformation_mode="half_pixel",
            cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, keep_aspect_ratio_policy="stretch",
            mode="nearest", nearest_mode="round_prefer_floor"):
        if antialias:
            raise NotImplementedError("Resize with antialias=1 is not supported")
        rank = x.ndim
        axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
        roi_list = None if roi is None or not roi.size else [float(r) for r in roi]
        if roi_list is not None and axes != list(range(rank)):
            full = [0.0] * rank + [1.0] * rank
            for i, a in enumerate(axes):
                full[a], full[rank + a] = roi_list[i], roi_list[len(axes) + i]
            roi_list = full
        if sizes is not None and sizes.size:
            out_shape = list(x.shape)
            for a, n in zip(axes, _ints(sizes)):
                out_shape[a] = n
            scale_list = [o / i for o, i in zip(out_shape, x.shape)]
            if keep_aspect_ratio_policy != "stretch":
                pick = {"not_larger": min, "not_smaller": max}.get(keep_aspect_ratio_policy)
                if pick is None:
                    raise NotImplementedError(f"Resize keep_aspect_ratio_policy {keep_aspect_ratio_policy!r} "
                                              "is not supported")
                scale = pick(scale_list[a] for a in axes)
                scale_list = [scale if a in axes else 1.0 for a in range(rank)]
                out_shape = [int(scale * x.shape[a] + 0.5) if a in axes else x.shape[a] for a in range(rank)]
        else:
            scale_list = [1.0] * rank
            for a, s in zip(axes, scales):
                scale_list[a] = float(s)
            out_shape = [int(np.floor(n * s)) for n, s in zip(x.shape, scale_list)]
        return resize(x, out_shape, scale_list, mode, coordinate_transformation_mode, nearest_mode, cubic_coeff_a,
                      exclude_outside, extrapolation_value, roi_list)

"""Operators that move, select or make data, against onnxruntime on one-node models, at the opsets where
their inputs or attributes change (Squeeze/Unsqueeze 13, Split 13/18, Slice 10, Pad 11, Resize 11, ...)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnx_harness import assert_matches, run_both

SETTINGS = settings(max_examples=12, deadline=None)
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5)


def arange(shape):
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) - 3.5


def ints(values):
    return np.array(values, dtype=np.int64)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_reshape_with_zero_and_minus_one(shape, data):
    x = arange(shape)
    target = [data.draw(st.sampled_from([0, n])) if i < len(shape) else 1 for i, n in enumerate(shape)]
    target[data.draw(st.integers(0, len(target) - 1))] = -1
    assert_matches("Reshape", [("x", x), ("s", ints(target))], opset=13)
    assert_matches("Reshape", [("x", x), ("s", ints(list(shape)[::-1]))], {"allowzero": 1}, opset=14)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_flatten_and_transpose(shape, data):
    x = arange(shape)
    assert_matches("Flatten", [("x", x)], {"axis": data.draw(st.integers(-len(shape), len(shape)))}, opset=13)
    perm = data.draw(st.permutations(range(len(shape))))
    assert_matches("Transpose", [("x", x)], {"perm": list(perm)})
    assert_matches("Transpose", [("x", x)])


@pytest.mark.parametrize("opset", [11, 13])
@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3), data=st.data())
def test_squeeze_unsqueeze(opset, shape, data):
    x = arange(shape)
    ones = [i for i, n in enumerate(shape) if n == 1]
    axes = data.draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
    new = data.draw(st.lists(st.integers(-len(shape) - 1, len(shape)), min_size=1, max_size=2,
                             unique_by=lambda a: a % (len(shape) + 2)))
    if opset < 13:
        assert_matches("Squeeze", [("x", x)], {"axes": axes} if axes else {}, opset=opset)
        assert_matches("Unsqueeze", [("x", x)], {"axes": new}, opset=opset)
    else:
        assert_matches("Squeeze", [("x", x), ("a", ints(axes) if axes else None)], opset=opset)
        assert_matches("Unsqueeze", [("x", x), ("a", ints(new))], opset=opset)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_concat(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = data.draw(st.integers(1, 3))
    assert_matches("Concat", [("a", arange(shape)), ("b", arange(other) * 2), ("c", arange(shape))], {"axis": axis})


@pytest.mark.parametrize("opset", [11, 13, 18])
@SETTINGS
@given(shape=shapes, data=st.data())
def test_split(opset, shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    size = shape[axis]
    x = arange(shape)
    cut = sorted(data.draw(st.lists(st.integers(0, size), max_size=2)))
    parts = [b - a for a, b in zip([0] + cut, cut + [size])]
    if opset < 13:
        assert_matches("Split", [("x", x)], {"axis": axis, "split": parts}, opset=opset, n_outputs=len(parts))
    else:
        assert_matches("Split", [("x", x), ("s", ints(parts))], {"axis": axis}, opset=opset, n_outputs=len(parts))
    if opset >= 18:
        n = data.draw(st.integers(1, size))
        if -(-size // n) * (n - 1) < size:   # every part non-empty
            assert_matches("Split", [("x", x)], {"axis": axis, "num_outputs": n}, opset=opset, n_outputs=n)
    else:
        n = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
        assert_matches("Split", [("x", x)], {"axis": axis}, opset=opset, n_outputs=n)


@pytest.mark.parametrize("opset", [9, 13])
@SETTINGS
@given(shape=shapes, data=st.data())
def test_slice(opset, shape, data):
    x = arange(shape)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    big = 2 ** 63 - 1
    starts = [data.draw(st.integers(-shape[a] - 2, shape[a] + 1)) for a in axes]
    ends = [data.draw(st.sampled_from([big, -big - 1]) | st.integers(-shape[a] - 2, shape[a] + 2)) for a in axes]
    if opset < 10:
        ends = [min(max(e, -2 ** 31), 2 ** 31) for e in ends]
        assert_matches("Slice", [("x", x)], {"starts": starts, "ends": ends, "axes": axes}, opset=opset)
    else:
        steps = [data.draw(st.sampled_from([1, 2, -1, -2])) for _ in axes]
        assert_matches("Slice", [("x", x), ("s", ints(starts)), ("e", ints(ends)), ("a", ints(axes)),
                                 ("t", ints(steps))], opset=opset)


@SETTINGS
@given(shape=shapes, data=st.data())
def test_gather(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    index_shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    indices = data.draw(hnp.arrays(np.int64, index_shape, elements=st.integers(-n, n - 1)))
    assert_matches("Gather", [("x", arange(shape)), ("i", indices)], {"axis": axis})
    full = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(-n, n - 1)))
    assert_matches("GatherElements", [("x", arange(shape)), ("i", full)], {"axis": axis})


@SETTINGS
@given(shape=shapes, start=st.integers(-5, 5), end=st.integers(-5, 5))
def test_shape_size(shape, start, end):
    x = arange(shape)
    assert_matches("Shape", [("x", x)], opset=13)
    assert_matches("Shape", [("x", x)], {"start": start, "end": end}, opset=15)
    assert_matches("Size", [("x", x)])


def test_constant_of_shape_and_constant():
    from onnx import numpy_helper
    assert_matches("ConstantOfShape", [("s", ints([2, 3]))], opset=13)
    assert_matches("ConstantOfShape", [("s", ints([2, 1, 3]))],
                   {"value": numpy_helper.from_array(np.array([7], np.int64))}, opset=13)


@SETTINGS
@given(data=st.data())
def test_expand_tile(data):
    pair = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=3))
    x = arange(pair.input_shapes[0])
    assert_matches("Expand", [("x", x), ("s", ints(pair.input_shapes[1]))])
    repeats = data.draw(st.lists(st.integers(0, 3), min_size=x.ndim, max_size=x.ndim))
    assert_matches("Tile", [("x", x), ("r", ints(repeats))])


@pytest.mark.parametrize("start,limit,delta,dtype", [(0, 5, 1, np.int64), (10, 2, -3, np.int64),
                                                     (0.5, 3.2, 0.7, np.float32), (1, 1, 1, np.int64)])
def test_range(start, limit, delta, dtype):
    assert_matches("Range", [("a", np.array(start, dtype)), ("b", np.array(limit, dtype)),
                             ("c", np.array(delta, dtype))], opset=11)


@pytest.mark.parametrize("opset", [10, 13, 19])
@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4), data=st.data(),
       mode=st.sampled_from(["constant", "reflect", "edge"]))
def test_pad(opset, shape, data, mode):
    x = arange(shape)
    pads = [data.draw(st.integers(-1 if mode == "constant" else 0, 2 if mode != "reflect" else 1))
            for _ in range(2 * len(shape))]
    if opset < 11:
        assert_matches("Pad", [("x", x)], {"pads": pads, "mode": mode, "value": 1.5}, opset=opset)
    else:
        assert_matches("Pad", [("x", x), ("p", ints(pads)), ("v", np.array(1.5, np.float32))], {"mode": mode},
                       opset=opset)


def test_pad_axes_opset_18():
    x = arange((2, 3, 4))
    assert_matches("Pad", [("x", x), ("p", ints([1, 2, 0, 1])), ("v", None), ("a", ints([0, -1]))], opset=18)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
@SETTINGS
@given(size=st.tuples(st.integers(1, 4), st.integers(1, 4)), out=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       nearest=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
def test_resize_sizes(mode, coordinates, size, out, nearest):
    x = arange((1, 2) + size)
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates}
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    assert_matches("Resize", [("x", x), ("r", None), ("s", None), ("z", ints((1, 2) + out))], attrs, opset=13,
                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [10, 11])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_scales(opset, mode):
    x = arange((1, 1, 3, 4))
    scales = np.array([1, 1, 2.0, 1.5], np.float32)
    if opset == 10:
        assert_matches("Resize", [("x", x), ("s", scales)], {"mode": mode}, opset=10, rtol=1e-5, atol=1e-5)
    else:
        assert_matches("Resize", [("x", x), ("r", np.zeros(0, np.float32)), ("s", scales)],
                       {"mode": mode, "coordinate_transformation_mode": "asymmetric"}, opset=11, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(opset):
    x = arange((1, 2, 2, 3))
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset == 7:
        assert_matches("Upsample", [("x", x)], {"scales": scales}, opset=7)
    else:
        assert_matches("Upsample", [("x", x), ("s", np.array(scales, np.float32))], opset=9)


@pytest.mark.parametrize("opset", [7, 12, 13])
def test_dropout_and_identity_at_inference(opset):
    x = arange((2, 3))
    assert_matches("Dropout", [("x", x)], opset=opset)
    assert_matches("Identity", [("x", x)], opset=opset)


@pytest.mark.parametrize("opset", [7, 9, 10, 11, 12, 13])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_has_the_opsets_type_and_keeps_every_element(opset, dtype):
    """The mask's type follows onnxruntime (the input's type T in opsets 7 to 9, bool from 10). Its values are
    ones (every element kept: output = data * mask), as onnx's reference evaluator and onnxruntime from
    opset 12 give; onnxruntime's opset 7-11 kernel (IdentityOp) fills the mask with zeros instead."""
    x = arange((2, 3)).astype(dtype)
    ours, theirs = run_both("Dropout", [("x", x)], opset=opset, n_outputs=2)
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1].dtype == theirs[1].dtype == (dtype if opset < 10 else np.bool_)
    assert ours[1].shape == x.shape and (ours[1] == 1).all()


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("out", [(1, 2, 5, 7), (1, 2, 2, 3)])
def test_resize_half_pixel_symmetric_opset_19(mode, out):
    assert_matches("Resize", [("x", arange((1, 2, 3, 4))), ("r", None), ("s", None), ("z", ints(out))],
                   {"mode": mode, "coordinate_transformation_mode": "half_pixel_symmetric"}, opset=19,
                   rtol=1e-5, atol=1e-5)

"""Pooling kernels at the array level: kernel == NumPy twin == torch, forward and gradient (max pooling's
values-only inference kernel too).

torch is the oracle: its forward (with return_indices for max pooling) and its autograd gradient for a
random upstream gradient. Shapes and window arguments are drawn by hypothesis, small enough that every
case runs in milliseconds once the kernels are compiled.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import TOLERANCE, to_torch
from minicompress.kernels import pool as P
from strategies import FLOATS, arrays

# float64 kernels, twins and torch sum the same handful of numbers: they agree to rounding.
TIGHT = {np.float32: TOLERANCE[np.float32], np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def windows(draw, dilation=True):
    """(shape, kernel_size, stride, padding, dilation, ceil_mode) that torch accepts: padding at most
    half the kernel, input at least one (dilated) window high and wide."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(2))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dil = tuple(draw(st.integers(1, 2)) for _ in range(2)) if dilation else (1, 1)
    sizes = []
    for k, p, d in zip(kernel, padding, dil):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(smallest, smallest + 5)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return shape, kernel, stride, padding, dil, draw(st.booleans())


def reads_only_padding(shape, kernel, stride, padding, dilation, out_size):
    """True if some dilated window has no tap inside the input (torch then returns a meaningless index)."""
    for size, k, s, p, d, n_out in zip(shape[2:], kernel, stride, padding, dilation, out_size):
        taps = np.arange(n_out)[:, None] * s - p + np.arange(k) * d
        if not ((taps >= 0) & (taps < size)).any(axis=1).all():
            return True
    return False


def values(shape, dtype):
    """Either spread-out values or a few repeated ones, so windows with tied maxima are common."""
    few = hnp.arrays(dtype, shape, elements=st.sampled_from([-1.0, 0.0, 1.0]))
    return st.one_of(arrays(shape, dtype), few)


def upstream(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_forward_and_grad(fn, x, grad_out_seed=0):
    """torch's output of fn(x) and dL/dx for a random upstream gradient (same one the kernels get)."""
    tx = to_torch(x, requires_grad=True)
    out = fn(tx)
    first = out[0] if isinstance(out, tuple) else out
    grad_out = upstream(tuple(first.shape), x.dtype, grad_out_seed)
    first.backward(torch.from_numpy(grad_out))
    detached = tuple(o.detach().numpy() for o in out) if isinstance(out, tuple) else out.detach().numpy()
    return detached, grad_out, tx.grad.numpy()


# --------------------------------------------------------------------------------------------------
# Max pooling


@settings(max_examples=30, deadline=None)
@given(case=windows(), dtype=FLOATS, data=st.data())
def test_max_pool2d_matches_torch_and_reference(case, dtype, data):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    x = data.draw(values(shape, dtype))
    pool = lambda t: TF.max_pool2d(t, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    # Such windows are rejected (test_max_pool2d_rejects_windows_of_padding_only); checked before torch's
    # backward, which scatters into the meaningless index torch returns for them.
    assume(not reads_only_padding(shape, kernel, stride, padding, dilation, pool(to_torch(x))[0].shape[2:]))
    (expected, expected_indices), grad_out, expected_grad = torch_forward_and_grad(pool, x)

    out, indices = P.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    assert out.dtype == x.dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(indices, expected_indices)
    ref_out, ref_indices = P.max_pool2d_reference(x, kernel, stride, padding, dilation, out.shape[2:])
    np.testing.assert_array_equal(ref_out, expected)
    np.testing.assert_array_equal(ref_indices, expected_indices)
    np.testing.assert_array_equal(P.max_pool2d_values_forward(x, kernel, stride, padding, dilation, ceil_mode),
                                  expected)

    grad = P.max_pool2d_backward(grad_out, indices, shape)
    assert grad.dtype == x.dtype
    np.testing.assert_allclose(grad, expected_grad, **TIGHT[dtype])
    np.testing.assert_allclose(P.max_pool2d_grad_reference(grad_out, indices, shape), expected_grad, **TIGHT[dtype])


@settings(max_examples=20, deadline=None)
@given(case=windows(), dtype=FLOATS, data=st.data())
def test_max_pool2d_nan_and_infinity_as_torch(case, dtype, data):
    shape, kernel, stride, padding, dilation, ceil_mode = case
    special = st.sampled_from([np.nan, -np.inf, np.inf, -1.0, 1.0])
    x = data.draw(hnp.arrays(dtype, shape, elements=special))
    expected, expected_indices = TF.max_pool2d(to_torch(x), kernel, stride, padding, dilation, ceil_mode,
                                               return_indices=True)
    assume(not reads_only_padding(shape, kernel, stride, padding, dilation, expected.shape[2:]))
    out, indices = P.max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    ref_out, ref_indices = P.max_pool2d_reference(x, kernel, stride, padding, dilation, out.shape[2:])
    np.testing.assert_array_equal(ref_out, expected.numpy())
    np.testing.assert_array_equal(ref_indices, expected_indices.numpy())
    np.testing.assert_array_equal(P.max_pool2d_values_forward(x, kernel, stride, padding, dilation, ceil_mode),
                                  expected.numpy())


def test_max_pool2d_ties_and_all_minus_infinity_pick_the_first_in_bounds_tap():
    x = np.array([[[[2.0, 2.0, -np.inf], [2.0, 1.0, -np.inf]]]])
    expected, expected_indices = TF.max_pool2d(to_torch(x), (2, 2), (1, 1), (1, 1), return_indices=True)
    out, indices = P.max_pool2d_forward(x, (2, 2), (1, 1), (1, 1), (1, 1), False)
    np.testing.assert_array_equal(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def test_max_pool2d_rejects_windows_of_padding_only():
    # Kernel 2, dilation 2, padding 1 on a 1 x 1 input: the window reads padded positions -1 and 1.
    x = np.zeros((1, 1, 1, 1))
    _, indices = TF.max_pool2d(to_torch(x), 2, 1, 1, 2, return_indices=True)
    assert indices.max() >= 1                  # torch points outside the 1 x 1 plane
    with pytest.raises(ValueError, match="reads only padding"):
        P.max_pool2d_forward(x, (2, 2), (1, 1), (1, 1), (2, 2), False)


# --------------------------------------------------------------------------------------------------
# Average pooling


@settings(max_examples=30, deadline=None)
@given(case=windows(dilation=False), dtype=FLOATS, count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, 1, 2, 5, -3]), data=st.data())
def test_avg_pool2d_matches_torch_and_reference(case, dtype, count_include_pad, divisor_override, data):
    shape, kernel, stride, padding, _, ceil_mode = case
    x = data.draw(values(shape, dtype))
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    expected, grad_out, expected_grad = torch_forward_and_grad(lambda t: TF.avg_pool2d(t, *args), x)

    out = P.avg_pool2d_forward(x, *args)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, **TIGHT[dtype])
    ref = P.avg_pool2d_reference(x, kernel, stride, padding, out.shape[2:], count_include_pad, divisor_override or 0)
    assert ref.dtype == x.dtype
    np.testing.assert_allclose(ref, expected, **TIGHT[dtype])

    grad = P.avg_pool2d_backward(grad_out, shape, *args)
    assert grad.dtype == x.dtype
    np.testing.assert_allclose(grad, expected_grad, **TIGHT[dtype])
    ref_grad = P.avg_pool2d_grad_reference(grad_out, shape, kernel, stride, padding, count_include_pad,
                                           divisor_override or 0)
    np.testing.assert_allclose(ref_grad, expected_grad, **TIGHT[dtype])


def test_avg_pool2d_ceil_mode_window_past_the_padding_counts_only_up_to_it():
    # H = W = 4, kernel 3, stride 2, padding 1, ceil_mode: the last window covers padded rows 4..6 of
    # a 6-row padded input, so count_include_pad divides by 2 * 2 there, not 3 * 3.
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    expected = TF.avg_pool2d(to_torch(x), 3, 2, 1, ceil_mode=True, count_include_pad=True).numpy()
    out = P.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1), True, True, None)
    np.testing.assert_allclose(out, expected, **TIGHT[np.float64])


# --------------------------------------------------------------------------------------------------
# Adaptive average pooling


@settings(max_examples=25, deadline=None)
@given(dtype=FLOATS, data=st.data(),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       output_size=st.tuples(st.integers(1, 10), st.integers(1, 10)))
def test_adaptive_avg_pool2d_matches_torch_and_reference(dtype, data, shape, output_size):
    x = data.draw(values(shape, dtype))
    expected, grad_out, expected_grad = torch_forward_and_grad(lambda t: TF.adaptive_avg_pool2d(t, output_size), x)

    out = P.adaptive_avg_pool2d_forward(x, output_size)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, **TIGHT[dtype])
    np.testing.assert_allclose(P.adaptive_avg_pool2d_reference(x, output_size), expected, **TIGHT[dtype])

    grad = P.adaptive_avg_pool2d_backward(grad_out, shape)
    assert grad.dtype == x.dtype
    np.testing.assert_allclose(grad, expected_grad, **TIGHT[dtype])
    np.testing.assert_allclose(P.adaptive_avg_pool2d_grad_reference(grad_out, shape), expected_grad, **TIGHT[dtype])


# --------------------------------------------------------------------------------------------------
# Validation


def test_non_contiguous_input_is_accepted():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).transpose(0, 1, 3, 2)
    expected = TF.avg_pool2d(to_torch(x), 2).numpy()
    np.testing.assert_allclose(P.avg_pool2d_forward(x, (2, 2), (2, 2), (0, 0), False, True, None), expected,
                               **TIGHT[np.float64])


X = np.zeros((1, 1, 4, 4), dtype=np.float32)


@pytest.mark.parametrize("call, error, name", [
    (lambda: P.max_pool2d_forward(X.tolist(), (2, 2), (2, 2), (0, 0), (1, 1), False), TypeError, "x"),
    (lambda: P.max_pool2d_forward(X.astype(np.int32), (2, 2), (2, 2), (0, 0), (1, 1), False), TypeError, "x"),
    (lambda: P.max_pool2d_forward(X[0], (2, 2), (2, 2), (0, 0), (1, 1), False), ValueError, "x"),
    (lambda: P.max_pool2d_forward(X, 2, (2, 2), (0, 0), (1, 1), False), TypeError, "kernel_size"),
    (lambda: P.max_pool2d_forward(X, (0, 2), (2, 2), (0, 0), (1, 1), False), ValueError, "kernel_size"),
    (lambda: P.max_pool2d_forward(X, (2, 2), (0, 1), (0, 0), (1, 1), False), ValueError, "stride"),
    (lambda: P.max_pool2d_forward(X, (2, 2), (2, 2), (2, 0), (1, 1), False), ValueError, "padding"),
    (lambda: P.max_pool2d_forward(X, (2, 2), (2, 2), (0, 0), (1, 0), False), ValueError, "dilation"),
    (lambda: P.max_pool2d_forward(X, (5, 5), (1, 1), (0, 0), (1, 1), False), ValueError, "too small"),
    (lambda: P.max_pool2d_backward(X[..., :2, :2], np.zeros((1, 1, 2, 2), np.int32), (1, 1, 4, 4)),
     TypeError, "indices"),
    (lambda: P.max_pool2d_backward(X[..., :2, :2], np.full((1, 1, 2, 2), 16), (1, 1, 4, 4)), ValueError, "indices"),
    (lambda: P.max_pool2d_backward(X[..., :2, :2], np.zeros((1, 1, 2, 2), np.int64), (2, 1, 4, 4)),
     ValueError, "input_shape"),
    (lambda: P.avg_pool2d_forward(X, (2, 2), (2, 2), (0, 0), False, True, 0), ValueError, "divisor_override"),
    (lambda: P.avg_pool2d_forward(X, (2, 2), (2, 2), (0, 0), False, True, 1.5), TypeError, "divisor_override"),
    (lambda: P.avg_pool2d_backward(X, (1, 1, 4, 4), (2, 2), (2, 2), (0, 0), False, True, None), ValueError,
     "grad_out"),
    (lambda: P.adaptive_avg_pool2d_forward(X, (0, 1)), ValueError, "output_size"),
    (lambda: P.adaptive_avg_pool2d_forward(X, (2,)), TypeError, "output_size"),
    (lambda: P.adaptive_avg_pool2d_backward(X, (1, 1, 4)), TypeError, "input_shape"),
])
def test_bad_arguments_raise_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()

"""The one-pass elementwise kernels equal their NumPy twins (the ONNX nodes one ufunc at a time) bit for
bit, NaN, infinities and signed zeros included, and torch's hardswish to float32 rounding, its prelu and its
nearest interpolation to the bit."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicompress.kernels.fused_elementwise import (hard_swish, hard_swish_reference, prelu, prelu_reference,
                                                    repeat_upsample, repeat_upsample_reference)

FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)
ARRAYS = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=7), elements=FLOATS)


@settings(max_examples=50, deadline=None)
@given(ARRAYS, st.sampled_from([(3.0, 0.0, 6.0, 6.0), (0.5, -1.0, 1.0, 3.0), (-2.0, 0.0, 4.0, 0.5)]))
def test_hard_swish_pass_equals_the_nodes_one_by_one(x, constants):
    a, lo, hi, d = (np.float32(c) for c in constants)
    with np.errstate(over="ignore", invalid="ignore"):       # infinities in, infinities and NaN out
        expected = hard_swish_reference(x, a, lo, hi, d)
    got = hard_swish(np.ascontiguousarray(x), a, lo, hi, d)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    out = np.empty_like(x)
    assert hard_swish(np.ascontiguousarray(x), a, lo, hi, d, out=out) is out


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=9), elements=st.floats(-10, 10, width=32)))
def test_hard_swish_pass_is_torchs_hardswish(x):
    three, zero, six = np.float32(3), np.float32(0), np.float32(6)
    expected = torch.nn.functional.hardswish(torch.from_numpy(x)).numpy()
    # torch multiplies by 1/6 where the ONNX graph divides by 6: one float32 rounding apart
    np.testing.assert_allclose(hard_swish(x, three, zero, six, six), expected, rtol=2e-7, atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=7), elements=FLOATS),
       st.integers(0, 2**32 - 1))
def test_prelu_pass_equals_the_node_and_torch(x, seed):
    """Bit for bit the ONNX node's np.where (NaN and infinities in); torch's prelu (one slope per channel) to
    the bit as well on finite inputs: both compute x * slope once where x < 0."""
    slope = np.random.default_rng(seed).uniform(-2, 2, x.shape[1]).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = prelu_reference(x, slope)
        got = prelu(x, slope)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    finite = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    np.testing.assert_array_equal(prelu(finite, slope),
                                  torch.nn.functional.prelu(torch.from_numpy(finite), torch.from_numpy(slope)).numpy())


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6), elements=FLOATS),
       st.integers(1, 4), st.integers(1, 4))
def test_repeat_upsample_equals_np_repeat_and_torchs_nearest(x, fh, fw):
    got = repeat_upsample(x, fh, fw)
    np.testing.assert_array_equal(got, repeat_upsample_reference(x, fh, fw))
    if x.ndim == 4:
        expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=(fh, fw), mode="nearest")
        np.testing.assert_array_equal(got, expected.numpy())

"""The direct convolution kernel (grouped and dense convs without im2col) against its NumPy twin (the
grouped einsum, `conv2d_forward_reference`) and torch.nn.functional.conv2d.

Tolerance: the kernel, the twin and torch add the same K = Cg * kh * kw products per output element in
different orders (the kernel in (c, i, j) order, one rounding per product and per addition; einsum
and torch in their own blocked orders). Any order's rounding error is at most (K - 1) * eps * sum_k |w_k x_k| (the
standard bound for a sum of K terms, a product's own rounding included in the first-order term), so two
orders differ by at most 2 * K * eps * sum_k |w_k x_k|; that bound is computed per element, in float64,
from |x| and |weight|. Values are standard normal from a drawn seed.
"""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.kernels import conv as K
from strategies import conv_geometry

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def direct_problems(draw, max_group_out=9):
    """(x_shape, weight_shape, stride, padding, dilation, groups, seed): groups 1-4, up to nine output
    channels per group (so the last block of four is sometimes partly filled), any geometry."""
    kernel, stride, padding, dilation, size = draw(conv_geometry())
    groups, group_in, group_out = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, max_group_out))
    x_shape, w_shape = (draw(st.integers(1, 2)), groups * group_in, *size), (groups * group_out, group_in, *kernel)
    return x_shape, w_shape, stride, padding, dilation, groups, draw(st.integers(0, 2**32 - 1))


def make_inputs(problem, dtype):
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    rng = np.random.default_rng(seed)
    return rng, rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)


def assert_within_rounding(actual, expected, x, weight, args, name):
    """|actual - expected| <= 2 K eps sum |w x| elementwise (see the module docstring)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    k = weight.shape[1] * weight.shape[2] * weight.shape[3]
    magnitude = K.conv2d_forward_reference(np.abs(x).astype(np.float64), np.abs(weight).astype(np.float64), *args)
    bound = 2 * k * np.finfo(x.dtype).eps * magnitude
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    assert np.all(error <= bound), f"{name}: worst error / bound {np.max(error / np.maximum(bound, 1e-300)):.3g}"


@settings(max_examples=40, deadline=None)
@given(direct_problems(), DTYPES)
def test_direct_kernel_matches_reference_and_torch(problem, dtype):
    _, x, weight = make_inputs(problem, dtype)
    args = problem[2:6]
    out = K.direct_conv2d_forward(x, weight, *args)
    reference = K.conv2d_forward_reference(x, weight, *args)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), None, *args).numpy()
    assert_within_rounding(out, reference, x, weight, args, "kernel vs twin")
    assert_within_rounding(out, expected, x, weight, args, "kernel vs torch")
    assert_within_rounding(reference, expected, x, weight, args, "twin vs torch")


@settings(max_examples=20, deadline=None)
@given(direct_problems(max_group_out=11), DTYPES)
def test_identical_weight_rows_give_identical_channels(problem, dtype):
    """Every output channel of a group given the same weights (the same row copied to each, in every
    block position and the part-filled last block) comes out bit-identical: no channel's sum depends on
    where the channel sits."""
    _, x, weight = make_inputs(problem, dtype)
    groups = problem[5]
    group_out = weight.shape[0] // groups
    for g in range(groups):
        weight[g * group_out:(g + 1) * group_out] = weight[g * group_out]
    out = K.direct_conv2d_forward(x, weight, *problem[2:6])
    for g in range(groups):
        block = out[:, g * group_out:(g + 1) * group_out]
        np.testing.assert_array_equal(block, np.broadcast_to(block[:, :1], block.shape))


@settings(max_examples=10, deadline=None)
@given(direct_problems(), st.integers(1, 7))
def test_direct_kernel_is_the_same_in_any_number_of_runs_and_threads(problem, n_runs):
    """The tasks split into runs (threaded or not) give exactly the one-run result."""
    _, x, weight = make_inputs(problem, np.float32)
    stride, padding, dilation, groups = problem[2:6]
    taps = K.weight_blocks(weight, groups)
    rows = K.band_rows(x.shape[3], padding, stride)
    epilogue = K.NO_EPILOGUE.arrays(weight.shape[0], x.dtype)
    kernel = K.direct_conv2d_forward_kernel
    common = (x, taps, weight.shape[0], stride, padding, dilation, groups, rows)
    shape = K.conv_output_shape(x.shape, weight.shape, stride, padding, dilation)
    expected = kernel.serial(*common, 1, *epilogue, np.empty(shape, x.dtype))
    np.testing.assert_array_equal(kernel.serial(*common, n_runs, *epilogue, np.empty(shape, x.dtype)), expected)
    np.testing.assert_array_equal(kernel.parallel(*common, n_runs, *epilogue, np.empty(shape, x.dtype)), expected)


@settings(max_examples=20, deadline=None)
@given(direct_problems(), DTYPES, st.sampled_from([None, (0.0, np.inf), (0.0, 6.0)]))
def test_direct_epilogue_and_dispatch(problem, dtype, clip):
    """conv2d_forward takes the direct kernel for grouped and narrow dense convs; the fused bias / eval
    BatchNorm / clamp is the epilogue's twin on the plain output, bit for bit."""
    rng, x, weight = make_inputs(problem, dtype)
    args = problem[2:6]
    out_channels = weight.shape[0]
    var = rng.uniform(0.1, 2.0, out_channels).astype(dtype)
    norm = tuple(rng.standard_normal(out_channels).astype(dtype) for _ in range(3))
    epilogue = K.Epilogue(rng.standard_normal(out_channels).astype(dtype),
                          (norm[0], (1.0 / np.sqrt(var + 1e-5)).astype(dtype), norm[1], norm[2]), clip)
    assert K.uses_direct(weight.shape, args[3])
    plain = K.direct_conv2d_forward(x, weight, *args)
    np.testing.assert_array_equal(K.conv2d_forward(x, weight, *args), plain)
    np.testing.assert_array_equal(K.conv2d_forward(x, weight, *args, epilogue),
                                  K.apply_epilogue_reference(plain, epilogue))


def test_wide_dense_convs_keep_the_gemm_path():
    assert not K.uses_direct((K.DIRECT_MAX_OUT + 1, 8, 3, 3), 1)
    assert K.uses_direct((K.DIRECT_MAX_OUT, 8, 3, 3), 1)
    assert K.uses_direct((256, 8, 3, 3), 32)


# ----- the depthwise kernel's whole-plane pass (every kernel but the 3x3, through phase planes) -------


@st.composite
def depthwise_phase_problems(draw):
    """Depthwise convs outside the 3x3 pass: 5x5 (PP-OCR, MobileNetV3) at stride 1 and 2, and any kernel
    with a stride of 3 or a dilation along W."""
    kernel, stride, padding, dilation, size = draw(conv_geometry(max_kernel=5))
    if tuple(kernel) == (3, 3) and dilation[1] == 1 and stride[1] <= 2:
        kernel = (5, 5)
        size = tuple(max(s, d * 4 + 1 - 2 * p) for s, d, p in zip(size, dilation, padding))
    channels, multiplier = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    x_shape, w_shape = (draw(st.integers(1, 2)), channels, *size), (multiplier * channels, 1, *kernel)
    return x_shape, w_shape, stride, padding, dilation, channels, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=30, deadline=None)
@given(depthwise_phase_problems(), DTYPES)
def test_depthwise_phase_planes_match_reference_and_torch(problem, dtype):
    _, x, weight = make_inputs(problem, dtype)
    stride, padding, dilation, groups = problem[2:6]
    out = K.depthwise_conv2d_forward(x, weight, stride, padding, dilation)
    reference = K.depthwise_conv2d_forward_reference(x, weight, stride, padding, dilation)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), None, stride, padding, dilation, groups).numpy()
    args = (stride, padding, dilation, groups)
    assert_within_rounding(out, reference, x, weight, args, "kernel vs twin")
    assert_within_rounding(out, expected, x, weight, args, "kernel vs torch")


@settings(max_examples=10, deadline=None)
@given(depthwise_phase_problems())
def test_depthwise_identical_planes_and_taps_give_identical_channels(problem):
    """Every input plane the same and every channel the same taps: every output channel bit-identical."""
    _, x, weight = make_inputs(problem, np.float32)
    x[:] = x[:, :1]
    weight[:] = weight[:1]
    out = K.depthwise_conv2d_forward(x, weight, *problem[2:5])
    np.testing.assert_array_equal(out, np.broadcast_to(out[:, :1], out.shape))

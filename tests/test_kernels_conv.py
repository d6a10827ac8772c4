"""The conv2d kernels against their NumPy twins and torch: torch.nn.functional.conv2d for the forward
pass, torch autograd for the input and weight gradients, unfold / fold for im2col / col2im.

Shapes, strides, paddings, dilations and groups are drawn by hypothesis; values are standard normal from
a drawn seed, and the upstream gradient is random so a mis-routed backward cannot pass by accident.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.kernels import conv as K
from strategies import conv_geometry

# float64 agrees with torch to rounding. float32: the project default; every sum here has at most a few
# hundred terms of standard-normal products, whose rounding stays well inside it.
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def grouped_problems(draw):
    """A general grouped convolution: (x_shape, weight_shape, stride, padding, dilation, groups, seed)."""
    kernel, stride, padding, dilation, size = draw(conv_geometry())
    groups, group_in, group_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x_shape, w_shape = (draw(st.integers(1, 3)), groups * group_in, *size), (groups * group_out, group_in, *kernel)
    return x_shape, w_shape, stride, padding, dilation, groups, draw(st.integers(0, 2**32 - 1))


@st.composite
def depthwise_problems(draw):
    """groups == C_in, weight (multiplier * C_in, 1, kh, kw)."""
    kernel, stride, padding, dilation, size = draw(conv_geometry())
    channels, multiplier = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    x_shape, w_shape = (draw(st.integers(1, 3)), channels, *size), (multiplier * channels, 1, *kernel)
    return x_shape, w_shape, stride, padding, dilation, channels, draw(st.integers(0, 2**32 - 1))


def make_inputs(problem, dtype):
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    return rng, x, weight, (stride, padding, dilation, groups)


def torch_conv(x, weight, upstream, stride, padding, dilation, groups):
    """(out, grad_x, grad_weight) from torch.nn.functional.conv2d and autograd."""
    xt = torch.from_numpy(x.copy()).requires_grad_()
    wt = torch.from_numpy(weight.copy()).requires_grad_()
    out = F.conv2d(xt, wt, None, stride, padding, dilation, groups)
    if upstream is None:
        return out.detach().numpy()
    out.backward(torch.from_numpy(upstream))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def assert_close(actual, expected, name):
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_allclose(actual, expected, **TOLERANCE[expected.dtype.type], err_msg=name)


def check_against_torch(problem, dtype, forward, backward_input, backward_weight,
                        forward_ref, backward_input_ref, backward_weight_ref, with_groups=True):
    """kernel == reference == torch for the forward pass and both gradients."""
    rng, x, weight, (stride, padding, dilation, groups) = make_inputs(problem, dtype)
    args = (stride, padding, dilation, groups) if with_groups else (stride, padding, dilation)
    expected_out = torch_conv(x, weight, None, stride, padding, dilation, groups)
    upstream = rng.standard_normal(expected_out.shape).astype(dtype)
    expected_out, expected_gx, expected_gw = torch_conv(x, weight, upstream, stride, padding, dilation, groups)

    assert_close(forward(x, weight, *args), expected_out, "forward")
    assert_close(forward_ref(x, weight, *args), expected_out, "forward reference")
    assert_close(backward_input(upstream, weight, x.shape, *args), expected_gx, "grad input")
    assert_close(backward_input_ref(upstream, weight, x.shape, *args), expected_gx, "grad input reference")
    assert_close(backward_weight(upstream, x, weight.shape, *args), expected_gw, "grad weight")
    assert_close(backward_weight_ref(upstream, x, weight.shape, *args), expected_gw, "grad weight reference")


@settings(max_examples=25, deadline=None)
@given(grouped_problems(), DTYPES)
def test_grouped_kernels_match_reference_and_torch(problem, dtype):
    check_against_torch(problem, dtype, K.grouped_conv2d_forward, K.grouped_conv2d_backward_input,
                        K.grouped_conv2d_backward_weight, K.conv2d_forward_reference,
                        K.conv2d_backward_input_reference, K.conv2d_backward_weight_reference)


@settings(max_examples=25, deadline=None)
@given(depthwise_problems(), DTYPES)
def test_depthwise_kernels_match_reference_and_torch(problem, dtype):
    check_against_torch(problem, dtype, K.depthwise_conv2d_forward, K.depthwise_conv2d_backward_input,
                        K.depthwise_conv2d_backward_weight, K.depthwise_conv2d_forward_reference,
                        K.depthwise_conv2d_backward_input_reference, K.depthwise_conv2d_backward_weight_reference,
                        with_groups=False)


@settings(max_examples=25, deadline=None)
@given(st.one_of(grouped_problems(), depthwise_problems()), DTYPES)
def test_public_entry_points_match_torch(problem, dtype):
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_depthwise_with_channel_multiplier(multiplier, stride, dtype):
    """MobileNet's depthwise 3x3 (padding 1): the entry points take the depthwise path and match torch,
    whose output channel o reads input channel o // multiplier."""
    problem = ((2, 3, 9, 8), (3 * multiplier, 1, 3, 3), stride, (1, 1), (1, 1), 3, 0)
    assert K.is_depthwise(3, problem[1], 3)
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)
    check_against_torch(problem, dtype, K.depthwise_conv2d_forward, K.depthwise_conv2d_backward_input,
                        K.depthwise_conv2d_backward_weight, K.depthwise_conv2d_forward_reference,
                        K.depthwise_conv2d_backward_input_reference, K.depthwise_conv2d_backward_weight_reference,
                        with_groups=False)


def test_is_depthwise_needs_one_input_channel_per_group():
    assert K.is_depthwise(4, (8, 1, 3, 3), 4)
    assert not K.is_depthwise(4, (8, 2, 3, 3), 2)
    assert not K.is_depthwise(4, (8, 4, 3, 3), 1)


@settings(max_examples=25, deadline=None)
@given(grouped_problems(), DTYPES)
def test_im2col_col2im_match_unfold_and_fold(problem, dtype):
    rng, x, weight, (stride, padding, dilation, _) = make_inputs(problem, dtype)
    kernel = weight.shape[2:]
    n_batch, channels = x.shape[:2]
    xt = torch.from_numpy(x)
    unfolded = F.unfold(xt, kernel, dilation, padding, stride).numpy()          # (N, C * kh * kw, L)
    expected_cols = unfolded.transpose(1, 0, 2).reshape(channels * kernel[0] * kernel[1], -1)
    assert_close(K.im2col(x, kernel, stride, padding, dilation), expected_cols, "im2col")
    assert_close(K.im2col_reference(x, kernel, stride, padding, dilation), expected_cols, "im2col reference")

    cols = rng.standard_normal(expected_cols.shape).astype(dtype)
    blocks = torch.from_numpy(np.ascontiguousarray(cols.reshape(-1, n_batch, unfolded.shape[2]).transpose(1, 0, 2)))
    expected_image = F.fold(blocks, x.shape[2:], kernel, dilation, padding, stride).numpy()
    assert_close(K.col2im(cols, x.shape, kernel, stride, padding, dilation), expected_image, "col2im")
    assert_close(K.col2im_reference(cols, x.shape, kernel, stride, padding, dilation), expected_image,
                 "col2im reference")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batches_larger_than_one_chunk(monkeypatch, dtype):
    """With the im2col budget below one sample, every sample is its own chunk; results must not change."""
    problem = ((5, 4, 7, 6), (6, 2, 3, 2), (1, 2), (1, 0), (2, 1), 2, 7)
    monkeypatch.setattr(K, "COLS_MAX_ELEMENTS", 10)
    assert len(K._sample_chunks(5, 4 * 3 * 2 * 3 * 5)) == 5
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)


@st.composite
def pointwise_problems(draw):
    """1x1 kernel, stride 1, no padding, one group (any dilation): the GEMM path."""
    x_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    w_shape = (draw(st.integers(1, 6)), x_shape[1], 1, 1)
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return x_shape, w_shape, (1, 1), (0, 0), dilation, 1, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=20, deadline=None)
@given(pointwise_problems(), DTYPES)
def test_pointwise_kernels_match_reference_and_torch(problem, dtype):
    assert K.is_pointwise(problem[1], problem[2], problem[3], problem[5])
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)


def test_is_pointwise_needs_1x1_stride_1_no_padding_one_group():
    assert K.is_pointwise((8, 4, 1, 1), (1, 1), (0, 0), 1)
    assert not K.is_pointwise((8, 4, 1, 1), (2, 1), (0, 0), 1)
    assert not K.is_pointwise((8, 4, 1, 1), (1, 1), (0, 1), 1)
    assert not K.is_pointwise((8, 2, 1, 1), (1, 1), (0, 0), 2)
    assert not K.is_pointwise((8, 4, 1, 3), (1, 1), (0, 0), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_samples_are_multiplied_one_by_one(monkeypatch, dtype):
    """Above SAMPLE_COLS_ELEMENTS each sample's product is written straight into the output."""
    problem = ((3, 4, 7, 6), (6, 2, 3, 2), (1, 2), (1, 0), (2, 1), 2, 11)
    monkeypatch.setattr(K, "SAMPLE_COLS_ELEMENTS", 1)
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)


@settings(max_examples=25, deadline=None)
@given(grouped_problems(), DTYPES, st.data())
def test_im2col_rows_is_a_band_of_unfold(problem, dtype, data):
    """Every entry of the band buffer is written (it starts as NaN), with torch's unfold's values."""
    _, x, weight, (stride, padding, dilation, _) = make_inputs(problem, dtype)
    kernel, sample = weight.shape[2:], x[:1]
    unfolded = F.unfold(torch.from_numpy(sample), kernel, dilation, padding, stride).numpy()[0]   # (C*kh*kw, L)
    out_h = K._conv_output_size(x.shape[2], kernel[0], stride[0], padding[0], dilation[0])
    out_w = unfolded.shape[1] // out_h
    p_lo = data.draw(st.integers(0, out_h - 1), label="p_lo")
    p_hi = data.draw(st.integers(p_lo + 1, out_h), label="p_hi")
    expected = unfolded[:, p_lo * out_w:p_hi * out_w]
    band = np.full(expected.shape, np.nan, dtype)
    assert_close(K.im2col_rows(sample[0], kernel, stride, padding, dilation, p_lo, p_hi, band), expected, "im2col_rows")
    assert_close(K.im2col_rows_reference(sample[0], kernel, stride, padding, dilation, p_lo, p_hi), expected,
                 "im2col_rows reference")


@settings(max_examples=20, deadline=None)
@given(grouped_problems(), DTYPES, st.sampled_from([1, 7, 40]))
def test_samples_unfolded_in_bands_of_rows(problem, dtype, band_elements):
    """Above BAND_COLS_ELEMENTS a sample (each its own chunk here) is unfolded and multiplied a band of output
    rows at a time (one row, a few, or all but a last short band); the forward pass still matches the
    reference and torch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(K, "SAMPLE_COLS_ELEMENTS", 1)
        patch.setattr(K, "BAND_COLS_ELEMENTS", band_elements)
        check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                            K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                            K.conv2d_backward_weight_reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [7, 8, 9, 10])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (2, 1)])
def test_depthwise_3x3_rows_at_every_width_parity(stride, width, dtype):
    """The 3x3 row passes (stride 1 contiguous, stride 2 split into even and odd columns) at odd and even
    padded widths, against torch and the reference."""
    problem = ((2, 3, 6, width), (6, 1, 3, 3), stride, (1, 1), (1, 1), 3, width)
    check_against_torch(problem, dtype, K.conv2d_forward, K.conv2d_backward_input, K.conv2d_backward_weight,
                        K.conv2d_forward_reference, K.conv2d_backward_input_reference,
                        K.conv2d_backward_weight_reference)


@settings(max_examples=10, deadline=None)
@given(depthwise_problems(), st.integers(1, 7))
def test_depthwise_forward_is_the_same_in_any_number_of_runs_and_threads(problem, n_runs):
    """The planes split into runs (threaded or not) give exactly the one-run result: each plane is computed
    by the same loop whichever run it falls in."""
    _, x, weight, (stride, padding, dilation, _) = make_inputs(problem, np.float32)
    kernel = K.depthwise_conv2d_forward_kernel
    epilogue = K.NO_EPILOGUE.arrays(weight.shape[0], x.dtype)
    args = (x, weight, stride, padding, dilation)

    def fresh():
        return np.empty(K.conv_output_shape(x.shape, weight.shape, stride, padding, dilation), x.dtype)
    expected = kernel.serial(*args, 1, *epilogue, fresh())
    np.testing.assert_array_equal(kernel.serial(*args, n_runs, *epilogue, fresh()), expected)
    np.testing.assert_array_equal(kernel.parallel(*args, n_runs, *epilogue, fresh()), expected)


# ----- the fused epilogue: bias, eval BatchNorm and clamp in the conv's output pass -----------------

CLIPS = st.sampled_from([None, (0.0, np.inf), (0.0, 6.0), (-0.5, 0.5)])


def make_epilogue(rng, out_channels, dtype, with_bias, with_norm, clip):
    bias = rng.standard_normal(out_channels).astype(dtype) if with_bias else None
    norm = None
    if with_norm:
        mean, gamma, beta = (rng.standard_normal(out_channels).astype(dtype) for _ in range(3))
        var = rng.uniform(0.1, 2.0, out_channels).astype(dtype)
        norm = (mean, (1.0 / np.sqrt(var + 1e-5)).astype(dtype), gamma, beta, var)
    return K.Epilogue(bias, None if norm is None else norm[:4], clip), norm


def torch_epilogue(x, weight, epilogue, var, stride, padding, dilation, groups):
    """conv2d (+ bias), then torch's batch_norm in eval mode, then clamp."""
    out = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                   None if epilogue.bias is None else torch.from_numpy(epilogue.bias), stride, padding, dilation, groups)
    if epilogue.norm is not None:
        mean, _, gamma, beta = (torch.from_numpy(a) for a in epilogue.norm)
        out = F.batch_norm(out, mean, torch.from_numpy(var), gamma, beta, training=False, eps=1e-5)
    if epilogue.clip is not None:
        out = torch.clamp(out, *epilogue.clip)
    return out.numpy()


@settings(max_examples=40, deadline=None)
@given(st.one_of(grouped_problems(), depthwise_problems()), DTYPES, st.booleans(), st.booleans(), CLIPS,
       st.booleans())
def test_epilogue_is_the_layers_after_the_conv(problem, dtype, with_bias, with_norm, clip, pointwise):
    """conv2d_forward(..., epilogue) == the epilogue's NumPy twin on the plain conv, bit for bit (same
    arithmetic, same order); twin on the reference conv == torch's conv, batch_norm and clamp. `pointwise`
    makes the kernel 1x1 (stride 1, no padding, one group) for the GEMM path."""
    x_shape, w_shape, stride, padding, dilation, groups, seed = problem
    if pointwise:
        w_shape, stride, padding, groups = (w_shape[0], x_shape[1], 1, 1), (1, 1), (0, 0), 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    epilogue, norm = make_epilogue(rng, w_shape[0], dtype, with_bias, with_norm, clip)
    args = (stride, padding, dilation, groups)
    fused = K.conv2d_forward(x, weight, *args, epilogue)
    np.testing.assert_array_equal(fused, K.apply_epilogue_reference(K.conv2d_forward(x, weight, *args), epilogue))
    expected = torch_epilogue(x, weight, epilogue, None if norm is None else norm[4], *args)
    # torch folds the batch norm into a scale and shift (see test_kernels_norm.py): one rounding more or
    # fewer per element on top of the conv's.
    assert_close(fused, expected, "fused")
    assert_close(K.apply_epilogue_reference(K.conv2d_forward_reference(x, weight, *args), epilogue), expected,
                 "reference")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["pointwise", "dense", "depthwise"])
def test_epilogue_keeps_nan_and_the_plain_conv_bits(kind, dtype):
    """On each kernel path, the fused output is the epilogue's twin on the plain conv, bit for bit; a NaN
    input stays NaN where it is read (in the samples that read it only)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 23, 29)).astype(dtype)
    x[1, 2, 5, 7] = np.nan
    weight, groups, padding = {"pointwise": ((6, 4, 1, 1), 1, (0, 0)), "dense": ((6, 4, 3, 3), 1, (1, 1)),
                               "depthwise": ((8, 1, 3, 3), 4, (1, 1))}[kind]
    weight = rng.standard_normal(weight).astype(dtype)
    epilogue, norm = make_epilogue(rng, weight.shape[0], dtype, True, True, (0.0, np.inf))
    args = ((1, 1), padding, (1, 1), groups)
    fused = K.conv2d_forward(x, weight, *args, epilogue)
    plain = K.conv2d_forward(x, weight, *args)
    np.testing.assert_array_equal(fused, K.apply_epilogue_reference(plain, epilogue))
    assert np.isnan(fused[1]).any() and not np.isnan(fused[0]).any()
    clean = np.nan_to_num(x, nan=0.0)
    assert_close(K.conv2d_forward(clean, weight, *args, epilogue), torch_epilogue(clean, weight, epilogue, norm[4], *args),
                 "fused, no NaN")


@st.composite
def patch_problems(draw):
    """A transposed convolution whose kernel equals its stride: (batch, c_in, c_out, kernel, size, seed)."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)), kernel, size, \
        draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(patch_problems(), st.booleans(), DTYPES)
def test_patch_conv_transpose_kernel_equals_twin_and_torch(problem, with_bias, dtype):
    """kernel == stride: the patch path (`patch_conv2d_backward_input`, what `conv2d_backward_input` runs
    then) against torch's conv_transpose2d; its scatter bit for bit against the NumPy twin."""
    batch, c_in, c_out, kernel, size, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c_in, *size)).astype(dtype)
    weight = rng.standard_normal((c_in, c_out, *kernel)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    shape = (batch, c_out, size[0] * kernel[0], size[1] * kernel[1])
    expected = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight),
                                  None if bias is None else torch.from_numpy(bias), stride=kernel).numpy()
    got = K.patch_conv2d_backward_input(x, weight, shape, bias)
    assert_close(got, expected, "patch transposed convolution")
    dispatched = K.conv2d_backward_input(x, weight, shape, kernel, (0, 0), (1, 1), 1)
    assert_close(dispatched + (0 if bias is None else bias.reshape(1, -1, 1, 1)), expected, "conv2d_backward_input")
    cols = np.matmul(weight.reshape(c_in, -1).T, x.reshape(batch, c_in, -1))
    empty = np.zeros(0, dtype)
    twin_bias = empty if bias is None else bias
    np.testing.assert_array_equal(K.scatter_patches(cols, twin_bias, *kernel, np.empty(shape, dtype)),
                                  K.scatter_patches_reference(cols, twin_bias, *kernel, shape))


def test_patch_conv_transpose_refuses_an_untiled_shape():
    x, weight = np.zeros((1, 2, 3, 3), np.float32), np.zeros((2, 4, 2, 2), np.float32)
    with pytest.raises(ValueError, match="not tiled"):
        K.patch_conv2d_backward_input(x, weight, (1, 4, 7, 6))

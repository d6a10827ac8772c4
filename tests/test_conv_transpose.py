"""conv_transpose2d and nn.ConvTranspose2d against torch: forward and every gradient."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import functional as F
from minicompress import nn

from harness import check_op, to_torch


@st.composite
def transpose_geometry(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    # padding may not exceed what the (dilated) kernel adds; output_padding < max(stride, dilation) as torch asks
    padding = tuple(draw(st.integers(0, (d * (k - 1)) // 2)) for k, d in zip(kernel, dilation))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    return groups, c_in, c_out, kernel, stride, padding, output_padding, dilation, size


@settings(max_examples=40, deadline=None)
@given(transpose_geometry(), st.integers(1, 2), st.booleans(), st.integers(0, 2**31 - 1))
def test_conv_transpose2d_matches_torch(geometry, batch, with_bias, seed):
    groups, c_in, c_out, kernel, stride, padding, output_padding, dilation, size = geometry
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((batch, c_in) + size), rng.standard_normal((c_in, c_out // groups) + kernel)]
    if with_bias:
        inputs.append(rng.standard_normal(c_out))
    # float64: the point is the index arithmetic, which must agree to rounding
    check_op(lambda *t: F.conv_transpose2d(t[0], t[1], t[2] if with_bias else None, stride, padding,
                                           output_padding, groups, dilation),
             lambda *t: torch.nn.functional.conv_transpose2d(t[0], t[1], t[2] if with_bias else None, stride,
                                                             padding, output_padding, groups, dilation),
             inputs)


def test_conv_transpose2d_module_matches_torch():
    mc.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    ref = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    with torch.no_grad():
        ref.weight.copy_(to_torch(layer.weight.data))
        ref.bias.copy_(to_torch(layer.bias.data))
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 7)).astype(np.float32)
    out = layer(mc.tensor(x))
    assert out.shape == (2, 6, 10, 14)
    # float32 sums of 2 * 3 * 3 products: 1e-5 relative holds
    np.testing.assert_allclose(out.data, ref(to_torch(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_conv_transpose2d_rejects_bad_arguments():
    x, w = mc.zeros(1, 4, 3, 3), mc.zeros(4, 2, 3, 3)
    with pytest.raises(ValueError, match="channels"):
        F.conv_transpose2d(mc.zeros(1, 3, 3, 3), w)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="bias"):
        F.conv_transpose2d(x, w, mc.zeros(3))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 5), st.integers(1, 5), st.integers(1, 2), st.booleans(), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**31 - 1))
def test_kernel_equal_to_stride_matches_torch_forward_and_gradients(kh, kw, c_in, c_out, batch, h, w, output_padding,
                                                                    with_bias, dtype, seed):
    """kernel == stride, the path `conv2d_backward_input` takes for tiling windows (kernels.conv.
    patch_conv2d_backward_input): conv_transpose2d forward and gradients (its forward is that path), and a
    patchify conv2d whose input gradient is that path, against torch. output_padding (< stride) adds rows the
    patches do not cover. float32: sums of at most 5 products, the project default tolerance."""
    rng = np.random.default_rng(seed)
    op = (min(output_padding - 1, kh - 1), min(output_padding - 1, kw - 1))
    x = rng.standard_normal((batch, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_in, c_out, kh, kw)).astype(dtype)
    inputs = [x, weight] + ([rng.standard_normal(c_out).astype(dtype)] if with_bias else [])
    check_op(lambda *t: F.conv_transpose2d(t[0], t[1], t[2] if with_bias else None, (kh, kw), 0, op),
             lambda *t: torch.nn.functional.conv_transpose2d(t[0], t[1], t[2] if with_bias else None, (kh, kw), 0, op),
             inputs)
    image = rng.standard_normal((batch, c_in, h * kh, w * kw)).astype(dtype)
    conv_weight = rng.standard_normal((c_out, c_in, kh, kw)).astype(dtype)
    check_op(lambda a, b: F.conv2d(a, b, None, (kh, kw)), lambda a, b: torch.nn.functional.conv2d(a, b, None, (kh, kw)),
             [image, conv_weight])

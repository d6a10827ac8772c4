"""The blocked float32 attention (`minicompress.kernels.flash_attention`): kernel == its plain NumPy twin ==
torch.nn.functional.scaled_dot_product_attention, on hypothesis-drawn shapes that cross the query block (64),
the key block (128) and the 32-wide register tiles, with no mask, boolean and additive masks of several
broadcast shapes, is_causal and a given scale; through F.scaled_dot_product_attention without grad (the
kernel's path) and with grad (the softmax-keeping path, whose gradients still match torch's).

Tolerance. Kernel and torch both sum q.k in float32 and softmax by blocks, each in its own order (the online
softmax rescales partial sums by exp(m_old - m_new) per key block), so each score carries a rounding error
of about E ulps of max |q||k| scale, and a probability moves by that much relative: the output, a convex
combination of v's rows, moves by at most ~ E eps max|s| max|v|. The bound used is 8 E eps (1 + max|s|)
max|v|, eps = 2^-23, a few times the estimate because exp and the row sum round too.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.functional as F
from minicompress.kernels import flash_attention as K

EPS32 = 2.0 ** -23


def bound(q, k, v, scale):
    top_score = np.abs(q).max() * np.abs(k).max() * q.shape[-1] * abs(scale)
    return 8 * q.shape[-1] * EPS32 * (1 + top_score) * max(np.abs(v).max(), 1e-30)


@st.composite
def problems(draw):
    """q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev) float32 in [-3, 3], a mask kind and a scale."""
    batch, heads = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    length, size = draw(st.sampled_from([1, 3, 31, 64, 65, 70])), draw(st.sampled_from([1, 5, 32, 33, 128, 140]))
    features, v_features = draw(st.sampled_from([1, 7, 32, 40])), draw(st.sampled_from([1, 16, 32, 33]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def uniform(*shape):
        return rng.uniform(-3, 3, shape).astype(np.float32)
    q, k, v = uniform(batch, heads, length, features), uniform(batch, heads, size, features), uniform(batch, heads, size, v_features)
    kind = draw(st.sampled_from(["none", "causal", "bool", "bool keys", "bool heads", "float", "float keys"]))
    mask = None
    if kind == "bool":
        mask = rng.random((batch, heads, length, size)) > 0.3
    elif kind == "bool keys":          # a padding mask, one row for every head and query (BERT's)
        mask = rng.random((batch, 1, 1, size)) > 0.3
        mask[0, 0, 0, :] = False        # a sequence with every key masked: zeros, as torch
    elif kind == "bool heads":
        mask = rng.random((heads, length, size)) > 0.3
    elif kind.startswith("float"):
        shape = (batch, heads, length, size) if kind == "float" else (batch, 1, 1, size)
        mask = uniform(*shape)
        mask[rng.random(shape) > 0.7] = -np.inf
        mask[..., 0] = 0               # torch's fused CPU path and its math path disagree on all -inf rows
    scale = draw(st.sampled_from([None, 0.05, 1.0]))
    return q, k, v, kind, mask, scale


def torch_sdpa(q, k, v, kind, mask, scale):
    attn_mask = None if mask is None else torch.from_numpy(mask)
    return TF.scaled_dot_product_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
                                           attn_mask=attn_mask, is_causal=kind == "causal", scale=scale).numpy()


@settings(max_examples=60, deadline=None)
@given(problems())
def test_functional_without_grad_matches_torch(problem):
    q, k, v, kind, mask, scale = problem
    with mc.no_grad():
        got = F.scaled_dot_product_attention(mc.tensor(q), mc.tensor(k), mc.tensor(v),
                                             attn_mask=None if mask is None else mc.tensor(mask),
                                             is_causal=kind == "causal", scale=scale).data
    want = torch_sdpa(q, k, v, kind, mask, scale)
    assert got.shape == want.shape and got.dtype == np.float32
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    np.testing.assert_allclose(got, want, rtol=0, atol=bound(q, k, v, s))


@settings(max_examples=40, deadline=None)
@given(problems())
def test_kernel_matches_its_numpy_twin(problem):
    q, k, v, kind, mask, scale = problem
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    flat = [a.reshape((-1,) + a.shape[-2:]) for a in (q, k, v)]
    bias = None
    if mask is not None:
        additive = np.where(mask, 0, -np.inf).astype(np.float32) if mask.dtype == bool else mask
        bias = np.ascontiguousarray(np.broadcast_to(additive, q.shape[:-1] + (k.shape[-2],))).reshape(
            -1, q.shape[-2], k.shape[-2])
    got = K.flash_attention(*flat, bias, None, s, kind == "causal")
    want = K.flash_attention_reference(*flat, bias, None, s, kind == "causal")
    np.testing.assert_allclose(got, want, rtol=0, atol=bound(q, k, v, s))


@settings(max_examples=15, deadline=None)
@given(problems())
def test_gradients_with_compact_masks_match_torch(problem):
    """With grad, the op keeps the softmax (kernels/attention.py): masks of their own shape are broadcast there."""
    q, k, v, kind, mask, scale = problem
    tensors = [mc.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*tensors, attn_mask=None if mask is None else mc.tensor(mask),
                                         is_causal=kind == "causal", scale=scale)
    grad_out = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    out.backward(mc.tensor(grad_out))
    theirs = [torch.from_numpy(a).requires_grad_() for a in (q, k, v)]
    want = TF.scaled_dot_product_attention(*theirs, attn_mask=None if mask is None else torch.from_numpy(mask),
                                           is_causal=kind == "causal", scale=scale)
    want.backward(torch.from_numpy(grad_out))
    s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    tol = bound(q, k, v, s)
    np.testing.assert_allclose(out.data, want.detach().numpy(), rtol=0, atol=tol)
    for mine, other in zip(tensors, theirs):
        # a gradient sums S (or L) products of size |g| |v| (or |g| |q| |k| scale): that many times the bound
        np.testing.assert_allclose(mine.grad.data, other.grad.numpy(), rtol=0,
                                   atol=tol * max(q.shape[-2], k.shape[-2]) * (1 + np.abs(grad_out).max()))


def test_mask_that_does_not_broadcast_is_refused_by_name():
    q = mc.tensor(np.zeros((1, 2, 4, 8), np.float32))
    with pytest.raises(ValueError, match="attn_mask"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=mc.tensor(np.ones((3, 4), bool)))

"""Softmax attention and linear attention: kernel == NumPy reference == torch, forward and all three
gradients, through the functional API (masks, causal, scale) and at the kernel level."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import minicompress as mc
import minicompress.functional as F
from harness import TOLERANCE, check_op
from minicompress.kernels import attention as K
from strategies import FLOATS, arrays


def torch_linear_attention(q, k, v):
    pq, pk = TF.elu(q) + 1, TF.elu(k) + 1
    return (pq @ (pk.transpose(-1, -2) @ v)) / (pq @ pk.sum(-2, keepdim=True).transpose(-1, -2))


@st.composite
def qkv(draw, dtype=None, same_length=False):
    dtype = dtype or draw(FLOATS)
    batch = draw(st.sampled_from([(1,), (2,), (2, 3)]))
    L, S = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    S = L if same_length else S
    E, Ev = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return (draw(arrays(batch + (L, E), dtype)), draw(arrays(batch + (S, E), dtype)),
            draw(arrays(batch + (S, Ev), dtype)))


@given(inputs=qkv())
def test_sdpa_matches_torch(inputs):
    check_op(F.scaled_dot_product_attention, TF.scaled_dot_product_attention, inputs)


@given(inputs=qkv(same_length=True))
def test_causal_sdpa_matches_torch(inputs):
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True), inputs)


@given(inputs=qkv(), data=st.data(), scale=st.sampled_from([None, 0.3]))
def test_sdpa_with_masks_and_scale(inputs, data, scale):
    q, k, _ = inputs
    L, S = q.shape[-2], k.shape[-2]
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=L * S, max_size=L * S))).reshape(L, S)
    keep[:, 0] = True  # a fully masked row is NaN in torch's math path; keep one key per query
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mc.tensor(keep), scale=scale),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.from_numpy(keep), scale=scale),
             inputs)
    additive = data.draw(arrays((L, S), q.dtype))
    check_op(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mc.tensor(additive)),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.from_numpy(additive)), inputs)


@given(inputs=qkv(), data=st.data())
def test_sdpa_under_no_grad_matches_torch(inputs, data):
    """Under no_grad the forward keeps no probabilities and works a block of queries at a time."""
    q, k, v = inputs
    keep = data.draw(arrays((q.shape[-2], k.shape[-2]), np.float32)) > -1.5
    keep[:, 0] = True
    with mc.no_grad():
        out = F.scaled_dot_product_attention(*(mc.tensor(a) for a in inputs), attn_mask=mc.tensor(keep))
    expected = TF.scaled_dot_product_attention(*(torch.from_numpy(a) for a in inputs),
                                               attn_mask=torch.from_numpy(keep))
    assert out.dtype == q.dtype and not out.requires_grad
    np.testing.assert_allclose(out.numpy(), expected.numpy(), **TOLERANCE[q.dtype.type])


@given(inputs=qkv())
def test_linear_attention_matches_torch_formula(inputs):
    check_op(F.linear_attention, torch_linear_attention, inputs)


@given(inputs=qkv(dtype=np.float64), seed=st.integers(0, 100))
def test_kernels_equal_their_references(inputs, seed):
    q, k, v = (np.ascontiguousarray(a.reshape((-1,) + a.shape[-2:])) for a in inputs)
    scale = 1 / np.sqrt(q.shape[-1])
    out, probs = K.sdpa_forward(q, k, v, None, scale)
    out_ref, probs_ref = K.sdpa_forward_reference(q, k, v, None, scale)
    np.testing.assert_allclose(out, out_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(probs, probs_ref, rtol=1e-12, atol=1e-14)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    for got, want in zip(K.sdpa_backward(g, q, k, v, probs, scale), K.sdpa_backward_reference(g, q, k, v, probs, scale)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(K.linear_attention_forward(q, k, v), K.linear_attention_forward_reference(q, k, v),
                               rtol=1e-12, atol=1e-14)
    for got, want in zip(K.linear_attention_backward(g, q, k, v), K.linear_attention_backward_reference(g, q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_dropout_in_attention_keeps_shapes_and_scales_kept_weights():
    mc.manual_seed(0)
    q = mc.randn(1, 2, 16, 4, requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    out.sum().backward()
    assert out.shape == (1, 2, 16, 4) and np.isfinite(q.grad.data).all()


def test_attention_rejects_bad_shapes():
    q = mc.randn(2, 3, 4)
    with pytest.raises(ValueError, match="embedding dim"):
        F.scaled_dot_product_attention(q, mc.randn(2, 3, 5), mc.randn(2, 3, 4))
    with pytest.raises(ValueError, match="sequence length"):
        F.scaled_dot_product_attention(q, q, mc.randn(2, 5, 4))
    with pytest.raises(ValueError, match="feature dim"):
        F.linear_attention(q, mc.randn(2, 3, 5), q)
    with pytest.raises(ValueError, match="dimensions"):
        F.linear_attention(mc.randn(4), q, q)

"""Array-level attention kernels (`minicompress.kernels.attention`): kernel == NumPy reference == torch,
forward and all three gradients, on hypothesis-drawn (B, L, E) shapes.

Softmax attention is checked against torch.nn.functional.scaled_dot_product_attention with the same mask
and scale (no mask, additive float mask, boolean mask, causal); with dropout, against the same formula
written with torch ops. Linear attention is checked against its formula written with torch ops,
phi = F.elu(x) + 1. torch's autograd gives every gradient.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import TOLERANCE
from minicompress.kernels import attention as K
from strategies import arrays

DTYPES = [np.float32, np.float64]
# Kernel against its own NumPy twin: the same arithmetic in a different order, so rounding only. The atol
# covers the softmax backward, W * dW - probs * rowsum(W * dW), which cancels terms of size |g| |v| ~ 10
# down to nearly 0 and keeps their rounding (float32: ~1e-6).
TWIN_TOLERANCE = {np.float32: TOLERANCE[np.float32], np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def qkv(draw, dtype, same_length=False):
    """q (B, L, E), k (B, S, E), v (B, S, Ev), small sides, values in [-3, 3]."""
    batch, length, features = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    size = length if same_length else draw(st.integers(1, 6))
    v_features = draw(st.integers(1, 5))
    return (draw(arrays((batch, length, features), dtype)), draw(arrays((batch, size, features), dtype)),
            draw(arrays((batch, size, v_features), dtype)))


def upstream(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_out_and_grads(fn, arrays_, grad_out):
    """fn(*tensors) and the gradients of <fn(...), grad_out> with respect to every input, by torch autograd."""
    tensors = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays_]
    out = fn(*tensors)
    grads = torch.autograd.grad(out, tensors, torch.from_numpy(grad_out))
    return out.detach().numpy(), [g.numpy() for g in grads]


def assert_all_close(got, want, tol, what):
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what} {name}: {g.shape} {g.dtype} vs {w.shape} {w.dtype}"
        np.testing.assert_allclose(g, w, **tol, err_msg=f"{what} {name}")


# --------------------------------------------------------------------------------------------------
# Softmax attention


def draw_mask(data, kind, n_batch, length, size, dtype):
    """(bias for minicompress, attn_mask and is_causal for torch) for one kind of mask."""
    if kind == "none":
        return None, None, False
    if kind == "causal":
        keep = np.tril(np.ones((length, size), dtype=bool))
        return np.broadcast_to(np.where(keep, 0, -np.inf).astype(dtype), (n_batch, length, size)), None, True
    if kind == "float":
        bias = data.draw(arrays((n_batch, length, size), dtype))
        bias[data.draw(arrays((n_batch, length, size), np.float32)) > 2] = -np.inf
        bias[..., 0] = 0  # torch's fused CPU path and its math path disagree on all -inf rows of a float mask
        return bias, torch.from_numpy(bias), False
    keep = data.draw(arrays((n_batch, length, size), np.float32)) > -1.5   # about a quarter masked
    return np.where(keep, 0, -np.inf).astype(dtype), torch.from_numpy(keep), False


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", ["none", "float", "bool", "causal"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_sdpa_matches_reference_and_torch(dtype, mask, data):
    q, k, v = data.draw(qkv(dtype))
    scale = data.draw(st.sampled_from([1 / math.sqrt(q.shape[2]), 0.3, 1.0]))
    bias, torch_mask, causal = draw_mask(data, mask, q.shape[0], q.shape[1], k.shape[1], dtype)

    out, probs = K.sdpa_forward(q, k, v, bias, scale)
    out_ref, probs_ref = K.sdpa_forward_reference(q, k, v, bias, scale)
    g = upstream(out.shape, dtype)
    grads = K.sdpa_backward(g, q, k, v, probs, scale)
    grads_ref = K.sdpa_backward_reference(g, q, k, v, probs_ref, scale)
    out_torch, grads_torch = torch_out_and_grads(
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch_mask, is_causal=causal, scale=scale),
        (q, k, v), g)
    with pytest.MonkeyPatch.context() as patch:  # blocks of 1, 2 or 3 queries: full and partial blocks
        patch.setattr(K, "QUERY_BLOCK", data.draw(st.integers(1, 3), label="query block"))
        out_blocked, no_probs = K.sdpa_forward(q, k, v, bias, scale, need_probs=False)

    assert no_probs is None and out_blocked.dtype == dtype
    np.testing.assert_allclose(out_blocked, out_torch, **TOLERANCE[dtype], err_msg="forward-only out vs torch")
    np.testing.assert_allclose(out_blocked, out, **TWIN_TOLERANCE[dtype], err_msg="forward-only out vs full")
    assert out.dtype == probs.dtype == dtype and probs.shape == (q.shape[0], q.shape[1], k.shape[1])
    np.testing.assert_allclose(out, out_ref, **TWIN_TOLERANCE[dtype], err_msg="out vs reference")
    np.testing.assert_allclose(probs, probs_ref, **TWIN_TOLERANCE[dtype], err_msg="probs vs reference")
    np.testing.assert_allclose(out, out_torch, **TOLERANCE[dtype], err_msg="out vs torch")
    assert_all_close(grads, grads_ref, TWIN_TOLERANCE[dtype], "vs reference")
    assert_all_close(grads, grads_torch, TOLERANCE[dtype], "vs torch")


def assert_within_one_ulp_of_exp(x, got):
    """got == exp(x) to within one float32 ulp of the exact value (float64 exp, rounding error ~1e-16), and
    0 where x < -87, where the exact value is below 1.7e-38."""
    exact = np.exp(x.astype(np.float64))
    normal = x >= -87
    error = np.abs(got[normal].astype(np.float64) - exact[normal])
    assert np.all(error <= np.spacing(exact[normal].astype(np.float32))), f"worst error {error.max()}"
    assert np.all(got[~normal] == 0) and np.all(exact[~normal] < 1.7e-38)


@settings(max_examples=50, deadline=None)
@given(x=arrays((64,), np.float32, low=-100.0, high=0.0), masked=st.integers(0, 64))
def test_float32_exp_is_within_one_ulp(x, masked):
    """The softmax's float32 exp (polynomial plus exponent bits, not libm): one ulp everywhere on [-87, 0],
    0 below and at -inf, as torch's softmax gives for masked scores."""
    x[:masked] = -np.inf
    got = x.copy()
    K.exp_nonpositive_float32(got)
    assert_within_one_ulp_of_exp(x, got)


def test_float32_exp_on_a_dense_grid():
    x = np.linspace(-90, 0, 2_000_001, dtype=np.float32)
    got = x.copy()
    K.exp_nonpositive_float32(got)
    assert_within_one_ulp_of_exp(x, got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_give_zeros_like_torch(dtype):
    """torch's math path runs torch._safe_softmax: a query that sees no key gets probs 0, out 0, grads 0."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(shape).astype(dtype) for shape in [(2, 4, 3), (2, 5, 3), (2, 5, 2)])
    keep = rng.random((2, 4, 5)) < 0.6
    keep[0, 1] = False
    keep[1, 3] = False
    keep[:, (0, 2), 0] = True
    bias = np.where(keep, 0, -np.inf).astype(dtype)
    out, probs = K.sdpa_forward(q, k, v, bias, 0.5)
    g = upstream(out.shape, dtype)
    dq, dk, dv = K.sdpa_backward(g, q, k, v, probs, 0.5)
    out_torch, grads_torch = torch_out_and_grads(
        lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.from_numpy(keep), scale=0.5),
        (q, k, v), g)
    assert np.all(probs[0, 1] == 0) and np.all(out[1, 3] == 0) and np.all(dq[0, 1] == 0)
    np.testing.assert_allclose(out, out_torch, **TOLERANCE[dtype])
    assert_all_close((dq, dk, dv), grads_torch, TOLERANCE[dtype], "vs torch")
    assert_all_close((dq, dk, dv), K.sdpa_backward_reference(g, q, k, v, probs, 0.5), TWIN_TOLERANCE[dtype],
                     "vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_sdpa_backward_with_dropped_probs(dtype, data):
    """out = dropped v with dropped = probs * keep / (1 - p): dv follows dropped, the softmax follows probs.
    The oracle is that formula in torch ops (torch's own dropout draws its own mask)."""
    q, k, v = data.draw(qkv(dtype))
    p, scale = 0.4, 0.7
    keep = data.draw(arrays((q.shape[0], q.shape[1], k.shape[1]), np.float32)) > -1.2
    factor = (keep / (1 - p)).astype(dtype)

    def torch_dropout_attention(q, k, v):
        probs = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1)
        return (probs * torch.from_numpy(factor)) @ v

    _, probs = K.sdpa_forward(q, k, v, None, scale)
    dropped = probs * factor
    g = upstream((q.shape[0], q.shape[1], v.shape[2]), dtype)
    grads = K.sdpa_backward(g, q, k, v, probs, scale, dropped_probs=dropped)
    out_torch, grads_torch = torch_out_and_grads(torch_dropout_attention, (q, k, v), g)
    np.testing.assert_allclose(dropped @ v, out_torch, **TOLERANCE[dtype], err_msg="dropped out vs torch")
    assert_all_close(grads, grads_torch, TOLERANCE[dtype], "vs torch")
    assert_all_close(grads, K.sdpa_backward_reference(g, q, k, v, probs, scale, dropped_probs=dropped),
                     TWIN_TOLERANCE[dtype], "vs reference")


# --------------------------------------------------------------------------------------------------
# Linear attention


def torch_linear_attention(q, k, v):
    phi_q, phi_k = TF.elu(q) + 1, TF.elu(k) + 1
    num = phi_q @ (phi_k.transpose(1, 2) @ v)
    return num / (phi_q @ phi_k.sum(dim=1, keepdim=True).transpose(1, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_linear_attention_matches_reference_and_torch(dtype, data):
    q, k, v = data.draw(qkv(dtype))
    out = K.linear_attention_forward(q, k, v)
    g = upstream(out.shape, dtype)
    grads = K.linear_attention_backward(g, q, k, v)
    out_torch, grads_torch = torch_out_and_grads(torch_linear_attention, (q, k, v), g)
    assert out.shape == (q.shape[0], q.shape[1], v.shape[2]) and out.dtype == dtype
    np.testing.assert_allclose(out, K.linear_attention_forward_reference(q, k, v), **TWIN_TOLERANCE[dtype])
    np.testing.assert_allclose(out, out_torch, **TOLERANCE[dtype], err_msg="out vs torch")
    assert_all_close(grads, K.linear_attention_backward_reference(g, q, k, v), TWIN_TOLERANCE[dtype], "vs reference")
    assert_all_close(grads, grads_torch, TOLERANCE[dtype], "vs torch")


@settings(max_examples=25, deadline=None)
@given(data=st.data(), transpose_a=st.booleans())
def test_loop_matmuls_equal_numpy(data, transpose_a):
    m, inner, n = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7))
    a = data.draw(arrays((inner, m) if transpose_a else (m, inner), np.float64))
    b = data.draw(arrays((inner, n), np.float64))
    out = np.full((m, n), np.nan)
    (K.matmul_tn_into if transpose_a else K.matmul_into)(a, b, out)
    np.testing.assert_allclose(out, (a.T if transpose_a else a) @ b, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------------------------------
# Validation at the entry points


def test_bad_input_raises_with_argument_name():
    q, k, v = np.zeros((2, 3, 4)), np.zeros((2, 5, 4)), np.zeros((2, 5, 6))
    with pytest.raises(TypeError, match="q must be a numpy.ndarray"):
        K.sdpa_forward(q.tolist(), k, v, None, 1.0)
    with pytest.raises(TypeError, match="k has dtype float32"):
        K.sdpa_forward(q, k.astype(np.float32), v, None, 1.0)
    with pytest.raises(TypeError, match="v must be float32 or float64"):
        K.linear_attention_forward(q, k, v.astype(np.int64))
    with pytest.raises(ValueError, match=r"q must be 3-D .* got shape \(3, 4\)"):
        K.linear_attention_forward(q[0], k, v)
    with pytest.raises(ValueError, match=r"k must have shape .*\(2, 5, 4\), got \(2, 5, 3\)"):
        K.sdpa_forward(q, k[..., :3], v, None, 1.0)
    with pytest.raises(ValueError, match=r"v must have shape .*\(2, 5, 6\), got \(2, 4, 6\)"):
        K.linear_attention_forward(q, k, v[:, :4])
    with pytest.raises(ValueError, match=r"attn_bias must have shape \(B, L, S\) = \(2, 3, 5\)"):
        K.sdpa_forward(q, k, v, np.zeros((2, 5, 3)), 1.0)
    with pytest.raises(TypeError, match="attn_bias must be float32 or float64, got dtype bool"):
        K.sdpa_forward(q, k, v, np.ones((2, 3, 5), dtype=bool), 1.0)
    with pytest.raises(TypeError, match="scale must be a real number, got NoneType"):
        K.sdpa_forward(q, k, v, None, None)
    with pytest.raises(ValueError, match="scale must be finite, got inf"):
        K.sdpa_backward(np.zeros((2, 3, 6)), q, k, v, np.zeros((2, 3, 5)), math.inf)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(B, L, Ev\) = \(2, 3, 6\)"):
        K.linear_attention_backward(np.zeros((2, 3, 4)), q, k, v)
    with pytest.raises(ValueError, match=r"dropped_probs must have shape"):
        K.sdpa_backward(np.zeros((2, 3, 6)), q, k, v, np.zeros((2, 3, 5)), 1.0, dropped_probs=np.zeros((2, 3, 4)))

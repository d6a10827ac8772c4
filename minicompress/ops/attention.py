"""Attention Functions over the Numba kernels in `kernels/attention.py`.

Softmax attention:  out = dropout(softmax(q k^T * scale + bias)) v        time and memory O(L S)
Linear attention:   out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j)),
                    phi(x) = elu(x) + 1                                    time and memory O(L + S)
"""
import numpy as np

from ..autograd import Function
from ..kernels import attention as kernels
from ..kernels.flash_attention import flash_attention


def _flatten_batch(a):
    return np.ascontiguousarray(a.reshape((-1,) + a.shape[-2:]))


def _bias_by_entry(bias, lead, length, size):
    """An additive mask broadcastable to lead + (L, S) -> (bias (nb, 1 or L, S) float32, index (B,)): the
    mask's distinct entries and, for each flattened batch entry, which of them it uses. A key-padding mask
    (B, 1, 1, S) stays (B, 1, S) instead of growing to (B, H, L, S)."""
    bias = bias.reshape((1,) * (len(lead) + 2 - bias.ndim) + bias.shape)
    rows = length if bias.shape[-2] != 1 else 1
    bias = np.broadcast_to(bias, bias.shape[:-2] + (rows, size))
    entries = bias.shape[:-2]
    index = np.broadcast_to(np.arange(int(np.prod(entries)), dtype=np.int64).reshape(entries), lead).ravel()
    return np.ascontiguousarray(bias.reshape((-1, rows, size)), np.float32), index


class ScaledDotProductAttention(Function):
    """Inputs (..., L, E), (..., S, E), (..., S, Ev); `bias` is an additive mask broadcastable to
    (..., L, S) (-inf masks) or None; `keep` is the dropout keep-mask already divided by (1 - p), or None;
    is_causal keeps key j for query i when j <= i.

    float32 inference (no dropout, no backward) runs the blocked kernel of `kernels/flash_attention.py`,
    which never forms the (L, S) scores; everything else the kernels of `kernels/attention.py`, which keep
    the softmax for the backward."""

    @staticmethod
    def forward(ctx, q, k, v, bias=None, scale=1.0, keep=None, is_causal=False):
        lead, length, size = q.shape[:-2], q.shape[-2], k.shape[-2]
        q3, k3, v3 = _flatten_batch(q), _flatten_batch(k), _flatten_batch(v)
        if keep is None and not any(ctx.needs_input_grad) and q.dtype == np.float32:
            bias3, index = (None, None) if bias is None else _bias_by_entry(bias, lead, length, size)
            out = flash_attention(q3, k3, v3, bias3, index, scale, is_causal)
            return out.reshape(lead + out.shape[-2:])
        if is_causal:
            bias = np.where(np.tril(np.ones((length, size), dtype=bool)), 0.0, -np.inf).astype(q.dtype)
        b3 = None if bias is None else _flatten_batch(np.broadcast_to(bias, lead + (length, size)).astype(q.dtype))
        if keep is None and not any(ctx.needs_input_grad):  # no backward follows: no probs to keep
            out, _ = kernels.sdpa_forward(q3, k3, v3, b3, scale, need_probs=False)
            return out.reshape(lead + out.shape[-2:])
        out, probs = kernels.sdpa_forward(q3, k3, v3, b3, scale)
        dropped = None
        if keep is not None:
            dropped = (probs * keep.reshape(probs.shape)).astype(q.dtype)
            out = np.matmul(dropped, v3)
        ctx.save_for_backward(q3, k3, v3, probs, dropped)
        ctx.scale, ctx.shapes = scale, (q.shape, k.shape, v.shape)
        return out.reshape(lead + out.shape[-2:])

    @staticmethod
    def backward(ctx, g):
        q3, k3, v3, probs, dropped = ctx.saved
        g3 = _flatten_batch(g)
        dq, dk, dv = kernels.sdpa_backward(g3, q3, k3, v3, probs, ctx.scale, dropped_probs=dropped)
        qs, ks, vs = ctx.shapes
        return dq.reshape(qs), dk.reshape(ks), dv.reshape(vs), None


class LinearAttention(Function):
    """Non-causal linear attention with the elu + 1 feature map on (..., L, E) inputs."""

    @staticmethod
    def forward(ctx, q, k, v):
        lead = q.shape[:-2]
        q3, k3, v3 = _flatten_batch(q), _flatten_batch(k), _flatten_batch(v)
        ctx.save_for_backward(q3, k3, v3)
        ctx.shapes = (q.shape, k.shape, v.shape)
        out = kernels.linear_attention_forward(q3, k3, v3)
        return out.reshape(lead + out.shape[-2:])

    @staticmethod
    def backward(ctx, g):
        q3, k3, v3 = ctx.saved
        dq, dk, dv = kernels.linear_attention_backward(_flatten_batch(g), q3, k3, v3)
        qs, ks, vs = ctx.shapes
        return dq.reshape(qs), dk.reshape(ks), dv.reshape(vs)

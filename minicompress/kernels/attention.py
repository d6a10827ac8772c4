"""Attention kernels: softmax (scaled dot-product) attention and linear attention, forward and backward,
each beside its NumPy reference twin. Arrays are 3-D with every leading (batch, head) dim flattened into B.

Scaled dot-product attention (torch.nn.functional.scaled_dot_product_attention, math path):

    q (B, L, E), k (B, S, E), v (B, S, Ev), bias (B, L, S) or None
    scores = q k^T * scale + bias                      (B, L, S)
    probs  = softmax(scores) along S                   (B, L, S)
    out    = probs v                                   (B, L, Ev)

The bias already holds -inf where a position is masked; the caller turns boolean masks and is_causal into
it. A row that is masked everywhere gives probs 0 and out 0, not NaN: torch's math path uses
`torch._safe_softmax`, which zeroes rows whose scores are all -inf (torch/_decomp/decompositions.py).

Dropout is applied by the caller on probs: out = dropped v with dropped = probs * keep / (1 - p). With
W = dropped (or W = probs without dropout) and G = dL/dout, the gradients are

    dv = W^T G                 dW = G v^T
    dscores = W * dW - probs * rowsum(W * dW)          (softmax backward; W * dW = probs * dL/dprobs)
    dq = scale * dscores k     dk = scale * dscores^T q

W * dW equals probs * dL/dprobs because dropped = probs * mask, so the mask never has to be recovered.
Every step is an (L, S)-sized matmul or elementwise pass: time and memory O(L S) per batch entry.

Linear attention (Katharopoulos et al., 2020, "Transformers are RNNs"), non-causal, phi(x) = elu(x) + 1:

    out_i = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))
          = (Q KV)_i / (Q z)_i     Q = phi(q) (L, E), K = phi(k) (S, E), KV = K^T v (E, Ev), z = K^T 1 (E)

Grouping the product as Q (K^T v) never forms the (L, S) matrix: time O((L + S) E Ev), memory
O((L + S)(E + Ev)). With num = Q KV, den = Q z, out = num / den and G = dL/dout:

    dnum = G / den                     dden = -rowsum(dnum * num) / den
    dQ   = dnum KV^T + dden z^T        dKV  = Q^T dnum          dz = Q^T dden
    dK   = v dKV^T + 1 dz^T            dv   = K dKV
    dq   = dQ * phi'(q)                dk   = dK * phi'(k)      phi'(x) = 1 if x > 0 else exp(x)

The public entry points (`sdpa_forward`, `sdpa_backward`, `linear_attention_forward`,
`linear_attention_backward`) validate and make the arrays C-contiguous; the kernels run in parallel over B,
one batch entry per task (the softmax over runs of rows), each task writing only its own slices of the
outputs and its own scratch, so nothing races.

Softmax attention's two (L x S)-sized matmuls go to BLAS (`np.matmul`, between the parallel loops, never
inside `prange`: BLAS inside a Numba thread runs a thread pool inside a thread pool); at N = 1024, E = 64 that
measured 100 ms with the loop matmuls below and about 3x less with BLAS. Three more steps brought the
forward (B=8, N=1024) from ~100 ms to ~40 ms: k^T copied contiguous before the matmul, a float32 exp that
vectorises (`exp_nonpositive_float32`), and, when no backward follows, scores computed a block of queries at
a time in one reused buffer, instead of a fresh (B, L, S) array whose page faults cost as much as a matmul.
Linear attention's matmuls are small (E x Ev) and stay as plain loops (`matmul_into`, `matmul_tn_into`)
inside its kernels.

float32 inference (no dropout, no backward) does not come here: `flash_attention.py` computes it in blocks
without the (L, S) scores, in register tiles, and is faster than these BLAS calls at every shape measured.
"""
import math

import numba
import numpy as np
from numba import njit, prange

from .simd import float32_from_bits

# --------------------------------------------------------------------------------------------------
# Matmuls on 2-D C-contiguous blocks


def _matmul_into(a, b, out):
    """out = a @ b for a (m, k), b (k, n), out (m, n). Row i of out accumulates rows of b scaled by a[i, p]
    (loop order i, p, j), so the inner loop runs over contiguous memory and vectorises."""
    for i in range(a.shape[0]):
        row = out[i]
        row[:] = 0
        for p in range(a.shape[1]):
            x, src = a[i, p], b[p]
            for j in range(row.shape[0]):
                row[j] += x * src[j]


matmul_into = njit(cache=True)(_matmul_into)


def _matmul_tn_into(a, b, out):
    """out = a.T @ b for a (k, m), b (k, n), out (m, n), without forming a.T: each row p of a and b adds
    the outer product a[p]^T b[p] (loop order p, i, j)."""
    out[:] = 0
    for p in range(a.shape[0]):
        src = b[p]
        for i in range(a.shape[1]):
            x, row = a[p, i], out[i]
            for j in range(row.shape[0]):
                row[j] += x * src[j]


matmul_tn_into = njit(cache=True)(_matmul_tn_into)


# --------------------------------------------------------------------------------------------------
# Scaled dot-product attention


# float32 exp as plain arithmetic (Cephes' expf): libm's expf is one call per element, which LLVM cannot
# vectorise; a loop over `exp_nonpositive` it can (2^n is built from its bits, n rounded by adding and
# subtracting 1.5 * 2^23, no call anywhere).
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = hi + lo, hi exact in 9 bits
_EXP_UNDERFLOW = np.float32(-87.0)  # below it exp(x) < 1.7e-38, near float32's smallest normal number
_ROUNDING = np.float32(12582912.0)  # 1.5 * 2^23: x + it - it rounds x to an integer (|x| < 2^22)


def _exp_nonpositive(x):
    """exp(x) for one float32 x <= 0 (-inf included), within one ulp; NaN gives NaN.

    exp(x) = 2^n exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2]; exp(r) is Cephes'
    degree-7 polynomial and 2^n the float32 with exponent bits n + 127. Entries below -87 give 0: torch
    gives a subnormal there, less than 1.7e-38, and 0 for -inf."""
    clamped = max(x, _EXP_UNDERFLOW)
    n = (clamped * _LOG2E + _ROUNDING) - _ROUNDING
    r = clamped - n * _LN2_HI - n * _LN2_LO
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    p = p * float32_from_bits((np.int32(n) + np.int32(127)) << 23)
    return np.float32(0.0) if x < _EXP_UNDERFLOW else (p if x == x else x)


exp_nonpositive = njit(cache=True, inline="always")(_exp_nonpositive)


def _exp_nonpositive_float32(row):
    """In place on a float32 row of entries <= 0: row[j] -> exp(row[j]) (`exp_nonpositive`)."""
    for j in range(row.shape[0]):
        row[j] = exp_nonpositive(row[j])


exp_nonpositive_float32 = njit(cache=True)(_exp_nonpositive_float32)


def _sum_float32(row):
    """Sum of a float32 row, reassociated so that LLVM vectorises it (the order of the adds may change)."""
    total = np.float32(0.0)
    for j in range(row.shape[0]):
        total += row[j]
    return total


sum_float32 = njit(cache=True, fastmath={"reassoc", "nsz"})(_sum_float32)


def _softmax_row(row, bias, b, i, scale, single):
    """In place on row (S,) = q[b, i] k[b]^T: row -> softmax(row * scale + bias[b, i]) (no bias if None); a
    row that is all -inf -> zeros, as torch._safe_softmax. The row maximum is subtracted before exp so
    nothing overflows. float64 (single False): libm's exp, the row sum in float64. float32 (single True):
    `exp_nonpositive_float32`, the row sum in float32."""
    for j in range(row.shape[0]):
        x = row[j] * scale
        if bias is not None:
            x += bias[b, i, j]
        row[j] = x
    top = row.max()
    if top == -np.inf:
        row[:] = 0
        return
    if not single:
        total = 0.0
        for j in range(row.shape[0]):
            row[j] = math.exp(row[j] - top)
            total += row[j]
    else:
        for j in range(row.shape[0]):
            row[j] -= top
        exp_nonpositive_float32(row)
        total = sum_float32(row)
    inv = 1.0 / total
    for j in range(row.shape[0]):
        row[j] *= inv


softmax_row = njit(cache=True)(_softmax_row)


def _softmax_batched(scores, bias, scale, single, n_tasks):
    """In place on scores (B, L, S): every row through `softmax_row`. The B * L rows are cut into n_tasks
    runs of consecutive rows that run in parallel (so a single batch entry still uses every thread);
    single is True for float32 scores."""
    n_rows, length = scores.shape[0] * scores.shape[1], scores.shape[1]
    for task in prange(n_tasks):
        for r in range(task * n_rows // n_tasks, (task + 1) * n_rows // n_tasks):
            b, i = r // length, r % length
            softmax_row(scores[b, i], bias, b, i, scale, single)


softmax_batched = njit(cache=True, parallel=True)(_softmax_batched)


def softmax_in_place(scores, bias, scale):
    """Runs `softmax_batched` on scores (B, L, S): a few tasks per thread."""
    n_tasks = max(1, min(scores.shape[0] * scores.shape[1], 4 * numba.get_num_threads()))
    softmax_batched(scores, bias, scale, scores.dtype == np.float32, n_tasks)


def _safe_softmax_reference(scores):
    top = scores.max(axis=-1, keepdims=True)
    masked = np.isneginf(top)
    e = np.exp(scores - np.where(masked, 0, top))
    return e / np.where(masked, 1, e.sum(axis=-1, keepdims=True))


def sdpa_forward_reference(q, k, v, attn_bias, scale):
    scores = q @ k.transpose(0, 2, 1) * scale
    if attn_bias is not None:
        scores = scores + attn_bias
    probs = _safe_softmax_reference(scores).astype(q.dtype)
    return probs @ v, probs


def _softmax_backward_rows(dweights, weights, probs, scale):
    """In place on dweights (L, S) = dL/dW: -> dL/dscores = scale * (W * dW - probs * rowsum(W * dW))."""
    for i in range(dweights.shape[0]):
        row, w, p = dweights[i], weights[i], probs[i]
        total = 0.0
        for j in range(row.shape[0]):
            row[j] *= w[j]
            total += row[j]
        for j in range(row.shape[0]):
            row[j] = (row[j] - p[j] * total) * scale


softmax_backward_rows = njit(cache=True)(_softmax_backward_rows)


def _softmax_backward_batched(dweights, weights, probs, scale):
    """In place on dweights (B, L, S): every batch entry through `softmax_backward_rows`, in parallel."""
    for b in prange(dweights.shape[0]):
        softmax_backward_rows(dweights[b], weights[b], probs[b], scale)


softmax_backward_batched = njit(cache=True, parallel=True)(_softmax_backward_batched)


def sdpa_backward_reference(grad_out, q, k, v, probs, scale, dropped_probs=None):
    w = probs if dropped_probs is None else dropped_probs
    dv = w.transpose(0, 2, 1) @ grad_out
    t = w * (grad_out @ v.transpose(0, 2, 1))
    dscores = (t - probs * t.sum(axis=-1, keepdims=True)) * scale
    return dscores @ k, dscores.transpose(0, 2, 1) @ q, dv


# --------------------------------------------------------------------------------------------------
# Linear attention


def _phi(x):
    """elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise: positive, so the normaliser never vanishes."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for e in range(x.shape[1]):
            out[i, e] = x[i, e] + 1 if x[i, e] > 0 else math.exp(x[i, e])
    return out


phi = njit(cache=True)(_phi)


def _linear_attention_forward(q, k, v):
    n_batch, length, features = q.shape
    out = np.empty((n_batch, length, v.shape[2]), dtype=q.dtype)
    for b in prange(n_batch):
        fq, fk = phi(q[b]), phi(k[b])
        kv = np.empty((features, v.shape[2]), dtype=q.dtype)
        matmul_tn_into(fk, v[b], kv)
        z = fk.sum(axis=0)
        num = out[b]
        matmul_into(fq, kv, num)
        for i in range(length):
            den = 0.0
            for e in range(features):
                den += fq[i, e] * z[e]
            num[i] *= 1.0 / den
    return out


linear_attention_forward_kernel = njit(cache=True, parallel=True)(_linear_attention_forward)


def _phi_reference(x):
    return np.maximum(x, 0) + np.exp(np.minimum(x, 0))


def _phi_grad_reference(x):
    return np.where(x > 0, 1, np.exp(np.minimum(x, 0)))


def linear_attention_forward_reference(q, k, v):
    fq, fk = _phi_reference(q), _phi_reference(k)
    kv = np.einsum("bse,bsf->bef", fk, v)
    num = np.einsum("ble,bef->blf", fq, kv)
    den = np.einsum("ble,be->bl", fq, fk.sum(axis=1))
    return num / den[..., None]


def _add_outer_times_phi_grad(grad, col, row, x):
    """In place: grad[i, e] = (grad[i, e] + col[i] * row[e]) * phi'(x[i, e]), the rank-one term of dQ (or dK)
    followed by the chain rule through phi."""
    for i in range(grad.shape[0]):
        for e in range(grad.shape[1]):
            t = grad[i, e] + col[i] * row[e]
            grad[i, e] = t if x[i, e] > 0 else t * math.exp(x[i, e])


add_outer_times_phi_grad = njit(cache=True)(_add_outer_times_phi_grad)


def _linear_attention_backward(grad_out, q, k, v):
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    length, features, v_features = q.shape[1], q.shape[2], v.shape[2]
    for b in prange(q.shape[0]):
        fq, fk, g = phi(q[b]), phi(k[b]), grad_out[b]
        kv = np.empty((features, v_features), dtype=q.dtype)
        matmul_tn_into(fk, v[b], kv)
        z = fk.sum(axis=0)
        num = np.empty((length, v_features), dtype=q.dtype)
        matmul_into(fq, kv, num)
        dnum, dden = np.empty_like(num), np.empty(length, dtype=q.dtype)
        for i in range(length):
            den = 0.0
            for e in range(features):
                den += fq[i, e] * z[e]
            total = 0.0
            for c in range(v_features):
                dnum[i, c] = g[i, c] / den
                total += dnum[i, c] * num[i, c]
            dden[i] = -total / den
        dkv = np.empty_like(kv)
        matmul_tn_into(fq, dnum, dkv)
        dz = np.empty_like(z)
        matmul_tn_into(fq, dden.reshape(length, 1), dz.reshape(features, 1))
        matmul_into(dnum, np.ascontiguousarray(kv.T), dq[b])
        add_outer_times_phi_grad(dq[b], dden, z, q[b])
        matmul_into(v[b], np.ascontiguousarray(dkv.T), dk[b])
        add_outer_times_phi_grad(dk[b], np.ones(k.shape[1], dtype=k.dtype), dz, k[b])
        matmul_into(fk, dkv, dv[b])
    return dq, dk, dv


linear_attention_backward_kernel = njit(cache=True, parallel=True)(_linear_attention_backward)


def linear_attention_backward_reference(grad_out, q, k, v):
    fq, fk = _phi_reference(q), _phi_reference(k)
    kv, z = np.einsum("bse,bsf->bef", fk, v), fk.sum(axis=1)
    num, den = np.einsum("ble,bef->blf", fq, kv), np.einsum("ble,be->bl", fq, z)
    dnum = grad_out / den[..., None]
    dden = -np.einsum("blf,blf->bl", dnum, num) / den
    dfq = np.einsum("blf,bef->ble", dnum, kv) + dden[..., None] * z[:, None, :]
    dkv, dz = np.einsum("ble,blf->bef", fq, dnum), np.einsum("ble,bl->be", fq, dden)
    dfk = np.einsum("bsf,bef->bse", v, dkv) + dz[:, None, :]
    dv = np.einsum("bse,bef->bsf", fk, dkv)
    return dfq * _phi_grad_reference(q), dfk * _phi_grad_reference(k), dv


# --------------------------------------------------------------------------------------------------
# Public entry points


def _validate(dtype=None, **arrays):
    """Check that every array is a 3-D float32/float64 ndarray with no empty dim, all of one dtype.
    Returns the arrays made C-contiguous, in the order given."""
    checked = []
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got dtype {a.dtype}")
        if a.ndim != 3 or 0 in a.shape:
            raise ValueError(f"{name} must be 3-D (B, length, features) with no empty dim, got shape {a.shape}")
        dtype = a.dtype if dtype is None else dtype
        if a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, expected {dtype} like the other inputs")
        checked.append(np.ascontiguousarray(a))
    return checked


def _check_shape(name, a, expected, meaning):
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {meaning} = {expected}, got {a.shape}")


def _check_qkv(q, k, v):
    q, k, v = _validate(q=q, k=k, v=v)
    (n_batch, _, features), size = q.shape, k.shape[1]
    _check_shape("k", k, (n_batch, size, features), "(B, S, E) with B, E from q")
    _check_shape("v", v, (n_batch, size, v.shape[2]), "(B, S, Ev) with B from q, S from k")
    return q, k, v


def _check_scale(scale):
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def sdpa_forward(q, k, v, attn_bias, scale, need_probs=True):
    """Softmax attention, torch.nn.functional.scaled_dot_product_attention without dropout.

    Args:
        q (B, L, E), k (B, S, E), v (B, S, Ev): float32 or float64, one dtype.
        attn_bias: None or (B, L, S) of q's dtype, added to the scores; -inf masks a position.
        scale: multiplies q k^T (torch's default is 1 / sqrt(E); the caller decides).
        need_probs: False when no backward follows (inference): the scores are then computed for
            `QUERY_BLOCK` queries at a time in one reused buffer, never all (B, L, S) at once.
    Returns:
        out (B, L, Ev) = probs v, and probs (B, L, S) = softmax(q k^T * scale + attn_bias), which
        `sdpa_backward` needs (None when need_probs is False). A fully masked row has probs 0 and out 0,
        as torch.
    Raises:
        TypeError / ValueError naming the argument on a wrong type, dtype or shape.

    Example: out, probs = sdpa_forward(q, k, v, None, 1 / math.sqrt(q.shape[-1]))
    """
    q, k, v = _check_qkv(q, k, v)
    scale = _check_scale(scale)
    if attn_bias is not None:
        (attn_bias,) = _validate(q.dtype, attn_bias=attn_bias)
        _check_shape("attn_bias", attn_bias, (q.shape[0], q.shape[1], k.shape[1]), "(B, L, S)")
    # The two (L x S)-sized matmuls go to BLAS (np.matmul), which beats any loop Numba compiles; the
    # softmax between them is the Numba kernel. k^T is copied to contiguous memory first: np.matmul on
    # the transposed view measured up to 3x slower.
    key_t = np.ascontiguousarray(k.transpose(0, 2, 1))
    if not need_probs:
        return _sdpa_forward_in_blocks(q, key_t, v, attn_bias, scale), None
    probs = np.matmul(q, key_t)
    softmax_in_place(probs, attn_bias, scale)
    return np.matmul(probs, v), probs


QUERY_BLOCK = 256


def _sdpa_forward_in_blocks(q, key_t, v, attn_bias, scale):
    """out only, QUERY_BLOCK query rows at a time. Each block's scores (block, S) live in one buffer that
    every block reuses: it stays in cache, and no (B, L, S) array is allocated and page-faulted per call
    (that allocation measured up to a third of the forward time at N = 1024)."""
    n_batch, length = q.shape[0], q.shape[1]
    out = np.empty((n_batch, length, v.shape[2]), q.dtype)
    buffer = np.empty((1, min(QUERY_BLOCK, length), key_t.shape[2]), q.dtype)
    for b in range(n_batch):
        for start in range(0, length, QUERY_BLOCK):
            stop = min(start + QUERY_BLOCK, length)
            scores = buffer[:, :stop - start]
            np.matmul(q[b, start:stop], key_t[b], out=scores[0])
            softmax_in_place(scores, None if attn_bias is None else attn_bias[b:b + 1, start:stop], scale)
            np.matmul(scores[0], v[b], out=out[b, start:stop])
    return out


def sdpa_backward(grad_out, q, k, v, probs, scale, dropped_probs=None):
    """Gradients (dq, dk, dv) of softmax attention, from grad_out = dL/dout (B, L, Ev).

    `probs` (B, L, S) is the softmax returned by `sdpa_forward`. With dropout, the caller computes
    out = dropped_probs v itself, dropped_probs = probs * keep / (1 - p), and passes both: dv and the
    gradient through v use dropped_probs, the softmax backward uses probs. Without dropout leave
    dropped_probs None. q, k, v, scale are the forward's. Shapes of the results are those of q, k, v.
    """
    q, k, v = _check_qkv(q, k, v)
    scale = _check_scale(scale)
    n_batch, length, size = q.shape[0], q.shape[1], k.shape[1]
    grad_out, probs = _validate(q.dtype, grad_out=grad_out, probs=probs)
    _check_shape("grad_out", grad_out, (n_batch, length, v.shape[2]), "(B, L, Ev)")
    _check_shape("probs", probs, (n_batch, length, size), "(B, L, S)")
    weights = probs
    if dropped_probs is not None:
        (weights,) = _validate(q.dtype, dropped_probs=dropped_probs)
        _check_shape("dropped_probs", weights, probs.shape, "(B, L, S) like probs")
    dv = np.matmul(weights.transpose(0, 2, 1), grad_out)
    dscores = np.matmul(grad_out, v.transpose(0, 2, 1))
    softmax_backward_batched(dscores, weights, probs, scale)
    return np.matmul(dscores, k), np.matmul(dscores.transpose(0, 2, 1), q), dv


def linear_attention_forward(q, k, v):
    """Non-causal linear attention with phi(x) = elu(x) + 1, in O((L + S) E Ev) time and memory:

        out[b, i] = phi(q_i) (sum_j phi(k_j)^T v_j) / (phi(q_i) . sum_j phi(k_j))

    Args: q (B, L, E), k (B, S, E), v (B, S, Ev), float32 or float64, one dtype. Returns out (B, L, Ev).
    Nothing is saved: the backward recomputes phi and the (E, Ev) sums, which costs as much as one forward.
    """
    q, k, v = _check_qkv(q, k, v)
    return linear_attention_forward_kernel(q, k, v)


def linear_attention_backward(grad_out, q, k, v):
    """Gradients (dq, dk, dv) of `linear_attention_forward` from grad_out = dL/dout (B, L, Ev),
    linear in L and S like the forward."""
    q, k, v = _check_qkv(q, k, v)
    (grad_out,) = _validate(q.dtype, grad_out=grad_out)
    _check_shape("grad_out", grad_out, (q.shape[0], q.shape[1], v.shape[2]), "(B, L, Ev)")
    return linear_attention_backward_kernel(grad_out, q, k, v)

"""Blocked ("flash") scaled dot-product attention for float32 inference, beside its NumPy twin.

torch.nn.functional.scaled_dot_product_attention without dropout, for q (B, L, E), k (B, S, E),
v (B, S, Ev) with every leading (batch, head) dim flattened into B:

    out = softmax(q k^T * scale + bias) v            bias = -inf where masked (bool masks, is_causal)

`flash_attention_reference` computes that as written, with the (L, S) score matrix. The kernel never forms
it (Dao et al., 2022, "FlashAttention"; Milakov & Gimelshein, 2018, "Online normalizer calculation for
softmax"): a task takes a block of BLOCK_Q queries and walks the keys BLOCK_K at a time, keeping per query
row a running maximum m, a running sum l and an unnormalised output a:

    s     = q_blk k_blk^T * scale + bias_blk                       (BLOCK_Q, BLOCK_K), in cache
    m'    = max(m, rowmax(s))        p = exp(s - m')               alpha = exp(m - m')
    l     = alpha l + rowsum(p)      a = alpha a + p v_blk         m = m'
    out   = a / l                                                  (after the last key block)

so memory is O(BLOCK_Q * (BLOCK_K + Ev)) per task, and the scores of one block are read from L1/L2 while
they are hot. The sums are reassociated against the plain softmax (blockwise maxima, the rescaling by
alpha, blocked dot products), so kernel and twin agree to float32 rounding, not bit for bit.

Semantics as torch: a boolean mask keeps True positions; a float mask is added; is_causal keeps key j for
query i when j <= i (the top-left aligned lower triangle torch builds with `tril`); a query row whose keys
are all masked gives 0 (torch's `_safe_softmax`), not NaN. Key blocks wholly above the causal diagonal are
skipped.

The two products are register tiles of 4 query rows x 32 columns (`_tile_4x32`): eight 16-lane float32
accumulators (`simd.F32x16`), each step of the inner dimension one broadcast per row and two vector loads
for eight fused multiply-adds. For that k and v are packed once per call into tiles of 32 keys (k^T) and
of 32 value columns, with S32 and Ev32 rounded up to multiples of 32 and zeros in the padding (padded keys
are masked, padded value columns dropped). Tasks are (batch entry, query block) pairs, run in
parallel under the thread policy of `threads.py`; each writes only its own rows of out.
"""
import numpy as np
from numba import njit, prange

from .attention import exp_nonpositive, sum_float32
from .simd import fload16, fmul16, fmuladd16, fsplat16, fstore16, fzeros16
from .threads import ParallelKernel, threads_for

BLOCK_Q = 64     # query rows per task (a multiple of 4)
BLOCK_K = 128    # keys per step of a task (a multiple of 32): a 64 x 128 score tile is 32 KiB
TILE = 32        # columns of one register tile


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


def _tile_4x32(a, a_start, a_stride, b, b_start, b_stride, depth, c, c_start, c_stride, accumulate):
    """c[r, 0:32] (+)= sum_p a[r, p] b[p, 0:32] for r < 4, on flat float32 arrays: row r of a starts at
    a_start + r * a_stride, row p of b at b_start + p * b_stride, row r of c at c_start + r * c_stride."""
    if accumulate:
        c00, c01 = fload16(c, c_start), fload16(c, c_start + 16)
        c10, c11 = fload16(c, c_start + c_stride), fload16(c, c_start + c_stride + 16)
        c20, c21 = fload16(c, c_start + 2 * c_stride), fload16(c, c_start + 2 * c_stride + 16)
        c30, c31 = fload16(c, c_start + 3 * c_stride), fload16(c, c_start + 3 * c_stride + 16)
    else:
        c00, c01, c10, c11 = fzeros16(), fzeros16(), fzeros16(), fzeros16()
        c20, c21, c30, c31 = fzeros16(), fzeros16(), fzeros16(), fzeros16()
    a1, a2, a3 = a_start + a_stride, a_start + 2 * a_stride, a_start + 3 * a_stride
    for p in range(depth):
        row = b_start + p * b_stride
        b0, b1 = fload16(b, row), fload16(b, row + 16)
        x = fsplat16(a[a_start + p])
        c00, c01 = fmuladd16(x, b0, c00), fmuladd16(x, b1, c01)
        x = fsplat16(a[a1 + p])
        c10, c11 = fmuladd16(x, b0, c10), fmuladd16(x, b1, c11)
        x = fsplat16(a[a2 + p])
        c20, c21 = fmuladd16(x, b0, c20), fmuladd16(x, b1, c21)
        x = fsplat16(a[a3 + p])
        c30, c31 = fmuladd16(x, b0, c30), fmuladd16(x, b1, c31)
    fstore16(c, c_start, c00)
    fstore16(c, c_start + 16, c01)
    fstore16(c, c_start + c_stride, c10)
    fstore16(c, c_start + c_stride + 16, c11)
    fstore16(c, c_start + 2 * c_stride, c20)
    fstore16(c, c_start + 2 * c_stride + 16, c21)
    fstore16(c, c_start + 3 * c_stride, c30)
    fstore16(c, c_start + 3 * c_stride + 16, c31)


tile_4x32 = njit(cache=True, inline="always")(_tile_4x32)


def _scale_row(c, start, width, factor):
    """c[start:start + width] *= factor, width a multiple of 16."""
    f = fsplat16(factor)
    for j in range(start, start + width, 16):
        fstore16(c, j, fmul16(fload16(c, j), f))


scale_row = njit(cache=True, inline="always")(_scale_row)


def _add(row, bias):
    for j in range(row.shape[0]):
        row[j] += bias[j]


def _exp_shifted(row, shift):
    """row = exp(row - shift), shift >= every entry."""
    for j in range(row.shape[0]):
        row[j] = exp_nonpositive(row[j] - shift)


def _max_float32(row):
    """The largest entry (-inf for none): a reduction LLVM vectorises once told that the order of the
    comparisons may change. A NaN entry may be missed here, but it still reaches the output through exp and
    the row sum, as in torch."""
    top = np.float32(-np.inf)
    for j in range(row.shape[0]):
        top = max(top, row[j])
    return top


add, exp_shifted = (njit(cache=True, inline="always")(f) for f in (_add, _exp_shifted))
max_float32 = njit(cache=True, fastmath={"reassoc", "nnan", "nsz"})(_max_float32)


def _flash_attention(q, key_t, value, bias, bias_index, has_bias, scale, causal, length_k, out):
    """q (B, L, E); key_t (B, S32 / 32, E, 32) and value (B, Ev32 / 32, S32, 32), packed and zero-padded
    (`pack_keys`, `pack_values`); bias (nb, 1 or L, S) with
    bias_index (B,) naming each batch entry's bias (has_bias False: no bias); out (B, L, Ev)."""
    n_batch, length, features = q.shape
    padded_k, padded_v = key_t.shape[1] * TILE, value.shape[1] * TILE
    n_blocks = -(-length // BLOCK_Q)
    flat_k, flat_v = key_t.reshape(-1), value.reshape(-1)
    neg_inf = np.float32(-np.inf)
    for task in prange(n_batch * n_blocks):
        b, first = task // n_blocks, (task % n_blocks) * BLOCK_Q
        rows = min(BLOCK_Q, length - first)
        tile_rows = -(-rows // 4) * 4
        q_tile = np.zeros(tile_rows * features, np.float32)
        for r in range(rows):
            q_tile[r * features:(r + 1) * features] = q[b, first + r] * scale    # scores come out scaled
        scores = np.empty(tile_rows * BLOCK_K, np.float32)
        acc = np.zeros(tile_rows * padded_v, np.float32)
        top = np.full(tile_rows, neg_inf, np.float32)
        total = np.zeros(tile_rows, np.float32)
        last_query = first + rows - 1
        for start in range(0, padded_k, BLOCK_K):
            if causal and start > last_query:
                break
            width = min(BLOCK_K, padded_k - start)
            for r0 in range(0, tile_rows, 4):
                for j0 in range(0, width, TILE):
                    tile_4x32(q_tile, r0 * features, features, flat_k, (b * padded_k + start + j0) * features,
                              TILE, features, scores, r0 * BLOCK_K + j0, BLOCK_K, False)
            for r in range(tile_rows):
                row = scores[r * BLOCK_K:r * BLOCK_K + width]
                i = first + r
                valid = min(width, length_k - start)            # keys past S are padding
                if causal:
                    valid = min(valid, i + 1 - start)
                if r >= rows or valid <= 0:                     # a padding row, or no key of this block kept
                    row[:] = 0
                    continue
                kept = row[:valid]
                if has_bias:
                    add(kept, bias[bias_index[b], i if bias.shape[1] > 1 else 0, start:start + valid])
                new_top = max(top[r], max_float32(kept))
                if new_top == neg_inf:          # every key so far masked: nothing to add
                    row[:] = 0
                    continue
                exp_shifted(kept, new_top)
                row[valid:] = 0
                alpha = np.float32(np.exp(top[r] - new_top))
                total[r] = total[r] * alpha + sum_float32(kept)
                top[r] = new_top
                if alpha != 1:
                    scale_row(acc, r * padded_v, padded_v, alpha)
            for r0 in range(0, tile_rows, 4):
                for c0 in range(0, padded_v, TILE):
                    tile_4x32(scores, r0 * BLOCK_K, BLOCK_K, flat_v, (b * padded_v + c0) * padded_k + start * TILE,
                              TILE, width, acc, r0 * padded_v + c0, padded_v, True)
        for r in range(rows):
            inv = np.float32(1.0) / total[r] if total[r] > 0 else np.float32(0.0)
            row_out = out[b, first + r]
            for c in range(row_out.shape[0]):
                row_out[c] = acc[r * padded_v + c] * inv


flash_attention_kernel = ParallelKernel(_flash_attention, error_model="numpy")


def _pack_keys(k, padded_k):
    """k (B, S, E) -> (B, S32 / 32, E, 32): k^T zero-padded to S32 keys and cut into tiles of 32 keys, each
    tile's rows contiguous, so a register tile reads its operand as one stream (rows of k^T a whole
    padded row apart, 4 KiB at S = 1024, would all fall in one L1 set)."""
    n_batch, length, features = k.shape
    out = np.zeros((n_batch, padded_k // TILE, features, TILE), np.float32)
    for b in range(n_batch):
        for j in range(length):
            tile = out[b, j // TILE]
            for e in range(features):
                tile[e, j % TILE] = k[b, j, e]
    return out


def _pack_values(v, padded_k, padded_v):
    """v (B, S, Ev) -> (B, Ev32 / 32, S32, 32): zero-padded and cut into tiles of 32 columns."""
    n_batch, length, features = v.shape
    out = np.zeros((n_batch, padded_v // TILE, padded_k, TILE), np.float32)
    for b in range(n_batch):
        for j in range(length):
            for c in range(features):
                out[b, c // TILE, j, c % TILE] = v[b, j, c]
    return out


pack_keys, pack_values = njit(cache=True)(_pack_keys), njit(cache=True)(_pack_values)


def flash_attention(q, k, v, bias=None, bias_index=None, scale=1.0, is_causal=False):
    """out (B, L, Ev) = softmax(q k^T * scale + bias) v, blocked (module docstring); float32 only.

    Args:
        q (B, L, E), k (B, S, E), v (B, S, Ev): float32 C-contiguous, shapes already checked.
        bias: None or float32 (nb, 1 or L, S), added to the scores (-inf masks); a bias of one row applies
            to every query (a key-padding mask). bias_index (B,) int64: the bias entry of each batch entry
            (None: entry b uses bias b).
        scale: multiplies q k^T.  is_causal: key j is kept for query i only when j <= i.
    """
    n_batch, length, features = q.shape
    length_k, v_features = k.shape[1], v.shape[2]
    padded_k, padded_v = _round_up(length_k, TILE), _round_up(v_features, TILE)
    key_t, value = pack_keys(k, padded_k), pack_values(v, padded_k, padded_v)
    if bias is None:
        bias, bias_index, has_bias = np.zeros((1, 1, 1), np.float32), np.zeros(n_batch, np.int64), False
    else:
        bias_index = np.arange(n_batch, dtype=np.int64) if bias_index is None else bias_index.astype(np.int64)
        has_bias = True
    out = np.empty((n_batch, length, v_features), np.float32)
    with threads_for(n_batch * length * length_k * (features + v_features)):
        flash_attention_kernel(q, key_t, value, np.ascontiguousarray(bias, np.float32), bias_index, has_bias,
                               np.float32(scale), bool(is_causal), length_k, out)
    return out


def flash_attention_reference(q, k, v, bias=None, bias_index=None, scale=1.0, is_causal=False):
    """The plain computation: the whole (B, L, S) score matrix, then a softmax whose fully masked rows are
    zeros (torch._safe_softmax), then the product with v."""
    scores = q @ k.transpose(0, 2, 1) * np.float32(scale)
    if bias is not None:
        scores = scores + (bias if bias_index is None else bias[bias_index])
    if is_causal:
        keep = np.tril(np.ones(scores.shape[1:], bool))
        scores = np.where(keep, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isneginf(top), 0, top))
    total = e.sum(axis=-1, keepdims=True)
    return (e / np.where(total == 0, 1, total)).astype(q.dtype) @ v

"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", arXiv:2210.17323): int4 rounding of a Linear weight that compensates each column's rounding
error on the columns not yet quantized, as the paper's reference `gptq.py` (`GPTQ.fasterquant` with
`groupsize`) and AutoGPTQ's (`act_order` / `desc_act`, `static_groups`), in NumPy, float64.

The layer sees calibration inputs X (n, K) (rows are tokens); it minimises the output error
||W X^T - W_q X^T||^2 = sum_n (w_n - q_n)^T H (w_n - q_n) / 2 over each row of W (N, K), with

    H = 2 / n * X^T X                      (K, K), the reference's running average over samples
    dead columns (H[k, k] == 0): H[k, k] = 1 and W[:, k] = 0 (no input ever reaches them)
    static_groups: every group's (s, z) from W as it is, before any update (AutoGPTQ's `static_groups`)
    act_order: columns taken in the order of decreasing H[k, k] (W and H permuted alike; a stable sort)
    H += damp * mean(diag(H)) * I          damp = 0.01 (`percdamp`)
    U = cholesky(H^-1), upper: H^-1 = U^T U

then, for columns k = 0 .. K-1 (of the order taken) in lazy blocks of `block_size` (128) columns:

    (s, z) = the group's of column k: static, or (not static) at the first column of each group
             int4_qparams(W[:, k : k + group_size])   (quant.int4), from W as the updates left it
    q_k  = dequantize(quantize(w_k; s, z))                       round to nearest on the group's grid
    e_k  = (w_k - q_k) / U[k, k]
    W[:, j] -= e_k * U[k, j]   for the columns j > k of the block (at once), and, when the block ends,
    W[:, later blocks] -= E_block @ U[block, later blocks]        (the lazy batch update)

Groups stay runs of `group_size` consecutive input columns of the original order, so the arrays are
MatMulNBits' without a g_idx; that is why act_order needs static groups here (the reference's dynamic groups
under act_order are runs of the permuted order, which MatMulNBits can only express with g_idx). Putting the
columns with the most input energy first lets the many later columns absorb their error: the paper's
remedy for layers with outlier inputs. `mse` clips each group's range where its own rounding error is least
(`quant.int4.clipped_int4_qparams`, the reference `Quantizer`'s `mse` option), before GPTQ rounds on it.

As in the reference, a dynamic group's qparams are read from W as the last block update left it: a group
that starts inside a block does not see the updates from the block's earlier columns (with group_size ==
block_size they line up). With H = I the updates are all exact zeros and GPTQ is round-to-nearest.
"""
import numpy as np

from .int4 import check_group_size, group, group_qparams, n_groups, pack_nibbles, pack_zero_points, quantize_codes


def hessian(inputs):
    """H = 2 / n * X^T X (float64, (K, K)) of calibration inputs `inputs` (n, K) (any leading shape is
    flattened into rows): the Hessian of the layer's squared output error in its weights."""
    x = np.asarray(inputs, np.float64)
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] == 0:
        raise ValueError("inputs: GPTQ needs at least one calibration row, got none")
    return 2.0 / x.shape[0] * (x.T @ x)


def gptq_quantize(weight, hessian, group_size=64, symmetric=True, block_size=128, damp=0.01, act_order=False,
                  static_groups=False, mse=False):
    """int4 weight (packed, scales, packed zero points or None), as `quant.int4.quantize_int4` returns, with
    GPTQ's rounding (the module docstring) for float weight (N, K) and Hessian (K, K).

    Raises:
        ValueError: a bad weight, hessian, block_size or damp, or act_order without static_groups.
    """
    group_size = check_group_size(group_size)
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.dtype.kind != "f" or not np.isfinite(weight).all():
        raise ValueError(f"weight must be a finite 2-D float array (out_features, in_features), got "
                         f"{weight.dtype} of shape {weight.shape}")
    out_features, in_features = weight.shape
    H = np.array(hessian, np.float64)
    if H.shape != (in_features, in_features) or not np.isfinite(H).all():
        raise ValueError(f"hessian must be a finite ({in_features}, {in_features}) array for a weight with "
                         f"in_features={in_features}, got shape {H.shape}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not 0 <= damp:
        raise ValueError(f"damp must be >= 0, got {damp!r}")
    if act_order and not static_groups:
        raise ValueError("act_order=True needs static_groups=True: groups of the permuted order would need "
                         "MatMulNBits' g_idx, which minicompress does not write")

    W = np.array(weight, np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = n_groups(in_features, group_size)
    scales = np.zeros((out_features, groups), np.float32)
    zero_points = np.zeros((out_features, groups), np.uint8)
    if static_groups:
        scales[:], zero_points[:] = group_qparams(group(W, group_size), symmetric, mse)
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(in_features)
    W, H = W[:, order], H[np.ix_(order, order)]
    H[np.diag_indices(in_features)] += damp * np.mean(np.diag(H))
    try:
        Hinv = np.linalg.inv(np.linalg.cholesky(H))
        U = np.linalg.cholesky(Hinv.T @ Hinv).T                       # H^-1 = U^T U, U upper
    except np.linalg.LinAlgError:
        raise ValueError("hessian is not positive definite after damping (increase damp)") from None

    codes = np.zeros((out_features, in_features), np.uint8)           # in the original column order
    for b0 in range(0, in_features, block_size):
        b1 = min(b0 + block_size, in_features)
        W1, E1 = W[:, b0:b1].copy(), np.zeros((out_features, b1 - b0))
        for i in range(b1 - b0):
            k = b0 + i
            column = order[k]
            g = column // group_size
            if not static_groups and k % group_size == 0:
                scales[:, g], zero_points[:, g] = group_qparams(group(W[:, k:k + group_size], group_size)[:, 0],
                                                                symmetric, mse)
            s, z = scales[:, g], zero_points[:, g]
            w = W1[:, i]
            q = quantize_codes(w.astype(np.float32)[:, None], s, z)[:, 0]
            codes[:, column] = q
            dequantized = ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float64)
            err = (w - dequantized) / U[k, k]
            W1[:, i:] -= np.outer(err, U[k, k:b1])
            E1[:, i] = err
        W[:, b1:] -= E1 @ U[b0:b1, b1:]
    padded = np.pad(codes, ((0, 0), (0, groups * group_size - in_features)))
    padded[:, in_features:] = zero_points[:, -1:]           # padding codes: a zero weight, as RTN's
    packed = pack_nibbles(padded.reshape(out_features, groups, group_size))
    return packed, scales, None if symmetric else pack_zero_points(zero_points)

"""uint8 x int8 matrix product with int16 saturation of byte pairs: what onnxruntime computes on AVX2 CPUs.

On x86 CPUs with AVX2 but without VNNI (Intel before Cascade Lake / Ice Lake, AMD Zen 1-3), onnxruntime's
MLAS kernels for uint8 activations x int8 weights (measured: MatMulInteger, QLinearMatMul, QGemm, QLinearConv
but its depthwise kernel, DynamicQuantizeLSTM; not ConvInteger) multiply bytes with `vpmaddubsw`, which adds each
pair of u8 x s8 products into a *saturating* int16 before `vpmaddwd` widens the pairs to int32. The pairs
are consecutive elements along K, (0, 1), (2, 3), ..., on the raw stored codes; the zero points are applied
afterwards from row and column sums:

    P[m, n]   = sum_j clip(a[m, 2j] b[2j, n] + a[m, 2j+1] b[2j+1, n], -32768, 32767)   (a odd K pads a zero)
    acc[m, n] = P[m, n] - b_zp[n] sum_k a[m, k] - a_zp sum_k b[k, n] + K a_zp b_zp[n]

which is the exact sum_k (a - a_zp)(b - b_zp) whenever no pair leaves int16 (always when |b| <= 64, the
7-bit "reduce_range" weights onnxruntime recommends for such CPUs: 2 * 255 * 64 = 32640). On CPUs with VNNI
(`vpdpbusd` adds four products in int32) onnxruntime is exact, as minicompress always is elsewhere; this
kernel exists so that `minicompress.onnx.load(path, arithmetic="u8s8-saturating")` reproduces onnxruntime
bit for bit on an AVX2-only host, and the tests can check the emulation against it there.

What was checked: in onnxruntime's `core/mlas/lib/x86_64/QgemmU8S8KernelAvx2.S`, CopyPackA keeps each row of
A as consecutive bytes (K padded with zeros to a multiple of 4) and CopyPackB interleaves 4 consecutive rows
of B per column (`vpunpcklbw` of rows k, k+1, then `vpunpcklwd` with k+2, k+3); the kernel broadcasts 4
bytes of A (`vpbroadcastd`) and multiplies them with `vpmaddubsw` by those 4 bytes of B, so the saturating
pairs are (k, k+1) for even k. Measured (onnxruntime 1.32 on AMD Zen 3, and under `qemu-x86_64 -cpu Haswell`):
MatMulInteger equals this formula bit for bit for zero points 0/0, 128/0, 37/0, 0/5 and K = 7, 64, 96.
Not checked in the source: fbgemm's AVX2 kernels (the same instruction pair; not read here), and
MLAS's single-row kernel (`QgemvU8S8KernelAvx2.S`, used when M = 1), whose agreement was only measured.
For a convolution, K is onnxruntime's im2col order, see `graph/ops/quantized.py`.
"""
import numba
import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767


def u8s8_pair_saturating_matmul_reference(a_u8, a_zp, b_s8, b_zp):
    """The NumPy twin: int32 (M, N) from uint8 a (M, K), int8 b (K, N), a_zp a scalar, b_zp a scalar or (N,).

    Formula in the module docstring; int64 inside, so only the pair sums saturate.

    Example:
        >>> a = np.full((1, 2), 255, np.uint8); b = np.full((2, 1), 127, np.int8)
        >>> int(u8s8_pair_saturating_matmul_reference(a, 0, b, 0)[0, 0])   # exact: 64770
        32767
    """
    a = a_u8.astype(np.int64)
    b = b_s8.astype(np.int64)
    k = a.shape[1]
    if k % 2:                                   # the last element pairs with a zero
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * b[None, 0::2, :] + a[:, 1::2, None] * b[None, 1::2, :]
    products = np.clip(pairs, INT16_MIN, INT16_MAX).sum(axis=1)
    b_zp = np.broadcast_to(np.asarray(b_zp, np.int64).reshape(-1), (b.shape[1],))
    a_zp = np.int64(a_zp)
    acc = products - b_zp[None, :] * a.sum(axis=1, keepdims=True) - a_zp * b.sum(axis=0)[None, :] + k * a_zp * b_zp
    return acc.astype(np.int32)


@numba.njit(cache=True, nogil=True)
def _pair_saturating_matmul(a, a_zp, b, b_zp):
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), np.int32)
    for i in range(m):
        row_sum = 0
        for p in range(k):
            row_sum += np.int64(a[i, p])
        for j in range(n):
            total = np.int64(0)
            col_sum = np.int64(0)
            for p in range(0, k - 1, 2):
                pair = np.int64(a[i, p]) * b[p, j] + np.int64(a[i, p + 1]) * b[p + 1, j]
                total += min(max(pair, INT16_MIN), INT16_MAX)
                col_sum += np.int64(b[p, j]) + b[p + 1, j]
            if k % 2:
                pair = np.int64(a[i, k - 1]) * b[k - 1, j]
                total += min(max(pair, INT16_MIN), INT16_MAX)
                col_sum += b[k - 1, j]
            out[i, j] = total - b_zp[j] * row_sum - a_zp * col_sum + k * a_zp * b_zp[j]
    return out


def u8s8_pair_saturating_matmul(a_u8, a_zp, b_s8, b_zp):
    """The Numba kernel, equal to `u8s8_pair_saturating_matmul_reference` (same arguments, int32 (M, N)).

    Args:
        a_u8: uint8 (M, K). b_s8: int8 (K, N). a_zp: an int. b_zp: an int or an int array (N,).
    """
    n = b_s8.shape[1]
    b_zp = np.ascontiguousarray(np.broadcast_to(np.asarray(b_zp, np.int64).reshape(-1), (n,)))
    return _pair_saturating_matmul(np.ascontiguousarray(a_u8), np.int64(a_zp), np.ascontiguousarray(b_s8), b_zp)

"""y = x W^T + b with W held as packed int4 groups (onnxruntime's MatMulNBits layout, see
`minicompress.quant.int4`), beside its NumPy reference twin: weight-only quantization, float activations.

    W[n, k] = float32(q[n, k] - z[n, g]) * s[n, g],   g = k // group_size,   q the nibble of W's packed bytes
    y[m, n] = (((0 + x[m, 0] W[n, 0]) + x[m, 1] W[n, 1]) + ... + x[m, K-1] W[n, K-1]) + b[n]

every product and every sum rounded to float32 in that order (k ascending, no fused multiply-add), so the
kernel and its twin agree bit for bit. The kernel never holds the whole float W: each parallel task owns a
tile of MT rows of x by NT outputs, and for each group it unpacks that group's nibbles for its NT outputs
into a (group_size, NT) float32 buffer (dequantize-on-the-fly), then adds x[m, k] * buffer[k, :] into its
rows' accumulators, four rows at a time (each unpacked weight loaded once for four products): a contiguous
multiply-add over NT outputs that vectorises without reassociating any sum. Unpacking costs 1 / MT of the multiply-adds. Tasks write disjoint tiles of y (no shared accumulator).

Kernels assume validated input (`quant.int4.check_packed`, done by `quant.weight_only.Int4Linear`):
C-contiguous float32 x (M, K), packed uint8 (N, n_groups, group_size // 2), scales float32 (N, n_groups),
zero points uint8 (N, n_groups) already unpacked (8 for symmetric weights), bias float32 (N,) or (0,).
"""
import numpy as np
from numba import prange

from .threads import ParallelKernel

MT = 32      # rows of x per task: the unpacked group is reused MT times
NT = 128     # outputs per task: the accumulators (MT x NT float32, 16 KB) stay in L1


def _int4_linear(x, packed, scales, zero_points, bias):
    rows, in_features = x.shape
    out_features, groups, half = packed.shape
    size = 2 * half
    out = np.empty((rows, out_features), np.float32)
    n_tiles, m_tiles = (out_features + NT - 1) // NT, (rows + MT - 1) // MT
    for task in prange(n_tiles * m_tiles):
        m0, n0 = (task // n_tiles) * MT, (task % n_tiles) * NT
        m1, n1 = min(rows, m0 + MT), min(out_features, n0 + NT)
        width = n1 - n0
        acc = np.zeros((m1 - m0, width), np.float32)
        w = np.empty((size, width), np.float32)
        for g in range(groups):
            k0 = g * size
            length = min(size, in_features - k0)
            for n in range(width):
                s, z = scales[n0 + n, g], np.int32(zero_points[n0 + n, g])
                for j in range(half):
                    byte = np.int32(packed[n0 + n, g, j])
                    w[2 * j, n] = np.float32(np.int32(byte & 15) - z) * s
                    w[2 * j + 1, n] = np.float32(np.int32(byte >> 4) - z) * s
            m = 0
            while m + 4 <= m1 - m0:               # four rows at a time: each unpacked weight loaded once for them
                r0, r1, r2, r3 = acc[m], acc[m + 1], acc[m + 2], acc[m + 3]
                for k in range(length):
                    x0, x1 = x[m0 + m, k0 + k], x[m0 + m + 1, k0 + k]
                    x2, x3 = x[m0 + m + 2, k0 + k], x[m0 + m + 3, k0 + k]
                    wk = w[k]
                    for n in range(width):
                        wv = wk[n]
                        r0[n] += x0 * wv
                        r1[n] += x1 * wv
                        r2[n] += x2 * wv
                        r3[n] += x3 * wv
                m += 4
            while m < m1 - m0:
                row = acc[m]
                for k in range(length):
                    xv = x[m0 + m, k0 + k]
                    wk = w[k]
                    for n in range(width):
                        row[n] += xv * wk[n]
                m += 1
        for m in range(m1 - m0):
            for n in range(width):
                out[m0 + m, n0 + n] = acc[m, n] + bias[n0 + n] if bias.shape[0] else acc[m, n]
    return out


int4_linear = ParallelKernel(_int4_linear)


def int4_linear_reference(x, packed, scales, zero_points, bias):
    """The kernel in NumPy: dequantize W whole, then add x[:, k] W[:, k] over k in order (the kernel's
    rounding order), then the bias."""
    out_features, groups, half = packed.shape
    codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(out_features, -1).astype(np.int32)
    z = np.repeat(zero_points.astype(np.int32), 2 * half, axis=1)
    s = np.repeat(scales, 2 * half, axis=1)
    w = (codes - z).astype(np.float32) * s                        # (N, n_groups * group_size)
    out = np.zeros((x.shape[0], out_features), np.float32)
    for k in range(x.shape[1]):
        out += x[:, k:k + 1] * w[:, k]
    return out + bias if bias.shape[0] else out

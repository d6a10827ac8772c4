"""Sparse (CSR) times dense matrix product, beside its NumPy reference twin.

A CSR matrix A of shape (rows, cols) is three arrays: `data` (nnz,) the nonzero values row by row,
`indices` (nnz,) their column indices, `indptr` (rows + 1,) where row i occupies
data[indptr[i]:indptr[i + 1]]. Then, for B (cols, n),

    out[i, :] = sum_{k = indptr[i]}^{indptr[i + 1] - 1} data[k] * B[indices[k], :]

Each output row is a sum of scaled rows of B: an axpy over n contiguous floats per nonzero, which
vectorises, and rows are independent, so the kernel runs `prange` over rows with each thread
writing only its own rows (no shared accumulator). Work per row is its nonzero count times n, so
the cost falls linearly with sparsity, while a dense BLAS product costs rows * cols * n whatever the
zeros. For a Linear layer y = x @ W.T this is used as y.T = W @ x.T, B = x.T (in, batch).

Kernels assume validated input: C-contiguous B of the same floating dtype as data, int32 indices
and indptr in range; the public entry point (`minicompress.prune.sparse.csr_matmul`) checks.
"""
import numpy as np
from numba import prange

from .threads import ParallelKernel


def _csr_matmul(data, indices, indptr, dense):
    rows, n = indptr.shape[0] - 1, dense.shape[1]
    out = np.zeros((rows, n), dtype=dense.dtype)
    for i in prange(rows):
        row = out[i]
        for k in range(indptr[i], indptr[i + 1]):
            value, source = data[k], dense[indices[k]]
            for j in range(n):
                row[j] += value * source[j]
    return out


csr_matmul = ParallelKernel(_csr_matmul)


def csr_matmul_reference(data, indices, indptr, dense):
    """out = A @ dense for A in CSR form: every nonzero scales its row of dense into its output row."""
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    out = np.zeros((indptr.shape[0] - 1, dense.shape[1]), dtype=dense.dtype)
    np.add.at(out, rows, data[:, None] * dense[indices])
    return out

"""A pruned weight stored sparsely (CSR), and the Linear and Conv2d forward passes that use it.

Pruning by itself saves nothing: `weight_orig * weight_mask` is as large and as slow as before. Storing
only the nonzeros, CSR (compressed sparse row) keeps for a weight of shape (out, ...) viewed as a
matrix (out, k):

    data    (nnz,)      the kept values, row by row            itemsize of the weight each
    indices (nnz,)      their column in [0, k)                 int32, 4 bytes each
    indptr  (out + 1,)  row i is data[indptr[i]:indptr[i+1]]   int32, 4 bytes each

so float32 weights take 8 bytes per nonzero against 4 per entry dense: CSR is smaller only below 50%
density (above 50% sparsity). The product with a dense matrix (`minicompress.kernels.spmm`) costs
time proportional to nnz; whether it beats a dense BLAS matmul depends on the sparsity, measured by
`benchmarks/bench_prune_sparse.py`.

    linear(x, W)   y = x @ W.T + b, computed as y.T = W @ x.T          (torch.nn.functional.linear)
    conv2d(x, W)   im2col, then out = W (O, C*kh*kw) @ cols            (torch.nn.functional.conv2d, groups=1)
"""
import numbers

import numpy as np

from ..kernels import spmm
from ..kernels.conv import im2col
from ..kernels.threads import threads_for

_INT32_MAX = np.iinfo(np.int32).max


class CSRMatrix:
    """A sparse matrix of shape (rows, cols) in CSR form; `dense_shape` is the weight's own shape
    (rows, ...) with prod(...) == cols, so a conv weight (O, C, kh, kw) round-trips through `to_dense`.

    Build with `CSRMatrix.from_dense(weight)`; `csr @ dense` is `csr_matmul(csr, dense)`.
    """

    def __init__(self, data, indices, indptr, dense_shape):
        self.dense_shape = tuple(int(s) for s in dense_shape)
        if len(self.dense_shape) < 2:
            raise ValueError(f"dense_shape must have 2 or more dimensions, got {self.dense_shape}")
        self.shape = (self.dense_shape[0], int(np.prod(self.dense_shape[1:])))
        _check_floating(data, "data")
        for name, array in (("indices", indices), ("indptr", indptr)):
            if not isinstance(array, np.ndarray) or array.dtype != np.int32 or array.ndim != 1:
                raise TypeError(f"{name} must be a 1-D int32 numpy array, got {getattr(array, 'dtype', type(array))}")
        if data.shape != indices.shape or indptr.shape != (self.shape[0] + 1,):
            raise ValueError(f"expected data and indices of one shape (nnz,) and indptr of shape ({self.shape[0] + 1},)"
                             f", got {data.shape}, {indices.shape} and {indptr.shape}")
        if indptr[0] != 0 or indptr[-1] != data.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must rise from 0 to nnz without decreasing")
        if indices.size and not 0 <= indices.min() <= indices.max() < self.shape[1]:
            raise ValueError(f"indices must lie in [0, {self.shape[1]}) for dense_shape {self.dense_shape}")
        self.data = np.ascontiguousarray(data)
        self.indices, self.indptr = np.ascontiguousarray(indices), np.ascontiguousarray(indptr)

    @classmethod
    def from_dense(cls, weight, mask=None):
        """CSR form of `weight` (ndim >= 2, trailing dims flattened into columns), storing the entries
        where `mask` is nonzero, or where weight is nonzero if mask is None. Row-major order."""
        if not isinstance(weight, np.ndarray) or weight.dtype.kind != "f":
            raise TypeError(f"weight must be a floating numpy array, got {type(weight).__name__}"
                            + (f" of dtype {weight.dtype}" if isinstance(weight, np.ndarray) else ""))
        if weight.ndim < 2:
            raise ValueError(f"weight must have 2 or more dimensions (rows, ...), got shape {weight.shape}")
        matrix = weight.reshape(weight.shape[0], -1)
        if mask is None:
            kept = matrix != 0
        elif np.shape(mask) != weight.shape:
            raise ValueError(f"mask shape {np.shape(mask)} must equal weight shape {weight.shape}")
        else:
            kept = np.asarray(mask).reshape(matrix.shape) != 0
        if matrix.shape[1] > _INT32_MAX or np.count_nonzero(kept) > _INT32_MAX:
            raise ValueError(f"weight of shape {weight.shape} has too many columns or nonzeros for int32 indices")
        rows, cols = np.nonzero(kept)
        indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(kept, axis=1))])
        return cls(np.ascontiguousarray(matrix[rows, cols]), cols.astype(np.int32), indptr.astype(np.int32),
                   weight.shape)

    def to_dense(self):
        """The weight, of shape `dense_shape`, zeros where nothing is stored."""
        out = np.zeros(self.shape, dtype=self.data.dtype)
        out[np.repeat(np.arange(self.shape[0]), np.diff(self.indptr)), self.indices] = self.data
        return out.reshape(self.dense_shape)

    @property
    def nnz(self):
        return int(self.data.shape[0])

    @property
    def density(self):
        """Fraction of entries stored, nnz / (rows * cols)."""
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    @property
    def nbytes(self):
        """Bytes of all three arrays: data, indices and indptr."""
        return self.data.nbytes + self.indices.nbytes + self.indptr.nbytes

    @property
    def dtype(self):
        return self.data.dtype

    def __matmul__(self, dense):
        return csr_matmul(self, dense)

    def __repr__(self):
        return (f"CSRMatrix(shape={self.shape}, dense_shape={self.dense_shape}, nnz={self.nnz}, "
                f"density={self.density:.3f}, dtype={self.dtype})")


def _check_csr(csr, name):
    if not isinstance(csr, CSRMatrix):
        raise TypeError(f"{name} must be a CSRMatrix (CSRMatrix.from_dense(w)), got {type(csr).__name__}")


def _check_floating(array, name):
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating numpy array, got {type(array).__name__}"
                        + (f" of dtype {array.dtype}" if isinstance(array, np.ndarray) else ""))


def _check_dtype(array, name, weight):
    """The dense ops refuse mixed dtypes as torch does (`functional._check_same_dtype`); so do these."""
    if array.dtype != weight.data.dtype:
        raise TypeError(f"{name} has dtype {array.dtype} but weight has dtype {weight.data.dtype}; they must "
                        f"share one dtype (convert one with .astype(dtype))")


def csr_matmul(csr, dense):
    """csr @ dense for csr (rows, cols) and dense (cols, n): (rows, n), in the common floating dtype."""
    _check_csr(csr, "csr")
    _check_floating(dense, "dense")
    if dense.ndim != 2 or dense.shape[0] != csr.shape[1]:
        raise ValueError(f"dense must have shape ({csr.shape[1]}, n) to multiply csr of shape {csr.shape}, "
                         f"got {dense.shape}")
    dtype = np.result_type(csr.dtype, dense.dtype)
    with threads_for(csr.data.shape[0] * dense.shape[1]):
        return spmm.csr_matmul(csr.data.astype(dtype, copy=False), csr.indices, csr.indptr,
                               np.ascontiguousarray(dense, dtype=dtype))


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias with weight a CSRMatrix (out_features, in_features)
    (torch.nn.functional.linear). input (..., in_features) -> y (..., out_features).

    Computed as y.T = weight @ input.T so the kernel's inner loop runs along the batch."""
    _check_csr(weight, "weight")
    _check_floating(input, "input")
    _check_dtype(input, "input", weight)
    if input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input must have shape (..., {weight.shape[1]}) for weight of shape {weight.shape}, "
                         f"got {input.shape}")
    rows = input.reshape(-1, weight.shape[1])
    out = csr_matmul(weight, rows.T).T
    if bias is not None:
        _check_floating(bias, "bias")
        _check_dtype(bias, "bias", weight)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
        out = out + bias
    return np.ascontiguousarray(out).reshape(*input.shape[:-1], weight.shape[0])


def _pair(value, name, minimum):
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return tuple(int(v) for v in pair)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution with a sparse weight (torch.nn.functional.conv2d, groups=1, zero padding).

    input (N, C, H, W), weight a CSRMatrix from a dense (O, C, kh, kw) -> out (N, O, Ho, Wo),
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1 (Wo likewise); out = weight @ im2col(input).
    """
    _check_csr(weight, "weight")
    _check_floating(input, "input")
    _check_dtype(input, "input", weight)
    if len(weight.dense_shape) != 4:
        raise ValueError(f"weight must come from a (O, C, kh, kw) tensor, got dense_shape {weight.dense_shape}")
    out_channels, channels, kh, kw = weight.dense_shape
    if input.ndim != 4 or input.shape[1] != channels:
        raise ValueError(f"input must have shape (N, {channels}, H, W) for weight of shape {weight.dense_shape}, "
                         f"got {input.shape}")
    stride, padding, dilation = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    size = [(input.shape[2 + a] + 2 * padding[a] - dilation[a] * ((kh, kw)[a] - 1) - 1) // stride[a] + 1
            for a in range(2)]
    if min(size) < 1:
        raise ValueError(f"input of shape {input.shape} is smaller than the dilated kernel {(kh, kw)} "
                         f"with padding {padding}")
    cols = im2col(np.ascontiguousarray(input), (kh, kw), stride, padding, dilation)  # the dense conv's kernel
    out = csr_matmul(weight, cols).reshape(out_channels, input.shape[0], *size)
    if bias is not None:
        _check_floating(bias, "bias")
        _check_dtype(bias, "bias", weight)
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
        out = out + bias.reshape(-1, 1, 1, 1)
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3))

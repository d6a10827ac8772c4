"""minicompress.prune.sparse and minicompress.kernels.spmm: the CSR format against torch's
`to_sparse_csr`, and kernel == NumPy reference == torch dense matmul / linear / conv2d / unfold."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicompress.kernels import spmm
from minicompress.kernels.conv import im2col
from minicompress.prune import sparse
from strategies import FLOATS, arrays, conv_geometry

SETTINGS = settings(max_examples=25, deadline=None)
# float32 results are sums of up to a few dozen products of magnitude <= 9; torch's BLAS sums them in
# another order, which moves the result by a few float32 ulps of the largest partial sum.
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def sparse_weights(draw, shape, dtype):
    """A weight with a random pattern of exact zeros (any density from none to all)."""
    w = draw(arrays(shape, dtype))
    keep = draw(hnp.arrays(np.bool_, shape))
    return w * keep


def as_torch(a):
    return torch.from_numpy(np.array(a, copy=True))


@SETTINGS
@given(data=st.data(), dtype=FLOATS)
def test_csr_arrays_equal_torch_to_sparse_csr(data, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=6))
    w = data.draw(sparse_weights(shape, dtype))
    csr = sparse.CSRMatrix.from_dense(w)
    expected = as_torch(w.reshape(shape[0], -1)).to_sparse_csr()
    np.testing.assert_array_equal(csr.indptr, expected.crow_indices().numpy())
    np.testing.assert_array_equal(csr.indices, expected.col_indices().numpy())
    np.testing.assert_array_equal(csr.data, expected.values().numpy())
    assert csr.indices.dtype == np.int32 and csr.indptr.dtype == np.int32 and csr.data.dtype == dtype
    nnz = int(np.count_nonzero(w))
    assert csr.nnz == nnz and csr.shape == (shape[0], int(np.prod(shape[1:])))
    assert csr.nbytes == nnz * np.dtype(dtype).itemsize + 4 * nnz + 4 * (shape[0] + 1)
    np.testing.assert_array_equal(csr.to_dense(), w)
    assert csr.to_dense().shape == shape


def test_from_dense_with_a_mask_stores_exactly_the_masked_entries():
    w = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 4.0]], np.float32)
    mask = np.array([[1, 1, 0], [0, 0, 1]])
    csr = sparse.CSRMatrix.from_dense(w, mask)
    np.testing.assert_array_equal(csr.indptr, [0, 2, 3])
    np.testing.assert_array_equal(csr.indices, [0, 1, 2])
    np.testing.assert_array_equal(csr.data, [1.0, 0.0, 4.0])
    np.testing.assert_array_equal(csr.to_dense(), w * mask)
    assert csr.nbytes == 3 * 4 + 3 * 4 + 3 * 4


@SETTINGS
@given(data=st.data(), dtype=FLOATS)
def test_csr_matmul_kernel_equals_reference_and_torch(data, dtype):
    rows, cols, n = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 9))
    w = data.draw(sparse_weights((rows, cols), dtype))
    b = data.draw(arrays((cols, n), dtype))
    csr = sparse.CSRMatrix.from_dense(w)
    out = spmm.csr_matmul(csr.data, csr.indices, csr.indptr, b)
    reference = spmm.csr_matmul_reference(csr.data, csr.indices, csr.indptr, b)
    expected = (as_torch(w) @ as_torch(b)).numpy()
    assert out.dtype == reference.dtype == dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(reference, expected, **TOLERANCE[dtype])
    np.testing.assert_allclose(sparse.csr_matmul(csr, b), expected, **TOLERANCE[dtype])
    np.testing.assert_allclose(csr @ b, expected, **TOLERANCE[dtype])


def test_csr_matmul_on_many_rows_and_empty_rows():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 200)) * (rng.random((300, 200)) < 0.1)
    w[50:80] = 0
    b = rng.standard_normal((200, 33))
    csr = sparse.CSRMatrix.from_dense(w)
    expected = (torch.from_numpy(w) @ torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(spmm.csr_matmul(csr.data, csr.indices, csr.indptr, b), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(spmm.csr_matmul_reference(csr.data, csr.indices, csr.indptr, b), expected,
                               rtol=1e-10, atol=1e-12)


@SETTINGS
@given(data=st.data(), dtype=FLOATS, with_bias=st.booleans())
def test_sparse_linear_equals_torch_linear(data, dtype, with_bias):
    out_features, in_features = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=5))
    x = data.draw(arrays((*lead, in_features), dtype))
    w = data.draw(sparse_weights((out_features, in_features), dtype))
    bias = data.draw(arrays((out_features,), dtype)) if with_bias else None
    y = sparse.linear(x, sparse.CSRMatrix.from_dense(w), bias)
    expected = TF.linear(as_torch(x), as_torch(w), None if bias is None else as_torch(bias)).numpy()
    assert y.shape == expected.shape and y.dtype == expected.dtype
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])


@SETTINGS
@given(data=st.data(), dtype=FLOATS, with_bias=st.booleans())
def test_sparse_conv2d_equals_torch_conv2d(data, dtype, with_bias):
    n, c, o = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    (kh, kw), stride, padding, dilation, (h, wd) = data.draw(conv_geometry(3, 2, 2, 2, extra=7))
    x = data.draw(arrays((n, c, h, wd), dtype))
    w = data.draw(sparse_weights((o, c, kh, kw), dtype))
    bias = data.draw(arrays((o,), dtype)) if with_bias else None
    out = sparse.conv2d(x, sparse.CSRMatrix.from_dense(w), bias, stride, padding, dilation)
    expected = TF.conv2d(as_torch(x), as_torch(w), None if bias is None else as_torch(bias), stride, padding,
                         dilation).numpy()
    assert out.shape == expected.shape and out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, **TOLERANCE[dtype])
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # the kernel the sparse conv unfolds with
    unfolded = TF.unfold(as_torch(x), (kh, kw), dilation, padding, stride)  # (N, C*kh*kw, L)
    np.testing.assert_array_equal(cols, unfolded.permute(1, 0, 2).reshape(c * kh * kw, -1).numpy())


def test_mixed_dtypes_raise_as_the_dense_ops_do():
    """torch's linear / conv2d refuse a float64 input or bias with float32 weights; so do the sparse twins."""
    csr = sparse.CSRMatrix.from_dense(np.eye(3, 4, dtype=np.float32))
    conv = sparse.CSRMatrix.from_dense(np.ones((2, 3, 3, 3), np.float32))
    with pytest.raises(RuntimeError):
        TF.linear(torch.ones(2, 4, dtype=torch.float64), torch.eye(3, 4))
    with pytest.raises(TypeError, match="input has dtype float64 but weight has dtype float32"):
        sparse.linear(np.ones((2, 4)), csr)
    with pytest.raises(TypeError, match="bias has dtype float64"):
        sparse.linear(np.ones((2, 4), np.float32), csr, np.ones(3))
    with pytest.raises(TypeError, match="input has dtype float64"):
        sparse.conv2d(np.ones((1, 3, 5, 5)), conv)
    with pytest.raises(TypeError, match="bias has dtype float64"):
        sparse.conv2d(np.ones((1, 3, 5, 5), np.float32), conv, np.ones(2))


def test_bad_inputs_raise():
    w = np.eye(3, 4, dtype=np.float32)
    csr = sparse.CSRMatrix.from_dense(w)
    with pytest.raises(TypeError, match="weight must be a floating numpy array"):
        sparse.CSRMatrix.from_dense(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        sparse.CSRMatrix.from_dense(np.ones(3))
    with pytest.raises(ValueError, match="mask shape"):
        sparse.CSRMatrix.from_dense(w, np.ones(12))
    one, row = np.ones(1, np.float32), np.array([0], np.int32)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        sparse.CSRMatrix(one, np.array([4], np.int32), np.array([0, 1, 1, 1], np.int32), (3, 4))
    with pytest.raises(TypeError, match="indices must be a 1-D int32"):
        sparse.CSRMatrix(one, np.array([0]), np.array([0, 1, 1, 1], np.int32), (3, 4))
    with pytest.raises(ValueError, match="indptr must rise"):
        sparse.CSRMatrix(one, row, np.array([0, 1, 0, 1], np.int32), (3, 4))
    with pytest.raises(ValueError, match=r"indptr of shape \(4,\)"):
        sparse.CSRMatrix(one, row, np.array([0, 1], np.int32), (3, 4))
    with pytest.raises(ValueError, match=r"dense must have shape \(4, n\)"):
        sparse.csr_matmul(csr, np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="csr must be a CSRMatrix"):
        sparse.csr_matmul(w, np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="dense must be a floating"):
        sparse.csr_matmul(csr, [[1.0]] * 4)
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., 4\)"):
        sparse.linear(np.ones((2, 3), np.float32), csr)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        sparse.linear(np.ones((2, 4), np.float32), csr, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="weight must be a CSRMatrix"):
        sparse.linear(np.ones((2, 4), np.float32), w)
    conv = sparse.CSRMatrix.from_dense(np.ones((2, 3, 3, 3), np.float32))
    x = np.ones((1, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="dense_shape"):
        sparse.conv2d(x, csr)
    with pytest.raises(ValueError, match=r"input must have shape \(N, 3, H, W\)"):
        sparse.conv2d(np.ones((1, 2, 5, 5), np.float32), conv)
    with pytest.raises(ValueError, match="stride"):
        sparse.conv2d(x, conv, stride=0)
    with pytest.raises(ValueError, match="padding"):
        sparse.conv2d(x, conv, padding=(1, -1))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        sparse.conv2d(x, conv, dilation=3)

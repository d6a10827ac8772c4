"""Layers that keep their pruned weight in CSR form and run the sparse kernel, and `to_sparse`.

    sparse_model = to_sparse(pruned_model, min_sparsity=0.7)   # a copy; pruned_model is unchanged

`SparseLinear` and `SparseConv2d` hold the three CSR arrays of their weight (see `sparse.py`):
`weight_data` (nnz,) as a Parameter that does not require grad (so `parameters()` counts the nonzeros
only), `weight_indices` and `weight_indptr` as int32 buffers, and `weight_shape`, the dense shape.
Their forward is `sparse.linear` / `sparse.conv2d` (torch.nn.functional.linear / conv2d over the
CSR weight). They are for inference: the output carries no gradient.

Whether they are faster than the dense layers depends on the sparsity and the shapes; CSR float32
is smaller than dense only above 50% sparsity. `benchmarks/bench_prune.py` measures both.
"""
import copy
import numbers

import numpy as np

from ..nn.layers import Conv2d, Linear
from ..nn.module import Module, Parameter
from ..tensor import Tensor
from . import sparse
from .gradual import strip_pruning
from .reparam import is_pruned


class _SparseWeight(Module):
    """Shared storage: the CSR arrays of `weight` and an optional bias."""

    def _store(self, weight, bias):
        csr = sparse.CSRMatrix.from_dense(np.ascontiguousarray(weight))
        self.weight_data = Parameter(csr.data, requires_grad=False)
        self.register_buffer("weight_indices", Tensor(csr.indices))
        self.register_buffer("weight_indptr", Tensor(csr.indptr))
        self.weight_shape = tuple(int(s) for s in weight.shape)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = Parameter(np.array(bias, dtype=weight.dtype), requires_grad=False)

    def csr(self):
        """The weight as a CSRMatrix (built from the stored arrays, validated)."""
        return sparse.CSRMatrix(self.weight_data.data, self.weight_indices.data, self.weight_indptr.data,
                                self.weight_shape)

    def to_dense(self):
        return self.csr().to_dense()

    @property
    def nnz(self):
        return int(self.weight_data.data.shape[0])

    @property
    def sparsity(self):
        return 1.0 - self.nnz / int(np.prod(self.weight_shape))


class SparseLinear(_SparseWeight):
    """y = x @ W.T + b with W stored in CSR (torch.nn.Linear's forward, inference only)."""

    def __init__(self, weight, bias=None):
        super().__init__()
        weight = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
        if weight.ndim != 2:
            raise ValueError(f"weight must have shape (out_features, in_features), got {weight.shape}")
        self.out_features, self.in_features = weight.shape
        self._store(weight, None if bias is None else (bias.data if isinstance(bias, Tensor) else bias))

    @classmethod
    def from_dense(cls, linear):
        if not isinstance(linear, Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight.data, None if linear.bias is None else linear.bias.data)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        return Tensor._wrap(sparse.linear(x.data, self.csr(), bias))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}"


class SparseConv2d(_SparseWeight):
    """2-D convolution (groups=1, zero padding) with the (O, C, kh, kw) weight stored in CSR, inference only."""

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1):
        super().__init__()
        weight = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
        if weight.ndim != 4:
            raise ValueError(f"weight must have shape (out_channels, in_channels, kh, kw), got {weight.shape}")
        self.out_channels, self.in_channels = weight.shape[:2]
        self.kernel_size = tuple(weight.shape[2:])
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._store(weight, None if bias is None else (bias.data if isinstance(bias, Tensor) else bias))

    @classmethod
    def from_dense(cls, conv):
        if not isinstance(conv, Conv2d) or conv.groups != 1:
            raise TypeError(f"conv must be an nn.Conv2d with groups=1, got {conv!r}")
        return cls(conv.weight.data, None if conv.bias is None else conv.bias.data, conv.stride, conv.padding,
                   conv.dilation)

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        return Tensor._wrap(sparse.conv2d(x.data, self.csr(), bias, self.stride, self.padding, self.dilation))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, sparsity={self.sparsity:.3f}")


def to_sparse(model, min_sparsity=0.5, inplace=False):
    """Replace every Linear and groups=1 Conv2d whose weight has at least `min_sparsity` zeros by its
    Sparse twin. Pruning is made permanent first (`strip_pruning`). Returns the converted model (a
    copy unless inplace=True); a model that is itself such a layer is returned converted."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    if not isinstance(min_sparsity, numbers.Real) or not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be a fraction in [0, 1], got {min_sparsity!r}")
    if not inplace:
        model = copy.deepcopy(model)
    if is_pruned(model):
        strip_pruning(model)

    def convert(module):
        if isinstance(module, Linear) or (isinstance(module, Conv2d) and module.groups == 1):
            w = module.weight.data
            if 1.0 - np.count_nonzero(w) / w.size >= min_sparsity:
                return (SparseLinear if isinstance(module, Linear) else SparseConv2d).from_dense(module)
        return None

    replacement = convert(model)
    if replacement is not None:
        return replacement
    for name, module in list(model.named_modules()):
        replacement = convert(module) if name else None
        if replacement is not None:
            model.set_submodule(name, replacement)
    return model

"""`Tensor`: a NumPy array with a gradient, and the operator sugar that builds the autograd graph.

A tensor holds `data` (an `np.ndarray`), `requires_grad`, and after `backward()` a `.grad`
tensor. Operations record a `Node` on their result (see `autograd.py`); leaves accumulate
gradients across backward calls, as in torch.

    >>> import minicompress as mc
    >>> x = mc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad.numpy()
    array([2., 4., 6.], dtype=float32)
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import autograd
from .ops import elementwise as ew
from .ops import movement as mv
from .ops import reduce as rd
from .ops.matmul import MatMul

float32, float64 = np.dtype(np.float32), np.dtype(np.float64)
int32, int64, uint8, int8 = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8), np.dtype(np.int8)
bool_ = np.dtype(np.bool_)

_DTYPES = {"float32": float32, "float64": float64, "int32": int32, "int64": int64,
           "uint8": uint8, "int8": int8, "bool": bool_}

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def as_dtype(dtype, name="dtype"):
    """A NumPy dtype from a dtype, a type or a name; a clear error for anything unknown."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise TypeError(f"{name}={dtype!r} is not a known dtype; expected one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}={dtype!r} is not a known dtype") from exc
    if resolved not in _DTYPES.values():
        raise TypeError(f"{name}={dtype!r} is not supported; expected one of {sorted(_DTYPES)}")
    return resolved


class Tensor:
    """An n-dimensional array that can record the operations applied to it."""

    __array_priority__ = 1000  # so ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, dtype=None, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        dtype = as_dtype(dtype)
        array = np.asarray(data, dtype=dtype)
        if dtype is None and array.dtype.kind == "f" and array.dtype != float64:
            array = array.astype(float32)
        elif dtype is None and array.dtype.kind == "f":
            pass
        self.data = array
        self.grad = None
        self._node = None
        self._retains_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Wrap an op's output without copying or re-validating."""
        t = cls.__new__(cls)
        t.data, t.grad, t._node, t._retains_grad = np.asarray(array), None, None, False
        t.requires_grad = requires_grad
        return t

    # ----- properties ------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    is_leaf = property(lambda self: self._node is None)
    T = property(lambda self: self.transpose(-1, -2) if self.ndim >= 2 else self)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.ndim

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype.name}{grad})"

    # ----- conversion ------------------------------------------------------------------------
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        return Tensor._wrap(self.data)

    def clone(self):
        return mv.Reshape.apply(self, self.shape) if self.requires_grad else Tensor._wrap(self.data.copy())

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def to(self, dtype):
        dtype = as_dtype(dtype)
        if dtype == self.dtype:
            return self
        return _Cast.apply(self, dtype)

    def astype(self, dtype):
        return self.to(dtype)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    # ----- autograd --------------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        self._retains_grad = True

    def _accumulate_grad(self, grad):
        grad = np.asarray(grad, dtype=self.dtype)
        if self.grad is None:
            self.grad = Tensor._wrap(grad.copy())
        else:
            self.grad = Tensor._wrap(self.grad.data + grad)

    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`, as torch's `Tensor.backward`."""
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs, got shape {self.shape}")
            gradient = np.ones_like(self.data)
        gradient = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=self.dtype)
        if gradient.shape != self.shape:
            raise ValueError(f"gradient has shape {gradient.shape}, expected {self.shape}")
        autograd.run_backward(self, gradient)

    def zero_(self):
        self.data[...] = 0
        return self

    # ----- arithmetic ------------------------------------------------------------------------
    def _other(self, other):
        if isinstance(other, Tensor):
            return other
        return Tensor._wrap(np.asarray(other, dtype=self.dtype if self.dtype.kind == "f" else None))

    def __add__(self, o): return ew.Add.apply(self, self._other(o))
    def __radd__(self, o): return ew.Add.apply(self._other(o), self)
    def __sub__(self, o): return ew.Sub.apply(self, self._other(o))
    def __rsub__(self, o): return ew.Sub.apply(self._other(o), self)
    def __mul__(self, o): return ew.Mul.apply(self, self._other(o))
    def __rmul__(self, o): return ew.Mul.apply(self._other(o), self)
    def __truediv__(self, o): return ew.Div.apply(self, self._other(o))
    def __rtruediv__(self, o): return ew.Div.apply(self._other(o), self)
    def __pow__(self, o): return ew.Pow.apply(self, o if isinstance(o, Tensor) else o)
    def __rpow__(self, o): return ew.Pow.apply(self._other(o), self)
    def __matmul__(self, o): return _matmul(self, self._other(o))
    def __rmatmul__(self, o): return _matmul(self._other(o), self)
    def __neg__(self): return ew.Neg.apply(self)

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other))

    def __eq__(self, o): return self._compare(o, np.equal)
    def __ne__(self, o): return self._compare(o, np.not_equal)
    def __lt__(self, o): return self._compare(o, np.less)
    def __le__(self, o): return self._compare(o, np.less_equal)
    def __gt__(self, o): return self._compare(o, np.greater)
    def __ge__(self, o): return self._compare(o, np.greater_equal)
    __hash__ = object.__hash__

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def exp(self): return ew.Exp.apply(self)
    def log(self): return ew.Log.apply(self)
    def sqrt(self): return ew.Sqrt.apply(self)
    def abs(self): return ew.Abs.apply(self)
    def clamp(self, min=None, max=None): return ew.Clamp.apply(self, min=min, max=max)
    clip = clamp

    def relu(self):
        from .ops.activation import ReLU
        return ReLU.apply(self)

    def sigmoid(self):
        from .ops.activation import Sigmoid
        return Sigmoid.apply(self)

    def tanh(self):
        from .ops.activation import Tanh
        return Tanh.apply(self)

    def softmax(self, dim):
        from .ops.activation import Softmax
        return Softmax.apply(self, dim=dim)

    def log_softmax(self, dim):
        from .ops.activation import LogSoftmax
        return LogSoftmax.apply(self, dim=dim)

    # ----- reductions ------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False): return rd.Sum.apply(self, dim=dim, keepdim=keepdim)
    def mean(self, dim=None, keepdim=False): return rd.Mean.apply(self, dim=dim, keepdim=keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, correction=None):
        correction = (1 if unbiased else 0) if correction is None else correction
        return rd.Var.apply(self, dim=dim, keepdim=keepdim, correction=correction)

    def std(self, dim=None, unbiased=True, keepdim=False, correction=None):
        correction = (1 if unbiased else 0) if correction is None else correction
        return rd.Std.apply(self, dim=dim, keepdim=keepdim, correction=correction)

    def _extreme(self, dim, keepdim, mode):
        if dim is None:
            return rd.Max.apply(self, dim=None, keepdim=keepdim, mode=mode)
        pick = np.argmax if mode == "max" else np.argmin
        indices = pick(self.data, axis=dim, keepdims=True)
        values = mv.TakeAlongDim.apply(self, indices, dim)  # the gradient goes to the returned index, as torch
        if not keepdim:
            values, indices = values.squeeze(dim), indices.squeeze(axis=dim)
        return ValuesIndices(values, Tensor._wrap(indices))

    def max(self, dim=None, keepdim=False):
        """The maximum; with `dim`, a (values, indices) pair as torch."""
        return self._extreme(dim, keepdim, "max")

    def min(self, dim=None, keepdim=False):
        return self._extreme(dim, keepdim, "min")

    def amax(self, dim=None, keepdim=False): return rd.Max.apply(self, dim=dim, keepdim=keepdim, mode="max")
    def amin(self, dim=None, keepdim=False): return rd.Max.apply(self, dim=dim, keepdim=keepdim, mode="min")

    def argmax(self, dim=None, keepdim=False):
        return Tensor._wrap(rd.argmax(self.data, dim, keepdim))

    def argmin(self, dim=None, keepdim=False):
        return Tensor._wrap(rd.argmax(-self.data, dim, keepdim))

    # ----- movement --------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return mv.Reshape.apply(self, tuple(shape))

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        # the product, not -1: NumPy cannot infer -1 beside a 0 dimension, torch gives (0, C * H * W)
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + self.shape[end + 1:]
        return self.reshape(shape)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if sorted(d % self.ndim for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute dims {dims} are not a permutation of {self.ndim} dimensions")
        return mv.Permute.apply(self, tuple(d % self.ndim for d in dims))

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return mv.Permute.apply(self, tuple(dims))

    def unsqueeze(self, dim):
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        dim = dim % max(self.ndim, 1)
        if self.ndim == 0 or self.shape[dim] != 1:
            return self
        return self.reshape(self.shape[:dim] + self.shape[dim + 1:])

    def expand(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return mv.Expand.apply(self, shape)

    def contiguous(self):
        return self if self.data.flags.c_contiguous else mv.Contiguous.apply(self)

    def __getitem__(self, index):
        return mv.GetItem.apply(self, _raw_index(index))

    def __setitem__(self, index, value):
        if self.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError("in-place assignment to a tensor that requires grad; wrap it in no_grad()")
        self.data[_raw_index(index)] = value.data if isinstance(value, Tensor) else value

    # in-place updates used by optimizers and initialisers (no graph recorded)
    def copy_(self, other):
        self.data[...] = other.data if isinstance(other, Tensor) else other
        return self

    def fill_(self, value):
        self.data[...] = value
        return self


def _raw_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


class _Cast(autograd.Function):
    """Change dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype) if ctx.dtype.kind == "f" else None


# ----- constructors ------------------------------------------------------------------------------

def tensor(data, dtype=None, requires_grad=False):
    """A new tensor from data (copied), as torch.tensor. Python floats become float32."""
    if isinstance(data, Tensor):
        data = data.data
    array = np.array(data, dtype=as_dtype(dtype), copy=True)
    if dtype is None and array.dtype == float64 and not isinstance(data, np.ndarray):
        array = array.astype(float32)
    return Tensor(array, requires_grad=requires_grad)


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def zeros(*shape, dtype=float32, requires_grad=False):
    return Tensor(np.zeros(_shape(shape), dtype=as_dtype(dtype)), requires_grad=requires_grad)


def ones(*shape, dtype=float32, requires_grad=False):
    return Tensor(np.ones(_shape(shape), dtype=as_dtype(dtype)), requires_grad=requires_grad)


def zeros_like(t, dtype=None):
    return Tensor(np.zeros(t.shape, dtype=as_dtype(dtype) or t.dtype))


def ones_like(t, dtype=None):
    return Tensor(np.ones(t.shape, dtype=as_dtype(dtype) or t.dtype))


def full(shape, fill_value, dtype=float32):
    return Tensor(np.full(tuple(shape), fill_value, dtype=as_dtype(dtype)))


def arange(start, end=None, step=1, dtype=None):
    if end is None:
        start, end = 0, start
    array = np.arange(start, end, step)
    return Tensor(array.astype(as_dtype(dtype)) if dtype is not None else array)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat() expects a non-empty sequence of tensors")
    return mv.Cat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack() expects a non-empty sequence of tensors")
    return mv.Stack.apply(*tensors, dim=dim)


def _matmul(a, b):
    """a @ b; mixed dtypes raise, as torch.matmul (which does not promote)."""
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: both operands must have the same dtype, got {a.dtype} and {b.dtype}")
    return MatMul.apply(a, b)


def where(condition, a, b):
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    ref = a if isinstance(a, Tensor) else b
    a = a if isinstance(a, Tensor) else ref._other(a)
    b = b if isinstance(b, Tensor) else ref._other(b)
    return ew.Where.apply(cond, a, b)


def maximum(a, b):
    return ew.Maximum.apply(a, a._other(b))


def minimum(a, b):
    return ew.Minimum.apply(a, a._other(b))

"""Elementwise operators: arithmetic with NumPy broadcasting, math functions, comparisons, logic,
activations, Clip, Cast and Where. Outputs keep the input dtype as ONNX asks (NumPy 2 keeps a float32
array float32 against a Python float)."""
import numpy as np

from ...kernels.special import erf
from ..registry import Op, register

# ----- binary arithmetic ---------------------------------------------------------------------------


@register("Add", 7)
class Add(Op):
    def run(self, a, b):
        return a + b


@register("Sub", 7)
class Sub(Op):
    def run(self, a, b):
        return a - b


@register("Mul", 7)
class Mul(Op):
    def run(self, a, b):
        return a * b


@register("Div", 7)
class Div(Op):
    """a / b; integer division truncates toward zero (C semantics, as onnxruntime), unlike NumPy's floor."""

    def run(self, a, b):
        if a.dtype.kind in "iu":
            return (np.trunc(a / b)).astype(a.dtype)
        return a / b


@register("Mod", 10)
class Mod(Op):
    """fmod=0: the sign of the divisor (integers, as Python's %); fmod=1: the sign of the dividend (C fmod)."""

    def run(self, a, b, *, fmod=0):
        return np.fmod(a, b) if fmod else np.mod(a, b)


@register("Pow", 7)
class Pow(Op):
    """x ** y in x's dtype (from opset 12 y may have another type; the result keeps x's)."""

    def run(self, x, y):
        return np.power(x, y.astype(x.dtype) if x.dtype.kind == "f" else y).astype(x.dtype, copy=False)


# ----- variadic ------------------------------------------------------------------------------------

def _fold(fn, arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = fn(out, a)
    return out


@register("Sum", 8)
class Sum(Op):
    def run(self, *xs):
        return _fold(np.add, xs)


@register("Mean", 8)
class Mean(Op):
    def run(self, *xs):
        return (_fold(np.add, xs) / xs[0].dtype.type(len(xs))).astype(xs[0].dtype, copy=False)


@register("Max", 8)
class Max(Op):
    def run(self, *xs):
        return _fold(np.maximum, xs)   # np.maximum propagates NaN, as onnxruntime


@register("Min", 8)
class Min(Op):
    def run(self, *xs):
        return _fold(np.minimum, xs)


# ----- unary math ----------------------------------------------------------------------------------

def _unary(op_type, fn, since=6, doc=None):
    cls = type(op_type, (Op,), {"run": lambda self, x: fn(x).astype(x.dtype, copy=False),
                                "__doc__": doc or f"{op_type}(x), elementwise."})
    register(op_type, since)(cls)
    return cls


Neg = _unary("Neg", np.negative)
Abs = _unary("Abs", np.abs)
Sqrt = _unary("Sqrt", np.sqrt)
Exp = _unary("Exp", np.exp)
Log = _unary("Log", np.log)
Reciprocal = _unary("Reciprocal", np.reciprocal)
Floor = _unary("Floor", np.floor)
Ceil = _unary("Ceil", np.ceil)
Sign = _unary("Sign", np.sign, since=9)
Round = _unary("Round", np.round, since=11, doc="Round half to even (np.round), as the spec asks.")
Sin, Cos, Tan = _unary("Sin", np.sin, 7), _unary("Cos", np.cos, 7), _unary("Tan", np.tan, 7)
Tanh = _unary("Tanh", np.tanh)
Erf = _unary("Erf", lambda x: erf(x) if x.dtype.kind == "f" else erf(x.astype(np.float32)), since=9,
             doc="The Gauss error function (the Numba kernel of kernels/special.py).")


@register("Not", 1)
class Not(Op):
    def run(self, x):
        return np.logical_not(x)


# ----- comparisons and logic -----------------------------------------------------------------------

def _compare(op_type, fn, since=7):
    cls = type(op_type, (Op,), {"run": lambda self, a, b: fn(a, b), "__doc__": f"{op_type}(a, b) -> bool."})
    register(op_type, since)(cls)
    return cls


Equal = _compare("Equal", np.equal)
Greater = _compare("Greater", np.greater)
Less = _compare("Less", np.less)
GreaterOrEqual = _compare("GreaterOrEqual", np.greater_equal, 12)
LessOrEqual = _compare("LessOrEqual", np.less_equal, 12)
And = _compare("And", np.logical_and)
Or = _compare("Or", np.logical_or)
Xor = _compare("Xor", np.logical_xor)


@register("Where", 9)
class Where(Op):
    def run(self, condition, x, y):
        return np.where(condition, x, y)


# ----- activations ---------------------------------------------------------------------------------

@register("Relu", 6)
class Relu(Op):
    def run(self, x):
        return np.maximum(x, x.dtype.type(0))   # NaN propagates


@register("LeakyRelu", 6)
class LeakyRelu(Op):
    """x if x >= 0 else alpha x."""

    def run(self, x, *, alpha=0.01):
        return np.where(x >= 0, x, x * x.dtype.type(alpha))


@register("PRelu", 7)
class PRelu(Op):
    """x if x >= 0 else slope x, slope broadcast against x (unidirectionally)."""

    def run(self, x, slope):
        return np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)


@register("Elu", 6)
class Elu(Op):
    def run(self, x, *, alpha=1.0):
        return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


@register("Selu", 6)
class Selu(Op):
    def run(self, x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
        t = x.dtype.type
        return (t(gamma) * np.where(x > 0, x, t(alpha) * np.expm1(np.minimum(x, 0)))).astype(x.dtype, copy=False)


@register("Sigmoid", 6)
class Sigmoid(Op):
    """1 / (1 + exp(-x)), written through tanh so that large |x| neither overflows nor loses precision."""

    def run(self, x):
        half = x.dtype.type(0.5)
        return half * np.tanh(half * x) + half


@register("HardSigmoid", 6)
class HardSigmoid(Op):
    """max(0, min(1, alpha x + beta))."""

    def run(self, x, *, alpha=0.2, beta=0.5):
        t = x.dtype.type
        return np.clip(t(alpha) * x + t(beta), t(0), t(1))


@register("HardSwish", 14)
class HardSwish(Op):
    """x * HardSigmoid(x) with alpha = 1/6, beta = 0.5 (torch.nn.Hardswish)."""

    def run(self, x):
        t = x.dtype.type
        return x * np.clip(x * t(1 / 6) + t(0.5), t(0), t(1))


@register("Softplus", 1)
class Softplus(Op):
    def run(self, x):
        return np.logaddexp(x, x.dtype.type(0)).astype(x.dtype, copy=False)


@register("Gelu", 20)
class Gelu(Op):
    """x Phi(x) (approximate='none') or 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ('tanh')."""

    def run(self, x, *, approximate="none"):
        t = x.dtype.type
        if approximate == "tanh":
            return t(0.5) * x * (t(1) + np.tanh(t(np.sqrt(2 / np.pi)) * (x + t(0.044715) * x * x * x)))
        return t(0.5) * x * (t(1) + erf(x * t(1 / np.sqrt(2))))


# ----- Clip and Cast -------------------------------------------------------------------------------

@register("Clip", 6)
class Clip_6(Op):
    """min(max(x, min), max) with the bounds as attributes."""

    def run(self, x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):
        t = x.dtype.type
        return np.minimum(np.maximum(x, t(min)), t(max))


@register("Clip", 11)
class Clip_11(Op):
    """From opset 11 the bounds are optional inputs (scalars); an omitted bound does not clip."""

    def run(self, x, min=None, max=None):
        if min is not None:
            x = np.maximum(x, min.astype(x.dtype))
        if max is not None:
            x = np.minimum(x, max.astype(x.dtype))
        return x


# TensorProto.DataType -> NumPy dtype (the codes are part of the ONNX spec)
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def numpy_dtype(code, what="dtype"):
    if code not in ONNX_DTYPES:
        raise NotImplementedError(f"{what}: ONNX data type {code} is not supported; expected one of "
                                  f"{sorted(ONNX_DTYPES)}")
    return np.dtype(ONNX_DTYPES[code])


@register("Cast", 6)
class Cast(Op):
    """Conversion to `to`; float -> int truncates toward zero, as C (and onnxruntime)."""

    def run(self, x, *, to):
        return x.astype(numpy_dtype(to, "Cast's 'to'"))


@register("Cast", 19)
class Cast_19(Cast):
    """Opset 19 adds `saturate`, which only concerns float8 targets (not supported here)."""

    def run(self, x, *, to, saturate=1):
        return super().run(x, to=to)


@register("CastLike", 15)
class CastLike(Op):
    def run(self, x, target):
        return x.astype(target.dtype)


# ----- opset 6: explicit broadcasting ---------------------------------------------------------------
# Before opset 7 a binary op broadcasts only with broadcast=1, aligning B's dimensions with A's starting
# at `axis` (default: trailing alignment), e.g. A (2, 3, 4, 5) + B (3, 4) with axis=1.

def legacy_broadcast(a, b, broadcast=0, axis=None):
    if not broadcast or b.ndim == a.ndim:
        return b
    axis = a.ndim - b.ndim if axis is None else axis % a.ndim
    return b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))


def _legacy_binary(op_type, modern):
    def run(self, a, b, *, broadcast=0, axis=None, consumed_inputs=None):
        return modern.run(self, a, legacy_broadcast(a, b, broadcast, axis))
    cls = type(f"{op_type}_6", (Op,), {"run": run, "__doc__": f"{op_type} with opset 6's broadcast/axis attributes."})
    register(op_type, 6)(cls)
    return cls


Add_6, Sub_6, Mul_6, Div_6 = (_legacy_binary(n, c) for n, c in (("Add", Add), ("Sub", Sub), ("Mul", Mul), ("Div", Div)))
Pow_1 = _legacy_binary("Pow", Pow)


@register("PRelu", 6)
class PRelu_6(Op):
    """Opset 6: the slope is a per-channel (C,) or broadcastable tensor; a 1-D slope of C > 1 values
    applies along axis 1, as torch exported it."""

    def run(self, x, slope, *, consumed_inputs=None):
        if slope.ndim == 1 and slope.size > 1 and x.ndim > 1:
            slope = slope.reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)


def _legacy_variadic(op_type, modern):
    register(op_type, 6)(type(f"{op_type}_6", (Op,), {"run": lambda self, *xs: modern.run(self, *xs),
                                                       "__doc__": f"{op_type} of equal shapes (opset 6)."}))


for _name, _cls in (("Sum", Sum), ("Max", Max), ("Min", Min), ("Mean", Mean)):
    _legacy_variadic(_name, _cls)


@register("Shrink", 9)
class Shrink(Op):
    """x - bias if x > lambd, x + bias if x < -lambd, else 0."""

    def run(self, x, *, bias=0.0, lambd=0.5):
        t = x.dtype.type
        return np.where(x < -t(lambd), x + t(bias), np.where(x > t(lambd), x - t(bias), t(0))).astype(x.dtype)

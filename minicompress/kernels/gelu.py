"""GELU in float32, vectorised, beside its NumPy twins (torch.nn.functional.gelu, both `approximate` modes).

    exact ('none'):  gelu(x) = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2
    'tanh':          gelu(x) = x (1 + tanh(u)) / 2 = x sigmoid(2 u),  u = sqrt(2 / pi) (x + 0.044715 x^3)

Both are written so that nothing cancels and every exp has a non-positive argument, which the float32 exp
of `attention.exp_nonpositive` computes in loops LLVM vectorises (libm's erf, tanh and exp are one
call per element, which it cannot):

    Phi(x) with z = |x| / sqrt 2:  erfc(z) = t P(t) exp(-z^2),  t = 1 / (1 + 0.3275911 z)
                                   Phi(x) = erfc(z) / 2 for x < 0,  1 - erfc(z) / 2 for x >= 0
    sigmoid(2u) with e = exp(-2 |u|):  1 / (1 + e) for u >= 0,  e / (1 + e) for u < 0

P is the degree-4 polynomial of Abramowitz & Stegun 7.1.26, |error of erf| <= 1.5e-7: the formula torch's
vectorised CPU erf uses (ATen's `Vectorized<float>::erf`), so the kernel's error against the exact x Phi(x)
is of the size of torch's own (measured: torch's float32 gelu is up to 1.2e-6 from it on [-8, 8]). Unlike
1 + erf(x / sqrt 2) it keeps its relative accuracy for negative x, where Phi(x) is small.

The array is cut into a few runs per thread, which run in parallel above the work cutoff of `threads.py`.
"""
import math

import numpy as np
from numba import njit, prange

from .attention import exp_nonpositive
from .special import erf
from .threads import ParallelKernel, threads_for

_P = np.float32(0.3275911)
_A1, _A2, _A3 = np.float32(0.254829592), np.float32(-0.284496736), np.float32(1.421413741)
_A4, _A5 = np.float32(-1.453152027), np.float32(1.061405429)
_INV_SQRT2 = np.float32(1 / math.sqrt(2))
_TANH_K, _TANH_C = np.float32(math.sqrt(2 / math.pi)), np.float32(0.044715)


def _gelu_value(v, tanh):
    """gelu(v) for one float32 v (module docstring)."""
    half, one = np.float32(0.5), np.float32(1.0)
    if tanh:
        u = _TANH_K * (v + _TANH_C * v * v * v)
        e = exp_nonpositive(np.float32(-2.0) * abs(u))
        s = one / (one + e)
        return v * (s if u >= 0 else e * s)
    z = abs(v) * _INV_SQRT2
    t = one / (one + _P * z)
    tail = half * t * (_A1 + t * (_A2 + t * (_A3 + t * (_A4 + t * _A5)))) * exp_nonpositive(-z * z)  # erfc(z) / 2
    return v * (tail if v < 0 else one - tail)


gelu_value = njit(cache=True, inline="always", error_model="numpy")(_gelu_value)


def _gelu(x, out, n_tasks, tanh):
    n = x.shape[0]
    for task in prange(n_tasks):
        # a slice each and indices from 0: an index that might be negative (Python's wraparound) would
        # make LLVM gather and scatter instead of loading whole vectors
        part_in, part_out = x[task * n // n_tasks:(task + 1) * n // n_tasks], out[task * n // n_tasks:(task + 1) * n // n_tasks]
        for j in range(part_in.shape[0]):
            part_out[j] = gelu_value(part_in[j], tanh)


gelu_kernel = ParallelKernel(_gelu, error_model="numpy")   # IEEE division: 1 / 0 is inf, and it vectorises


def gelu(x, approximate="none", out=None):
    """gelu(x) for a float32 C-contiguous array, `approximate` 'none' (exact, erf) or 'tanh' (as torch);
    out (new unless given) has x's shape. NaN gives NaN."""
    import numba

    out = np.empty_like(x) if out is None else out
    n_tasks = max(1, min(x.size // 4096, 4 * numba.get_num_threads()))
    with threads_for(4 * x.size):
        gelu_kernel(x.reshape(-1), out.reshape(-1), n_tasks, approximate == "tanh")
    return out


def gelu_reference(x, approximate="none"):
    """The textbook formulas in float64, rounded to x's dtype: x (1 + erf(x / sqrt 2)) / 2 with the exact
    erf, or x (1 + tanh(u)) / 2."""
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        out = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    else:
        out = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))
    return out.astype(x.dtype)

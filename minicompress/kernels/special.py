"""The error function, which NumPy lacks and GELU needs.

`erf` is a Numba ufunc over `math.erf`; `erf_reference` is the same function applied element by
element in plain Python (slow, obviously correct).
"""
import math

import numpy as np
from numba import vectorize


def _erf(x):
    return math.erf(x)


erf = vectorize(["float32(float32)", "float64(float64)"], cache=True)(_erf)


def erf_reference(x):
    x = np.asarray(x)
    return np.vectorize(math.erf, otypes=[x.dtype])(x)

"""Numba kernels, each beside its readable NumPy reference twin (`*_reference`).

Threading: unless NUMBA_THREADING_LAYER is set, parallel kernels run on Numba's `workqueue` layer.
The OpenMP layer's idle threads spin-wait, and on a small machine (2 cores) they compete with
BLAS's and torch's own threads: a 64x64x4x4 pooling call measured 12 ms under OpenMP and 0.4 ms
under workqueue in the same loaded process. This is a documented default, set once at import.
"""
from .cache import use_user_cache_dir

use_user_cache_dir()  # first: Numba picks each kernel's cache folder when it is decorated (see cache.py)

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

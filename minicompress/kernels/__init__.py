"""Numba kernels, each beside its readable NumPy reference twin (`*_reference`).

Threading: unless NUMBA_THREADING_LAYER is set, parallel kernels run on Numba's OpenMP layer with
idle threads waiting passively, falling back to `workqueue` where there is no OpenMP runtime or where
one is already running with another wait policy (`threads.choose_threading_layer`, a documented
default set once at import). Measured on this 2-core machine with torch imported in the same process
(benchmarks/bench_threads.py, RESULTS.md): a parallel call costs ~14 us under OpenMP with passive
waiting and ~77 us under workqueue, which wakes a worker per call; the int8 Linear 1024 -> 1024 at
batch 64 ran faster too. Under libgomp's default or active wait policy, spinning threads fought
torch's for the cores and some calls took 12-16 ms. TBB cost ~4 us a call, but it is not a
dependency (the `tbb` package) and slowed torch's own int8 Linear beside it.
"""
import os

import numba

from .threads import choose_threading_layer

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER, numba.config.THREADING_LAYER_PRIORITY = choose_threading_layer()

"""When a parallel kernel is worth waking Numba's thread pool.

Starting a parallel loop wakes the pool's threads and waits for them. That costs about 0.02 ms on a
quiet Linux machine and measured 0.18 ms here (a 64x32x32 int8 GEMM: 185 us on 2 threads, 16 us on one).
A small layer (a 1x1 conv on an 8x8 image) does all its work in a few microseconds, so every layer of
a small model at batch 1 paid mostly for the wake-up. The entry points of the kernels used by small
models run a call on one thread when its work is below `SERIAL_BELOW`. The results are the same
either way: each task writes its own outputs.
"""
from contextlib import contextmanager

import numba

# Work units: multiply-adds for a GEMM or convolution, elements for elementwise kernels and pooling.
# One thread does ~1e6 of them in ~0.1 ms, near the wake-up cost, so above it two threads pay off.
SERIAL_BELOW = 1 << 20


@contextmanager
def threads_for(work):
    """Run the enclosed kernel calls on one thread when `work` is below SERIAL_BELOW, else leave the
    thread count alone."""
    if work >= SERIAL_BELOW:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)

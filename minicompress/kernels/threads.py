"""When a parallel kernel is worth waking Numba's thread pool, and a serial build for when it is not.

Starting a parallel loop hands the work to the pool's threads and waits for them. With Numba's
`workqueue` layer that measured 70-110 us per call on this 2-core machine (0.3-0.4 ms when loaded):
every call wakes a worker and waits on it; OpenMP with passive waiting, the default here (see
`kernels/__init__.py`), ~14 us. A small layer (a
1x1 conv on an 8x8 image) does all its work in a few microseconds. Before, every layer of a small model
at batch 1 paid mostly for the hand-off, and the int8 classifier took ~7 ms per image.

So each parallel kernel is compiled twice from one Python function (`ParallelKernel`): with
`parallel=True`, and without it, where `prange` is a plain `range` running on the calling thread. Its
entry point wraps the call in `threads_for(work)`, which picks the serial build below `SERIAL_BELOW`.
Both builds run the same loop body, and each iteration writes its own outputs, so the results are the
same either way.
"""
import ctypes
import functools
import os
import sys
import threading
import types
from contextlib import contextmanager

from numba import njit

# Work units: multiply-adds for a GEMM or convolution, elements for elementwise kernels and pooling.
# One thread does ~1e6 of them in ~0.1-0.5 ms, about the hand-off cost, so above that two threads pay off.
SERIAL_BELOW = 1 << 20

_state = threading.local()

_OPENMP_RUNTIMES = ("libgomp.so.1", "libiomp5.so", "libomp.so", "libomp.dylib", "libiomp5.dylib")


def _openmp_loaded():
    """True when an OpenMP runtime is already in the process (torch brings libgomp): it read
    OMP_WAIT_POLICY when it loaded, and Numba's OpenMP layer would share it."""
    if not hasattr(os, "RTLD_NOLOAD"):
        return "torch" in sys.modules
    for name in _OPENMP_RUNTIMES:
        try:
            ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
            return True
        except OSError:
            continue
    return False


def choose_threading_layer():
    """(THREADING_LAYER, THREADING_LAYER_PRIORITY) for Numba: OpenMP when its idle threads will wait
    passively, else workqueue (see kernels/__init__.py for the measurements).

    OMP_WAIT_POLICY=PASSIVE set by the user: OpenMP. Unset, with no OpenMP runtime loaded yet: set it to
    PASSIVE (the runtime reads it when it loads, at the first parallel call) and use OpenMP. Otherwise
    (another policy, or a runtime already spinning by its defaults): workqueue. "default" with OpenMP
    first lets Numba fall back to workqueue where its OpenMP layer cannot load.
    """
    openmp_first = ("default", ["omp", "workqueue", "tbb"])
    policy = os.environ.get("OMP_WAIT_POLICY")
    if policy is not None:
        return openmp_first if policy.strip().upper() == "PASSIVE" else ("workqueue", ["workqueue", "omp", "tbb"])
    if _openmp_loaded():
        return "workqueue", ["workqueue", "omp", "tbb"]
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return openmp_first


@contextmanager
def threads_for(work):
    """Inside this block (on this thread), `ParallelKernel` calls run their serial build when `work` is
    below SERIAL_BELOW, and their parallel build otherwise."""
    previous = getattr(_state, "serial", False)
    _state.serial = work < SERIAL_BELOW
    try:
        yield
    finally:
        _state.serial = previous


def _twin(py_func, suffix):
    """A copy of py_func under another qualified name. Numba names its cache files after the function,
    and its cache key ignores `parallel`: two builds of one function would load each other's code."""
    twin = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + suffix,
                              py_func.__defaults__, py_func.__closure__)
    twin.__qualname__, twin.__module__, twin.__doc__ = py_func.__qualname__ + suffix, py_func.__module__, py_func.__doc__
    return twin


class ParallelKernel:
    """`py_func` compiled with `parallel=True` (`.parallel`) and without (`.serial`); calling it runs the
    one `threads_for` chose (the parallel one outside any `threads_for` block). `options` go to both
    `njit` calls (`error_model="numpy"` lets a float division vectorise: no zero check per element)."""

    def __init__(self, py_func, **options):
        self.py_func = py_func
        self.parallel = njit(cache=True, parallel=True, **options)(py_func)
        self.serial = njit(cache=True, **options)(_twin(py_func, "_serial"))
        self.__doc__ = py_func.__doc__

    def __call__(self, *args):
        return (self.serial if getattr(_state, "serial", False) else self.parallel)(*args)


# OpenBLAS's thread count, changed at run time (OPENBLAS_NUM_THREADS is read once, when NumPy loads
# it). NumPy's wheels ship it as scipy_openblas with prefixed symbols; a system OpenBLAS has the plain ones.
_BLAS_THREAD_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                        ("openblas_set_num_threads", "openblas_get_num_threads"))


@functools.lru_cache(maxsize=1)
def _openblas_thread_functions():
    """(set, get) ctypes functions of the OpenBLAS NumPy uses, or None (another BLAS, or not found); looked
    up once (a glob and a dlopen cost ~50 us, more than a small model's whole plan)."""
    import glob

    import numpy as np

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    candidates = sorted(glob.glob(os.path.join(libs, "*openblas*"))) + [None]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for set_name, get_name in _BLAS_THREAD_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None


@contextmanager
def blas_threads(count):
    """Inside this block, OpenBLAS runs `count` threads (restored afterwards); a no-op where NumPy's
    BLAS is not an OpenBLAS this can reach.

    Small models call BLAS for many small products (a 1x1 conv on a 12 x 12 map is a 64 x 64 by
    64 x 144 GEMM per sample). With two OpenBLAS threads each call wakes a spinning partner; on the
    shared 2-core machine a training epoch of the detection teacher then took 10.5 s of CPU
    against 1.2 s with one thread (RESULTS.md, detection job)."""
    functions = _openblas_thread_functions()
    if functions is None:
        yield
        return
    setter, getter = functions
    previous = getter()
    if previous == int(count):
        yield
        return
    setter(int(count))
    try:
        yield
    finally:
        setter(previous)


@contextmanager
def thread_count(count):
    """Inside this block, on this thread, Numba's parallel kernels use `count` threads (capped at
    NUMBA_NUM_THREADS, the size of its pool) and OpenBLAS one; both restored afterwards. count 0 leaves
    them as they are. This is what onnxruntime's intra_op_num_threads covers there: the threads of one
    run (`onnx.InferenceSession`, `minicompress bench --threads`).

    OpenBLAS stays at one thread because its workers are handed every GEMM call and waited for: on shared
    cores a call waits for a descheduled worker. Measured through InferenceSession on the 2 shared vCPUs
    (load average 8-10 from other work), Numba at 1 / 2 threads and OpenBLAS at 1 / 2: the PP-OCRv4
    detector at 480x480 took 629 / 776 ms with one OpenBLAS thread and 2596 / 2411 ms with two; the
    224x224 mobile classifier 46 / 40 ms against 121 / 164 ms; PP-OCR's classifier 27 / 27 ms against
    224 / 210 ms."""
    if not count:
        yield
        return
    import numba
    previous = numba.get_num_threads()
    wanted = min(int(count), numba.config.NUMBA_NUM_THREADS)
    if wanted != previous:
        numba.set_num_threads(wanted)
    try:
        with blas_threads(1):
            yield
    finally:
        if wanted != previous:
            numba.set_num_threads(previous)

"""kernels.threads: small calls run the serial build of a kernel, large ones the parallel build; the
results must not depend on it, and the choice must end with the `threads_for` block, also on an error."""
import os
import numpy as np
import pytest

from harness import TOLERANCE
from minicompress.kernels import pool, threads
from minicompress.kernels.qconv import quantized_conv2d, quantized_conv2d_reference
from minicompress.kernels.qelementwise import qadd_reference, quantized_add
from minicompress.kernels.qlinear import quantized_linear, quantized_linear_reference
from minicompress.prune import sparse


def run_each_way(call, monkeypatch):
    """call() with every kernel on its parallel build (SERIAL_BELOW = 0), then on its serial build."""
    results = []
    for threshold in (0, 1 << 62):
        monkeypatch.setattr(threads, "SERIAL_BELOW", threshold)
        results.append(call())
    return results


def test_entry_points_give_the_same_results_serial_or_parallel(monkeypatch):
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, (2, 6, 9, 9), dtype=np.uint8)
    wq = rng.integers(-128, 128, (8, 6, 3, 3), dtype=np.int8)
    dq = rng.integers(-128, 128, (6, 1, 3, 3), dtype=np.int8)
    scales, zps = rng.uniform(0.01, 0.02, 8), np.zeros(8, np.int64)
    conv = (xq, 0.02, 3, wq, scales, zps, None, 0.5, 7, 1, 1, 1, 1)
    depthwise = (xq, 0.02, 3, dq, scales[:6], zps[:6], None, 0.3, 7, 2, 1, 1, 6)
    for args in (conv, depthwise):
        parallel, serial = run_each_way(lambda: quantized_conv2d(*args), monkeypatch)
        expected = quantized_conv2d_reference(*args[:9], *((s, s) for s in args[9:12]), args[12])
        assert np.array_equal(parallel, serial) and np.array_equal(parallel, expected)
    linear = (xq.reshape(-1, 9), 0.02, 3, wq.reshape(8, -1)[:, :9], scales, zps, None, 0.5, 7)
    parallel, serial = run_each_way(lambda: quantized_linear(*linear), monkeypatch)
    assert np.array_equal(parallel, serial) and np.array_equal(parallel, quantized_linear_reference(*linear))
    b = rng.integers(0, 256, xq.shape, dtype=np.uint8)
    parallel, serial = run_each_way(lambda: quantized_add(xq, 0.1, 3, b, 0.2, 5, 0.3, 9), monkeypatch)
    expected = qadd_reference(xq.ravel(), np.float32(0.1), 3, b.ravel(), np.float32(0.2), 5,
                              np.float32(1 / 0.3), 9, 0, 255).reshape(xq.shape)
    assert np.array_equal(parallel, serial) and np.array_equal(parallel, expected)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    parallel, serial = run_each_way(lambda: pool.adaptive_avg_pool2d_forward(x, (2, 3)), monkeypatch)
    assert np.array_equal(parallel, serial)
    np.testing.assert_allclose(parallel, pool.adaptive_avg_pool2d_reference(x, (2, 3)), **TOLERANCE[np.float32])
    w = rng.standard_normal((5, 9)) * (rng.random((5, 9)) < 0.4)
    dense = rng.standard_normal((9, 4))
    parallel, serial = run_each_way(lambda: sparse.csr_matmul(sparse.CSRMatrix.from_dense(w), dense), monkeypatch)
    assert np.array_equal(parallel, serial)
    np.testing.assert_allclose(parallel, w @ dense, rtol=1e-12, atol=1e-12)


def test_the_choice_ends_with_the_block_also_after_an_error():
    kernel = pool.adaptive_avg_pool2d
    assert kernel.serial is not kernel.parallel and kernel.serial.py_func.__qualname__.endswith("_serial")
    assert not getattr(threads._state, "serial", False)
    with threads.threads_for(10):
        assert threads._state.serial
        with threads.threads_for(threads.SERIAL_BELOW):
            assert not threads._state.serial
        assert threads._state.serial
    assert not threads._state.serial
    with pytest.raises(RuntimeError), threads.threads_for(10):
        raise RuntimeError("kernel failed")
    assert not threads._state.serial


def test_the_threading_layer_is_openmp_only_where_idle_threads_wait_passively(monkeypatch):
    from minicompress.kernels.threads import choose_threading_layer
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert choose_threading_layer() == ("default", ["omp", "workqueue", "tbb"])     # workqueue if omp cannot load
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert choose_threading_layer()[0] == "workqueue"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    # torch (imported by conftest) has loaded libgomp, which read its wait policy then: too late to set it
    assert choose_threading_layer()[0] == "workqueue" and "OMP_WAIT_POLICY" not in os.environ


def test_blas_threads_sets_openblas_inside_the_block_and_restores_it():
    functions = threads._openblas_thread_functions()
    if functions is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS reachable here")
    _, get = functions
    before = get()
    a = np.random.default_rng(0).random((3, 40, 50))
    expected = a @ a.swapaxes(1, 2)
    with threads.blas_threads(1):
        assert get() == 1
        np.testing.assert_allclose(a @ a.swapaxes(1, 2), expected, rtol=1e-12)
    assert get() == before

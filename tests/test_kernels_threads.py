"""kernels.threads: small calls run on one thread, large ones on all; the results must not depend on it,
and the thread count must come back afterwards, also when the kernel raises."""
import numba
import numpy as np
import pytest

from harness import TOLERANCE
from minicompress.kernels import pool, threads
from minicompress.kernels.qconv import quantized_conv2d, quantized_conv2d_reference
from minicompress.kernels.qelementwise import quantized_add, qadd_reference
from minicompress.kernels.qlinear import quantized_linear, quantized_linear_reference


def run_each_way(call, monkeypatch):
    """call() with every kernel forced parallel (SERIAL_BELOW = 0), then forced onto one thread."""
    results = []
    for threshold in (0, 1 << 62):
        monkeypatch.setattr(threads, "SERIAL_BELOW", threshold)
        results.append(call())
    return results


def test_entry_points_give_the_same_codes_on_one_thread_or_all(monkeypatch):
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, (2, 6, 9, 9), dtype=np.uint8)
    wq = rng.integers(-128, 128, (8, 6, 3, 3), dtype=np.int8)
    dq = rng.integers(-128, 128, (6, 1, 3, 3), dtype=np.int8)
    scales, zps = rng.uniform(0.01, 0.02, 8), np.zeros(8, np.int64)
    conv = (xq, 0.02, 3, wq, scales, zps, None, 0.5, 7, 1, 1, 1, 1)
    depthwise = (xq, 0.02, 3, dq, scales[:6], zps[:6], None, 0.3, 7, 2, 1, 1, 6)
    linear = (xq.reshape(-1, 9)[:, :9], 0.02, 3, wq.reshape(8, -1)[:, :9], scales, zps, None, 0.5, 7)
    a, b = xq, rng.integers(0, 256, xq.shape, dtype=np.uint8)
    for args, fn, reference in [(conv, quantized_conv2d, quantized_conv2d_reference),
                                (depthwise, quantized_conv2d, quantized_conv2d_reference)]:
        parallel, serial = run_each_way(lambda: fn(*args), monkeypatch)
        expected = reference(*args[:9], *(((s, s) for s in args[9:12])), args[12])
        assert np.array_equal(parallel, serial) and np.array_equal(parallel, expected)
    parallel, serial = run_each_way(lambda: quantized_linear(*linear), monkeypatch)
    assert np.array_equal(parallel, serial) and np.array_equal(parallel, quantized_linear_reference(*linear))
    parallel, serial = run_each_way(lambda: quantized_add(a, 0.1, 3, b, 0.2, 5, 0.3, 9), monkeypatch)
    expected = qadd_reference(a.ravel(), np.float32(0.1), 3, b.ravel(), np.float32(0.2), 5,
                              np.float32(1 / 0.3), 9, 0, 255).reshape(a.shape)
    assert np.array_equal(parallel, serial) and np.array_equal(parallel, expected)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    parallel, serial = run_each_way(lambda: pool.adaptive_avg_pool2d_forward(x, (2, 3)), monkeypatch)
    assert np.array_equal(parallel, serial)
    np.testing.assert_allclose(parallel, pool.adaptive_avg_pool2d_reference(x, (2, 3)), **TOLERANCE[np.float32])


def test_thread_count_comes_back_after_a_small_call_and_after_an_error():
    before = numba.get_num_threads()
    with threads.threads_for(10):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError), threads.threads_for(10):
        raise RuntimeError("kernel failed")
    assert numba.get_num_threads() == before
    with threads.threads_for(threads.SERIAL_BELOW):
        assert numba.get_num_threads() == before

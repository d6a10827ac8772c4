"""The int8 GEMM ladder (kernels/qgemm.py): every route this CPU can run, each forced in turn, equals the
NumPy twins exactly (the results are integers, or float32 computed by the same float32 operations), on
shapes with ragged edges (M = 1, K not a multiple of 4, N not a multiple of the tile width) and on the
extreme codes 0 / 255 x -128 / 127. Routes the CPU lacks are skipped, naming the features they need;
the portable route runs everywhere. The torch comparisons of the layers built on it are in
test_kernels_quantized.py, test_quant_modules.py and test_quant_dynamic.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.kernels import qgemm, simd, threads
from minicompress.kernels.qelementwise import requantize_rows
from minicompress.kernels.qgemm import (ROUTES, pack_weight, qgemm_dequant, qgemm_dequant_reference, qgemm_packed,
                                        qgemm_reference, qgemm_requant, qgemm_requant_reference)


def runnable(route):
    """`route` as a pytest parameter, skipped (with the reason) where this CPU cannot run it."""
    needs = " or ".join("+".join(group) for group in qgemm._REQUIREMENTS[route])
    return pytest.param(route, marks=pytest.mark.skipif(not qgemm.route_supported(route),
                                                        reason=f"the {route} route needs {needs}"))


ALL_ROUTES = [runnable(route) for route in ROUTES]


def problem(rng, m_rows, depth, n_rows, extreme):
    """Codes, zero points and an int32 bias; `extreme` draws only the ends of each range."""
    if extreme:
        xq = rng.choice(np.array([0, 255], np.uint8), (m_rows, depth))
        wq = rng.choice(np.array([-128, 127], np.int8), (n_rows, depth))
        w_zps, x_zp = rng.choice([-128, 0, 127], n_rows), int(rng.choice([0, 255]))
    else:
        xq = rng.integers(0, 256, (m_rows, depth)).astype(np.uint8)
        wq = rng.integers(-128, 128, (n_rows, depth)).astype(np.int8)
        w_zps, x_zp = rng.integers(-128, 128, n_rows), int(rng.integers(0, 256))
    bias_q = rng.integers(-2**20, 2**20, n_rows).astype(np.int32)
    return xq, x_zp, wq, w_zps, bias_q


@pytest.mark.parametrize("route", ALL_ROUTES)
@settings(max_examples=15, deadline=None)
@given(m_rows=st.integers(1, 9), depth=st.integers(1, 70), n_rows=st.integers(1, 140), extreme=st.booleans(),
       symmetric=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_every_route_equals_the_twins(route, m_rows, depth, n_rows, extreme, symmetric, seed):
    """int32, uint8 (requantized and clamped as ReLU6 would) and float32 outputs; `symmetric` weights (zero
    points 0) take the epilogue's branch without the sum_k x term."""
    rng = np.random.default_rng(seed)
    xq, x_zp, wq, w_zps, bias_q = problem(rng, m_rows, depth, n_rows, extreme)
    if symmetric:
        w_zps = np.zeros(n_rows, np.int64)
    packed = pack_weight(wq, w_zps, route=route)
    assert packed.route == route

    acc = qgemm_packed(xq, x_zp, packed, bias_q)
    assert acc.dtype == np.int32 and acc.shape == (m_rows, n_rows)
    np.testing.assert_array_equal(acc, qgemm_reference(xq, x_zp, wq, w_zps, bias_q))

    multiplier = rng.uniform(1e-6, 1e-2, n_rows).astype(np.float32)
    out_zp = int(rng.integers(0, 256))
    qmin, qmax = out_zp, int(rng.integers(out_zp, 256))
    levels = qgemm_requant(xq, x_zp, packed, bias_q, multiplier, out_zp, qmin, qmax)
    np.testing.assert_array_equal(levels, qgemm_requant_reference(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp,
                                                                  qmin, qmax))
    np.testing.assert_array_equal(levels, requantize_rows(acc, multiplier, out_zp, qmin, qmax))

    bias = rng.normal(0, 10, n_rows).astype(np.float32)
    for b in (None, bias):
        np.testing.assert_array_equal(qgemm_dequant(xq, x_zp, packed, multiplier, b),
                                      qgemm_dequant_reference(xq, x_zp, wq, w_zps, multiplier, b))


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_every_route_is_exact_at_the_deepest_reduction_allowed(route):
    """K = 33025 is the largest depth with K * 255 * 255 < 2**31: every product at its extreme and the
    zero points at the far ends give sums right at the int32 limit."""
    depth = (2**31 - 1) // (255 * 255)
    xq = np.full((2, depth), 255, np.uint8)
    xq[1] = 0
    wq = np.array([[-128] * depth, [127] * depth, [-128] * depth], np.int8)
    w_zps = np.array([127, -128, -128])
    packed = pack_weight(wq, w_zps, route=route)
    for x_zp in (0, 255):
        acc = qgemm_packed(xq, x_zp, packed, None)
        expected = qgemm_reference(xq, x_zp, wq, w_zps, None)
        assert np.abs(expected.astype(np.int64)).max() > 2**31 - 2**22          # near the limit indeed
        np.testing.assert_array_equal(acc, expected)


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_every_route_on_a_problem_large_enough_for_the_parallel_build(route, monkeypatch):
    """The kernel's parallel build (forced: SERIAL_BELOW = 0), with 4-row and 1-row tiles
    (M = 34) over three column panels and a ragged one."""
    monkeypatch.setattr(threads, "SERIAL_BELOW", 0)
    rng = np.random.default_rng(5)
    xq, x_zp, wq, w_zps, bias_q = problem(rng, 34, 301, 205, extreme=False)
    packed = pack_weight(wq, w_zps, route=route)
    multiplier = rng.uniform(1e-6, 1e-3, 205).astype(np.float32)
    np.testing.assert_array_equal(qgemm_packed(xq, x_zp, packed, bias_q), qgemm_reference(xq, x_zp, wq, w_zps, bias_q))
    np.testing.assert_array_equal(qgemm_requant(xq, x_zp, packed, bias_q, multiplier, 3, 0, 255),
                                  qgemm_requant_reference(xq, x_zp, wq, w_zps, bias_q, multiplier, 3, 0, 255))


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_empty_operands(route):
    """M = 0 gives no rows; K = 0 gives the bias; N = 0 gives no columns."""
    bias_q = np.array([5, -7], np.int32)
    packed = pack_weight(np.zeros((2, 0), np.int8), [0, 3], route=route)
    np.testing.assert_array_equal(qgemm_packed(np.zeros((3, 0), np.uint8), 9, packed, bias_q), np.tile(bias_q, (3, 1)))
    assert qgemm_packed(np.zeros((0, 0), np.uint8), 9, packed, bias_q).shape == (0, 2)
    empty = pack_weight(np.zeros((0, 6), np.int8), np.zeros(0, np.int64), route=route)
    assert qgemm_packed(np.ones((2, 6), np.uint8), 0, empty, None).shape == (2, 0)


# --------------------------------------------------------------------------------------------------
# maddubs: vpmaddubsw saturates, so the route must only ever see codes it is exact for


def brute_force_code_limit(wq):
    """The largest x_max for which no choice of codes in {0, x_max} (a pair's sum is extreme at its ends)
    makes the saturating emulation (simd.maddubs_reference) differ from the exact product: an oracle for
    qgemm.maddubs_code_limit that tries inputs instead of reasoning about pairs."""
    depth = wq.shape[1] + wq.shape[1] % 2
    w = np.zeros((wq.shape[0], depth), np.int8)
    w[:, :wq.shape[1]] = wq
    patterns = (np.arange(2**depth)[:, None] >> np.arange(depth)) & 1          # every subset of k
    for x_max in range(255, -1, -1):
        x = (patterns * x_max).astype(np.uint8)
        if np.array_equal(simd.maddubs_reference(x, w), x.astype(np.int64) @ w.astype(np.int64).T):
            return x_max
    return 0


class RecordingKernels(dict):
    """qgemm._KERNELS, noting which route each call ran."""

    def __init__(self, kernels):
        super().__init__(kernels)
        self.used = []

    def __getitem__(self, route):
        self.used.append(route)
        return super().__getitem__(route)


@settings(max_examples=30, deadline=None)
@given(n_rows=st.integers(1, 3), depth=st.integers(1, 6), bound=st.sampled_from([16, 63, 64, 65, 100, 128]),
       seed=st.integers(0, 2**32 - 1))
def test_the_maddubs_code_limit_is_the_largest_exact_one(n_rows, depth, bound, seed):
    rng = np.random.default_rng(seed)
    wq = rng.integers(-bound, min(bound, 127) + 1, (n_rows, depth)).astype(np.int8)
    assert qgemm.maddubs_code_limit(wq) == brute_force_code_limit(wq)


def test_the_maddubs_code_limit_of_the_documented_ranges():
    """Any int8 weight: 128 (7-bit codes and the one level past 127 rounding can give); [-64, 64]: all of uint8."""
    assert qgemm.maddubs_code_limit(np.array([[-128, -128], [127, 127]], np.int8)) == 128
    assert qgemm.maddubs_code_limit(np.array([[-64, -64], [64, 64]], np.int8)) == 255
    assert qgemm.maddubs_code_limit(np.array([[-65, -64]], np.int8)) == 32768 // 129


MADDUBS = runnable("maddubs")


@pytest.mark.parametrize("route", [MADDUBS])
@settings(max_examples=20, deadline=None)
@given(m_rows=st.integers(1, 9), depth=st.integers(1, 70), n_rows=st.integers(1, 40), narrow=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_maddubs_runs_exactly_on_the_codes_within_its_limit_and_never_on_others(route, m_rows, depth, n_rows,
                                                                              narrow, seed):
    """Codes up to the weight's limit run on maddubs and equal the twin; one code above it sends the call to
    the int16 route (packed on first use), still equal to the twin, and maddubs's kernel is not called."""
    rng = np.random.default_rng(seed)
    high = 64 if narrow else 127
    wq = rng.integers(-high, high + 1, (n_rows, depth)).astype(np.int8)
    w_zps, x_zp = rng.integers(-128, 128, n_rows), int(rng.integers(0, 256))
    packed = pack_weight(wq, w_zps, route="maddubs")
    limit = qgemm.maddubs_code_limit(wq)
    assert packed.x_limit == limit
    kernels = RecordingKernels(qgemm._KERNELS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qgemm, "_KERNELS", kernels)
        check_maddubs_guard(rng, kernels, m_rows, depth, wq, w_zps, x_zp, packed, limit)


def check_maddubs_guard(rng, kernels, m_rows, depth, wq, w_zps, x_zp, packed, limit):
    xq = rng.integers(0, limit + 1, (m_rows, depth)).astype(np.uint8)
    xq[0, 0] = limit                                            # the extreme code is in the input
    np.testing.assert_array_equal(qgemm_packed(xq, x_zp, packed, None), qgemm_reference(xq, x_zp, wq, w_zps, None))
    assert kernels.used == ["maddubs"]
    if limit == 255:
        return
    xq[-1, -1] = limit + 1
    for _ in range(2):                                          # the int16 copy is packed once, then kept
        np.testing.assert_array_equal(qgemm_packed(xq, x_zp, packed, None),
                                      qgemm_reference(xq, x_zp, wq, w_zps, None))
    assert kernels.used == ["maddubs", "int16", "int16"] and packed.fallback.route == "int16"


def test_a_saturating_input_would_be_wrong_on_maddubs_and_is_not_given_to_it(monkeypatch):
    """255 x -128 in both products of a pair: the emulation saturates at -32768 (the exact sum is -65280),
    so the guard must, and does, send it elsewhere."""
    if not qgemm.route_supported("maddubs"):
        pytest.skip("the maddubs route needs avx2")
    xq, wq = np.full((1, 2), 255, np.uint8), np.full((1, 2), -128, np.int8)
    assert simd.maddubs_reference(xq, wq)[0, 0] == -32768 != qgemm_reference(xq, 0, wq, [0], None)[0, 0]
    kernels = RecordingKernels(qgemm._KERNELS)
    monkeypatch.setattr(qgemm, "_KERNELS", kernels)
    packed = pack_weight(wq, [0], route="maddubs")
    assert qgemm_packed(xq, 0, packed, None)[0, 0] == -65280 and kernels.used == ["int16"]


def test_the_default_route_takes_maddubs_only_when_it_is_exact():
    """With maddubs the best route (an AVX2 CPU): full-range weights take it for 7-bit codes only, weights
    in [-64, 64] for any codes; otherwise the exact int16 route."""
    if not qgemm.route_supported("maddubs"):
        pytest.skip("the maddubs route needs avx2")
    full, narrow = np.array([[-128, -128, 127, 127]], np.int8), np.array([[-64, -64, 64, 64]], np.int8)
    previous = qgemm.set_route("maddubs")
    try:
        assert pack_weight(full, [0], x_max=127).route == "maddubs"
        assert pack_weight(full, [0], x_max=128).route == "maddubs"
        assert pack_weight(full, [0], x_max=129).route == "int16"
        assert pack_weight(full, [0]).route == "int16"
        assert pack_weight(narrow, [0]).route == "maddubs"
    finally:
        qgemm.set_route(previous)
    if previous != "maddubs":
        assert pack_weight(full, [0], x_max=127).route == previous


# --------------------------------------------------------------------------------------------------
# Choosing and forcing a route


def test_the_portable_route_is_always_there_and_the_chosen_one_is_supported():
    routes = qgemm.supported_routes()
    assert routes[-1] == "portable" and qgemm.QGEMM_ROUTE in routes


def test_a_cpu_without_x86_features_is_left_with_the_portable_route(monkeypatch):
    """NUMBA_CPU_FEATURES, when set, is what Numba compiles for: here it lists nothing."""
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "-avx2,-avx512f")
    assert simd.host_features() == set()
    assert qgemm.supported_routes() == ("portable",)
    with pytest.raises(ValueError, match="needs CPU features"):
        pack_weight(np.zeros((1, 4), np.int8), [0], route="int16")


def test_the_environment_variable_forces_a_route(monkeypatch):
    monkeypatch.setenv("MINICOMPRESS_QGEMM", "portable")
    assert qgemm._initial_route() == "portable"
    monkeypatch.setenv("MINICOMPRESS_QGEMM", "fastest")
    with pytest.raises(ValueError, match="MINICOMPRESS_QGEMM must be one of"):
        qgemm._initial_route()
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "")
    monkeypatch.setenv("MINICOMPRESS_QGEMM", "vnni512")
    with pytest.raises(ValueError, match="lacks"):
        qgemm._initial_route()


def test_set_route_changes_what_new_weights_are_packed_for():
    previous = qgemm.set_route("portable")
    try:
        assert pack_weight(np.ones((2, 3), np.int8), 0).route == "portable"
        with pytest.raises(ValueError, match="route must be one of"):
            qgemm.set_route("avx1024")
    finally:
        qgemm.set_route(previous)
    assert qgemm.QGEMM_ROUTE == previous


# --------------------------------------------------------------------------------------------------
# Errors at the entry points


def test_bad_arguments_are_named():
    packed = pack_weight(np.ones((2, 3), np.int8), [0, 0])
    with pytest.raises(TypeError, match="wq must be an int8"):
        pack_weight(np.ones((2, 3), np.int16), [0, 0])
    with pytest.raises(ValueError, match="w_zps must lie in"):
        pack_weight(np.ones((2, 3), np.int8), [0, 128])
    with pytest.raises(ValueError, match="too deep"):
        pack_weight(np.ones((1, 40000), np.int8), [0])
    with pytest.raises(TypeError, match="xq must be a uint8"):
        qgemm_packed(np.ones((1, 3), np.int8), 0, packed, None)
    with pytest.raises(ValueError, match=r"xq must have shape \(M, 3\)"):
        qgemm_packed(np.ones((1, 4), np.uint8), 0, packed, None)
    with pytest.raises(ValueError, match="x_zp must lie in"):
        qgemm_packed(np.ones((1, 3), np.uint8), 256, packed, None)
    with pytest.raises(TypeError, match="bias_q must be an int32"):
        qgemm_packed(np.ones((1, 3), np.uint8), 0, packed, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="can overflow"):
        qgemm_packed(np.ones((1, 3), np.uint8), 0, packed, np.full(2, 2**31 - 1, np.int32))
    with pytest.raises(TypeError, match="multiplier must be a float32"):
        qgemm_requant(np.ones((1, 3), np.uint8), 0, packed, None, np.ones(2), 0, 0, 255)
    with pytest.raises(ValueError, match="qmax must lie in"):
        qgemm_requant(np.ones((1, 3), np.uint8), 0, packed, None, np.ones(2, np.float32), 9, 9, 8)

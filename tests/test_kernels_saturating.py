"""kernels/saturating.py: the Numba kernel against its NumPy twin (equal: integers), the twin against exact
integer math where no byte pair leaves int16, and against onnxruntime's MatMulInteger on a host whose
onnxruntime saturates (AVX2 without VNNI); on other hosts onnxruntime is exact and the test checks that
instead (`onnx_harness.ort_saturates_u8s8`)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.kernels.saturating import u8s8_pair_saturating_matmul, u8s8_pair_saturating_matmul_reference
from onnx_harness import one_node_model, ort_saturates_u8s8, ort_session

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def draw(seed, m, k, n, per_column, b_range=(-128, 127)):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(b_range[0], b_range[1] + 1, (k, n)).astype(np.int8)
    a_zp = int(rng.integers(0, 256))
    b_zp = rng.integers(-128, 128, n if per_column else ()).astype(np.int64)
    return a, a_zp, b, b_zp


def exact(a, a_zp, b, b_zp):
    return (a.astype(np.int64) - a_zp) @ (b.astype(np.int64) - np.asarray(b_zp).reshape(1, -1))


@SETTINGS
@given(m=st.integers(1, 6), k=st.integers(0, 40), n=st.integers(1, 6), per_column=st.booleans(), seed=seeds)
def test_kernel_equals_twin(m, k, n, per_column, seed):
    a, a_zp, b, b_zp = draw(seed, m, k, n, per_column)
    got = u8s8_pair_saturating_matmul(a, a_zp, b, b_zp)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, u8s8_pair_saturating_matmul_reference(a, a_zp, b, b_zp))


@SETTINGS
@given(m=st.integers(1, 6), k=st.integers(0, 40), n=st.integers(1, 6), per_column=st.booleans(), seed=seeds)
def test_twin_is_exact_while_pairs_fit_int16(m, k, n, per_column, seed):
    """7-bit weights (-64..63): |a0 b0 + a1 b1| <= 2 * 255 * 64 = 32640 < 2**15, so nothing saturates."""
    a, a_zp, b, b_zp = draw(seed, m, k, n, per_column, b_range=(-64, 63))
    np.testing.assert_array_equal(u8s8_pair_saturating_matmul_reference(a, a_zp, b, b_zp), exact(a, a_zp, b, b_zp))


def test_twin_saturates_each_pair_on_raw_codes():
    """Hand-computed: pairs (0, 1) and (2, 3) of raw codes clip to 32767 / -32768; the zero points come after."""
    a = np.array([[255, 255, 255, 255, 1]], np.uint8)
    b = np.array([[127], [127], [-128], [-128], [3]], np.int8)
    # pairs: 64770 -> 32767, -65280 -> -32768, 3 (the odd element with a zero)
    assert u8s8_pair_saturating_matmul_reference(a, 0, b, 0)[0, 0] == 32767 - 32768 + 3
    # with zero points 10 and 2: P - 2 * sum(a) - 10 * sum(b) + 5 * 10 * 2
    assert u8s8_pair_saturating_matmul_reference(a, 10, b, 2)[0, 0] == 2 - 2 * 1021 - 10 * 1 + 100


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 5), k=st.integers(1, 70), n=st.integers(1, 5), zero_points=st.booleans(), seed=seeds)
def test_twin_matches_onnxruntime_matmul_integer(m, k, n, zero_points, seed):
    """Bit for bit: the saturating twin on a host whose onnxruntime saturates, exact math elsewhere."""
    a, a_zp, b, _ = draw(seed, m, k, n, False)
    a_zp = a_zp if zero_points else 0
    b_zp = int(np.random.default_rng(seed + 1).integers(-128, 128)) if zero_points else 0
    model, feeds, _ = one_node_model("MatMulInteger", [("a", a), ("b", b), ("az", np.uint8(a_zp)),
                                                       ("bz", np.int8(b_zp))], constants=("b", "az", "bz"))
    theirs = ort_session(model.SerializeToString()).run(None, feeds)[0]
    expected = u8s8_pair_saturating_matmul_reference(a, a_zp, b, b_zp) if ort_saturates_u8s8() \
        else exact(a, a_zp, b, b_zp)
    np.testing.assert_array_equal(theirs, expected)

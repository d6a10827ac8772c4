"""The requantize epilogue (kernels/epilogue.py) that every int8 route ends in: each spelling of the one
formula (the scalar one inside Numba loops, the 16- and 8-lane register ones, qgemm's tile finish,
`requantize_rows`) equals the NumPy definition bit for bit, and the definition equals torch computing
clamp(round(float32(acc) * multiplier) + out_zp, qmin, qmax) itself (torch.round rounds half to even, as
lrintf; int32 -> float32 and the float32 product are IEEE roundings in both), so the comparison is exact.
"""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from minicompress.kernels import simd
from minicompress.kernels.epilogue import (UINT8, finish_tile, requantize_reference, requantize_store8,
                                           requantize_store16, requantize_value)
from minicompress.kernels.qelementwise import requantize_rows


@njit(cache=True)
def _scalar_loop(acc, multiplier, out_zp, qmin, qmax):
    rows, channels = acc.shape
    out = np.empty((rows, channels), np.uint8)
    for r in range(rows):
        for c in range(channels):
            out[r, c] = requantize_value(acc[r, c], multiplier[c], out_zp, qmin, qmax)
    return out


def _vector_loop_of(load, store, lanes):
    """acc (R, lanes * P) through `lanes`-lane registers (simd's load, epilogue's store), col_term zero."""
    @njit
    def loop(acc, multiplier, out_zp, qmin, qmax):
        rows, channels = acc.shape
        flat, out = acc.reshape(-1), np.empty(rows * channels, np.uint8)
        col_term = np.zeros(channels, np.int32)
        zp, lo, hi = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
        for r in range(rows):
            for c in range(0, channels, lanes):
                store(out, r * channels + c, load(flat, r * channels + c), col_term, multiplier, c, zp, lo, hi)
        return out.reshape(rows, channels)
    return loop


_vector_loop = _vector_loop_of(simd.load16, requantize_store16, 16)
_vector_loop8 = _vector_loop_of(simd.load8, requantize_store8, 8)


def _tile(acc, multiplier, out_zp, qmin, qmax):
    """qgemm's finish on one tile of raw sums, with no bias and no zero points (col_terms 0)."""
    rows, channels = acc.shape
    out = np.empty((rows, channels), np.uint8)
    finish_tile(acc.reshape(-1).copy(), rows, channels, 0, 0, channels, np.zeros(rows, np.int64),
                np.zeros(channels, np.int64), np.zeros(channels, np.int32), False, multiplier,
                np.float32(out_zp), np.float32(qmin), np.float32(qmax), np.empty(0, np.float32),
                np.empty((0, 0), np.int32), out, np.empty((0, 0), np.float32), UINT8)
    return out


def torch_requantize(acc, multiplier, out_zp, qmin, qmax):
    scaled = torch.from_numpy(acc).to(torch.float32) * torch.from_numpy(multiplier)
    return torch.clamp(torch.round(scaled) + out_zp, qmin, qmax).to(torch.uint8).numpy()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), panels=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       log_multiplier=st.floats(-24, 3), out_zp=st.integers(0, 255), clamp=st.sampled_from(["none", "relu", "relu6"]),
       ties=st.booleans())
def test_every_spelling_is_the_definition_and_torch(rows, panels, seed, log_multiplier, out_zp, clamp, ties):
    """Accumulators over the whole int32 range (or, with `ties`, odd ones times 0.5: every product a tie);
    multipliers from 6e-8 to 16, so results saturate both ways; the clamps of no activation, a fused ReLU
    (qmin = out_zp) and a ReLU6-like upper bound."""
    rng = np.random.default_rng(seed)
    channels = 16 * panels
    if ties:
        acc = (2 * rng.integers(-2**20, 2**20, (rows, channels)) + 1).astype(np.int32)
        multiplier = np.full(channels, 0.5, np.float32)
    else:
        acc = rng.integers(-2**31, 2**31, (rows, channels), dtype=np.int64).astype(np.int32)
        acc[0, 0] = 2**31 - 1
        multiplier = (2.0 ** (log_multiplier + rng.uniform(0, 1, channels))).astype(np.float32)
    qmin = out_zp if clamp == "relu" else 0
    qmax = max(qmin, min(255, out_zp + 60)) if clamp == "relu6" else 255
    expected = requantize_reference(acc, multiplier, out_zp, qmin, qmax)
    np.testing.assert_array_equal(expected, torch_requantize(acc, multiplier, out_zp, qmin, qmax))
    np.testing.assert_array_equal(_scalar_loop(acc, multiplier, out_zp, qmin, qmax), expected)
    np.testing.assert_array_equal(_vector_loop(acc, multiplier, out_zp, qmin, qmax), expected)
    np.testing.assert_array_equal(_vector_loop8(acc, multiplier, out_zp, qmin, qmax), expected)
    np.testing.assert_array_equal(_tile(acc, multiplier, out_zp, qmin, qmax), expected)
    np.testing.assert_array_equal(requantize_rows(acc, multiplier, out_zp, qmin, qmax), expected)


def test_ties_go_to_even():
    """2.5 -> 2 and 3.5 -> 4, -2.5 -> -2 (then + out_zp): lrintf's rounding, not half away from zero."""
    acc = np.array([[5, 7, -5, 1]], np.int32)
    multiplier = np.full(4, 0.5, np.float32)
    np.testing.assert_array_equal(requantize_reference(acc, multiplier, 10, 0, 255), [[12, 14, 8, 10]])
    np.testing.assert_array_equal(_scalar_loop(acc, multiplier, 10, 0, 255), [[12, 14, 8, 10]])

"""The int8 GEMM every integer layer runs: uint8 activations times int8 weights, exact int32 accumulators,
on the fastest route this CPU has, with weights packed once for that route.

    acc[m, n] = sum_k (xq[m, k] - x_zp) * (wq[n, k] - w_zps[n]) + bias_q[n]                    (exact, int32)
    out[m, n] = clamp(round_half_even(float32(acc[m, n]) * multiplier[n]) + out_zp, qmin, qmax)   (qgemm_requant)

`qgemm_reference`, `qgemm_requant_reference` and `qgemm_dequant_reference` below are the definition; every route equals them bit for bit.

The routes (a ladder, as fbgemm's and OpenBLAS's dispatch), best first; one is chosen at import from the
CPU's features (`simd.host_features`), or named by the environment variable MINICOMPRESS_QGEMM:

    vnni512    AVX512-VNNI vpdpbusd on zmm: a 4-row x 64-column tile in 16 accumulators; each step loads 4
               bytes of k from each of 4 rows of x (broadcast) and 64 columns x 4 bytes of packed weight
    avxvnni    vpdpbusd on ymm (AVX-VNNI, or AVX512-VNNI + VL): a 4 x 16 tile in 8 accumulators
    maddubs    AVX2 vpmaddubsw + vpmaddwd (simd.maddubs_add8), avxvnni's tile and packing: 4 bytes of k per
               int32 lane as vpdpbusd, but each pair of neighbouring products is first added in int16 with
               saturation, so it is exact only when no pair sum can leave int16 (below)
    int16      AVX2 vpmaddwd on int16 pairs (x widened to int16 per call): a 4 x 16 tile; exact, since
               both operands fit int16 and two products of at most 255 * 128 fit int32
    portable   plain Numba loops (any CPU, any architecture): 4 rows of x by 2 rows of w per tile

The byte routes multiply raw codes (vpdpbusd takes u8 x s8, no zero points) and apply the zero points
afterwards, by expanding the product:

    sum_k (x - zx)(w - zw) = sum_k x w  -  zw * sum_k x  -  zx * sum_k w  +  K * zx * zw

The weight row sums sum_k w are computed when the weight is packed; sum_k x only when some zw != 0.
Apart from maddubs's vpmaddubsw none of these instructions saturates, so the raw sum is exact while
K * 255 * 128 < 2**31 (K < 65,793; `check_accumulator_range` asks for less). Packing (`pack_weight`) pads K with zero bytes to the group size
(4 bytes for vpdpbusd, 2 int16 for vpmaddwd) and N to the tile width, and lays the weight out in the order
the tile reads it, [N/width][K/group][width][group]:

    packed = w.reshape(N // width, width, K // group, group).transpose(0, 2, 1, 3)

Padding adds zero products, and padded columns are never stored.

The maddubs route is exact when it cannot saturate (MLAS's and fbgemm's AVX2 kernels rely on the same
bound; fbgemm is why torch's x86 qconfig quantizes activations to 7 bits). A pair adds x0 w0 + x1 w1 with
x in [0, x_max]; it stays in int16 for every x when x_max * P <= 32767 and x_max * Q <= 32768, where P
(Q) is the largest sum of the positive parts (magnitudes of the negative parts) of a weight pair
(k = 2j, 2j + 1) of one row. `maddubs_code_limit(wq)` is the largest such x_max: 128 for any int8 weight
(7-bit activations, with the one level past 127 that rounding can give), 255 for weights in [-64, 64].
`pack_weight` (route None) takes maddubs where QGEMM_ROUTE is maddubs only when the caller's `x_max`
(the largest code it expects: 127 for 7-bit activations) is within that limit, else int16. Static
activations come from a clamp to [0, 255], so a layer calibrated to 7 bits can still be handed a larger
code; every call on a maddubs weight whose limit is below 255 therefore checks the codes' maximum first
(one pass over the bytes, ~1/N of the GEMM's work) and runs the int16 route, packed when first needed,
when they exceed it: a saturating input never reaches vpmaddubsw. Model files keep the plain int8 weight
(portable across CPUs); layers pack it once, at convert time or on the first call after `load`.

Each task of the parallel loop owns one column panel (its packed weight stays in L2) and one tile of rows;
rows past the last multiple of 4 get one-row tiles, so batch 1 does no wasted work. The epilogue adds
the zero-point terms and the bias while the tile is in cache, then stores int32 (`qgemm_packed`),
requantizes to uint8 with the ReLU / ReLU6 clamp (`qgemm_requant`), or scales to float32 (`qgemm_dequant`,
the dynamic Linear's output): `epilogue.finish_tile`, the epilogue every int8 route shares.
"""
import os

import numba
import numpy as np
from numba import njit, prange

from . import simd
from .epilogue import FLOAT32, INT32, UINT8, finish_tile, requantize_reference
from .qelementwise import (INT32_MAX, QINT8_MAX, QINT8_MIN, QUINT8_MAX, QUINT8_MIN, check_accumulator_range,
                           check_zero_point, per_channel)
from .threads import ParallelKernel, threads_for

ROUTES = ("vnni512", "avxvnni", "maddubs", "int16", "portable")

# Each route needs every feature of one of its sets (LLVM's names).
_REQUIREMENTS = {
    "vnni512": [("avx512f", "avx512bw", "avx512vnni")],
    "avxvnni": [("avxvnni",), ("avx512f", "avx512vl", "avx512vnni")],
    "maddubs": [("avx2",)],
    "int16": [("avx2",)],
    "portable": [()],
}

# (tile width in columns, bytes of k per packed group, packed element type)
_LAYOUT = {"vnni512": (64, 4, np.int8), "avxvnni": (16, 4, np.int8), "maddubs": (16, 4, np.int8),
           "int16": (16, 2, np.int16),
           "portable": (64, 1, np.int8)}


# Multiply-adds per unit of `threads.SERIAL_BELOW`'s work (one unit is ~0.1-0.5 ns of one thread): vpdpbusd
# on zmm does 64 per instruction. The batch-1 1024 x 1024 Linear (1M multiply-adds, ~20-30 us on one
# thread, bound by reading the weight) thus stays serial; waking the pool cost more than it saved.
_MACS_PER_WORK_UNIT = {"vnni512": 16, "avxvnni": 8, "maddubs": 6, "int16": 4, "portable": 1}


def route_supported(route):
    """True when this CPU (as Numba compiles for it) can run `route`."""
    if route not in _REQUIREMENTS:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    return any(simd.has_features(*needs) for needs in _REQUIREMENTS[route])


def supported_routes():
    """The routes this CPU can run, best first; "portable" is always last."""
    return tuple(route for route in ROUTES if route_supported(route))


def _initial_route():
    forced = os.environ.get("MINICOMPRESS_QGEMM")
    if forced is None or forced == "":
        return supported_routes()[0]
    if forced not in ROUTES:
        raise ValueError(f"MINICOMPRESS_QGEMM must be one of {ROUTES}, got {forced!r}")
    if not route_supported(forced):
        raise ValueError(f"MINICOMPRESS_QGEMM={forced} needs CPU features this machine lacks (any of "
                         f"{_REQUIREMENTS[forced]}); it can run {supported_routes()}")
    return forced


# The route new weights are packed for: the best one at import (a documented default), see `set_route`.
QGEMM_ROUTE = _initial_route()


def set_route(route):
    """Pack weights for `route` from now on (tests force each route in turn); returns the previous one.
    Weights packed before keep their own route. Raises ValueError for a route this CPU cannot run."""
    global QGEMM_ROUTE
    if not route_supported(route):
        raise ValueError(f"route {route!r} needs CPU features this machine lacks; it can run {supported_routes()}")
    previous, QGEMM_ROUTE = QGEMM_ROUTE, route
    return previous


# --------------------------------------------------------------------------------------------------
# Packed weights


class PackedWeight:
    """An int8 weight (N, K) prepared once for one route: the packed layout, the row sums sum_k w[n, k],
    the zero points, and the shapes. Built by `pack_weight`; read by `qgemm_packed` / `qgemm_requant`."""

    __slots__ = ("route", "data", "n", "k", "groups", "w_zps", "w_sums", "has_zero_points", "zero_bias", "x_limit",
                 "codes", "fallback")

    def exact_for(self, x_max):
        """The PackedWeight to multiply activations whose largest code is x_max by: this one, or (maddubs
        with x_max above its limit) the same weight packed for int16, built on first use."""
        if x_max <= self.x_limit:
            return self
        if self.fallback is None:
            self.fallback = pack_weight(self.codes, self.w_zps, "int16")
        return self.fallback

    def __repr__(self):
        return f"PackedWeight(route={self.route!r}, n={self.n}, k={self.k})"


def maddubs_code_limit(wq):
    """The largest activation code x_max (at most 255) for which the maddubs route is exact with weight
    wq (N, K) int8: no pair x0 w[n, 2j] + x1 w[n, 2j + 1] with x0, x1 in [0, x_max] leaves int16."""
    if wq.size == 0:
        return QUINT8_MAX
    even = np.zeros((wq.shape[0], wq.shape[1] + wq.shape[1] % 2), np.int64)
    even[:, :wq.shape[1]] = wq
    pairs = even.reshape(wq.shape[0], -1, 2)
    positive, negative = np.maximum(pairs, 0).sum(axis=2).max(), np.maximum(-pairs, 0).sum(axis=2).max()
    limits = [QUINT8_MAX] + ([32767 // positive] if positive else []) + ([32768 // negative] if negative else [])
    return int(min(limits))


def choose_route(wq, x_max=QUINT8_MAX):
    """The route `pack_weight` takes by default: QGEMM_ROUTE, except that maddubs gives way to the exact
    int16 route when activation codes up to x_max could saturate it with this weight."""
    if QGEMM_ROUTE == "maddubs" and x_max > maddubs_code_limit(wq):
        return "int16"
    return QGEMM_ROUTE


def pack_weight(wq, w_zps, route=None, x_max=QUINT8_MAX):
    """Prepare wq (N, K) int8 with per-output-channel zero points w_zps (N,) for the GEMM.

    Args:
        wq: int8 (N, K) weight codes.
        w_zps: integers in [-128, 127], length N (or a scalar / length 1 for a per-tensor weight).
        route: one of ROUTES; default `choose_route(wq, x_max)`.
        x_max: the largest activation code the caller expects (127 for 7-bit activations): only steers
            the default route; any code stays exact on any route (see the module docstring).

    Returns:
        PackedWeight.

    Raises:
        TypeError: wq is not an int8 array or w_zps not integers.
        ValueError: wq is not 2-D, w_zps has the wrong length or range, K is so large that int32
            accumulators could overflow, or the CPU cannot run `route`.

    Example:
        >>> packed = pack_weight(np.array([[2, -1]], np.int8), [0])
        >>> qgemm_packed(np.array([[130, 120]], np.uint8), 128, packed, None)
        array([[6]], dtype=int32)
    """
    if route is not None and not route_supported(route):
        raise ValueError(f"route {route!r} needs CPU features this machine lacks; it can run {supported_routes()}")
    if not isinstance(wq, np.ndarray) or wq.dtype != np.int8:
        raise TypeError(f"wq must be an int8 NumPy array, got {getattr(wq, 'dtype', type(wq).__name__)}")
    if wq.ndim != 2:
        raise ValueError(f"wq must have shape (N, K), got {wq.shape}")
    n_rows, depth = wq.shape
    zps = per_channel("w_zps", w_zps, n_rows, np.int64)
    if zps.size and (zps.min() < QINT8_MIN or zps.max() > QINT8_MAX):
        raise ValueError(f"w_zps must lie in [{QINT8_MIN}, {QINT8_MAX}], got values in [{zps.min()}, {zps.max()}]")
    if depth * 255 * 255 > INT32_MAX:
        raise ValueError(f"K={depth} is too deep for exact int32 accumulators; expected K * 65025 <= {INT32_MAX}")
    route = choose_route(wq, x_max) if route is None else route

    width, group, dtype = _LAYOUT[route]
    packed = PackedWeight()
    packed.route, packed.n, packed.k = route, n_rows, depth
    packed.x_limit = maddubs_code_limit(wq) if route == "maddubs" else QUINT8_MAX
    packed.codes, packed.fallback = (wq if packed.x_limit < QUINT8_MAX else None), None
    packed.w_zps, packed.has_zero_points = zps, bool(np.any(zps))
    packed.w_sums = wq.sum(axis=1, dtype=np.int64)
    packed.zero_bias = np.zeros(n_rows, np.int32)
    if route == "portable":
        packed.data, packed.groups = np.ascontiguousarray(wq), depth
        return packed
    k_padded, n_padded = -(-depth // group) * group, -(-n_rows // width) * width
    padded = np.zeros((n_padded, k_padded), dtype)
    padded[:n_rows, :depth] = wq
    layout = padded.reshape(n_padded // width, width, k_padded // group, group).transpose(0, 2, 1, 3)
    packed.data = np.ascontiguousarray(layout).reshape(-1).view(np.int32)     # one int32 per group
    packed.groups = k_padded // group
    return packed


def _activation_words(xq, route, groups):
    """xq (M, K) uint8 as the route reads it: (M, groups) int32 words of 4 bytes (vpdpbusd) or of two
    int16 (vpmaddwd), zero-padded along K; the codes themselves for the portable route."""
    if route == "portable":
        return xq
    if route == "int16":
        words = np.zeros((xq.shape[0], 2 * groups), np.int16)
        words[:, :xq.shape[1]] = xq
        return words.view(np.int32)
    if xq.shape[1] == 4 * groups:
        return xq.view(np.int32)
    words = np.zeros((xq.shape[0], 4 * groups), np.uint8)
    words[:, :xq.shape[1]] = xq
    return words.view(np.int32)


# --------------------------------------------------------------------------------------------------
# Micro-kernels: raw sum_k x w of a 4-row (tile4) or 1-row (tile1) tile of one column panel into
# `scratch` (4 * width int32, row-major). x holds the activation words, w the packed panels.


@njit(cache=True)
def _vnni512_tile4(x, r0, r1, r2, r3, w, panel, groups, scratch):
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = simd.zeros16()
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = simd.zeros16()
    for g in range(groups):
        at = (panel * groups + g) * 64
        w0, w1, w2, w3 = simd.load16(w, at), simd.load16(w, at + 16), simd.load16(w, at + 32), simd.load16(w, at + 48)
        b = simd.splat16(x[r0, g])
        a00, a01, a02, a03 = simd.vpdpbusd16(a00, b, w0), simd.vpdpbusd16(a01, b, w1), simd.vpdpbusd16(a02, b, w2), simd.vpdpbusd16(a03, b, w3)
        b = simd.splat16(x[r1, g])
        a10, a11, a12, a13 = simd.vpdpbusd16(a10, b, w0), simd.vpdpbusd16(a11, b, w1), simd.vpdpbusd16(a12, b, w2), simd.vpdpbusd16(a13, b, w3)
        b = simd.splat16(x[r2, g])
        a20, a21, a22, a23 = simd.vpdpbusd16(a20, b, w0), simd.vpdpbusd16(a21, b, w1), simd.vpdpbusd16(a22, b, w2), simd.vpdpbusd16(a23, b, w3)
        b = simd.splat16(x[r3, g])
        a30, a31, a32, a33 = simd.vpdpbusd16(a30, b, w0), simd.vpdpbusd16(a31, b, w1), simd.vpdpbusd16(a32, b, w2), simd.vpdpbusd16(a33, b, w3)
    simd.store16(scratch, 0, a00), simd.store16(scratch, 16, a01), simd.store16(scratch, 32, a02), simd.store16(scratch, 48, a03)
    simd.store16(scratch, 64, a10), simd.store16(scratch, 80, a11), simd.store16(scratch, 96, a12), simd.store16(scratch, 112, a13)
    simd.store16(scratch, 128, a20), simd.store16(scratch, 144, a21), simd.store16(scratch, 160, a22), simd.store16(scratch, 176, a23)
    simd.store16(scratch, 192, a30), simd.store16(scratch, 208, a31), simd.store16(scratch, 224, a32), simd.store16(scratch, 240, a33)


@njit(cache=True)
def _vnni512_tile1(x, r0, w, panel, groups, scratch):
    a0 = a1 = a2 = a3 = simd.zeros16()
    for g in range(groups):
        at = (panel * groups + g) * 64
        b = simd.splat16(x[r0, g])
        a0, a1 = simd.vpdpbusd16(a0, b, simd.load16(w, at)), simd.vpdpbusd16(a1, b, simd.load16(w, at + 16))
        a2, a3 = simd.vpdpbusd16(a2, b, simd.load16(w, at + 32)), simd.vpdpbusd16(a3, b, simd.load16(w, at + 48))
    simd.store16(scratch, 0, a0), simd.store16(scratch, 16, a1), simd.store16(scratch, 32, a2), simd.store16(scratch, 48, a3)


def _ymm_tiles(step, route):
    """tile4 / tile1 for a 16-column panel of 8-lane vectors, accumulating with `step(acc, x, w)`, compiled
    under names of their own (Numba's cache files are named after the function)."""

    def tile4(x, r0, r1, r2, r3, w, panel, groups, scratch):
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = simd.zeros8()
        for g in range(groups):
            at = (panel * groups + g) * 16
            w0, w1 = simd.load8(w, at), simd.load8(w, at + 8)
            b = simd.splat8(x[r0, g])
            a00, a01 = step(a00, b, w0), step(a01, b, w1)
            b = simd.splat8(x[r1, g])
            a10, a11 = step(a10, b, w0), step(a11, b, w1)
            b = simd.splat8(x[r2, g])
            a20, a21 = step(a20, b, w0), step(a21, b, w1)
            b = simd.splat8(x[r3, g])
            a30, a31 = step(a30, b, w0), step(a31, b, w1)
        simd.store8(scratch, 0, a00), simd.store8(scratch, 8, a01), simd.store8(scratch, 16, a10), simd.store8(scratch, 24, a11)
        simd.store8(scratch, 32, a20), simd.store8(scratch, 40, a21), simd.store8(scratch, 48, a30), simd.store8(scratch, 56, a31)

    def tile1(x, r0, w, panel, groups, scratch):
        a0 = a1 = simd.zeros8()
        for g in range(groups):
            at = (panel * groups + g) * 16
            b = simd.splat8(x[r0, g])
            a0, a1 = step(a0, b, simd.load8(w, at)), step(a1, b, simd.load8(w, at + 8))
        simd.store8(scratch, 0, a0), simd.store8(scratch, 8, a1)

    for function, name in ((tile4, "tile4"), (tile1, "tile1")):
        function.__name__ = function.__qualname__ = f"_{route}_{name}"
    return tuple(njit(cache=True)(function) for function in (tile4, tile1))


def _portable_tile4(x, r0, r1, r2, r3, w, panel, depth, scratch):
    """Scalar 4 x 2 tiles over the panel's rows of w; each int32 sum wrapped (Numba widens to int64)."""
    n_stop = min(w.shape[0], (panel + 1) * 64)
    x0, x1, x2, x3 = x[r0], x[r1], x[r2], x[r3]
    for n0 in range(panel * 64, n_stop, 2):
        n1 = min(n0 + 1, n_stop - 1)
        w0, w1 = w[n0], w[n1]
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = np.int32(0)
        for k in range(depth):
            u0, u1, u2, u3 = np.int16(x0[k]), np.int16(x1[k]), np.int16(x2[k]), np.int16(x3[k])
            v0, v1 = np.int16(w0[k]), np.int16(w1[k])
            a00, a01 = np.int32(a00 + u0 * v0), np.int32(a01 + u0 * v1)
            a10, a11 = np.int32(a10 + u1 * v0), np.int32(a11 + u1 * v1)
            a20, a21 = np.int32(a20 + u2 * v0), np.int32(a21 + u2 * v1)
            a30, a31 = np.int32(a30 + u3 * v0), np.int32(a31 + u3 * v1)
        j0, j1 = n0 - panel * 64, n1 - panel * 64
        scratch[j0], scratch[j1], scratch[64 + j0], scratch[64 + j1] = a00, a01, a10, a11
        scratch[128 + j0], scratch[128 + j1], scratch[192 + j0], scratch[192 + j1] = a20, a21, a30, a31


def _portable_tile1(x, r0, w, panel, depth, scratch):
    _portable_tile4_jit(x, r0, r0, r0, r0, w, panel, depth, scratch)


_portable_tile4_jit = njit(cache=True)(_portable_tile4)
_TILES = {
    "vnni512": (_vnni512_tile4, _vnni512_tile1),
    "avxvnni": _ymm_tiles(simd.vpdpbusd8, "avxvnni"),
    "maddubs": _ymm_tiles(simd.maddubs_add8, "maddubs"),
    "int16": _ymm_tiles(simd.pmaddwd_add8, "int16"),
    "portable": (_portable_tile4_jit, njit(cache=True)(_portable_tile1)),
}


# --------------------------------------------------------------------------------------------------
# The driver: tasks over (column panel, row tile), then the epilogue on the tile




def _driver(tile4, tile1, width):
    def gemm(x, x_sums, x_zp, w, groups, depth, w_zps, w_sums, bias_q, has_zero_points, multiplier, out_zp, qmin,
             qmax, bias_f, acc_out, q_out, f_out, mode, thread_slots):
        m_rows, n_cols = x.shape[0], w_zps.shape[0]
        col_terms = np.empty(n_cols, np.int32)          # bias - zx * sum_k w + K * zx * zw, per column
        for n in range(n_cols):
            col_terms[n] = np.int32(bias_q[n] - x_zp * w_sums[n] + depth * x_zp * w_zps[n])
        zp_f, qmin_f, qmax_f = np.float32(out_zp), np.float32(qmin), np.float32(qmax)
        full = m_rows // 4
        tiles = full + m_rows % 4
        panels = (n_cols + width - 1) // width
        scratches = np.empty((thread_slots, 4 * width), np.int32)      # one tile's raw sums per thread
        for task in prange(panels * tiles):
            panel, tile = task // tiles, task % tiles
            scratch = scratches[numba.get_thread_id()]
            if tile < full:
                m0, rows = 4 * tile, 4
                tile4(x, m0, m0 + 1, m0 + 2, m0 + 3, w, panel, groups, scratch)
            else:
                m0, rows = tile + 3 * full, 1
                tile1(x, m0, w, panel, groups, scratch)
            n0 = panel * width
            finish_tile(scratch, rows, width, m0, n0, min(width, n_cols - n0), x_sums, w_zps, col_terms,
                        has_zero_points, multiplier, zp_f, qmin_f, qmax_f, bias_f, acc_out, q_out, f_out, mode)
    return gemm


def _kernel(route):
    gemm = _driver(*_TILES[route], _LAYOUT[route][0])
    gemm.__name__ = gemm.__qualname__ = f"_gemm_{route}"     # Numba's cache files are named after it
    return ParallelKernel(gemm)


_KERNELS = {route: _kernel(route) for route in ROUTES}     # compiled at first call, on a CPU that has the route
_NO_INT32, _NO_UINT8, _NO_FLOAT32 = np.empty((0, 0), np.int32), np.empty((0, 0), np.uint8), np.empty((0, 0), np.float32)
_NO_VECTOR = np.empty(0, np.float32)


def _run(xq, x_zp, packed, bias_q, mode, multiplier=_NO_VECTOR, out_zp=0, qmin=0, qmax=0, bias_f=_NO_VECTOR,
         x_max=None):
    m_rows = xq.shape[0]
    if packed.x_limit < QUINT8_MAX and xq.size:
        packed = packed.exact_for(int(xq.max()) if x_max is None else x_max)
    x = _activation_words(xq, packed.route, packed.groups)
    x_sums = xq.sum(axis=1, dtype=np.int64) if packed.has_zero_points else np.zeros(m_rows, np.int64)
    out = np.empty((m_rows, packed.n), (np.int32, np.uint8, np.float32)[mode])
    outputs = [_NO_INT32, _NO_UINT8, _NO_FLOAT32]
    outputs[mode] = out
    with threads_for(m_rows * packed.n * max(packed.k, 1) // _MACS_PER_WORK_UNIT[packed.route]):
        _KERNELS[packed.route](x, x_sums, x_zp, packed.data, packed.groups, packed.k, packed.w_zps, packed.w_sums,
                               packed.zero_bias if bias_q is None else bias_q, packed.has_zero_points, multiplier,
                               out_zp, qmin, qmax, bias_f, *outputs, mode, numba.config.NUMBA_NUM_THREADS)
    return out


def qgemm_packed_unchecked(xq, x_zp, packed, bias_q, x_max=None):
    """`qgemm_packed` for arguments already checked (layers check theirs once, when they are built).
    x_max: the largest code in xq when the caller knows it (else it is found when the route needs it)."""
    return _run(xq, x_zp, packed, bias_q, INT32, x_max=x_max)


def qgemm_requant_unchecked(xq, x_zp, packed, bias_q, multiplier, out_zp, qmin, qmax, x_max=None):
    """`qgemm_requant` for arguments already checked."""
    return _run(xq, x_zp, packed, bias_q, UINT8, multiplier, out_zp, qmin, qmax, x_max=x_max)


def qgemm_dequant_unchecked(xq, x_zp, packed, multiplier, bias, x_max=None):
    """`qgemm_dequant` for arguments already checked (bias: float32 (N,) or None)."""
    return _run(xq, x_zp, packed, None, FLOAT32, multiplier, bias_f=_NO_VECTOR if bias is None else bias,
                x_max=x_max)


# --------------------------------------------------------------------------------------------------
# Public entry points


def _check(xq, x_zp, packed, bias_q):
    if not isinstance(packed, PackedWeight):
        raise TypeError(f"packed must be a PackedWeight from pack_weight, got {type(packed).__name__}")
    if not isinstance(xq, np.ndarray) or xq.dtype != np.uint8:
        raise TypeError(f"xq must be a uint8 NumPy array, got {getattr(xq, 'dtype', type(xq).__name__)}")
    if xq.ndim != 2 or xq.shape[1] != packed.k:
        raise ValueError(f"xq must have shape (M, {packed.k}) to match the packed weight, got {xq.shape}")
    x_zp = check_zero_point("x_zp", x_zp, QUINT8_MIN, QUINT8_MAX)
    if bias_q is not None:
        if not isinstance(bias_q, np.ndarray) or bias_q.dtype != np.int32 or bias_q.shape != (packed.n,):
            raise TypeError(f"bias_q must be an int32 array of shape ({packed.n},) or None, got "
                            f"{getattr(bias_q, 'dtype', type(bias_q).__name__)} {getattr(bias_q, 'shape', '')}")
        check_accumulator_range(packed.k, bias_q)
        bias_q = np.ascontiguousarray(bias_q)
    return np.ascontiguousarray(xq), x_zp, bias_q


def qgemm_packed(xq, x_zp, packed, bias_q):
    """(xq - x_zp) @ (wq - w_zps[:, None]).T + bias_q as int32 (M, N), exactly.

    Args:
        xq: uint8 (M, K) activation codes; x_zp: their zero point in [0, 255].
        packed: `pack_weight(wq, w_zps)`.
        bias_q: int32 (N,) (e.g. `qlinear.quantize_bias`), or None.

    Raises:
        TypeError / ValueError: wrong dtypes or shapes, a zero point out of range, or a bias so large the
            int32 accumulator could overflow.
    """
    xq, x_zp, bias_q = _check(xq, x_zp, packed, bias_q)
    return qgemm_packed_unchecked(xq, x_zp, packed, bias_q)


def qgemm_requant(xq, x_zp, packed, bias_q, multiplier, out_zp, qmin, qmax):
    """The GEMM requantized to uint8 in its epilogue, bit-identical to
    `requantize_rows(qgemm_packed(...), multiplier, out_zp, qmin, qmax)`:

        out = clamp(round_half_even(float32(acc) * multiplier[n]) + out_zp, qmin, qmax)

    Args:
        multiplier: float32 (N,) (`qelementwise.requantize_multiplier`).
        out_zp: the output zero point in [0, 255]; qmin <= qmax in [0, 255] the clamp (qmin = out_zp fuses
            a ReLU, qmax = the code of 6.0 a ReLU6).
        The rest as `qgemm_packed`.
    """
    xq, x_zp, bias_q = _check(xq, x_zp, packed, bias_q)
    out_zp = check_zero_point("out_zp", out_zp, QUINT8_MIN, QUINT8_MAX)
    qmin = check_zero_point("qmin", qmin, QUINT8_MIN, QUINT8_MAX)
    qmax = check_zero_point("qmax", qmax, qmin, QUINT8_MAX)
    multiplier = np.asarray(multiplier)
    if multiplier.dtype != np.float32 or multiplier.shape != (packed.n,):
        raise TypeError(f"multiplier must be a float32 array of shape ({packed.n},), got {multiplier.dtype} "
                        f"{multiplier.shape}")
    if not np.all(np.isfinite(multiplier) & (multiplier > 0)):
        raise ValueError("multiplier must be finite and > 0")
    return qgemm_requant_unchecked(xq, x_zp, packed, bias_q, np.ascontiguousarray(multiplier), out_zp, qmin, qmax)


def qgemm_dequant(xq, x_zp, packed, multiplier, bias):
    """The GEMM scaled to float32 in its epilogue, as fbgemm's ReQuantizeForFloat (dynamic Linear):

        out = fma(float32(acc), multiplier[n], bias[n])   one rounding;   float32(acc) * multiplier[n] without bias

    Args:
        multiplier: float32 (N,), x_scale * w_scale[n] in float32.
        bias: float32 (N,) or None.
        The rest as `qgemm_packed` (no integer bias here).
    """
    xq, x_zp, _ = _check(xq, x_zp, packed, None)
    multiplier = np.asarray(multiplier)
    if multiplier.dtype != np.float32 or multiplier.shape != (packed.n,):
        raise TypeError(f"multiplier must be a float32 array of shape ({packed.n},), got {multiplier.dtype} "
                        f"{multiplier.shape}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.float32 or bias.shape != (packed.n,):
            raise TypeError(f"bias must be a float32 array of shape ({packed.n},) or None, got {bias.dtype} {bias.shape}")
        bias = np.ascontiguousarray(bias)
    return qgemm_dequant_unchecked(xq, x_zp, packed, np.ascontiguousarray(multiplier), bias)


# --------------------------------------------------------------------------------------------------
# The definition


def qgemm_reference(xq, x_zp, wq, w_zps, bias_q):
    """(xq - x_zp) @ (wq - w_zps[:, None]).T + bias_q in int64 NumPy, as int32."""
    acc = (xq.astype(np.int64) - x_zp) @ (wq.astype(np.int64) - np.asarray(w_zps, np.int64).reshape(-1, 1)).T
    return (acc if bias_q is None else acc + bias_q).astype(np.int32)


def qgemm_requant_reference(xq, x_zp, wq, w_zps, bias_q, multiplier, out_zp, qmin, qmax):
    """qgemm_reference, then float32(acc) * multiplier rounded half to even, + out_zp, clamped."""
    return requantize_reference(qgemm_reference(xq, x_zp, wq, w_zps, bias_q), multiplier, out_zp, qmin, qmax)


def qgemm_dequant_reference(xq, x_zp, wq, w_zps, multiplier, bias):
    """qgemm_reference, then float32(acc) * multiplier (+ bias with one rounding: float64 holds the product
    exactly, and the sum is rounded once to float32 via round-to-odd, as simd.fma_float32)."""
    from .simd import fma_float32
    acc = qgemm_reference(xq, x_zp, wq, w_zps, None).astype(np.float32)
    return acc * multiplier if bias is None else fma_float32(acc, multiplier, bias)

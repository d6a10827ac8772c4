"""Group-wise int4 weights (quant.int4) against onnxruntime's own int4 quantizer (the MLAS routine that
`matmul_nbits_quantizer.py` calls, `quantize_matmul_4bits`): bit-identical packed codes, scales and zero
points; and the Int4Linear kernel (kernels.int4) against its NumPy twin (bit for bit) and against torch
computing x @ dequantized(W).T + b from the packed bytes with its own bit operations."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import minicompress as mc
from minicompress import nn
from minicompress.kernels.int4 import int4_linear, int4_linear_reference
from minicompress.kernels.threads import threads_for
from minicompress.quant.int4 import (dequantize_int4, pack_nibbles, quantize_int4, roundf, unpack_nibbles,
                                     unpack_zero_points)
from minicompress.quant.weight_only import Int4Linear

ort_pybind = pytest.importorskip("onnxruntime.capi._pybind_state")

GROUP_SIZES = st.sampled_from([16, 32, 64, 128])


def ort_quantize(weight, group_size, symmetric):
    """onnxruntime's MatMulNBits arrays for a Linear weight (N, K): its quantizer takes MatMul's B = W^T
    (K, N), padded with zero rows to whole blocks, as `DefaultWeightOnlyQuantizer.qbits_block_quant` does."""
    n, k = weight.shape
    blocks = -(-k // group_size)
    b = np.ascontiguousarray(np.pad(weight.T, ((0, blocks * group_size - k), (0, 0))))
    packed = np.zeros((n, blocks, group_size // 2), np.uint8)
    zero_points = np.zeros((n, (blocks + 1) // 2), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    ort_pybind.quantize_matmul_4bits(packed, b, scales, zero_points, group_size, n, blocks * group_size, symmetric)
    return packed, scales, zero_points


@st.composite
def weights(draw, max_n=6, max_k=300):
    """Float32 weights (N, K) of normal values, values on a coarse grid (ties in the rounding), and rows
    with all-zero, constant, single-sign or tiny groups."""
    n, k = draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "grid", "special"]))
    if kind == "normal":
        w = rng.standard_normal((n, k)) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    elif kind == "grid":
        w = rng.integers(-16, 17, (n, k)) * draw(st.sampled_from([0.25, 0.5, 1 / 3]))
    else:
        w = rng.standard_normal((n, k))
        w[0] = 0
        w[-1, : k // 2] = 1.5
        w[rng.random((n, k)) < 0.2] *= -1e-30
        w = np.abs(w) if draw(st.booleans()) else w
    return w.astype(np.float32)


@given(weights(), GROUP_SIZES, st.booleans())
def test_quantize_is_onnxruntimes_bit_for_bit(w, group_size, symmetric):
    packed, scales, zero_points = quantize_int4(w, group_size, symmetric)
    ort_packed, ort_scales, ort_zero_points = ort_quantize(w, group_size, symmetric)
    assert packed.tobytes() == ort_packed.tobytes() and packed.shape == ort_packed.shape
    # bit for bit, except the sign of a zero scale (a group of zeros mixing -0.0 and +0.0: which zero MLAS's
    # min / max keep depends on their order); either dequantizes the group to zeros
    nonzero = ort_scales != 0
    assert scales[nonzero].tobytes() == ort_scales[nonzero].tobytes() and np.all(scales[~nonzero] == 0)
    if symmetric:
        assert zero_points is None
    else:
        assert zero_points.tobytes() == ort_zero_points.tobytes()


@given(weights(), GROUP_SIZES, st.booleans())
def test_dequantized_weight_is_within_half_a_step(w, group_size, symmetric):
    """|W - dequantize(W)| <= |s| / 2 (+ the float32 rounding of (q - z) * s), each element in its group's
    step, where nothing clamps: the asymmetric grid covers [min, max]. The symmetric grid runs from -8 s
    (the largest magnitude, exactly) to 7 s, so on the other side a value up to 8 |s| clamps to 7 |s|: |s|."""
    packed, scales, zero_points = quantize_int4(w, group_size, symmetric)
    deq = dequantize_int4(packed, scales, zero_points, w.shape[1])
    step = np.abs(np.repeat(scales, group_size, axis=1)[:, : w.shape[1]]).astype(np.float64)
    error = np.abs(deq.astype(np.float64) - w)
    # 7.5 s can round to 8 s in the float32 product: 2^-24 * 8 |s| relative; the division (x / s) adds 1 ulp
    assert np.all(error <= step * ((1.0 if symmetric else 0.5) + 2 ** -19) + 1e-37)


@given(st.integers(1, 5), st.integers(1, 40))
def test_nibbles_round_trip_low_nibble_first(rows, half):
    codes = np.random.default_rng(rows * 100 + half).integers(0, 16, (rows, 2 * half)).astype(np.uint8)
    packed = pack_nibbles(codes)
    assert np.array_equal(packed & 15, codes[:, 0::2]) and np.array_equal(packed >> 4, codes[:, 1::2])
    assert np.array_equal(unpack_nibbles(packed), codes)


def test_roundf_rounds_halves_away_from_zero_exactly():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, np.nextafter(np.float32(0.5), np.float32(0)), 7.4999995],
                 np.float32)
    assert roundf(x).tolist() == [1, 2, 3, -1, -3, 0, 7]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="group_size must be a power of two >= 16"):
        quantize_int4(np.zeros((2, 64), np.float32), group_size=48)
    with pytest.raises(ValueError, match="weight must be a 2-D float array"):
        quantize_int4(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="weight must be finite"):
        quantize_int4(np.full((1, 32), np.nan, np.float32))
    layer = Int4Linear.from_float(nn.Linear(32, 4), 16)
    with pytest.raises(ValueError, match=r"Int4Linear: input must be float32 \(\*, 32\)"):
        layer(mc.tensor(np.zeros((2, 31), np.float32)))
    with pytest.raises(ValueError, match="scales must be a float32 array of shape"):
        Int4Linear.from_packed(layer.weight_packed.data, layer.weight_scales.data[:, :1], None, 32, 16)


# ----- the kernel: twin bit for bit, torch within float32 summation error ------------------------------

def torch_dequantized(packed, scales, packed_zero_points, in_features):
    """W from MatMulNBits' arrays in torch: nibbles by torch's own shifts and masks."""
    b = torch.from_numpy(packed.astype(np.int32))
    codes = torch.stack([b & 15, b >> 4], dim=-1).reshape(packed.shape[0], packed.shape[1], -1)
    if packed_zero_points is None:
        z = torch.full(scales.shape, 8, dtype=torch.int32)
    else:
        zb = torch.from_numpy(packed_zero_points.astype(np.int32))
        z = torch.stack([zb & 15, zb >> 4], dim=-1).reshape(zb.shape[0], -1)[:, : scales.shape[1]]
    w = (codes - z[..., None]).to(torch.float32) * torch.from_numpy(scales)[..., None]
    return w.reshape(packed.shape[0], -1)[:, :in_features]


@given(st.integers(1, 70), st.integers(1, 200), st.integers(1, 150), GROUP_SIZES, st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_kernel_equals_twin_and_torch(rows, in_features, out_features, group_size, symmetric, bias, seed):
    """Kernel == twin exactly: both add x[m, k] W[n, k] in k order with one float32 rounding per product and
    per sum. Torch (its own BLAS order) is within the summation error bound of two float32 sums of K + 1
    terms: |y - y'| <= 2 gamma_{K+1} sum_k |x_k W_k| + |b|), gamma_n = n u / (1 - n u), u = 2^-24."""
    rng = np.random.default_rng(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    layer = Int4Linear.from_float(linear, group_size, symmetric)
    x = rng.standard_normal((rows, in_features)).astype(np.float32)
    b = layer.bias.data if bias else np.zeros(0, np.float32)
    args = (x, layer.weight_packed.data, layer.weight_scales.data, layer.zero_points(), b)
    expected = int4_linear_reference(*args)
    for work in (0, 1 << 30):                      # the serial and the parallel build
        with threads_for(work):
            assert int4_linear(*args).tobytes() == expected.tobytes()
    assert layer(mc.tensor(x)).data.tobytes() == expected.tobytes()
    zp = None if symmetric else layer.weight_zero_points.data
    w = torch_dequantized(layer.weight_packed.data, layer.weight_scales.data, zp, in_features)
    assert torch.equal(w, torch.from_numpy(layer.dequantized_weight()))
    y = torch.from_numpy(x) @ w.T + (torch.from_numpy(b) if bias else 0)
    u = 2.0 ** -24
    gamma = (in_features + 1) * u / (1 - (in_features + 1) * u)
    magnitude = np.abs(x).astype(np.float64) @ np.abs(w.numpy()).T.astype(np.float64) + (np.abs(b) if bias else 0)
    assert np.all(np.abs(expected.astype(np.float64) - y.numpy()) <= 2 * gamma * magnitude)


def test_zero_points_unpack_per_row():
    w = np.random.default_rng(0).standard_normal((3, 80)).astype(np.float32)   # 5 groups of 16: odd
    packed, scales, zero_points = quantize_int4(w, 16, symmetric=False)
    assert zero_points.shape == (3, 3) and np.all(zero_points[:, -1] >> 4 == 8)
    z = unpack_zero_points(zero_points, 5)
    assert z.shape == (3, 5) and z.max() <= 15

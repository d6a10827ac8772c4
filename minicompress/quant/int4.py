"""Group-wise int4 weights in onnxruntime's `MatMulNBits` layout (com.microsoft, bits=4): quantize, pack,
unpack, dequantize, in plain NumPy.

A Linear weight W (N, K) (out_features, in_features) is cut along K into groups of `group_size` consecutive
elements (the last group of a row padded with zeros when K is not a multiple); each group g of row n has
its own float32 scale s[n, g] and 4-bit zero point z[n, g], and each element its 4-bit code q in 0..15:

    W[n, k] ~= (q[n, k] - z[n, k // group_size]) * s[n, k // group_size]

The qparams of one group x are MLAS's (onnxruntime's `quantize_matmul_4bits`, which
`matmul_nbits_quantizer.py` calls), in float32:

    symmetric     m = the element of largest magnitude, signed (min(x) when |min| == |max|)
                  s = m / -8,  z = 8 (implied: MatMulNBits' default when no zero_points input is given)
                  so m itself lands exactly on code 0, i.e. signed -8, and the codes are uint4 with zero
                  point 8 (equivalently signed int4 -8..7 plus 8); s is negative when m is positive
    asymmetric    lo = min(min(x), 0), hi = max(max(x), 0),  s = (hi - lo) / 15
                  z = clamp(roundf(0 - lo / s), 0, 15)         (z = 0 when s == 0)
    codes         q = clamp(roundf(x * (1 / s) + z), 0, 15)    (1 / s taken as 0 when s == 0)

`roundf` rounds half away from zero (C's roundf), not NumPy's half to even. These are MLAS's bit for bit
(tests/test_quant_int4.py), except the sign of a zero scale (a group of zeros mixing -0.0 and +0.0, where
which zero min / max return depends on the order they are read in): either dequantizes to zeros. Packing (MatMulNBits' B, scales,
zero_points):

    packed        uint8 (N, n_groups, group_size // 2): byte j of a group holds elements 2j (low nibble)
                  and 2j + 1 (high nibble)
    scales        float32 (N, n_groups)                 (MatMulNBits reads it flat, [N * n_groups])
    zero points   uint8 (N, ceil(n_groups / 2)): two groups per byte, low nibble first, each row starting
                  on a fresh byte; an odd row's spare high nibble is 8, as onnxruntime writes it.
                  None for symmetric weights.

    >>> w = np.array([[0.5, -1.0, 0.25, 0.0] * 8], np.float32)          # N = 1, K = 32
    >>> packed, scales, zero_points = quantize_int4(w, group_size=32)
    >>> float(scales[0, 0]), packed.shape                             # -1.0 / -8
    (0.125, (1, 1, 16))
    >>> bool(np.all(dequantize_int4(packed, scales, zero_points, 32) == w))
    True
"""
import numpy as np

BITS = 4
MAX_CODE = 15
SYMMETRIC_ZERO_POINT = 8


def check_group_size(group_size, name="group_size"):
    """group_size as an int: a power of two >= 16, as MatMulNBits' block_size must be (32 / 64 / 128 are
    the usual choices). Raises ValueError naming `name` otherwise."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 16 \
            or group_size & (group_size - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (e.g. 32, 64, 128), got {group_size!r}")
    return int(group_size)


def n_groups(in_features, group_size):
    return -(-int(in_features) // int(group_size))


def roundf(x):
    """C's roundf: to the nearest integer, halves away from zero. Exact: x - trunc(x) is exactly the
    fraction (floor(|x| + 0.5) is not, for the float just below 0.5)."""
    whole = np.trunc(x)
    return np.where(np.abs(x - whole) >= 0.5, whole + np.sign(x), whole).astype(x.dtype)


def group(weight, group_size):
    """float32 (N, K) -> (N, n_groups, group_size), each row's tail padded with zeros (as onnxruntime pads)."""
    weight = np.asarray(weight, np.float32)
    out_features, in_features = weight.shape
    pad = n_groups(in_features, group_size) * group_size - in_features
    return np.pad(weight, ((0, 0), (0, pad))).reshape(out_features, -1, group_size)


def int4_qparams(groups, symmetric=True):
    """(scales float32, zero points uint8), one per group over the last axis of float32 `groups`: the
    formulas of the module docstring (the one place they are written)."""
    groups = np.asarray(groups, np.float32)
    lo, hi = groups.min(axis=-1), groups.max(axis=-1)
    if symmetric:
        extreme = np.where(np.abs(hi) > np.abs(lo), hi, lo)
        return (extreme / np.float32(-8)).astype(np.float32), np.full(extreme.shape, SYMMETRIC_ZERO_POINT, np.uint8)
    lo, hi = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))
    scales = ((hi - lo) / np.float32(MAX_CODE)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = np.where(scales != 0, np.float32(0) - lo / scales, np.float32(0)).astype(np.float32)
    return scales, np.clip(roundf(zero), 0, MAX_CODE).astype(np.uint8)


def clipped_int4_qparams(groups, symmetric=True, norm=2.4, grid=100, max_shrink=0.8):
    """(scales, zero points) of `int4_qparams` for each group's range shrunk by the factor p that minimises
    the group's rounding error sum |x - dequantize(quantize(x))|^norm, over p = 1, 1 - 1/grid, ...,
    1 - (max_shrink * grid - 1) / grid: the `mse=True` search of GPTQ's reference `Quantizer.find_params`
    (norm 2.4, grid 100, maxshrink 0.8, as the paper's code and AutoGPTQ use it) on MLAS's grid. Clipping a
    group's few outliers puts its many small weights on a finer grid; p = 1 is always a candidate, so the
    error is never larger than round-to-nearest's. Ties keep the larger p (the search's order)."""
    groups = np.asarray(groups, np.float32)
    best_error = np.full(groups.shape[:-1], np.inf)
    best_scales, best_zero_points = int4_qparams(groups, symmetric)
    for i in range(int(max_shrink * grid)):
        scales, zero_points = int4_qparams(groups * np.float32(1 - i / grid), symmetric)
        codes = quantize_codes(groups, scales, zero_points)
        dequantized = (codes.astype(np.int32) - zero_points[..., None]).astype(np.float32) * scales[..., None]
        error = (np.abs(dequantized.astype(np.float64) - groups) ** norm).sum(axis=-1)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_scales = np.where(better, scales, best_scales)
        best_zero_points = np.where(better, zero_points, best_zero_points)
    return best_scales, best_zero_points


def quantize_codes(groups, scales, zero_points):
    """uint8 codes q = clamp(roundf(x * (1 / s) + z), 0, 15) of float32 `groups` (..., group_size) with
    one (s, z) per group (...,)."""
    with np.errstate(divide="ignore"):
        reciprocal = np.where(scales != 0, np.float32(1) / scales, np.float32(0)).astype(np.float32)
    q = np.asarray(groups, np.float32) * reciprocal[..., None] + zero_points[..., None].astype(np.float32)
    return np.clip(roundf(q), 0, MAX_CODE).astype(np.uint8)


def pack_nibbles(codes):
    """uint8 codes 0..15 (..., 2m) -> uint8 (..., m): element 2j in the low nibble, 2j + 1 in the high."""
    codes = np.asarray(codes, np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed):
    """uint8 (..., m) -> codes (..., 2m): the inverse of `pack_nibbles`."""
    packed = np.asarray(packed, np.uint8)
    return np.stack([packed & 15, packed >> 4], axis=-1).reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def pack_zero_points(zero_points):
    """uint8 (N, n_groups) zero points -> (N, ceil(n_groups / 2)), an odd row's spare nibble 8."""
    zero_points = np.asarray(zero_points, np.uint8)
    if zero_points.shape[1] % 2:
        zero_points = np.pad(zero_points, ((0, 0), (0, 1)), constant_values=SYMMETRIC_ZERO_POINT)
    return pack_nibbles(zero_points)


def unpack_zero_points(packed_zero_points, groups_per_row, out_features=None):
    """Per-group zero points uint8 (N, groups_per_row) from their packed bytes, or all 8 when None
    (symmetric; `out_features` then gives N)."""
    if packed_zero_points is None:
        return np.full((out_features, groups_per_row), SYMMETRIC_ZERO_POINT, np.uint8)
    return unpack_nibbles(packed_zero_points)[:, :groups_per_row]


def group_qparams(groups, symmetric=True, mse=False):
    """Each group's (scales, zero points): its full range (`int4_qparams`), or with `mse` its range clipped
    where the rounding error is least (`clipped_int4_qparams`)."""
    return clipped_int4_qparams(groups, symmetric) if mse else int4_qparams(groups, symmetric)


def quantize_int4(weight, group_size=64, symmetric=True, mse=False):
    """Round-to-nearest int4 of a float weight (N, K): (packed, scales, packed zero points or None), the
    arrays MatMulNBits reads (see the module docstring). The rounding GPTQ replaces (`quant.gptq`). With
    `mse` each group's range is clipped where its rounding error is least (`clipped_int4_qparams`); without,
    the arrays are onnxruntime's bit for bit."""
    group_size = check_group_size(group_size)
    weight = np.asarray(weight)
    if weight.ndim != 2 or weight.dtype.kind != "f":
        raise ValueError(f"weight must be a 2-D float array (out_features, in_features), got "
                         f"{weight.dtype} of shape {weight.shape}")
    if not np.isfinite(weight).all():
        raise ValueError("weight must be finite: NaN or infinite values have no int4 code")
    groups = group(weight, group_size)
    scales, zero_points = group_qparams(groups, symmetric, mse)
    packed = pack_nibbles(quantize_codes(groups, scales, zero_points))
    return packed, scales, None if symmetric else pack_zero_points(zero_points)


def dequantize_int4(packed, scales, packed_zero_points, in_features):
    """float32 W (N, in_features) = (q - z) * s from MatMulNBits' arrays (one float32 rounding per element)."""
    out_features, groups_per_row, half = packed.shape
    codes = unpack_nibbles(packed).astype(np.int32)                         # (N, n_groups, group_size)
    zero_points = unpack_zero_points(packed_zero_points, groups_per_row, out_features).astype(np.int32)
    w = (codes - zero_points[..., None]).astype(np.float32) * scales[..., None]
    return w.reshape(out_features, -1)[:, :in_features]


def check_packed(packed, scales, packed_zero_points, in_features, out_features, group_size, where="weight"):
    """Raise ValueError naming `where` unless the arrays have MatMulNBits' dtypes and shapes for an
    (out_features, in_features) weight in groups of group_size: what the kernel assumes before it reads."""
    groups_per_row = n_groups(in_features, group_size)
    expected = {"packed": ((out_features, groups_per_row, group_size // 2), np.uint8),
                "scales": ((out_features, groups_per_row), np.float32)}
    arrays = {"packed": packed, "scales": scales}
    if packed_zero_points is not None:
        expected["zero_points"] = ((out_features, (groups_per_row + 1) // 2), np.uint8)
        arrays["zero_points"] = packed_zero_points
    for key, (shape, dtype) in expected.items():
        value = arrays[key]
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != shape:
            raise ValueError(f"{where}: {key} must be a {np.dtype(dtype).name} array of shape {shape}, got "
                             f"{getattr(value, 'dtype', type(value).__name__)} of shape {getattr(value, 'shape', None)}")

"""The integer kernels (kernels/qlinear, qconv, qelementwise) against their NumPy twins, exactly (the
results are integers), and against torch's quantized modules on the fbgemm engine (what torch's x86 engine
runs on CPUs without VNNI) fed the same codes and qparams: torch.ao.nn.quantized.Linear / Conv2d (and the
intrinsic *ReLU modules), torch.ops.quantized.add / add_relu, torch.relu and quantized ReLU6.

Why torch may differ by one step, and only where there is a bias: torch's x86 modules keep the bias in
float and add bias / (x_scale * w_scale) to the int32 accumulator unrounded; these kernels take the bias
already rounded to int32 (quantize_bias). Without a bias both compute float32(acc) * multiplier with the
same float32 multiplier and agree exactly, which the tests assert. The output scale is drawn so that the
multiplier is at most 1, the usual case: then the bias's rounding (at most half an accumulator unit)
moves the output by at most one step.

Activations compared with torch are 7-bit codes (0..127): fbgemm's AVX2 kernel multiplies byte pairs into
int16 with saturation (vpmaddubsw), which is exact only for |x0 w0 + x1 w1| < 2**15 -- why torch's x86
qconfig uses reduce_range for activations. The twins cover the full 0..255 range.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.kernels.qelementwise import (qadd, qadd_reference, quantize_value, quantized_add, quantized_relu,
                                               quantized_relu6, requantize, requantize_multiplier,
                                               requantize_rows, requantize_rows_reference)
from minicompress.kernels import qgemm as gemm_ladder
from minicompress.kernels.qconv import (depthwise_qconv2d, depthwise_qconv2d_reference, gemm8_requant_kernels,
                                        gemm16_requant_kernel, hot_tiles, hot_tiles_reference, qconv2d_nhwc,
                                        gemm16_requant_reference, im2row, im2row_reference, pack16,
                                        prepare_qconv2d, quantized_conv2d, quantized_conv2d_reference)
from minicompress.kernels.qnhwc import (add_flat, channels_last, global_avg_pool_nhwc, global_avg_pool_nhwc_reference,
                                        quantize_nhwc,
                                        quantize_nhwc_reference)
from minicompress.kernels.qlinear import quantize_bias, quantized_linear, quantized_linear_reference
from strategies import conv_geometry

pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _engine(fbgemm_engine):
    """Every test here compares with torch's fbgemm kernels, the same on every CPU for 7-bit activations
    (see `conftest.fbgemm_engine` for why not the 'x86' engine, which on VNNI CPUs is partly oneDNN)."""


# --------------------------------------------------------------------------------------------------
# torch with exactly our codes


def torch_activation(xq, scale, zero_point):
    real = ((xq.astype(np.float64) - zero_point) * scale).astype(np.float32)
    q = torch.quantize_per_tensor(torch.from_numpy(real), scale, zero_point, torch.quint8)
    assert np.array_equal(q.int_repr().numpy(), xq), "torch re-quantized the activation codes differently"
    return q


def torch_weight(wq, scales, zps, per_channel):
    shape = (-1,) + (1,) * (wq.ndim - 1)
    real = ((wq.astype(np.float64) - zps.reshape(shape)) * scales.astype(np.float64).reshape(shape)).astype(np.float32)
    if per_channel:
        q = torch.quantize_per_channel(torch.from_numpy(real), torch.from_numpy(scales.astype(np.float64)),
                                       torch.from_numpy(zps), 0, torch.qint8)
    else:
        q = torch.quantize_per_tensor(torch.from_numpy(real), float(scales[0]), int(zps[0]), torch.qint8)
    assert np.array_equal(q.int_repr().numpy(), wq), "torch re-quantized the weight codes differently"
    return q


def run_torch_module(module, weight, bias, out_scale, out_zp, activation):
    module.set_weight_bias(weight, None if bias is None else torch.from_numpy(bias))
    module.scale, module.zero_point = out_scale, out_zp
    return module(activation).int_repr().numpy()


def assert_within_one_step(ours, theirs, exact):
    """Every element within one quantization step of torch (equal when `exact`); the fraction equal."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8
    diff = np.abs(ours.astype(np.int64) - theirs)
    assert diff.max(initial=0) <= (0 if exact else 1), f"max difference {diff.max()} steps"
    return float(np.mean(diff == 0)) if diff.size else 1.0


# --------------------------------------------------------------------------------------------------
# Problems: shapes and qparams drawn by hypothesis, codes from a drawn seed


@st.composite
def qparams(draw, channels):
    """(x_scale, x_zp, w_scales, w_zps, per_channel, out_scale, out_zp, relu, with_bias)."""
    x_scale = draw(st.floats(1e-3, 0.1))
    per_channel = draw(st.booleans())
    n = channels if per_channel else 1
    w_scales = np.array(draw(st.lists(st.floats(1e-3, 2e-2), min_size=n, max_size=n)), dtype=np.float32)
    w_zps = np.array(draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n)), dtype=np.int64)
    out_scale = x_scale * float(w_scales.max()) * 2.0 ** draw(st.floats(0, 8))      # multiplier <= 1
    return (x_scale, draw(st.integers(0, 127)), w_scales, w_zps, per_channel,
            out_scale, draw(st.integers(0, 255)), draw(st.booleans()), draw(st.booleans()))


@st.composite
def linear_problems(draw):
    m_rows, in_features, out_features = draw(st.integers(1, 9)), draw(st.integers(1, 40)), draw(st.integers(1, 12))
    return (m_rows, in_features, out_features), draw(qparams(out_features)), draw(st.integers(0, 2**32 - 1))


@st.composite
def conv_problems(draw):
    """Grouped or depthwise geometry giving at least one output pixel, qparams and a seed."""
    kernel, stride, padding, dilation, size = draw(conv_geometry(3, 2, 2, 2, extra=7))
    if draw(st.booleans()):                                       # depthwise, channel multiplier 1..2
        groups = in_channels = draw(st.integers(1, 5))
        out_channels = groups * draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 3))
        in_channels, out_channels = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 3))
    x_shape = (draw(st.integers(1, 2)), in_channels, *size)
    w_shape = (out_channels, in_channels // groups, *kernel)
    geometry = (stride, padding, dilation, groups)
    return x_shape, w_shape, geometry, draw(qparams(out_channels)), draw(st.integers(0, 2**32 - 1))


def draw_codes(rng, x_shape, w_shape, out_channels, with_bias, x_high=128):
    xq = rng.integers(0, x_high, x_shape).astype(np.uint8)
    wq = rng.integers(-128, 128, w_shape).astype(np.int8)
    bias = rng.standard_normal(out_channels).astype(np.float32) if with_bias else None
    return xq, wq, bias


def per_channel_scales(w_scales, channels):
    return np.broadcast_to(w_scales, (channels,))


# --------------------------------------------------------------------------------------------------
# Linear


@settings(max_examples=25, deadline=None)
@given(problem=linear_problems())
def test_quantized_linear_matches_reference_and_torch(problem):
    (m_rows, in_features, out_features), params, seed = problem
    x_scale, x_zp, w_scales, w_zps, per_channel, out_scale, out_zp, relu, with_bias = params
    xq, wq, bias = draw_codes(np.random.default_rng(seed), (m_rows, in_features), (out_features, in_features),
                              out_features, with_bias)
    bias_q = None if bias is None else quantize_bias(bias, x_scale, per_channel_scales(w_scales, out_features))
    args = (xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp, relu)
    ours = quantized_linear(*args)
    np.testing.assert_array_equal(ours, quantized_linear_reference(*args))

    module_class = torch.ao.nn.intrinsic.quantized.LinearReLU if relu else torch.ao.nn.quantized.Linear
    module = module_class(in_features, out_features)
    theirs = run_torch_module(module, torch_weight(wq, w_scales, w_zps, per_channel), bias, out_scale, out_zp,
                              torch_activation(xq, x_scale, x_zp))
    assert_within_one_step(ours, theirs, exact=bias is None)


def test_quantized_linear_leading_dimensions_and_empty_batch():
    rng = np.random.default_rng(0)
    xq, wq = rng.integers(0, 256, (2, 3, 5)).astype(np.uint8), rng.integers(-128, 128, (4, 5)).astype(np.int8)
    args = (0.02, 3, wq, [0.01], [0], None, 0.05, 7)
    out = quantized_linear(xq, *args)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out.reshape(6, 4), quantized_linear(xq.reshape(6, 5), *args))
    assert quantized_linear(xq[:0], *args).shape == (0, 3, 4)


def test_exact_fraction_linear_with_bias():
    """A 64 x 256 -> 128 layer with a bias: measured 99.95% of outputs equal to torch (the rest one step off,
    from the int32 bias); the threshold leaves room for other draws."""
    rng = np.random.default_rng(1)
    x_scale, x_zp, out_scale, out_zp = 0.03, 60, 0.05, 128
    w_scales = rng.uniform(5e-3, 2e-2, 128).astype(np.float32)
    w_zps = np.zeros(128, dtype=np.int64)
    xq, wq, bias = draw_codes(rng, (64, 256), (128, 256), 128, with_bias=True)
    ours = quantized_linear(xq, x_scale, x_zp, wq, w_scales, w_zps, quantize_bias(bias, x_scale, w_scales),
                            out_scale, out_zp)
    theirs = run_torch_module(torch.ao.nn.quantized.Linear(256, 128), torch_weight(wq, w_scales, w_zps, True), bias,
                              out_scale, out_zp, torch_activation(xq, x_scale, x_zp))
    fraction = assert_within_one_step(ours, theirs, exact=False)
    print(f"quantized linear: {fraction:.4%} of outputs equal to torch")
    assert fraction > 0.98


def test_quantize_bias_rounds_half_to_even_in_accumulator_units():
    # 1.25 / (1.0 * 0.5) = 2.5 -> 2 and 1.75 / 0.5 = 3.5 -> 4: exact binary fractions, ties to even.
    np.testing.assert_array_equal(quantize_bias(np.array([1.25, 1.75, -1.25], np.float32), 1.0, 0.5), [2, 4, -2])


@settings(max_examples=25, deadline=None)
@given(units=st.lists(st.integers(-10**5, 10**5), min_size=1, max_size=8), offset=st.floats(-0.4, 0.4),
       x_scale=st.floats(1e-3, 0.1), w_scale=st.floats(1e-3, 2e-2))
def test_quantize_bias_recovers_integer_units(units, offset, x_scale, w_scale):
    """bias = (k + offset) * x_scale * w_scale with |offset| <= 0.4 quantizes back to k."""
    units = np.array(units)
    bias = ((units + offset) * x_scale * w_scale).astype(np.float32)
    bias_q = quantize_bias(bias, x_scale, np.full(units.size, w_scale))
    assert bias_q.dtype == np.int32
    np.testing.assert_array_equal(bias_q, units)


# --------------------------------------------------------------------------------------------------
# Conv2d


def conv_module(x_shape, w_shape, geometry, relu):
    stride, padding, dilation, groups = geometry
    cls = torch.ao.nn.intrinsic.quantized.ConvReLU2d if relu else torch.ao.nn.quantized.Conv2d
    return cls(x_shape[1], w_shape[0], w_shape[2:], stride, padding, dilation, groups)


@settings(max_examples=25, deadline=None)
@given(problem=conv_problems())
def test_quantized_conv2d_matches_reference_and_torch(problem):
    x_shape, w_shape, geometry, params, seed = problem
    x_scale, x_zp, w_scales, w_zps, per_channel, out_scale, out_zp, relu, with_bias = params
    xq, wq, bias = draw_codes(np.random.default_rng(seed), x_shape, w_shape, w_shape[0], with_bias)
    bias_q = None if bias is None else quantize_bias(bias, x_scale, per_channel_scales(w_scales, w_shape[0]))
    qargs = (xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp)
    ours = quantized_conv2d(*qargs, *geometry, relu=relu)
    np.testing.assert_array_equal(ours, quantized_conv2d_reference(*qargs, *geometry, relu=relu))

    weight = torch_weight(wq, w_scales, w_zps, per_channel)
    theirs = run_torch_module(conv_module(x_shape, w_shape, geometry, relu), weight, bias, out_scale, out_zp,
                              torch_activation(xq, x_scale, x_zp))
    assert_within_one_step(ours, theirs, exact=bias is None)


@settings(max_examples=25, deadline=None)
@given(problem=conv_problems())
def test_conv_kernels_equal_references_on_full_range_codes(problem):
    """im2row (whole and in two bands of output rows) and the depthwise kernel, serial and parallel builds,
    against their twins, on every uint8 / int8 code and zero point and any clamp."""
    x_shape, w_shape, (stride, padding, dilation, groups), _, seed = problem
    rng = np.random.default_rng(seed)
    xq, wq, _ = draw_codes(rng, x_shape, w_shape, w_shape[0], False, x_high=256)
    x = np.ascontiguousarray(xq.transpose(0, 2, 3, 1))                            # channels-last bytes
    x_zp, out_zp = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    qmin = int(rng.integers(0, 256))
    qmax = int(rng.integers(qmin, 256))
    w_zps = rng.integers(-128, 128, w_shape[0])
    bias_q = rng.integers(-2**16, 2**16, w_shape[0]).astype(np.int32)
    multiplier = requantize_multiplier(0.05, rng.uniform(1e-3, 2e-2, w_shape[0]), 0.1)
    out_size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, k, s, p, d in zip(x_shape[2:], w_shape[2:], stride, padding, dilation))

    group_in, out_rows = w_shape[1], x_shape[0] * out_size[0]
    bands = [(0, out_rows)] + ([(0, out_rows // 2), (out_rows // 2, out_rows - out_rows // 2)] if out_rows > 1 else [])
    for start in range(0, x_shape[1], group_in):
        for first, count in bands:
            row_width = group_in * w_shape[2] * w_shape[3] + int(rng.integers(0, 4))     # padded to 4 bytes or not
            args = (x, x_zp, w_shape[2:], stride, padding, dilation, out_size, first, count, start, group_in,
                    row_width)
            expected = im2row_reference(*args)
            np.testing.assert_array_equal(im2row.serial(*args), expected)
            np.testing.assert_array_equal(im2row.parallel(*args), expected)
    if groups == x_shape[1]:
        w_centred = np.ascontiguousarray((wq[:, 0].astype(np.int32) - w_zps[:, None, None]).transpose(1, 2, 0),
                                         dtype=np.int32)
        x_repeated = np.repeat(x, w_shape[0] // x_shape[1], axis=3)                # channel multiplier
        args = (x_repeated, x_zp, w_centred, bias_q, multiplier, out_zp, qmin, qmax, stride, padding,
                dilation, out_size)
        expected = depthwise_qconv2d_reference(*args)
        np.testing.assert_array_equal(depthwise_qconv2d.serial(*args), expected)
        np.testing.assert_array_equal(depthwise_qconv2d.parallel(*args), expected)


@st.composite
def pointwise_problems(draw):
    """1x1 convolutions without padding (the GEMM route, strided ones take every s-th pixel first)."""
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    w_shape = (draw(st.integers(1, 20)), x_shape[1], 1, 1)
    return x_shape, w_shape, (stride, (0, 0), (1, 1), 1), draw(qparams(w_shape[0])), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=20, deadline=None)
@given(problem=pointwise_problems(), relu6=st.booleans())
def test_pointwise_and_relu6_conv2d_match_reference_and_torch(problem, relu6):
    """The 1x1 route, and any route with a ReLU6 fused into the clamp (qmax = the code of 6.0), against the
    twin and against torch's conv (then torch's quantized ReLU6: clamping twice is clamping once)."""
    x_shape, w_shape, geometry, params, seed = problem
    x_scale, x_zp, w_scales, w_zps, per_channel, out_scale, out_zp, relu, with_bias = params
    assert prepare_qconv2d(np.zeros(w_shape, np.int8), np.zeros(w_shape[0], np.int64), *geometry).route == "pointwise"
    xq, wq, bias = draw_codes(np.random.default_rng(seed), x_shape, w_shape, w_shape[0], with_bias)
    bias_q = None if bias is None else quantize_bias(bias, x_scale, per_channel_scales(w_scales, w_shape[0]))
    qmax = quantize_value(6.0, out_scale, out_zp) if relu6 else 255
    qargs = (xq, x_scale, x_zp, wq, w_scales, w_zps, bias_q, out_scale, out_zp)
    ours = quantized_conv2d(*qargs, *geometry, relu=relu or relu6, qmax=qmax)
    np.testing.assert_array_equal(ours, quantized_conv2d_reference(*qargs, *geometry, relu=relu or relu6, qmax=qmax))

    weight = torch_weight(wq, w_scales, w_zps, per_channel)
    module = conv_module(x_shape, w_shape, geometry, relu and not relu6)
    module.set_weight_bias(weight, None if bias is None else torch.from_numpy(bias))
    module.scale, module.zero_point = out_scale, out_zp
    theirs = module(torch_activation(xq, x_scale, x_zp))
    if relu6:
        theirs = torch.ao.nn.quantized.ReLU6()(theirs)
    assert_within_one_step(ours, theirs.int_repr().numpy(), exact=bias is None)


@pytest.mark.parametrize("gemm_route", gemm_ladder.supported_routes())
@settings(max_examples=10, deadline=None)
@given(problem=conv_problems(), relu6=st.booleans())
def test_conv2d_reads_channels_last_input_and_fuses_relu6(gemm_route, problem, relu6):
    """A channels-last input (the layout the previous integer layer leaves) gives the same codes as a
    contiguous one, on every conv route and every GEMM route this CPU runs; with ReLU6 fused, equal to
    the twin. Symmetric weights (w_zps = 0, the x86 default), which take the VNNI conv GEMM where there is one."""
    x_shape, w_shape, geometry, params, seed = problem
    x_scale, x_zp, w_scales, _, _, out_scale, out_zp, relu, _ = params
    w_zps = np.zeros(1, np.int64)
    previous = gemm_ladder.set_route(gemm_route)
    try:
        _check_channels_last_and_relu6(x_shape, w_shape, geometry, x_scale, x_zp, w_scales, w_zps, out_scale,
                                       out_zp, relu, relu6, seed)
    finally:
        gemm_ladder.set_route(previous)


def _check_channels_last_and_relu6(x_shape, w_shape, geometry, x_scale, x_zp, w_scales, w_zps, out_scale, out_zp,
                                   relu, relu6, seed):
    xq, wq, _ = draw_codes(np.random.default_rng(seed), x_shape, w_shape, w_shape[0], False, x_high=256)
    qmax = quantize_value(6.0, out_scale, out_zp) if relu6 else 255
    qargs = (x_scale, x_zp, wq, w_scales, w_zps, None, out_scale, out_zp, *geometry)
    channels_last = np.ascontiguousarray(xq.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    ours = quantized_conv2d(channels_last, *qargs, relu=relu, qmax=qmax)
    np.testing.assert_array_equal(ours, quantized_conv2d(xq, *qargs, relu=relu, qmax=qmax))
    np.testing.assert_array_equal(ours, quantized_conv2d_reference(xq, *qargs, relu=relu, qmax=qmax))


def test_exact_fraction_conv2d_with_bias():
    """2 x 16 x 12 x 12, 3x3, 32 channels, and its depthwise counterpart, with a bias: measured 99.92% and
    99.59% of outputs equal to torch."""
    rng = np.random.default_rng(2)
    for w_shape, groups in [((32, 16, 3, 3), 1), ((16, 1, 3, 3), 16)]:
        x_scale, x_zp, out_scale, out_zp = 0.03, 60, 0.02, 100
        w_scales = rng.uniform(5e-3, 2e-2, w_shape[0]).astype(np.float32)
        w_zps = np.zeros(w_shape[0], dtype=np.int64)
        xq, wq, bias = draw_codes(rng, (2, 16, 12, 12), w_shape, w_shape[0], with_bias=True)
        geometry = ((1, 1), (1, 1), (1, 1), groups)
        ours = quantized_conv2d(xq, x_scale, x_zp, wq, w_scales, w_zps, quantize_bias(bias, x_scale, w_scales),
                                out_scale, out_zp, *geometry)
        weight = torch_weight(wq, w_scales, w_zps, True)
        theirs = run_torch_module(conv_module(xq.shape, w_shape, geometry, False), weight, bias, out_scale, out_zp,
                                  torch_activation(xq, x_scale, x_zp))
        fraction = assert_within_one_step(ours, theirs, exact=False)
        print(f"quantized conv2d groups={groups}: {fraction:.4%} of outputs equal to torch")
        assert fraction > 0.98


# --------------------------------------------------------------------------------------------------
# Requantize, add, relu


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), channels=st.integers(1, 20), seed=st.integers(0, 2**32 - 1),
       log_multiplier=st.floats(-30, 4), out_zp=st.integers(0, 255), relu=st.booleans())
def test_requantize_equals_reference(rows, channels, seed, log_multiplier, out_zp, relu):
    """Accumulators over the whole int32 range, multipliers from 1e-9 to 16 (saturating both ways)."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2**31, 2**31, (rows, channels)).astype(np.int32)
    acc[0, 0] = 2**31 - 1
    multiplier = (2.0 ** (log_multiplier + rng.uniform(0, 1, channels))).astype(np.float32)
    qmin = out_zp if relu else 0
    ours = requantize_rows(acc, multiplier, out_zp, qmin, 255)
    np.testing.assert_array_equal(ours, requantize_rows_reference(acc, multiplier, out_zp, qmin, 255))
    np.testing.assert_array_equal(requantize(acc, multiplier, out_zp, qmin), ours)


def test_requantize_rounds_half_to_even():
    acc = np.array([[1, 3, 5, -1, -3, 7]], dtype=np.int32)
    np.testing.assert_array_equal(requantize(acc, 0.5, 10), [[10, 12, 12, 10, 8, 14]])
    np.testing.assert_array_equal(requantize(acc, 0.5, 10, qmin=11, qmax=13), [[11, 12, 12, 11, 11, 13]])


@st.composite
def add_problems(draw):
    shapes = draw(st.sampled_from([((7,), (7,)), ((2, 3, 5), (2, 3, 5)), ((3, 4, 5), (4, 1)), ((5, 6), (1, 6))]))
    qp = [draw(st.floats(1e-3, 0.2)) for _ in range(3)] + [draw(st.integers(0, 255)) for _ in range(3)]
    return shapes, qp, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None)
@given(problem=add_problems())
def test_quantized_add_matches_reference_and_torch(problem):
    (a_shape, b_shape), (a_scale, b_scale, out_scale, a_zp, b_zp, out_zp), relu, seed = problem
    rng = np.random.default_rng(seed)
    aq, bq = rng.integers(0, 256, a_shape).astype(np.uint8), rng.integers(0, 256, b_shape).astype(np.uint8)
    ours = quantized_add(aq, a_scale, a_zp, bq, b_scale, b_zp, out_scale, out_zp, relu=relu)
    a, b = (np.ascontiguousarray(np.broadcast_to(v, ours.shape)).reshape(-1) for v in (aq, bq))
    qmin = out_zp if relu else 0
    reference = qadd_reference(a, np.float32(a_scale), a_zp, b, np.float32(b_scale), b_zp,
                               np.float32(1.0 / out_scale), out_zp, qmin, 255)
    np.testing.assert_array_equal(ours.reshape(-1), reference)
    np.testing.assert_array_equal(qadd(a, np.float32(a_scale), a_zp, b, np.float32(b_scale), b_zp,
                                       np.float32(1.0 / out_scale), out_zp, qmin, 255), reference)
    np.testing.assert_array_equal(add_flat(a, np.float32(a_scale), a_zp, b, np.float32(b_scale), b_zp,
                                           np.float32(1.0 / out_scale), out_zp, qmin, 255), reference)

    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    theirs = op(torch_activation(aq, a_scale, a_zp), torch_activation(bq, b_scale, b_zp), out_scale, out_zp)
    assert_within_one_step(ours, theirs.int_repr().numpy(), exact=False)


def test_exact_fraction_add():
    """100 000 random pairs: measured 99.98% equal to torch.ops.quantized.add; the rest lie within a float32
    rounding error of a half-way point, where torch's fused multiply-add dequantization rounds the other way."""
    rng = np.random.default_rng(3)
    aq, bq = rng.integers(0, 256, 100_000).astype(np.uint8), rng.integers(0, 256, 100_000).astype(np.uint8)
    ours = quantized_add(aq, 0.037, 120, bq, 0.052, 7, 0.08, 64)
    theirs = torch.ops.quantized.add(torch_activation(aq, 0.037, 120), torch_activation(bq, 0.052, 7), 0.08, 64)
    fraction = assert_within_one_step(ours, theirs.int_repr().numpy(), exact=False)
    print(f"quantized add: {fraction:.4%} of outputs equal to torch")
    assert fraction > 0.999


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 0.2), zero_point=st.integers(0, 255), seed=st.integers(0, 2**32 - 1))
def test_quantized_relu_and_relu6_equal_torch(scale, zero_point, seed):
    xq = np.random.default_rng(seed).integers(0, 256, (4, 33)).astype(np.uint8)
    qx = torch_activation(xq, scale, zero_point)
    np.testing.assert_array_equal(quantized_relu(xq, zero_point), torch.relu(qx).int_repr().numpy())
    np.testing.assert_array_equal(quantized_relu6(xq, scale, zero_point),
                                  torch.ao.nn.quantized.ReLU6()(qx).int_repr().numpy())


@pytest.mark.skipif(gemm_ladder.QGEMM_ROUTE != "vnni512", reason="the conv GEMM needs AVX512-VNNI (the vnni512 route)")
@settings(max_examples=25, deadline=None)
@given(m_rows=st.integers(1, 40), depth=st.integers(1, 70), n_cols=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       serial=st.booleans())
def test_gemm16_equals_reference_on_full_range_codes(m_rows, depth, n_cols, seed, serial):
    """The conv GEMM's kernel: K and N not multiples of 4 / 16 (padding), partial 8-row tiles, every code,
    column terms and multipliers that saturate both ways."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (m_rows, depth)).astype(np.uint8)
    w = rng.integers(-128, 128, (n_cols, depth)).astype(np.int8)
    words, groups, epilogue = conv_gemm_operands(rng, x, n_cols)
    col_term, multiplier, out_zp, qmin, qmax = epilogue
    out = np.empty(m_rows * n_cols, np.uint8)
    kernel = gemm16_requant_kernel.serial if serial else gemm16_requant_kernel.parallel
    kernel(words.view(np.int32), groups, pack16(w), col_term, multiplier, out_zp, qmin, qmax, n_cols, out)
    np.testing.assert_array_equal(out.reshape(m_rows, n_cols),
                                  gemm16_requant_reference(x, w, col_term, multiplier, out_zp, qmin, qmax))


def conv_gemm_operands(rng, x, n_cols):
    """x (M, K) as the conv GEMMs read it ((M, K / 4) words, K zero-padded), and an epilogue whose column
    terms and multipliers saturate both ways."""
    col_term = rng.integers(-2**20, 2**20, n_cols).astype(np.int32)
    multiplier = (2.0 ** rng.uniform(-20, 0, n_cols)).astype(np.float32)
    out_zp = int(rng.integers(0, 256))
    qmin = int(rng.integers(0, 256))
    qmax = int(rng.integers(qmin, 256))
    groups = -(-x.shape[1] // 4)
    words = np.zeros((x.shape[0], 4 * groups), np.uint8)
    words[:, :x.shape[1]] = x
    return words, groups, (col_term, multiplier, out_zp, qmin, qmax)


GEMM8_ROUTES = [pytest.param(route, marks=pytest.mark.skipif(not gemm_ladder.route_supported(route),
                                                             reason=f"the {route} route is not on this CPU"))
                for route in gemm8_requant_kernels]


@pytest.mark.parametrize("route", GEMM8_ROUTES)
@settings(max_examples=20, deadline=None)
@given(m_rows=st.integers(1, 40), depth=st.integers(1, 70), n_cols=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       serial=st.booleans(), outliers=st.integers(0, 3))
def test_gemm8_equals_reference(route, m_rows, depth, n_cols, seed, serial, outliers):
    """The ymm conv GEMMs: ragged K, N (partial 8-column halves) and 4-row tiles. maddubs takes codes up to
    its limit for the weight, plus `outliers` codes above it (up to 255) in tiles marked hot, which split
    their codes; every case equals the twin."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n_cols, depth)).astype(np.int8)
    limit = gemm_ladder.maddubs_code_limit(w) if route == "maddubs" else 255
    x = rng.integers(0, limit + 1, (m_rows, depth)).astype(np.uint8)
    x[0, 0] = limit
    for _ in range(outliers if limit < 255 else 0):
        x[rng.integers(0, m_rows), rng.integers(0, depth)] = rng.integers(limit + 1, 256)
    words, groups, epilogue = conv_gemm_operands(rng, x, n_cols)
    col_term, multiplier, out_zp, qmin, qmax = epilogue
    hot = hot_tiles.serial(words, limit)
    np.testing.assert_array_equal(hot, hot_tiles_reference(x, limit))
    assert hot.any() == bool(x.max() > limit)
    out = np.empty(m_rows * n_cols, np.uint8)
    kernel = gemm8_requant_kernels[route].serial if serial else gemm8_requant_kernels[route].parallel
    kernel(words.view(np.int32), groups, pack16(w), col_term, multiplier, out_zp, qmin, qmax, n_cols, out, hot, limit)
    np.testing.assert_array_equal(out.reshape(m_rows, n_cols),
                                  gemm16_requant_reference(x, w, col_term, multiplier, out_zp, qmin, qmax))


def test_a_split_code_never_exceeds_the_limit():
    """min(x, L) and max(x - L, 0) for every code and every limit the maddubs route can have (L >= 128, as a
    pair of int8 magnitudes sums to at most 256): both parts <= L, so vpmaddubsw sees no saturating code."""
    x = np.arange(256)
    for limit in range(128, 256):
        low, high = np.minimum(x, limit), np.maximum(x - limit, 0)
        assert (low + high == x).all() and low.max() <= limit and high.max() <= limit


@pytest.mark.skipif(not gemm_ladder.route_supported("maddubs"), reason="the maddubs route needs avx2")
@pytest.mark.parametrize("kernel_size, padding", [(1, 0), (3, 1)])
def test_conv_on_maddubs_takes_the_ymm_gemm_and_stays_exact_above_the_code_limit(kernel_size, padding):
    """Prepared for 7-bit inputs (x_max=127) on the maddubs route: 7-bit codes, a code above the weight's
    limit, or (with padding) a zero point above it: every case equals the twin."""
    rng = np.random.default_rng(7)
    wq = rng.integers(-128, 128, (20, 6, kernel_size, kernel_size)).astype(np.int8)
    wq[:, :2] = -128                                            # pairs of -128: the limit is 128
    w_zps, w_scales = np.zeros(20, np.int64), rng.uniform(0.005, 0.02, 20)
    bias_q = rng.integers(-5000, 5000, 20).astype(np.int32)
    previous = gemm_ladder.set_route("maddubs")
    try:
        prepared = prepare_qconv2d(wq, w_zps, (1, 1), (padding, padding), (1, 1), 1, x_max=127)
    finally:
        gemm_ladder.set_route(previous)
    assert prepared.gemm8 == "maddubs" and prepared.x_limit == 128
    multiplier = requantize_multiplier(0.02, w_scales, 0.1)
    for x_high, x_zp in [(127, 60), (255, 60)] + ([(100, 200)] if padding else []):
        xq = rng.integers(0, x_high + 1, (2, 6, 7, 9)).astype(np.uint8)
        xq[0, 0, 0, 0] = x_high
        ours = qconv2d_nhwc(channels_last(xq), x_zp, prepared, bias_q, multiplier, 5, 0, 255)
        expected = quantized_conv2d_reference(xq, 0.02, x_zp, wq, w_scales, w_zps, bias_q, 0.1, 5, (1, 1),
                                              (padding, padding), (1, 1), 1)
        np.testing.assert_array_equal(ours.transpose(0, 3, 1, 2), expected)


# --------------------------------------------------------------------------------------------------
# Channels-last quantize and global average pooling


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
       scale=st.floats(1e-3, 0.5), zero_point=st.integers(0, 255), seed=st.integers(0, 2**32 - 1))
def test_quantize_nhwc_equals_reference_and_torch(shape, scale, zero_point, seed):
    """Values far outside the range (saturating), exact halves of a step (ties) and +-inf included."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale * 200).astype(np.float32)
    x.flat[::3] = (np.rint(x.flat[::3] / scale) + 0.5) * np.float32(scale)
    x.flat[0], x.flat[-1] = np.inf, -np.inf
    ours = quantize_nhwc(x, scale, zero_point)
    np.testing.assert_array_equal(ours, quantize_nhwc_reference(x, scale, zero_point))
    theirs = torch.quantize_per_tensor(torch.from_numpy(x), scale, zero_point, torch.quint8)
    np.testing.assert_array_equal(ours, theirs.int_repr().numpy().transpose(0, 2, 3, 1))
    x.flat[-1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize_nhwc(x, scale, zero_point)


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 7)),
       zero_point=st.integers(0, 255), seed=st.integers(0, 2**32 - 1))
def test_global_avg_pool_nhwc_equals_reference_and_torch(shape, zero_point, seed):
    x = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    ours = global_avg_pool_nhwc(x, zero_point)
    np.testing.assert_array_equal(ours, global_avg_pool_nhwc_reference(x, zero_point))
    np.testing.assert_array_equal(global_avg_pool_nhwc.serial(x, zero_point), ours)
    theirs = torch.nn.AdaptiveAvgPool2d(1)(torch_activation(x.transpose(0, 3, 1, 2).copy(), 0.05, zero_point))
    assert_within_one_step(ours, theirs.int_repr().numpy()[:, :, 0, 0], exact=False)   # ties: module docstring


# --------------------------------------------------------------------------------------------------
# Validation at the entry points

X, W = np.zeros((2, 3), np.uint8), np.zeros((4, 3), np.int8)
IMG, KER = np.zeros((1, 2, 5, 5), np.uint8), np.zeros((4, 2, 3, 3), np.int8)


@pytest.mark.parametrize("call, error, name", [
    (lambda: quantized_linear(X.astype(np.int8), 0.1, 0, W, 0.1, 0, None, 0.1, 0), TypeError, "xq"),
    (lambda: quantized_linear(X, 0.1, 0, W.astype(np.float32), 0.1, 0, None, 0.1, 0), TypeError, "wq"),
    (lambda: quantized_linear(X[:, :2], 0.1, 0, W, 0.1, 0, None, 0.1, 0), ValueError, "xq"),
    (lambda: quantized_linear(X, 0.0, 0, W, 0.1, 0, None, 0.1, 0), ValueError, "x_scale"),
    (lambda: quantized_linear(X, 0.1, 256, W, 0.1, 0, None, 0.1, 0), ValueError, "x_zp"),
    (lambda: quantized_linear(X, 0.1, 0.5, W, 0.1, 0, None, 0.1, 0), TypeError, "x_zp"),
    (lambda: quantized_linear(X, 0.1, 0, W, [0.1, 0.1], 0, None, 0.1, 0), ValueError, "w_scales"),
    (lambda: quantized_linear(X, 0.1, 0, W, 0.1, 200, None, 0.1, 0), ValueError, "w_zps"),
    (lambda: quantized_linear(X, 0.1, 0, W, 0.1, 0, np.zeros(4, np.int64), 0.1, 0), TypeError, "bias_q"),
    (lambda: quantized_linear(X, 0.1, 0, W, 0.1, 0, np.zeros(3, np.int32), 0.1, 0), ValueError, "bias_q"),
    (lambda: quantized_linear(X, 0.1, 0, W, 0.1, 0, np.full(4, 2**31 - 1, np.int32), 0.1, 0), ValueError, "overflow"),
    (lambda: quantized_linear(X, 0.1, 0, W, 0.1, 0, None, float("inf"), 0), ValueError, "out_scale"),
    (lambda: quantized_conv2d(IMG, 0.1, 0, KER, 0.1, 0, None, 0.1, 0, groups=2), ValueError, "groups"),
    (lambda: quantized_conv2d(IMG, 0.1, 0, KER, 0.1, 0, None, 0.1, 0, stride=0), ValueError, "stride"),
    (lambda: quantized_conv2d(IMG, 0.1, 0, KER, 0.1, 0, None, 0.1, 0, padding=1.5), TypeError, "padding"),
    (lambda: quantized_conv2d(IMG, 0.1, 0, KER, 0.1, 0, None, 0.1, 0, dilation=3), ValueError, "empty"),
    (lambda: quantized_conv2d(IMG[0], 0.1, 0, KER, 0.1, 0, None, 0.1, 0), ValueError, "xq"),
    (lambda: quantized_add(X, 0.1, 0, W.view(np.uint8), 0.1, 0, 0.1, 0), ValueError, "broadcast"),
    (lambda: quantized_add(X, -0.1, 0, X, 0.1, 0, 0.1, 0), ValueError, "a_scale"),
    (lambda: requantize(np.zeros((2, 3), np.int64), 0.5, 0), TypeError, "acc"),
    (lambda: requantize(np.zeros((2, 3), np.int32), [0.5, 0.5], 0), ValueError, "multiplier"),
    (lambda: requantize(np.zeros((2, 3), np.int32), 0.5, 0, qmin=10, qmax=5), ValueError, "qmax"),
    (lambda: quantize_bias(np.ones(3, np.float32), 1e-6, 1e-6), ValueError, "int32"),
    (lambda: quantize_bias(np.ones(3, np.int32), 0.1, 0.1), TypeError, "bias"),
])
def test_entry_points_reject_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


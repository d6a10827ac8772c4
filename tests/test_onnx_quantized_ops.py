"""ONNX's quantized operators against onnxruntime on one-node models. Integer results (MatMulInteger,
ConvInteger, QuantizeLinear, DequantizeLinear) must be equal; requantized ones (QLinearMatMul, QLinearConv)
within one output step, since a runtime may round a value within float32 error of a half step either way.

Codes span the full uint8 / int8 ranges, so on a CPU with AVX2 but no VNNI onnxruntime's uint8 x int8
kernels saturate byte pairs in int16: the operators that use them (MatMulInteger, QLinearMatMul, QLinearConv,
QGemm) are loaded with the arithmetic this host's onnxruntime uses (`onnx_harness.host_arithmetic`: exact,
or "u8s8-saturating"), the same assertion holding on every CPU."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress.onnx as mco
from onnx_harness import host_arithmetic, one_node_model, run_both

SETTINGS = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def codes(rng, shape, dtype):
    lo, hi = (0, 255) if dtype == np.uint8 else (-128, 127)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def assert_within_one_step(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max(initial=0) <= 1


def assert_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opset", [10, 13, 19])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@SETTINGS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), per_axis=st.booleans(), seed=seeds)
def test_quantize_dequantize_linear(opset, dtype, shape, per_axis, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    per_axis = per_axis and opset >= 13
    axis = int(rng.integers(-len(shape), len(shape))) if per_axis else 1
    n = shape[axis] if per_axis else 1
    scale = rng.uniform(0.01, 0.1, n).astype(np.float32)
    zp = codes(rng, n, dtype)
    if not per_axis:
        scale, zp = scale[0], zp[0]
    attrs = {"axis": axis} if per_axis else {}
    assert_equal(*run_both("QuantizeLinear", [("x", x), ("s", scale), ("z", zp)], attrs, opset=opset))
    q = codes(rng, shape, dtype)
    # float32 products of a code and a scale: the same single rounding in both
    ours, theirs = run_both("DequantizeLinear", [("q", q), ("s", scale), ("z", zp)], attrs, opset=opset)
    np.testing.assert_array_equal(ours[0], theirs[0])


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), low=st.floats(-4, 0), seed=seeds)
def test_dynamic_quantize_linear(shape, low, seed):
    x = np.random.default_rng(seed).uniform(low, 3.0, shape).astype(np.float32)
    ours, theirs = run_both("DynamicQuantizeLinear", [("x", x)], opset=11, n_outputs=3)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-7)
    assert_equal(ours[2:], theirs[2:])
    assert_within_one_step(ours[:1], theirs[:1])


@pytest.mark.parametrize("b_dtype", [np.uint8, np.int8])
@SETTINGS
@given(m=st.integers(1, 5), k=st.integers(1, 6), n=st.integers(1, 5), batch=st.booleans(), seed=seeds)
def test_matmul_integer(b_dtype, m, k, n, batch, seed):
    rng = np.random.default_rng(seed)
    a = codes(rng, (2, m, k) if batch else (m, k), np.uint8)
    b = codes(rng, (k, n), b_dtype)
    arithmetic = host_arithmetic()
    assert_equal(*run_both("MatMulInteger", [("a", a), ("b", b), ("az", codes(rng, (), np.uint8)),
                                             ("bz", codes(rng, (), b_dtype))], arithmetic=arithmetic))
    assert_equal(*run_both("MatMulInteger", [("a", a), ("b", b)], arithmetic=arithmetic))


@pytest.mark.parametrize("w_dtype", [np.uint8, np.int8])
@SETTINGS
@given(c_in=st.integers(1, 3), c_out=st.integers(1, 3), kernel=st.integers(1, 3), size=st.integers(3, 6),
       pad=st.integers(0, 1), stride=st.integers(1, 2), seed=seeds)
def test_conv_integer(w_dtype, c_in, c_out, kernel, size, pad, stride, seed):
    rng = np.random.default_rng(seed)
    x = codes(rng, (1, c_in, size, size), np.uint8)
    w = codes(rng, (c_out, c_in, kernel, kernel), w_dtype)
    attrs = {"pads": [pad] * 4, "strides": [stride, stride]}
    assert_equal(*run_both("ConvInteger", [("x", x), ("w", w), ("xz", codes(rng, (), np.uint8)),
                                           ("wz", codes(rng, (), w_dtype))], attrs, constants=("w",)))


@pytest.mark.parametrize("a_dtype,b_dtype", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
@SETTINGS
@given(m=st.integers(1, 5), k=st.integers(1, 8), n=st.integers(1, 5), per_column=st.booleans(), seed=seeds)
def test_qlinear_matmul(a_dtype, b_dtype, m, k, n, per_column, seed):
    rng = np.random.default_rng(seed)
    a, b = codes(rng, (m, k), a_dtype), codes(rng, (k, n), b_dtype)
    b_scale = rng.uniform(0.001, 0.01, n if per_column else ()).astype(np.float32)
    b_zp = np.zeros(n if per_column else (), b_dtype) if b_dtype == np.int8 else codes(rng, n if per_column else (), b_dtype)
    inputs = [("a", a), ("as", np.float32(0.02)), ("az", codes(rng, (), a_dtype)), ("b", b), ("bs", b_scale),
              ("bz", b_zp), ("ys", np.float32(rng.uniform(0.01, 0.1))), ("yz", codes(rng, (), a_dtype))]
    assert_within_one_step(*run_both("QLinearMatMul", inputs, constants=("b", "bs", "bz"),
                                     arithmetic=host_arithmetic()))


@pytest.mark.parametrize("per_channel", [False, True])
@SETTINGS
@given(c_in=st.integers(1, 4), c_out=st.integers(1, 4), kernel=st.integers(1, 3), size=st.integers(3, 7),
       pads=st.lists(st.integers(0, 1), min_size=4, max_size=4), stride=st.integers(1, 2), bias=st.booleans(),
       depthwise=st.booleans(), seed=seeds)
def test_qlinear_conv(per_channel, c_in, c_out, kernel, size, pads, stride, bias, depthwise, seed):
    rng = np.random.default_rng(seed)
    group = c_in if depthwise else 1
    c_out = c_in if depthwise else c_out
    x = codes(rng, (2, c_in, size, size), np.uint8)
    w = codes(rng, (c_out, c_in // group, kernel, kernel), np.int8)
    w_scale = rng.uniform(0.001, 0.01, c_out if per_channel else ()).astype(np.float32)
    inputs = [("x", x), ("xs", np.float32(0.02)), ("xz", codes(rng, (), np.uint8)), ("w", w), ("ws", w_scale),
              ("wz", np.zeros(c_out if per_channel else (), np.int8)), ("ys", np.float32(rng.uniform(0.01, 0.1))),
              ("yz", codes(rng, (), np.uint8))]
    if bias:
        inputs.append(("b", rng.integers(-2000, 2000, c_out).astype(np.int32)))
    attrs = {"pads": pads, "strides": [stride, stride], "group": group}
    assert_within_one_step(*run_both("QLinearConv", inputs, attrs, constants=("w", "ws", "wz", "b"),
                                     arithmetic=host_arithmetic()))


def qparams(rng, dtype):
    return [np.float32(rng.uniform(0.01, 0.05)), codes(rng, (), dtype)]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@SETTINGS
@given(shape=st.lists(st.integers(1, 4), min_size=4, max_size=4), seed=seeds)
def test_com_microsoft_elementwise_and_pooling(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x = codes(rng, shape, dtype)
    xq, yq, zq = qparams(rng, dtype), qparams(rng, dtype), qparams(rng, dtype)
    ms = dict(domain="com.microsoft")

    def q(prefix, values):
        return [(f"{prefix}s", values[0]), (f"{prefix}z", values[1])]
    assert_within_one_step(*run_both("QLinearSigmoid", [("x", x)] + q("x", xq) + q("y", yq), **ms))
    assert_within_one_step(*run_both("QLinearLeakyRelu", [("x", x)] + q("x", xq) + q("y", yq), {"alpha": 0.2}, **ms))
    y = codes(rng, shape, dtype)
    assert_within_one_step(*run_both("QLinearAdd", [("x", x)] + q("x", xq) + [("y", y)] + q("y", yq) + q("o", zq), **ms))
    assert_within_one_step(*run_both("QLinearMul", [("x", x)] + q("x", xq) + [("y", y)] + q("y", yq) + q("o", zq), **ms))
    assert_within_one_step(*run_both("QLinearConcat", q("o", zq) + [("x", x)] + q("x", xq) + [("y", y)] + q("y", yq),
                                     {"axis": 1}, **ms))
    assert_within_one_step(*run_both("QLinearGlobalAveragePool", [("x", x)] + q("x", xq) + q("y", yq), **ms))
    assert_within_one_step(*run_both("QLinearAveragePool", [("x", x)] + q("x", xq) + q("y", yq),
                                     {"kernel_shape": [2, 2], "pads": [1, 0, 0, 1]}, **ms))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=3), seed=seeds)
def test_qlinear_softmax_and_qgemm(shape, seed):
    rng = np.random.default_rng(seed)
    x = codes(rng, shape, np.uint8)
    ms = dict(domain="com.microsoft")
    assert_within_one_step(*run_both("QLinearSoftmax", [("x", x), ("xs", np.float32(0.05)), ("xz", np.uint8(128)),
                                                        ("ys", np.float32(1 / 256)), ("yz", np.uint8(0))],
                                     {"axis": -1, "opset": 13}, **ms))
    m, k, n = 3, shape[-1], 4
    a, b = codes(rng, (m, k), np.uint8), codes(rng, (n, k), np.int8)
    inputs = [("a", a), ("as", np.float32(0.02)), ("az", np.uint8(120)), ("b", b), ("bs", np.float32(0.01)),
              ("bz", np.int8(0)), ("c", rng.integers(-500, 500, n).astype(np.int32)), ("ys", np.float32(0.05)),
              ("yz", np.uint8(100))]
    assert_within_one_step(*run_both("QGemm", inputs, {"transB": 1}, constants=("b", "bs", "bz", "c"),
                                     arithmetic=host_arithmetic(), **ms))


@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("depthwise", [False, True])
def test_qlinear_conv_with_a_large_bias_on_small_weights_runs_as_onnxruntime(x_dtype, depthwise):
    """onnxruntime's quantizer stores a near-dead channel's bias, at a tiny weight scale, close to 2^31: the
    worst case over all weights (depth * 255^2 + |bias|) overflows int32, the bound on the actual weights
    (255 * sum |w - w_zp| + |bias|) does not, and onnxruntime runs it. Channels 0, 1 and 3 are such (+, -,
    and exactly at the bound), about 21 output steps from the zero point, so a wrapped accumulator would
    show; channel 2 is an ordinary one. Within one output step of onnxruntime, as test_qlinear_conv."""
    rng = np.random.default_rng(0)
    c_in = c_out = 4
    group = c_in if depthwise else 1
    x = codes(rng, (2, c_in, 6, 7), x_dtype)
    w = rng.integers(-2, 3, (c_out, c_in // group, 3, 3)).astype(np.int8)
    bias = np.array([2147268896, -2147268896, 1000, 0], np.int32)
    bias[3] = -(2**31 - 1 - 255 * np.abs(w[3].astype(np.int64)).sum())
    inputs = [("x", x), ("xs", np.float32(0.02)), ("xz", codes(rng, (), x_dtype)), ("w", w),
              ("ws", np.array([1e-9, 1e-9, 0.01, 1e-9], np.float32)), ("wz", np.zeros(c_out, np.int8)),
              ("ys", np.float32(0.002)), ("yz", np.array(0 if x_dtype == np.int8 else 128, x_dtype)), ("b", bias)]
    attrs = {"pads": [1, 1, 1, 1], "group": group}
    ours, theirs = run_both("QLinearConv", inputs, attrs, constants=("w", "ws", "wz", "b"))
    assert_within_one_step(ours, theirs)
    centred = theirs[0].astype(np.int64) - int(inputs[7][1])
    assert (np.abs(centred[:, [0, 1, 3]] - np.array([21, -21, -21])[:, None, None]) <= 1).all()


def test_qlinear_conv_whose_accumulator_can_overflow_is_refused_naming_the_channel():
    rng = np.random.default_rng(0)
    w = np.full((2, 1, 3, 3), 3, np.int8)
    bias = np.array([0, 2**31 - 1 - 255 * 27 + 1], np.int32)
    inputs = [("x", codes(rng, (1, 1, 4, 4), np.uint8)), ("xs", np.float32(0.02)), ("xz", np.uint8(0)), ("w", w),
              ("ws", np.float32(1e-4)), ("wz", np.zeros((), np.int8)), ("ys", np.float32(4000.0)),
              ("yz", np.uint8(0)), ("b", bias)]
    with pytest.raises(ValueError, match=r"output channel 1: 255 \* sum \|w - w_zp\| \+ \|bias\| = 2147483648"):
        run_both("QLinearConv", inputs, {"pads": [1, 1, 1, 1]}, constants=("w", "ws", "wz", "b"))


@pytest.mark.parametrize("b_dtype", [np.uint8, np.int8])
@SETTINGS
@given(m=st.integers(1, 5), k=st.integers(1, 9), n=st.integers(1, 5), batch=st.booleans(), per_column=st.booleans(),
       bias=st.booleans(), seed=seeds)
def test_dynamic_quantize_matmul(b_dtype, m, k, n, batch, per_column, bias, seed):
    """Both runtimes quantize A to the same codes (DynamicQuantizeLinear) and sum the same integers; what is left
    is float32 rounding of the rescaling and the bias."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-2, 3, (2, m, k) if batch else (m, k)).astype(np.float32)
    columns = n if per_column else ()
    b_zp = codes(rng, columns, b_dtype) if b_dtype == np.uint8 else np.zeros(columns, b_dtype)
    inputs = [("a", a), ("b", codes(rng, (k, n), b_dtype)),
              ("bs", rng.uniform(0.001, 0.01, columns).astype(np.float32)), ("bz", b_zp),
              ("bias", rng.standard_normal(n).astype(np.float32) if bias else None)]
    ours, theirs = run_both("DynamicQuantizeMatMul", inputs, constants=("b", "bs", "bz", "bias"),
                            domain="com.microsoft", arithmetic=host_arithmetic())
    assert ours[0].shape == theirs[0].shape and ours[0].dtype == theirs[0].dtype
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)


def test_arithmetic_is_kept_in_the_node_and_through_save(tmp_path):
    """a = 255, b = 127 in pairs: exactly 2 * 255 * 127 = 64770, a saturated pair 32767 (hand-computed)."""
    import minicompress as mc
    model, feeds, _ = one_node_model("MatMulInteger", [("a", np.full((1, 2), 255, np.uint8)),
                                                       ("b", np.full((2, 1), 127, np.int8))], constants=("b",))
    exact = mco.load(model.SerializeToString())
    saturating = mco.load(model.SerializeToString(), arithmetic="u8s8-saturating")
    assert exact(feeds["a"]).numpy()[0, 0] == 64770 and saturating(feeds["a"]).numpy()[0, 0] == 32767
    mc.save(saturating, tmp_path / "m.mc")
    assert mc.load(tmp_path / "m.mc")(feeds["a"]).numpy()[0, 0] == 32767


def test_arithmetic_must_be_known():
    model, _, _ = one_node_model("MatMulInteger", [("a", np.zeros((1, 2), np.uint8)), ("b", np.zeros((2, 1), np.int8))])
    with pytest.raises(ValueError, match=r"arithmetic must be one of 'exact', 'u8s8-saturating', got 'vnni'"):
        mco.load(model.SerializeToString(), arithmetic="vnni")

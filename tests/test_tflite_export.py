"""tflite.export against LiteRT (the oracle): float models within 1e-4 of the largest output of minicompress's
own run, on LiteRT's default (optimized) kernels and its reference ones (BUILTIN_REF); int8 models made by
quant's static flow with get_default_qconfig("tflite") within one output step of minicompress's int8 model,
and the exported file loaded back (`tflite.load`) bit for bit with the reference kernels.

Why these bounds: a float export computes the same sums as minicompress in another order (NHWC, BN folded
into the weights), so they agree to float32 rounding, a few ulps of the largest activation; 1e-4 of the
largest output leaves room for the softmax and sigmoid heads. An int8 model differs from TFLite's by its
rounding alone: minicompress requantizes an int32 sum with a float32 multiplier and rounds ties to even (in
the pools too), TFLite's reference kernels with a 31-bit fixed-point multiplier, rounding twice, and ties
away from zero. That moves a code by one step where the exact value lies near a half, and such a step can
carry into the next layer's sum: on the digits classifier's 3,590 test logits 956 are one step off the
reference kernels and 3 two steps (none off LiteRT's default kernels, which requantize in float32 too). So:
one step on 99.5% of the elements, two anywhere. The round trip is exact: tflite.load runs TFLite's own
integer arithmetic.

On a CPU without VNNI the reference-kernel bounds are the same: those kernels are portable C++, and
minicompress's int8 model sums exactly on every `kernels.qgemm` route. The default (XNNPACK) kernels pick
their instructions per CPU; the bound for them assumes exact int32 sums there as well (what XNNPACK's QS8
kernels compute), and has been seen to hold on AVX-512 VNNI (Zen 4) only.

Every int8 file is loaded back, the digits classifier's included (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
ADD, PAD, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, TRANSPOSE, RESHAPE, QUANTIZE, DEQUANTIZE).
"""
import os

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from hypothesis import given, settings
from hypothesis import strategies as st
from quant_digits import trained_digits_classifier

import minicompress as mc
from minicompress import nn, quant, tflite
from minicompress.graph import GraphModule, registry
from minicompress.tflite import TFLiteExportError

SETTINGS = settings(max_examples=12, deadline=None)


def run_litert(data, inputs, reference=True):
    """LiteRT's outputs and output details for `inputs`, on its reference or default kernels."""
    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interpreter = Interpreter(model_content=data, experimental_op_resolver_type=resolver, num_threads=1)
    interpreter.allocate_tensors()
    for detail, x in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()], \
        interpreter.get_output_details()


def ours(model, *inputs):
    with mc.no_grad():
        y = model(*[mc.tensor(x) for x in inputs])
    return y.numpy()


def check_float(model, x, tmp_path):
    expected = ours(model, x)
    path = tmp_path / "model.tflite"
    data = tflite.export(model, x, path)
    assert path.read_bytes() == data
    for reference in (True, False):
        (got,), _ = run_litert(data, [x], reference)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(np.abs(expected).max(), 1e-6))
    return data


def images(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _randomize_batch_norms(model, seed):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = m.num_features
            m.running_mean.data = rng.normal(0, 0.3, c).astype(np.float32)
            m.running_var.data = rng.uniform(0.5, 2, c).astype(np.float32)
            m.weight.data = rng.uniform(0.5, 1.5, c).astype(np.float32)
            m.bias.data = rng.normal(0, 0.3, c).astype(np.float32)
    return model.eval()


ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "leaky": lambda: nn.LeakyReLU(0.2), "none": None}


@given(data=st.data())
@SETTINGS
def test_float_models_match_litert(data, tmp_path_factory):
    cin, size = data.draw(st.integers(1, 4)), data.draw(st.integers(4, 9))
    model = data.draw(_sequential(cin, size))
    x = images((data.draw(st.integers(1, 2)), cin, size, size), data.draw(st.integers(0, 2 ** 16)))
    check_float(model, x, tmp_path_factory.mktemp("float"))


@st.composite
def _sequential(draw, cin, size):
    layers, c = [], cin
    for _ in range(draw(st.integers(1, 3))):
        depthwise = draw(st.booleans())
        k = draw(st.sampled_from([1, 3] if size >= 3 else [1]))
        cout = c * draw(st.integers(1, 2)) if depthwise else draw(st.integers(1, 6))
        stride, padding = draw(st.sampled_from([1, 2])), draw(st.integers(0, k // 2))
        layers.append(nn.Conv2d(c, cout, k, stride, padding, groups=c if depthwise else 1, bias=draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(cout))
        act = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]
        if act is not None:
            layers.append(act())
        c, size = cout, (size + 2 * padding - k) // stride + 1
    pool = draw(st.sampled_from(["max", "avg", "avg_pad", "global", "none"]))
    if pool == "max" and size >= 2:
        layers.append(nn.MaxPool2d(2))
        size //= 2
    elif pool == "avg" and size >= 2:
        layers.append(nn.AvgPool2d(2))
        size //= 2
    elif pool == "avg_pad":
        layers.append(nn.AvgPool2d(3, 1, padding=1))          # count_include_pad: a PAD, then VALID
    elif pool == "global":
        layers.append(nn.AdaptiveAvgPool2d(1))
        size = 1
    layers += [nn.Flatten(), nn.Linear(c * size * size, draw(st.integers(1, 5)))]
    if draw(st.booleans()):
        layers.append(nn.Softmax(dim=1))
    mc.manual_seed(draw(st.integers(0, 2 ** 16)))
    return _randomize_batch_norms(nn.Sequential(*layers), draw(st.integers(0, 2 ** 16)))


def test_mobilenet_block_with_residual_add(tmp_path):
    mc.manual_seed(1)
    model = _randomize_batch_norms(nn.Sequential(nn.MobileNetBlock(8, 8, 1), nn.MobileNetBlock(8, 16, 2)), 1)
    data = check_float(model, images((2, 8, 7, 7), 1), tmp_path)
    assert tflite.load(data).inputs[0]["shape"] == [2, 8, 7, 7]       # the model's own (NCHW) shape


def _node(op_type, inputs, outputs, **attrs):
    version = registry.resolve("", op_type, 17).since_version
    return {"name": outputs[0], "kind": "op", "op_type": op_type, "domain": "", "version": version,
            "attrs": attrs, "inputs": inputs, "outputs": outputs}


def test_operator_nodes_of_a_graph_module(tmp_path):
    """The elementwise and shape operators of an imported graph: Clip (RELU6, RELU_N1_TO_1 and other
    bounds), HardSwish, Sigmoid, Tanh, Mul / Add / Sub by constants and by values, Concat over channels,
    Softmax over channels, GlobalAveragePool, Flatten, MaxPool with SAME-sized pads."""
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    consts = {"c_scale": rng.standard_normal((4, 1, 1)).astype(np.float32), "lo": np.float32(-2),
              "hi": np.float32(3), "six": np.float32(6), "zero": np.float32(0), "m1": np.float32(-1),
              "p1": np.float32(1), "shift": rng.standard_normal(8).astype(np.float32)}
    nodes = [
        {"name": "conv", "kind": "module", "target": "conv", "op_type": "Conv", "inputs": ["x"], "outputs": ["h"]},
        _node("Mul", ["h", "c_scale"], ["h1"]), _node("Clip", ["h1", "lo", "hi"], ["h2"]),
        _node("HardSwish", ["h2"], ["h3"]), _node("Sigmoid", ["h1"], ["s"]), _node("Mul", ["h3", "s"], ["h4"]),
        _node("Clip", ["h4", "zero", "six"], ["a"]), _node("Tanh", ["h1"], ["t"]),
        _node("Clip", ["t", "m1", "p1"], ["b"]), _node("Concat", ["a", "b"], ["cat"], axis=1),
        _node("MaxPool", ["cat"], ["mp"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        _node("Softmax", ["mp"], ["sm"], axis=1), _node("GlobalAveragePool", ["sm"], ["gap"]),
        _node("Flatten", ["gap"], ["flat"], axis=1), _node("Sub", ["flat", "shift"], ["y"])]
    graph = GraphModule([{"name": "x", "dtype": "float32", "shape": [1, 3, 6, 5]}], ["y", "mp"], nodes,
                        {"conv": conv}, consts).eval()
    x = images((1, 3, 6, 5), 2)
    expected = [t.numpy() for t in graph(mc.tensor(x))]
    data = tflite.export(graph, x, tmp_path / "ops.tflite")
    for reference in (True, False):
        got, _ = run_litert(data, [x], reference)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-4 * np.abs(e).max())


def test_digits_classifier_float_and_int8(tmp_path):
    model, train_loader, test_loader, _ = trained_digits_classifier()
    x = np.concatenate([batch[0].numpy() for batch in test_loader])          # the 359 test images
    check_float(model, x, tmp_path)
    batches = [b[0] for _, b in zip(range(4), train_loader)]
    int8 = quant.quantize_static(model, batches, quant.get_default_qconfig("tflite"))
    check_int8(int8, x, tmp_path)


def assert_steps(steps, what):
    """At most one output step on 99.5% of the elements, two anywhere (see the module docstring)."""
    assert steps.size and np.mean(steps <= 1) >= 0.995 and steps.max() <= 2, \
        f"{what}: {np.mean(steps <= 1):.4f} within one step, max {steps.max()}"


def check_int8(model, x, tmp_path, round_trip=True):
    """The int8 file against minicompress's int8 model (in output steps) on LiteRT's reference and default
    kernels, with int8 and with float32 inputs and outputs; loaded back, bit for bit with the reference."""
    with mc.no_grad():
        codes = (model.quant(mc.tensor(x)).int_repr().astype(np.int16) - 128).astype(np.int8)
    expected = ours(model, x)
    data = tflite.export(model, x, tmp_path / "int8.tflite")
    (got,), (detail,) = run_litert(data, [codes])
    assert got.dtype == np.int8 and got.shape == expected.shape
    scale, zero_point = detail["quantization"]

    def steps(y):
        return np.rint(np.abs((np.asarray(y, np.float64) - zero_point) * scale - expected) / scale)
    assert_steps(steps(got), "reference kernels")
    (got_default,), _ = run_litert(data, [codes], reference=False)
    assert_steps(steps(got_default), "default kernels")
    data_float = tflite.export(model, x, io_dtype="float32")
    (got_float,), _ = run_litert(data_float, [x])
    assert_steps(np.rint(np.abs(got_float - expected) / scale), "float32 inputs and outputs")
    if round_trip:
        for file, inputs, litert_out in ((data, [codes], got), (data_float, [x], got_float)):
            with mc.no_grad():
                loaded = tflite.load(file)(*inputs).numpy()
            np.testing.assert_array_equal(loaded, litert_out)
    return steps(got), steps(got_default)


class _Int8Net(nn.Module):
    """QuantStub -> conv [-> ReLU] -> depthwise (residual add) -> flatten -> linear -> DeQuantStub."""

    def __init__(self, cin, c, size, residual, relu, stride):
        super().__init__()
        self.image_size = size
        self.quant = quant.QuantStub()
        self.conv = nn.Conv2d(cin, c, 3, 1, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.depthwise = nn.Conv2d(c, c, 1 if stride == 2 else 3, stride, 0 if stride == 2 else 1, groups=c)
        self.residual = residual and stride == 1
        if self.residual:
            self.add = nn.Add()
        self.flatten = nn.Flatten()
        out = (size - 1) // stride + 1
        self.fc = nn.Linear(c * out * out, 5)
        self.dequant = quant.DeQuantStub()

    def forward(self, x):
        h = self.relu(self.conv(self.quant(x)))
        d = self.depthwise(h)
        if self.residual:
            d = self.add(d, h)
        return self.dequant(self.fc(self.flatten(d)))


@given(cin=st.integers(1, 3), c=st.integers(1, 6), size=st.integers(3, 7), residual=st.booleans(),
       relu=st.booleans(), stride=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
@SETTINGS
def test_int8_models_match_litert_reference_kernels(cin, c, size, residual, relu, stride, seed, tmp_path_factory):
    mc.manual_seed(seed)
    model = _Int8Net(cin, c, size, residual, relu, stride).eval()
    calibration = [images((4, cin, size, size), seed + k) for k in range(2)]
    int8 = quant.quantize_static(model, calibration, quant.get_default_qconfig("tflite"))
    check_int8(int8, images((2, cin, size, size), seed + 7), tmp_path_factory.mktemp("int8"))


class _Int8Pools(nn.Module):
    """conv (stride 2, padding 1: a PAD) -> ReLU6 (fused) -> max pool (SAME) -> 1x1 conv -> average pool, the
    model's output a 4-D map (the TRANSPOSE back to NCHW on int8 codes)."""

    def __init__(self):
        super().__init__()
        self.image_size = 8
        self.quant = quant.QuantStub()
        self.conv1, self.relu6 = nn.Conv2d(2, 4, 3, 2, 1), nn.ReLU6()
        self.max_pool = nn.MaxPool2d(3, 1, 1)
        self.conv2, self.avg_pool = nn.Conv2d(4, 6, 1), nn.AvgPool2d(2)
        self.dequant = quant.DeQuantStub()

    def forward(self, x):
        h = self.max_pool(self.relu6(self.conv1(self.quant(x))))
        return self.dequant(self.avg_pool(self.conv2(h)))


@given(seed=st.integers(0, 2 ** 16))
@settings(max_examples=5, deadline=None)
def test_int8_pad_pools_and_relu6_match_litert(seed, tmp_path_factory):
    """PAD, a fused RELU6, MAX_POOL_2D and AVERAGE_POOL_2D in int8 against LiteRT's reference kernels, and
    loaded back by tflite.load, bit for bit with them. The average pool is the output here:
    minicompress's quantized AvgPool2d rounds a tie (a sum of 4 codes ending in .5 after the division) to
    even, TFLite's away from zero, so the pool itself is one step off at ties, and a layer after it could
    carry that step further; the digits classifier's MEAN -> FULLY_CONNECTED is checked above."""
    mc.manual_seed(seed)
    calibration = [images((4, 2, 8, 8), seed + k) for k in range(2)]
    int8 = quant.quantize_static(_Int8Pools().eval(), calibration, quant.get_default_qconfig("tflite"))
    check_int8(int8, images((2, 2, 8, 8), seed + 9), tmp_path_factory.mktemp("pools"))


def test_tflite_qconfig_follows_the_spec():
    qconfig = quant.get_default_qconfig("tflite")
    weight, act = qconfig.weight(), qconfig.activation()
    assert (weight.quant_min, weight.quant_max, weight.qscheme) == (-127, 127, quant.per_channel_symmetric)
    assert (act.quant_min, act.quant_max, act.qscheme) == (0, 255, quant.per_tensor_affine)


def test_unsupported_layer_is_refused_by_name_and_no_file_is_left(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    path = tmp_path / "model.tflite"
    with pytest.raises(TFLiteExportError, match=r"layer '1' \(GELU\)"):
        tflite.export(model, images((1, 4), 0), path)
    assert os.listdir(tmp_path) == []


def test_weights_outside_tflites_int8_spec_are_refused(tmp_path):
    """x86's qconfig quantizes weights to [-128, 127]: a filter whose largest magnitude is negative gets code
    -128, outside TFLite's [-127, 127]."""
    mc.manual_seed(0)
    model = _Int8Net(1, 2, 4, False, False, 1).eval()
    model.conv.weight.data[:] = np.abs(model.conv.weight.data)
    model.conv.weight.data[:, 0, 0, 0] = -1.0
    int8 = quant.quantize_static(model, [images((2, 1, 4, 4), 0)], quant.get_default_qconfig("x86"))
    with pytest.raises(TFLiteExportError, match="get_default_qconfig"):
        tflite.export(int8, images((1, 1, 4, 4), 0), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        tflite.export(object(), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="io_dtype"):
        tflite.export(nn.Linear(2, 2), np.zeros((1, 2), np.float32), io_dtype="uint8")

"""int8 models out through ONNX in QDQ form, and back in (`load`, `fold_qdq`): onnxruntime (the oracle), with
its graph optimizer on (QDQ groups fused into QLinearConv / QGemm / QLinearAdd ...) and off (every
DequantizeLinear -> float op -> QuantizeLinear run as written), must give the minicompress int8 model's output
within one output quantization step on at least 99.9% of elements and two anywhere. One step, not zero:
minicompress quantizes activations as torch, round(x * (1 / scale)), onnxruntime as round(x / scale), and the
two differ at ties; the unfused float path also rounds the float32 sums in another order than the integer
kernels. Folded back onto integer layers (`fold_qdq`), the file is the int8 model again, bit for bit. Dynamic
Linear is checked against onnxruntime's DynamicQuantizeLinear + MatMulInteger.

Weights here are 7-bit codes (|w| <= 64; onnxruntime's reduce_range for its own quantizer), activations full
uint8: on CPUs with AVX2 but no VNNI onnxruntime's uint8 x int8 kernels add byte pairs into a saturating
int16, exact only while |x0 w0 + x1 w1| <= 2 * 255 * 64 = 32640 < 2**15, so these comparisons hold on every
CPU. Full-range int8 weights on such CPUs are test_onnx_quantized_ops' (arithmetic="u8s8-saturating")."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st

import minicompress as mc
import minicompress.onnx as mco
from onnx_harness import host_arithmetic
from minicompress import nn, quant
from minicompress.graph import GraphModule
from minicompress.quant import dtypes as qd
from minicompress.quant import modules as nnq
from minicompress.qtensor import quantize_per_channel, quantize_per_tensor

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def _session(data, level, optimized_path=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_ort(data, x, level):
    session = _session(data, LEVELS[level])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x)})[0]


def fused_ops(data, tmp_path):
    """{(domain, op_type): count} of the graph onnxruntime runs after its extended (QDQ) optimizations."""
    path = tmp_path / "optimized.onnx"
    _session(data, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, path)
    counts = {}
    for node in onnx.load(str(path)).graph.node:
        counts[(node.domain, node.op_type)] = counts.get((node.domain, node.op_type), 0) + 1
    return counts


def steps(a, b, scale):
    return np.rint(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / scale)


def assert_within_steps(diff, what):
    assert diff.size
    within = float((diff <= 1).mean())
    assert within >= 0.999 and diff.max() <= 2, f"{what}: {within:.5f} within one step, max {diff.max()} steps"


def assert_all_folded(graph):
    left = [n["op_type"] for n in graph.nodes if n["kind"] == "op" and n["op_type"] != "Identity"]
    assert not left, f"operators left unfolded: {left}"


def check_against_ort(model, x, out_scale, argmax=False):
    """Export `model` (ending in DeQuantize, output step `out_scale`), run it in onnxruntime with and
    without graph optimizations and loaded back into minicompress; returns the bytes."""
    x = mc.tensor(np.asarray(x, np.float32))
    with mc.no_grad():
        ours = model(x).numpy()
    data = mco.export(model, x).SerializeToString()
    for level in LEVELS:
        theirs = run_ort(data, x.numpy(), level)
        assert theirs.shape == ours.shape
        assert_within_steps(steps(ours, theirs, out_scale), f"onnxruntime ({level})")
        if argmax:
            assert (theirs.argmax(1) == ours.argmax(1)).all()
    loaded = mco.load(data)
    folded_model = mco.fold_qdq(loaded)
    assert_all_folded(folded_model)
    with mc.no_grad():
        as_written = loaded(x).numpy()
        folded = folded_model(x).numpy()
    assert_within_steps(steps(ours, as_written, out_scale), "minicompress.onnx.load")
    # folded back onto integer layers, the file is the int8 model again: the same codes, bit for bit
    np.testing.assert_array_equal(folded, ours)
    return data


# ----- directly built quantized layers, qparams drawn by hypothesis ---------------------------------

def _input(draw, shape):
    scale = draw(st.floats(0.005, 0.1))
    zero_point = draw(st.integers(0, 255))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    low, high = -zero_point * scale, (255 - zero_point) * scale
    # 5% past either end of the range: saturation must agree too
    x = rng.uniform(low - 0.05 * (high - low), high + 0.05 * (high - low), shape).astype(np.float32)
    return x, nnq.Quantize(scale, zero_point), rng


def _weight(rng, shape, per_channel):
    """qint8 weights with 7-bit codes, |code| <= 64 (see the module docstring)."""
    w = rng.normal(0, 0.3, shape).astype(np.float32)
    if per_channel:
        scales = np.abs(w.reshape(shape[0], -1)).max(1) / 64 + 1e-6
        return quantize_per_channel(w, scales.astype(np.float64), np.zeros(shape[0], np.int64), 0, qd.qint8)
    return quantize_per_tensor(w, float(np.abs(w).max() / 64) + 1e-6, 0, qd.qint8)


def _output_qparams(draw, y, relu):
    """(scale, zero_point) covering the float result `y` (its range times a drawn factor)."""
    low, high = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    if relu:
        low = 0.0
    scale = max(high - low, 1e-3) / 255 * draw(st.sampled_from([0.7, 1.0, 1.5]))
    return scale, int(np.clip(round(-low / scale), 0, 255))


@st.composite
def conv_cases(draw):
    groups_kind = draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    c_in = draw(st.integers(1, 4)) * (2 if groups_kind == "grouped" else 1)
    groups = {"dense": 1, "depthwise": c_in, "grouped": 2}[groups_kind]
    c_out = c_in * draw(st.integers(1, 2)) if groups_kind != "dense" else draw(st.integers(1, 5))
    k = draw(st.sampled_from([1, 3]))
    stride, padding, dilation = draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
    size = draw(st.integers(dilation * (k - 1) + 1, 7))
    x, quantize, rng = _input(draw, (draw(st.integers(1, 2)), c_in, size, size))
    per_channel, relu, bias = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    weight = _weight(rng, (c_out, c_in // groups, k, k), per_channel)
    b = rng.normal(0, 0.5, c_out).astype(np.float32) if bias else None
    xq = quantize(mc.tensor(x)).dequantize()
    y = mc.functional.conv2d(xq, weight.dequantize(), None if b is None else mc.tensor(b), stride, padding, dilation,
                             groups).numpy()
    scale, zero_point = _output_qparams(draw, np.maximum(y, 0) if relu else y, relu)
    conv = (nnq.ConvReLU2d if relu else nnq.Conv2d)(weight, b, scale, zero_point, stride, padding, dilation, groups)
    return nn.Sequential(quantize, conv, nnq.DeQuantize()), x, scale


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_conv2d_matches_onnxruntime(case):
    model, x, out_scale = case
    check_against_ort(model, x, out_scale)


@st.composite
def linear_cases(draw):
    k, n = draw(st.integers(1, 9)), draw(st.integers(1, 6))
    shape = (draw(st.integers(1, 4)), k) if draw(st.booleans()) else (2, draw(st.integers(1, 3)), k)
    x, quantize, rng = _input(draw, shape)
    per_channel, relu, bias = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    weight = _weight(rng, (n, k), per_channel)
    b = rng.normal(0, 0.5, n).astype(np.float32) if bias else None
    y = quantize(mc.tensor(x)).dequantize().numpy() @ weight.dequantize().numpy().T + (0 if b is None else b)
    scale, zero_point = _output_qparams(draw, np.maximum(y, 0) if relu else y, relu)
    linear = (nnq.LinearReLU if relu else nnq.Linear)(weight, b, scale, zero_point)
    return nn.Sequential(quantize, linear, nnq.DeQuantize()), x, scale


@settings(max_examples=40, deadline=None)
@given(linear_cases())
def test_linear_matches_onnxruntime(case):
    model, x, out_scale = case
    check_against_ort(model, x, out_scale)


# ----- small float models through prepare / calibrate / convert -------------------------------------

def converted(model, x, qconfig=None):
    model.eval()
    model.qconfig = qconfig or quant.get_default_qconfig("x86")
    prepared = quant.prepare(model)
    with mc.no_grad():
        prepared(mc.tensor(x))
    return quant.convert(prepared)


class ConvThen(nn.Module):
    """quant -> conv -> relu -> `layer` -> [conv ->] add(residual) -> dequant."""

    def __init__(self, layer, residual=False, channels=3):
        super().__init__()
        self.quant, self.dequant = quant.QuantStub(), quant.DeQuantStub()
        self.conv = nn.Conv2d(2, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.layer = layer
        self.residual = residual
        if residual:
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
            self.add = nn.Add()

    def forward(self, x):
        x = self.layer(self.relu(self.conv(self.quant(x))))
        if self.residual:
            x = self.add(self.conv2(x), x)
        return self.dequant(x)


def _last_scale(model):
    return [m.scale for m in model.modules() if isinstance(m, (nnq.Conv2d, nnq.Linear, nnq.QuantizedAdd))][-1]


@pytest.mark.parametrize("layer", [nn.ReLU6, lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2),
                                   lambda: nn.AvgPool2d(3, 2, 1), lambda: nn.AdaptiveAvgPool2d(1), nn.Identity],
                         ids=["relu6", "maxpool", "avgpool", "avgpool_padded", "global_avgpool", "residual"])
@pytest.mark.parametrize("seed", [0, 1])
def test_activations_pools_and_residual_add_match_onnxruntime(layer, seed):
    rng = np.random.default_rng(seed)
    mc.manual_seed(seed)
    residual = layer is nn.Identity
    float_model = ConvThen(layer(), residual=residual)
    x = rng.normal(0, 1, (4, 2, 8, 8)).astype(np.float32) * 3
    model = converted(float_model, x)
    check_against_ort(model, rng.normal(0, 1, (3, 2, 8, 8)).astype(np.float32) * 3, _last_scale(model))


def test_qdq_layout_is_onnxruntime_s(tmp_path):
    """The initializers and nodes quantize_static(QDQ) writes: int8 weights with per-channel axis, int32
    bias in scale x_scale * w_scale with zero point 0, Q -> DQ after every layer."""
    rng = np.random.default_rng(0)
    model = converted(ConvThen(nn.Identity(), residual=True), rng.normal(0, 1, (4, 2, 8, 8)).astype(np.float32))
    proto = mco.export(model, mc.tensor(rng.normal(0, 1, (1, 2, 8, 8)).astype(np.float32)))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    w = model.conv.weight()
    assert inits["conv.weight_quantized"].dtype == np.int8
    np.testing.assert_array_equal(inits["conv.weight_quantized"], w.int_repr())
    np.testing.assert_array_equal(inits["conv.weight_scale"], w.q_per_channel_scales().astype(np.float32))
    assert inits["conv.bias_quantized"].dtype == np.int32 and not inits["conv.bias_quantized_zero_point"].any()
    x_scale = model.quant.scale
    np.testing.assert_array_equal(inits["conv.bias_quantized_scale"],
                                  np.float32(x_scale) * w.q_per_channel_scales().astype(np.float32))
    # torch's own rounding of the bias (round half to even in float64) as the oracle of the int32 codes
    expected_bias = np.rint(model.conv.bias.astype(np.float64) / (x_scale * w.q_per_channel_scales()))
    np.testing.assert_array_equal(inits["conv.bias_quantized"], expected_bias)
    assert inits["quant.zero_point"].dtype == np.uint8 and inits["quant.scale"].shape == ()
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:2] == ["QuantizeLinear", "DequantizeLinear"]
    dq_weight = next(n for n in proto.graph.node if n.input[0] == "conv.weight_quantized")
    assert dq_weight.op_type == "DequantizeLinear" and onnx.helper.get_attribute_value(dq_weight.attribute[0]) == 0
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    q_after_relu = next(n for n in proto.graph.node if relu.output[0] in n.input)
    assert q_after_relu.op_type == "QuantizeLinear"
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") - 4   # + weights and biases of 2 convs
    fused = fused_ops(proto.SerializeToString(), tmp_path)
    assert fused.get(("com.microsoft", "QLinearAdd")) == 1
    assert fused.get(("", "QLinearConv"), 0) + fused.get(("com.microsoft", "QLinearConv"), 0) == 2
    assert ("", "Conv") not in fused and ("", "Add") not in fused


# ----- the project's classifiers -------------------------------------------------------------------

def _quantized_classifier(model, batches):
    fused = quant.fuse_mobile_classifier(model.eval())
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    quant.static.calibrate(prepared, batches)
    return quant.convert(prepared)


def test_quantized_mobile_classifier_matches_onnxruntime_and_fuses(tmp_path):
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    model = nn.create_mobile_classifier(10, 3, width_mult=0.5)
    with mc.no_grad():        # BatchNorm statistics that are not the identity, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.data[:] = rng.normal(0, 0.1, m.running_mean.shape)
                m.running_var.data[:] = rng.uniform(0.5, 2, m.running_var.shape)
    batches = [mc.tensor(rng.uniform(0, 1, (8, 3, 12, 12)).astype(np.float32)) for _ in range(2)]
    q = _quantized_classifier(model, batches)
    data = check_against_ort(q, rng.uniform(0, 1, (16, 3, 12, 12)), q.classifier.scale, argmax=False)
    fused = fused_ops(data, tmp_path)
    convs = sum(isinstance(m, nnq.Conv2d) for m in q.modules())
    assert fused.get(("", "QLinearConv"), 0) + fused.get(("com.microsoft", "QLinearConv"), 0) == convs
    assert fused.get(("com.microsoft", "QGemm")) == 1
    assert fused.get(("com.microsoft", "QLinearAdd")) == sum(isinstance(m, nnq.QuantizedAdd) for m in q.modules())
    assert fused.get(("com.microsoft", "QLinearGlobalAveragePool")) == 1
    assert not {("", "Conv"), ("", "Gemm"), ("", "Add")} & set(fused)


def test_digits_int8_student_matches_onnxruntime():
    from quant_digits import trained_digits_classifier
    model, train_loader, test_loader, _ = trained_digits_classifier()
    q = _quantized_classifier(model, [x for i, (x, _) in enumerate(train_loader) if i < 4])
    x = np.concatenate([x.numpy() for x, _ in test_loader])
    with mc.no_grad():
        ours = q(mc.tensor(x)).numpy()
    data = mco.export(q, mc.tensor(x[:1])).SerializeToString()
    for level in LEVELS:
        theirs = run_ort(data, x, level)
        assert_within_steps(steps(ours, theirs, q.classifier.scale), f"onnxruntime ({level})")
        assert (theirs.argmax(1) == ours.argmax(1)).all()
    folded = mco.fold_qdq(mco.load(data))
    assert_all_folded(folded)
    with mc.no_grad():
        np.testing.assert_array_equal(folded(mc.tensor(x)).numpy(), ours)


def test_onnxruntime_s_own_qdq_model_folds_and_matches_its_fused_kernels(tmp_path):
    """A file from onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8
    activations) folded onto minicompress's integer layers against onnxruntime's QLinear* kernels; with
    reduce_range (7-bit weights), so that those kernels are exact on every CPU."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    rng = np.random.default_rng(0)
    mc.manual_seed(0)
    float_model = ConvThen(nn.MaxPool2d(2), residual=True).eval()
    float_model.dequant = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    calibration = rng.normal(0, 1, (16, 2, 8, 8)).astype(np.float32)
    mco.export(float_model, mc.tensor(calibration[:1]), tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calibration[i:i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    data = (tmp_path / "int8.onnx").read_bytes()
    folded = mco.fold_qdq(mco.load(data))
    # onnxruntime gives the global pool qparams of its own; minicompress's pool keeps its input's, so that one
    # unit stays float, between a DeQuantize and a Quantize
    left = [n["op_type"] for n in folded.nodes if n["kind"] == "op"]
    assert left == ["GlobalAveragePool"]
    assert sum(isinstance(m, nnq.Conv2d) for m in folded.modules()) == 2
    assert sum(isinstance(m, (nnq.QuantizedAdd, nnq.MaxPool2d, nnq.Linear)) for m in folded.modules()) == 3
    x = rng.normal(0, 1, (32, 2, 8, 8)).astype(np.float32)
    with mc.no_grad():
        ours = folded(mc.tensor(x))
    out_scale = [m.scale for m in folded.modules() if isinstance(m, nnq.Linear)][-1]
    assert_within_steps(steps(ours.numpy(), run_ort(data, x, "all"), out_scale), "onnxruntime (fused)")


# ----- GraphModule nodes holding quantized layers ----------------------------------------------------

def test_quantized_layers_in_a_graph_module_export_the_same_way():
    rng = np.random.default_rng(0)
    traced = converted(ConvThen(nn.Identity(), residual=True), rng.normal(0, 1, (4, 2, 8, 8)).astype(np.float32))
    modules = {name: getattr(traced, name) for name in ("quant", "conv", "relu", "layer", "conv2", "add", "dequant")}
    chain = [("quant", ["x"], "q"), ("conv", ["q"], "c"), ("relu", ["c"], "r"), ("layer", ["r"], "l"),
             ("conv2", ["l"], "c2"), ("add", ["c2", "l"], "a"), ("dequant", ["a"], "y")]
    nodes = [{"name": n, "kind": "module", "target": n, "inputs": i, "outputs": [o],
              "op_type": type(modules[n]).__name__} for n, i, o in chain]
    graph = GraphModule([{"name": "x", "dtype": "float32", "shape": ["N", 2, 8, 8]}], ["y"], nodes, modules)
    x = rng.normal(0, 1, (3, 2, 8, 8)).astype(np.float32)
    with mc.no_grad():
        np.testing.assert_array_equal(graph(mc.tensor(x)).numpy(), traced(mc.tensor(x)).numpy())
    check_against_ort(graph, x, traced.add.scale)
    ops = lambda m: [(n.op_type, [a.name for a in n.attribute]) for n in mco.export(m, mc.tensor(x)).graph.node]
    assert ops(graph) == ops(traced)


# ----- dynamic Linear ------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 12), n=st.integers(1, 6), batch=st.integers(1, 5), seed=st.integers(0, 2**16),
       full_range=st.booleans(), per_channel=st.booleans(), bias=st.booleans())
def test_dynamic_linear_matches_onnxruntime(k, n, batch, seed, full_range, per_channel, bias):
    """DynamicQuantizedLinear with 7-bit weight codes (the module docstring says why)."""
    from minicompress.quant.dynamic import DynamicQuantizedLinear
    rng = np.random.default_rng(seed)
    weight = _weight(rng, (n, k), per_channel)
    b = mc.tensor(rng.normal(0, 0.5, n).astype(np.float32)) if bias else None
    model = nn.Sequential(DynamicQuantizedLinear(weight, b, reduce_range=not full_range)).eval()
    x = rng.normal(0, 1, (batch, k)).astype(np.float32) * rng.uniform(0.1, 10)
    with mc.no_grad():
        ours = model(mc.tensor(x)).numpy()
    data = mco.export(model, mc.tensor(x)).SerializeToString()
    wq = model[0].weight().dequantize().numpy()
    # Both ends quantize x with their own (scale, zero point): each is within half its step of x, so the
    # results differ by at most sum_k |W_k| (s_ours + s_ort) / 2, plus float32 rounding of the sums.
    hi, lo = max(x.max(), 0), min(x.min(), 0)
    s_ort = (hi - lo) / 255
    s_ours = (hi - lo) / (255 if full_range else 127)
    bound = np.abs(wq).sum(1) * (s_ours + s_ort) / 2 + 1e-5 * (1 + np.abs(ours))
    for level in LEVELS:
        theirs = run_ort(data, x, level)
        assert (np.abs(theirs - ours) <= bound).all()
        if full_range:
            # the same (scale, zero point) unless they round the zero point differently: the same codes
            np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5 * np.abs(wq).sum() * s_ours + 1e-6)
    with mc.no_grad():
        loaded = mco.load(data, arithmetic=host_arithmetic())(mc.tensor(x)).numpy()
    np.testing.assert_allclose(loaded, run_ort(data, x, "disabled"), rtol=1e-5, atol=1e-6)


# ----- refused layers -------------------------------------------------------------------------------

def test_unsupported_quantized_layers_raise_export_error_naming_the_layer():
    lstm = quant.quantize_dynamic(nn.Sequential(nn.LSTM(4, 3)), {nn.LSTM})
    with pytest.raises(mco.ExportError, match=r"'0'.*DynamicQuantizedLSTM"):
        mco.export(lstm, mc.tensor(np.zeros((2, 1, 4), np.float32)))
    rng = np.random.default_rng(0)
    pool = nn.Sequential(nn.Conv2d(2, 2, 1), nn.AdaptiveAvgPool2d(2))
    model = converted(nn.Sequential(quant.QuantStub(), pool, quant.DeQuantStub()),
                      rng.normal(0, 1, (2, 2, 4, 4)).astype(np.float32))
    with pytest.raises(mco.ExportError, match=r"'1\.1'.*AdaptiveAvgPool2d"):
        mco.export(model, mc.tensor(np.zeros((1, 2, 4, 4), np.float32)))


@pytest.mark.parametrize("opset", [11, 13, 21])
@pytest.mark.parametrize("per_channel", [False, True])
def test_opsets(opset, per_channel):
    """QuantizeLinear / DequantizeLinear exist from opset 10; their per-channel `axis` from 13."""
    rng = np.random.default_rng(0)
    qconfig = quant.QConfig(activation=quant.get_default_qconfig("x86").activation,
                            weight=(quant.default_per_channel_qconfig if per_channel else quant.default_qconfig).weight)
    model = converted(ConvThen(nn.Identity(), residual=True), rng.normal(0, 1, (4, 2, 8, 8)).astype(np.float32),
                      qconfig)
    x = mc.tensor(rng.normal(0, 1, (2, 2, 8, 8)).astype(np.float32))
    if per_channel and opset < 13:
        with pytest.raises(mco.ExportError, match=r"'conv'.*opset_version >= 13"):
            mco.export(model, x, opset_version=opset)
        return
    data = mco.export(model, x, opset_version=opset).SerializeToString()
    with mc.no_grad():
        ours = model(x).numpy()
    for level in LEVELS:
        assert_within_steps(steps(ours, run_ort(data, x.numpy(), level), model.add.scale), f"opset {opset} {level}")


def test_fold_qdq_leaves_a_float_graph_as_it_is():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1, width_mult=0.5).eval()
    x = mc.tensor(np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32))
    loaded = mco.load(mco.export(model, x))
    folded = mco.fold_qdq(loaded)
    ops = lambda graph: [n["op_type"] for n in graph.nodes if n["op_type"] != "Identity"]   # the stubs' go
    assert ops(folded) == ops(loaded)
    assert not any(isinstance(m, nnq.QuantizedModule) for m in folded.modules())
    with mc.no_grad():
        np.testing.assert_array_equal(folded(x).numpy(), loaded(x).numpy())
    with pytest.raises(TypeError, match="GraphModule"):
        mco.fold_qdq(model)

"""onnx.qdq_quantize and quant.ort_calibrate against onnxruntime's quantize_static and its calibrators.

The oracle is onnxruntime itself: its QDQ file for the same float model, calibrated on the same samples in
the same batches, is compared tensor by tensor with ours (`qdq_differences`): the same nodes and
initializer names, identical int8 weights and int32 biases, equal zero points, and activation scales within
1e-5 relative -- the calibration runs the float graph in minicompress, whose float32 convolutions sum in
another order than onnxruntime's (about 1e-7 relative on a range). The calibrators are compared with
onnxruntime's HistogramCollector on the same arrays, to the bit.
"""
import logging
import os
import tempfile

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from minicompress.cli.quantize import qdq_differences
from minicompress.onnx.qdq_quantize import quantize_qdq
from minicompress.quant.ort_calibrate import Calibrator, OrtMinMaxObserver, OrtPercentileObserver
from minicompress.quant.ort_qparams import compute_scale_zp, qmin_qmax

ort_quant = pytest.importorskip("onnxruntime.quantization")
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: E402
from onnxruntime.quantization.calibrate import HistogramCollector  # noqa: E402
from onnxruntime.quantization import quant_utils  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)


def small_cnn(seed, channels=8, residual=True, clip=True, softmax=True, gemm_bias=True, opset=13, swish=False,
              avg_pool=False, head="gemm"):
    """conv-relu, conv (+ residual Add) -> relu, 1x1 conv -> clip(0, 6) (, x * sigmoid(x) concatenated with x,
    1x1 conv), max (or average) pool, global average pool, flatten (or reshape), gemm (transB=1; "gemm_t0":
    transB=0; "matmul": MatMul + Add) (+ softmax): the names are torch-export-like, so kept names are visible."""
    rng = np.random.default_rng(seed)
    inits = []

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    c = channels
    nodes = [helper.make_node("Conv", ["x", w("c1.w", c, 3, 3, 3), w("c1.b", c)], ["/c1/Conv_output_0"], "/c1/Conv",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["/c1/Conv_output_0"], ["/c1/Relu_output_0"], "/c1/Relu"),
             helper.make_node("Conv", ["/c1/Relu_output_0", w("c2.w", c, c, 3, 3), w("c2.b", c)],
                              ["/b1/Conv_output_0"], "/b1/Conv", pads=[1, 1, 1, 1])]
    last = "/b1/Conv_output_0"
    if residual:
        nodes.append(helper.make_node("Add", [last, "/c1/Relu_output_0"], ["/b1/Add_output_0"], "/b1/Add"))
        last = "/b1/Add_output_0"
    nodes.append(helper.make_node("Relu", [last], ["/b1/Relu_1_output_0"], "/b1/Relu_1"))
    last = "/b1/Relu_1_output_0"
    if clip:
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes += [helper.make_node("Conv", [last, w("c3.w", c, c, 1, 1)], ["/c3/Conv_output_0"], "/c3/Conv"),
                  helper.make_node("Clip", ["/c3/Conv_output_0", "lo", "hi"], ["/c3/Clip_output_0"], "/c3/Clip")]
        last = "/c3/Clip_output_0"
    if swish:
        nodes += [helper.make_node("Sigmoid", [last], ["/sw/Sigmoid_output_0"], "/sw/Sigmoid"),
                  helper.make_node("Mul", [last, "/sw/Sigmoid_output_0"], ["/sw/Mul_output_0"], "/sw/Mul"),
                  helper.make_node("Concat", ["/sw/Mul_output_0", last], ["/sw/Concat_output_0"], "/sw/Concat",
                                   axis=1),
                  helper.make_node("Conv", ["/sw/Concat_output_0", w("c4.w", c, 2 * c, 1, 1), w("c4.b", c)],
                                   ["/c4/Conv_output_0"], "/c4/Conv")]
        last = "/c4/Conv_output_0"
    pool = "AveragePool" if avg_pool else "MaxPool"
    nodes += [helper.make_node(pool, [last], ["/pool_output_0"], "/pool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("GlobalAveragePool", ["/pool_output_0"], ["/GlobalAveragePool_output_0"], "/GAP")]
    if head == "matmul":
        inits.append(numpy_helper.from_array(np.array([-1, c], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["/GlobalAveragePool_output_0", "flat_shape"], ["/Flatten_output_0"],
                                      "/Reshape"))
    else:
        nodes.append(helper.make_node("Flatten", ["/GlobalAveragePool_output_0"], ["/Flatten_output_0"], "/Flatten"))
    out = "/fc/Gemm_output_0" if softmax else "logits"
    if head == "matmul":
        nodes += [helper.make_node("MatMul", ["/Flatten_output_0", w("fc.w", c, 10)], ["/fc/MatMul_output_0"],
                                   "/fc/MatMul"),
                  helper.make_node("Add", ["/fc/MatMul_output_0", w("fc.b", 10)], [out], "/fc/Add")]
    else:
        transposed = head == "gemm"
        nodes.append(helper.make_node("Gemm", ["/Flatten_output_0", w("fc.w", *((10, c) if transposed else (c, 10)))]
                                      + ([w("fc.b", 10)] if gemm_bias else []), [out], "/fc/Gemm",
                                      transB=int(transposed)))
    if softmax:
        nodes.append(helper.make_node("Softmax", [out], ["probs"], "/Softmax", axis=1))
        out = "probs"
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


class _Reader:
    def __init__(self, batches):
        self.batches = list(batches)

    def get_next(self):
        return {"x": self.batches.pop(0)} if self.batches else None


def ort_qdq(model, batches, method="MinMax", per_channel=True, reduce_range=False, extra=None):
    with tempfile.TemporaryDirectory() as work:
        path, out = os.path.join(work, "m.onnx"), os.path.join(work, "q.onnx")
        onnx.save(model, path)
        quantize_static(path, out, _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod[method], extra_options=extra or {})
        return onnx.load(out)


def assert_same_qdq(ours, theirs, symmetric_ties=False):
    """Same nodes and names, identical int8 / int32 tensors, equal zero points, scales within 1e-5.

    symmetric_ties: a symmetric range [-t, t] (percentile, distribution) puts the uint8 zero point at
    round(t / (2t / 255)) = round(127.5): a tie, which the last bit of t (the float graph's values, summed
    in another order by the two runtimes) sends to 127 or 128. There the zero points may differ by that one
    level, and only there."""
    d = qdq_differences(ours, theirs)
    assert not (d["nodes_only_ours"] or d["nodes_only_theirs"]), (d["nodes_only_ours"], d["nodes_only_theirs"])
    assert not (d["initializers_only_ours"] or d["initializers_only_theirs"]), d
    assert d["weights"] > 0 and d["weights_identical"] == d["weights"]
    assert d["biases_identical"] == d["biases"]
    assert d["scale_rel_diff"] <= 1e-5 and d["weight_scale_rel_diff"] <= 1e-6
    if not symmetric_ties:
        assert d["activations"] > 0 and d["zero_points_equal"] == d["activations"]
    else:
        a = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
        b = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
        for n in theirs.graph.node:
            if n.op_type == "QuantizeLinear" and not np.array_equal(a[n.input[2]], b[n.input[2]]):
                assert {int(a[n.input[2]]), int(b[n.input[2]])} == {127, 128}, n.input[2]
    return d


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2 ** 16), channels=st.sampled_from([4, 8]), residual=st.booleans(), clip=st.booleans(),
       softmax=st.booleans(), gemm_bias=st.booleans(), batch=st.sampled_from([1, 3, 4]),
       reduce_range=st.booleans(), per_channel=st.booleans(), swish=st.booleans(), avg_pool=st.booleans(),
       head=st.sampled_from(["gemm", "gemm_t0", "matmul"]))
def test_minmax_qdq_graph_equals_quantize_static(seed, channels, residual, clip, softmax, gemm_bias, batch,
                                                 reduce_range, per_channel, swish, avg_pool, head):
    model = small_cnn(seed, channels, residual, clip, softmax, gemm_bias, swish=swish, avg_pool=avg_pool, head=head)
    data = np.random.default_rng(seed + 1).standard_normal((7, 3, 8, 8)).astype(np.float32) * 2
    batches = [data[i:i + batch] for i in range(0, len(data), batch)]
    ours = quantize_qdq(model, batches, per_channel=per_channel, reduce_range=reduce_range)
    assert_same_qdq(ours, ort_qdq(model, batches, per_channel=per_channel, reduce_range=reduce_range))


def test_the_float_graphs_names_are_kept_and_activations_quantized_where_onnxruntime_does():
    model = small_cnn(0)
    data = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ours = quantize_qdq(model, [data])
    quantized = {n.input[0] for n in ours.graph.node if n.op_type == "QuantizeLinear"}
    # Relu / Clip removed and their outputs written by the conv / add; GAP has its own pair; Flatten
    # reuses the GAP output's pair; Softmax is fixed to [0, 1]
    assert {"/c1/Relu_output_0", "/b1/Relu_1_output_0", "/c3/Clip_output_0", "/GlobalAveragePool_output_0",
            "/Flatten_output_0", "/b1/Conv_output_0"} <= quantized
    assert not {"/c1/Conv_output_0", "/b1/Add_output_0", "/c3/Conv_output_0"} & quantized
    assert "Relu" not in {n.op_type for n in ours.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
    flatten_q = next(n for n in ours.graph.node if n.name == "/Flatten_output_0_QuantizeLinear")
    assert flatten_q.input[1] == "/GlobalAveragePool_output_0_scale"
    assert inits["probs_scale"] == np.float32(1 / 255) and inits["probs_zero_point"] == 0
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "c1.w"))
    np.testing.assert_array_equal(inits["c1.w_scale"], (np.abs(w).reshape(len(w), -1).max(1).astype(np.float64)
                                                        / 127).astype(np.float32))


@pytest.mark.parametrize("method, extra, options", [
    ("Entropy", {}, {}),                                         # 128 / 128 bins: MinMax's range
    ("Percentile", {"CalibPercentile": 99.0}, {"percentile": 99.0}),
    ("Percentile", {}, {}),
    ("Distribution", {}, {}),
])
def test_histogram_methods_qdq_graph_equals_quantize_static(method, extra, options):
    model = small_cnn(3)
    data = np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32)
    batches = [data[:4], data[4:]]
    ours = quantize_qdq(model, batches, method.lower(), **options)
    assert_same_qdq(ours, ort_qdq(model, batches, method, extra=extra),
                    symmetric_ties=method in ("Percentile", "Distribution"))


def test_entropy_at_onnxruntimes_default_bins_is_minmax():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32) ** 3
    entropy, minmax = Calibrator("entropy"), Calibrator("minmax")
    for part in np.split(x, 4):
        entropy.collect(part)
        minmax.collect(part)
    assert entropy.compute_range() == minmax.compute_range() == (x.min(), x.max())


def _ort_histogram_range(method, batches, num_bins, num_quantized_bins=128, percentile=99.999, symmetric=False,
                         passes=1):
    """onnxruntime's range: `passes` collect calls (collect_data calls), the batches split evenly among them."""
    collector = HistogramCollector(method=method, symmetric=symmetric, num_bins=num_bins,
                                   num_quantized_bins=num_quantized_bins, percentile=percentile, scenario="same")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        for part in np.array_split(np.arange(len(batches)), passes):
            collector.collect({"t": [batches[i] for i in part]})
        result = collector.compute_collection_result()["t"]
    return (result.range_value if hasattr(result, "range_value") else result[:2])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), n_batches=st.integers(1, 4), size=st.sampled_from([50, 300]),
       power=st.sampled_from([1, 3]), shift=st.sampled_from([0.0, 1.5]), passes=st.integers(1, 2),
       case=st.sampled_from(["entropy", "percentile_sym", "percentile", "distribution"]))
def test_calibrators_equal_onnxruntimes_histogram_collector_to_the_bit(seed, n_batches, size, power, shift, passes,
                                                                      case):
    rng = np.random.default_rng(seed)
    passes = min(passes, n_batches)
    # later batches spread wider, so a second pass grows the histogram
    batches = [(rng.standard_normal(size) ** power * (1 + k) + shift).astype(np.float32) for k in range(n_batches)]
    if case == "entropy":
        bins, qbins = int(rng.integers(16, 48)), int(rng.integers(4, 16))
        ours = Calibrator("entropy", num_bins=bins, num_quantized_bins=qbins)
        theirs = _ort_histogram_range("entropy", batches, bins, qbins, passes=passes)
    elif case == "distribution":
        ours = Calibrator("distribution", num_bins=512)
        theirs = _ort_histogram_range("distribution", batches, 512, passes=passes)
    else:
        symmetric, pct = case == "percentile_sym", float(rng.choice([90.0, 99.0, 99.999]))
        ours = Calibrator("percentile", num_bins=256, percentile=pct, symmetric=symmetric)
        theirs = _ort_histogram_range("percentile", batches, 256, percentile=pct, symmetric=symmetric, passes=passes)
    for part in np.array_split(np.arange(len(batches)), passes):
        for i in part:
            ours.collect(batches[i])
        ours.new_pass()
    got = ours.compute_range()
    assert np.float32(got[0]).tobytes() == np.float32(theirs[0]).tobytes()
    assert np.float32(got[1]).tobytes() == np.float32(theirs[1]).tobytes()


@settings(max_examples=40, deadline=None)
@given(low=st.floats(-1e3, 1e3, width=32), high=st.floats(-1e3, 1e3, width=32), reduce_range=st.booleans(),
       storage=st.sampled_from([np.uint8, np.int8]), symmetric=st.booleans())
def test_scale_and_zero_point_equal_onnxruntimes_compute_scale_zp(low, high, reduce_range, storage, symmetric):
    low, high = np.float32(min(low, high)), np.float32(max(low, high))
    onnx_type = TensorProto.UINT8 if storage == np.uint8 else TensorProto.INT8
    theirs = quant_utils.compute_scale_zp(np.array(low), np.array(high),
                                          *quant_utils.get_qmin_qmax_for_qType(onnx_type, reduce_range, symmetric),
                                          symmetric)
    ours = compute_scale_zp(low, high, *qmin_qmax(storage, reduce_range, symmetric), symmetric)
    assert ours[0] == theirs[0] and ours[0].dtype == theirs[0].dtype
    assert ours[1].tobytes() == theirs[1].tobytes()


def test_observers_give_onnxruntimes_qparams_of_their_range():
    x = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
    minmax, percentile = OrtMinMaxObserver(), OrtPercentileObserver(num_bins=512, percentile=99.0)
    for row in x:
        minmax(row)
        percentile(row)
    zp, scale = quant_utils.compute_scale_zp(np.array(x.min()), np.array(x.max()), np.array(0, np.uint8),
                                             np.array(255, np.uint8))
    got_scale, got_zp = minmax.calculate_qparams()
    assert got_scale[0] == scale and got_zp[0] == zp
    theirs = _ort_histogram_range("percentile", list(x), 512, percentile=99.0, symmetric=True)
    assert percentile.calculate_range() == (theirs[0], theirs[1])
    with pytest.raises(ValueError, match="method='kl'"):
        Calibrator("kl")
    with pytest.raises(ValueError, match="percentile=120"):
        OrtPercentileObserver(percentile=120)


def _rapidocr_model(name):
    import importlib.util
    spec = importlib.util.find_spec("rapidocr_onnxruntime")   # not imported: its own dependencies are not needed
    if spec is None:
        pytest.skip("rapidocr-onnxruntime==1.4.4 is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = os.path.join(os.path.dirname(spec.origin), "models", name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is missing from the installed rapidocr-onnxruntime")
    return onnx.load(path)


def test_ppocr_classifier_qdq_graph_equals_quantize_static():
    # PP-OCR's direction classifier: weights as Constant nodes (onnxruntime quantizes them as uint8
    # activations), BatchNormalization kept, HardSigmoid, Reshape, MatMul, Softmax; opset 11
    model = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    data = np.random.default_rng(0).random((1, 3, 48, 96)).astype(np.float32)
    ours = quantize_qdq(model, [data])
    d = qdq_differences(ours, ort_qdq(model, [data]))
    assert not (d["nodes_only_ours"] or d["nodes_only_theirs"] or d["initializers_only_ours"]
                or d["initializers_only_theirs"])
    assert d["weights_identical"] == d["weights"] and d["zero_points_equal"] == d["activations"] > 100
    assert d["scale_rel_diff"] <= 1e-5


def test_an_ort_observer_in_a_qconfig_sets_the_converted_layers_scale():
    import minicompress as mc
    import minicompress.onnx as mco
    from minicompress.quant import dtypes as qd
    from minicompress.quant.observer import PerChannelMinMaxObserver
    from minicompress.quant.qconfig import QConfig
    from minicompress.quant.quantize_fx import convert_fx, prepare_fx
    model = small_cnn(5, softmax=False)
    qconfig = QConfig(activation=OrtPercentileObserver.with_args(num_bins=512, percentile=99.0),
                      weight=PerChannelMinMaxObserver.with_args(dtype=qd.qint8, qscheme=qd.per_channel_symmetric))
    prepared = prepare_fx(mco.load(model), qconfig)
    x = np.random.default_rng(5).standard_normal((8, 3, 8, 8)).astype(np.float32)
    with mc.no_grad():
        prepared(x[:4])
        prepared(x[4:])
    observers = [m for m in prepared.modules() if isinstance(m, OrtPercentileObserver)]
    expected = set()
    for observer in observers:
        low, high = observer.calculate_range()
        theirs = _ort_histogram_range("percentile", observer.calibrator.batches, 512, percentile=99.0,
                                      symmetric=True)
        assert (low, high) == (theirs[0], theirs[1])
        zp, scale = quant_utils.compute_scale_zp(np.array(low), np.array(high), np.array(0, np.uint8),
                                                 np.array(255, np.uint8))
        expected.add(float(scale))
    converted = convert_fx(prepared)
    scales = {float(np.ravel(m.scale)[0]) for m in converted.modules() if hasattr(m, "scale")
              and np.size(m.scale) == 1}
    assert observers and scales and scales <= expected


def test_weights_given_as_constant_nodes_are_quantized_as_onnxruntime_does_and_fold():
    # onnxruntime calibrates a Constant node's output like an activation and quantizes it to uint8 through
    # QuantizeLinear -> DequantizeLinear; fold_qdq turns that QuantizeLinear of a constant into constant levels
    import minicompress as mc
    import minicompress.onnx as mco
    from onnx_harness import ort_session
    model = small_cnn(7, softmax=False)
    graph = model.graph
    weight = next(t for t in graph.initializer if t.name == "c2.w")
    graph.initializer.remove(weight)
    graph.node.insert(0, helper.make_node("Constant", [], ["c2.w"], "c2_weight", value=weight))
    data = np.random.default_rng(7).standard_normal((6, 3, 8, 8)).astype(np.float32)
    # 7-bit int8 weights (reduce_range) for the conv whose weight is an initializer: onnxruntime runs the file
    # on its fused uint8 x int8 kernels, which on AVX2 CPUs without VNNI add byte pairs into a saturating
    # int16, exact only for 7-bit weights (2 * 255 * 64 < 2**15); the Constant weight becomes uint8 (U8U8,
    # never saturating). So the same integers on every CPU.
    ours = quantize_qdq(model, [data[:3], data[3:]], reduce_range=True)
    assert_same_qdq(ours, ort_qdq(model, [data[:3], data[3:]], reduce_range=True))
    assert "c2.w_QuantizeLinear" in {n.name for n in ours.graph.node}
    folded = mco.fold_qdq(mco.load(ours))
    with mc.no_grad():
        got = folded(data).numpy()
    expected = ort_session(ours.SerializeToString()).run(None, {"x": data})[0]
    step = float(numpy_helper.to_array(next(t for t in ours.graph.initializer if t.name == "logits_scale")))
    # the same integers; a value at a rounding tie (x * (1 / s) here, x / s there) may land one level apart
    assert np.abs(got - expected).max() <= 1.01 * step


def pad_split_where_gather_model(seed):
    """conv, Pad (constant 0: shared pair; reflect: shared; constant 1: own pair), Split into two, Where
    between them, conv, global average pool, flatten, Gather of columns, plus a Gather from a float table."""
    rng = np.random.default_rng(seed)
    f = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f(8, 3, 3, 3), "c1.w"), numpy_helper.from_array(f(8), "c1.b"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array([4, 4], np.int64), "halves"),
             numpy_helper.from_array(rng.random((1, 4, 1, 1)) > 0.5, "cond"),
             numpy_helper.from_array(f(6, 4, 3, 3), "c2.w"),
             numpy_helper.from_array(np.array([0, 2, 5], np.int64), "cols"),
             numpy_helper.from_array(f(5, 3), "table"), numpy_helper.from_array(np.array([1], np.int64), "row")]
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["/c1/Conv_output_0"], "/c1/Conv"),
             helper.make_node("Pad", ["/c1/Conv_output_0", "pads"], ["/Pad_output_0"], "/Pad"),
             helper.make_node("Pad", ["/Pad_output_0", "pads"], ["/Pad_1_output_0"], "/Pad_1", mode="reflect"),
             helper.make_node("Split", ["/Pad_1_output_0", "halves"], ["/Split_output_0", "/Split_output_1"],
                              "/Split", axis=1),
             helper.make_node("Where", ["cond", "/Split_output_0", "/Split_output_1"], ["/Where_output_0"], "/Where"),
             helper.make_node("Conv", ["/Where_output_0", "c2.w"], ["/c2/Conv_output_0"], "/c2/Conv"),
             helper.make_node("Pad", ["/c2/Conv_output_0", "pads", "one"], ["/Pad_2_output_0"], "/Pad_2"),
             helper.make_node("GlobalAveragePool", ["/Pad_2_output_0"], ["/GAP_output_0"], "/GAP"),
             helper.make_node("Flatten", ["/GAP_output_0"], ["/Flatten_output_0"], "/Flatten"),
             helper.make_node("Gather", ["/Flatten_output_0", "cols"], ["/Gather_output_0"], "/Gather", axis=1),
             helper.make_node("Gather", ["table", "row"], ["/Gather_1_output_0"], "/Gather_1", axis=0),
             helper.make_node("Add", ["/Gather_output_0", "/Gather_1_output_0"], ["out"], "/Add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_pad_split_where_gather_follow_onnxruntimes_rules(seed):
    model = pad_split_where_gather_model(seed)
    data = np.random.default_rng(seed).standard_normal((6, 3, 8, 8)).astype(np.float32)
    batches = [data[:3], data[3:]]
    ours = quantize_qdq(model, batches)
    assert_same_qdq(ours, ort_qdq(model, batches))
    q = {n.input[0]: n.input[1] for n in ours.graph.node if n.op_type == "QuantizeLinear"}
    assert q["/Pad_output_0"] == q["/Pad_1_output_0"] == "/c1/Conv_output_0_scale"      # zero / reflect padding
    assert q["/Pad_2_output_0"] == "/Pad_2_output_0_scale"                                # padded with 1.0
    assert q["/Split_output_0"] == q["/Split_output_1"] == "/c1/Conv_output_0_scale"
    assert q["/Gather_1_output_0"] == "table_scale" and "table_quantized" in {t.name for t in ours.graph.initializer}

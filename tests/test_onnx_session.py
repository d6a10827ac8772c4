"""minicompress.onnx.InferenceSession against onnxruntime.InferenceSession: one script body, run with either
module as `rt`, must describe the model alike and compute the same outputs; a bad feed is refused by both,
and ours names the input; intra_op_num_threads sets the thread count of a run and restores it."""
import importlib.util
from pathlib import Path

import numba
import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import minicompress.onnx as mco
from minicompress.kernels.threads import _openblas_thread_functions
from strategies import arrays

SETTINGS = settings(max_examples=10, deadline=None)
PROBABILITY_ATOL = 5e-4        # the PP-OCR models' outputs: see assert_same_script_same_results
_spec = importlib.util.find_spec("rapidocr_onnxruntime")
RAPIDOCR_MODELS = None if _spec is None else Path(_spec.origin).parent / "models"
CLS_MODEL = None if RAPIDOCR_MODELS is None else RAPIDOCR_MODELS / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
requires_rapidocr = pytest.mark.skipif(
    CLS_MODEL is None or not CLS_MODEL.is_file(),
    reason="the PP-OCR models are not installed: python -m pip install --no-deps rapidocr-onnxruntime==1.4.4")


def script(rt, source, feeds, threads=1):
    """Code as written for onnxruntime; `rt` is the module imported as onnxruntime."""
    options = rt.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = rt.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    inputs = [(arg.name, arg.shape, arg.type) for arg in session.get_inputs()]
    outputs = [(arg.name, arg.shape, arg.type) for arg in session.get_outputs()]
    every = session.run(None, feeds)
    last = session.run([outputs[-1][0]], {name: feeds[name] for name, _, _ in inputs})
    return inputs, outputs, every, last


def two_input_model():
    """z = Relu(x + y) @ w (w a weight), s = ReduceSum(x, axes=[1]) * c: two inputs with a named and an
    unnamed dynamic dimension, two outputs, metadata."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    c = numpy_helper.from_array(np.array(2.0, np.float32), "c")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("Add", ["x", "y"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w"], ["z"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["t"], keepdims=0), helper.make_node("Mul", ["t", "c"], ["s"])]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 4]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 5, 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 4])], [w, c, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="test", doc_string="a two-input model", model_version=3)
    helper.set_model_props(model, {"author": "tests", "purpose": "session"})
    return model.SerializeToString()


@SETTINGS
@given(data=st.data())
def test_same_script_same_results_on_a_small_model(data):
    batch = data.draw(st.integers(1, 3), label="batch")
    x = data.draw(arrays((batch, 5, 4)), label="x")
    y = data.draw(arrays((1, 5, 4)), label="y")
    source = two_input_model()
    ours = script(mco, source, {"x": x, "y": y})
    theirs = script(onnxruntime, source, {"x": x, "y": y})
    assert ours[0] == theirs[0] == [("x", ["batch", None, 4], "tensor(float)"), ("y", [1, 5, 4], "tensor(float)")]
    assert ours[1] == theirs[1]
    for a, b in zip(ours[2] + ours[3], theirs[2] + theirs[3]):
        assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        # a 4-term dot product and a 5-term sum in float32: the two runtimes may add in another order
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


@SETTINGS
@given(x=st.integers(0, 3).flatmap(lambda rank: arrays(tuple([2] * rank))))
def test_same_script_on_a_model_declared_without_shapes(x):
    """An input and output declared with an element type and no dimensions: both describe the shape as []
    and take any shape."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "shapeless",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    ours, theirs = script(mco, source, {"x": x}), script(onnxruntime, source, {"x": x})
    assert ours[:2] == theirs[:2] == ([("x", [], "tensor(float)")], [("y", [], "tensor(float)")])
    for a, b in zip(ours[2] + ours[3], theirs[2] + theirs[3]):
        np.testing.assert_array_equal(a, b)         # max(x, 0) is exact


def test_model_metadata_as_onnxruntime():
    source = two_input_model()
    ours, theirs = mco.InferenceSession(source).get_modelmeta(), onnxruntime.InferenceSession(source).get_modelmeta()
    for field in ("producer_name", "graph_name", "domain", "description", "version", "custom_metadata_map"):
        assert getattr(ours, field) == getattr(theirs, field), field


BAD_FEEDS = [  # (description, feed, output names, words our message must hold)
    ("unknown input", {"x": np.zeros((1, 5, 4), np.float32), "y": np.zeros((1, 5, 4), np.float32),
                       "q": np.zeros(1, np.float32)}, None, ["'q'", "'x'", "'y'"]),
    ("missing input", {"x": np.zeros((1, 5, 4), np.float32)}, None, ["'y'", "missing"]),
    ("float64 for float", {"x": np.zeros((1, 5, 4)), "y": np.zeros((1, 5, 4), np.float32)}, None,
     ["'x'", "tensor(float)", "tensor(double)"]),
    ("wrong rank", {"x": np.zeros((5, 4), np.float32), "y": np.zeros((1, 5, 4), np.float32)}, None,
     ["'x'", "rank 3"]),
    ("wrong fixed dimension", {"x": np.zeros((1, 5, 4), np.float32), "y": np.zeros((1, 5, 3), np.float32)}, None,
     ["'y'", "[1, 5, 4]", "(1, 5, 3)"]),
    ("unknown output", {"x": np.zeros((1, 5, 4), np.float32), "y": np.zeros((1, 5, 4), np.float32)}, ["zz"],
     ["'zz'", "'z'", "'s'"]),
]


@pytest.mark.parametrize("what, feed, names, words", BAD_FEEDS, ids=[case[0] for case in BAD_FEEDS])
def test_bad_feeds_refused_as_onnxruntime_refuses_them(what, feed, names, words):
    source = two_input_model()
    with pytest.raises(Exception):      # the oracle: onnxruntime refuses the feed too
        onnxruntime.InferenceSession(source).run(names, feed)
    session = mco.InferenceSession(source)
    calls = []
    session.graph_module.run = lambda *a, **k: calls.append(a)
    with pytest.raises(mco.InvalidArgument) as info:
        session.run(names, feed)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not calls, "the feed must be refused before the graph runs"


@pytest.mark.parametrize("options_of", [mco, onnxruntime], ids=["minicompress options", "onnxruntime options"])
@pytest.mark.parametrize("threads", [1, 2])
def test_intra_op_threads_apply_to_the_run_and_are_restored(threads, options_of):
    options = options_of.SessionOptions()
    options.intra_op_num_threads = threads
    session = mco.InferenceSession(two_input_model(), options)
    model, seen = session.graph_module, []
    original = type(model).run
    blas = _openblas_thread_functions()
    blas_count = (lambda: None) if blas is None else blas[1]

    def recording(*args, **kwargs):
        seen.append((numba.get_num_threads(), blas_count()))
        return original(model, *args, **kwargs)
    model.run = recording
    before = numba.get_num_threads(), blas_count()
    session.run(None, {"x": np.ones((1, 5, 4), np.float32), "y": np.ones((1, 5, 4), np.float32)})
    # OpenBLAS runs on one thread inside a run (kernels/threads.thread_count says why)
    assert seen == [(min(threads, numba.config.NUMBA_NUM_THREADS), None if blas is None else 1)]
    assert (numba.get_num_threads(), blas_count()) == before


def test_bad_thread_count_and_other_providers():
    options = mco.SessionOptions()
    options.intra_op_num_threads = -1
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        mco.InferenceSession(two_input_model(), options)
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider"):
        session = mco.InferenceSession(two_input_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_outputs_never_alias_inputs_or_constants():
    """An output that is a graph input, or a view of a constant, comes back as an array of its own."""
    k = numpy_helper.from_array(np.arange(6, dtype=np.float32), "k")
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["same"]),
                               helper.make_node("Reshape", ["k", "shape"], ["view"])], "aliases",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("same", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("view", TensorProto.FLOAT, [2, 3])], [k, shape])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    x = np.array([1.0, 2.0], np.float32)
    session = mco.InferenceSession(source)
    same, view = session.run(None, {"x": x})
    expected = onnxruntime.InferenceSession(source).run(None, {"x": x})
    np.testing.assert_array_equal(same, expected[0])
    np.testing.assert_array_equal(view, expected[1])
    same[:] = -1
    view[:] = -1
    assert x.tolist() == [1.0, 2.0]
    np.testing.assert_array_equal(session.run(["view"], {"x": x})[0], expected[1])


def rapidocr_model(name):
    return None if RAPIDOCR_MODELS is None else RAPIDOCR_MODELS / name


@st.composite
def text_pages(draw, batch, height, width):
    """Dark bars ("words", -1) on white (1), in PP-OCR's normalization (pixel / 127.5 - 1): inputs on which
    the detector and recognizer give outputs across their range, unlike noise, where the detector's
    probabilities all sit near 0."""
    x = np.ones((batch, 3, height, width), np.float32)
    for n in range(batch):
        for _ in range(draw(st.integers(1, 4), label="bars")):
            h, w = draw(st.integers(4, height // 3), label="h"), draw(st.integers(8, width // 2), label="w")
            top, left = draw(st.integers(0, height - h), label="top"), draw(st.integers(0, width - w), label="left")
            x[n, :, top:top + h, left:left + w] = -1.0
    return x


def assert_same_script_same_results(model, x):
    ours = script(mco, str(model), {"x": x})
    theirs = script(onnxruntime, str(model), {"x": x})
    assert ours[:2] == theirs[:2]
    for a, b in zip(ours[2] + ours[3], theirs[2] + theirs[3]):
        assert a.shape == b.shape and a.dtype == b.dtype
        # probabilities (softmax / sigmoid) after 40-60 float32 convolutions whose sums the two runtimes
        # order differently (BLAS vs MLAS): each sum carries ~1e-7 relative rounding that the layers pass on.
        # Measured at these sizes: at most 1.2e-5 (detector), 6e-6 (recognizer), 3.6e-7 (classifier); on a
        # 6 x 48 x 320 batch of lines one recognizer probability differed by 1.4e-4, where onnxruntime with
        # and without its graph optimizations differ by 4.9e-5 from each other (the layer norms of flat
        # regions amplify rounding). 5e-4 on values in [0, 1] is ten times that self-disagreement.
        np.testing.assert_allclose(a, b, rtol=0, atol=PROBABILITY_ATOL)


@requires_rapidocr
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_same_script_same_results_on_the_pp_ocr_classifier(data):
    """PP-OCR's text-direction classifier (a MobileNetV3: convs with hard-swish, SE blocks, a softmax), as
    published in the rapidocr wheel, on (batch, 3, 48, 192) inputs in [-1, 1] (its normalization)."""
    batch = data.draw(st.integers(1, 2), label="batch")
    x = data.draw(arrays((batch, 3, 48, 192), low=-1.0, high=1.0), label="x")
    assert_same_script_same_results(CLS_MODEL, x)


@requires_rapidocr
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_same_script_same_results_on_the_pp_ocr_detector_and_recognizer(data):
    """PP-OCRv4's text detector (DBNet: 3x3 convs of 96 channels at a quarter of the page's size, unfolded
    in bands of rows, transposed convs, a sigmoid map) on a 160 x 160 page, and its recognizer (SVTR:
    convs, attention blocks, a softmax over 6625 characters) on a 48 x 160 line."""
    page = data.draw(text_pages(1, 160, 160), label="page")
    assert_same_script_same_results(rapidocr_model("ch_PP-OCRv4_det_infer.onnx"), page)
    line = data.draw(text_pages(data.draw(st.integers(1, 2), label="lines"), 48, 160), label="line")
    assert_same_script_same_results(rapidocr_model("ch_PP-OCRv4_rec_infer.onnx"), line)

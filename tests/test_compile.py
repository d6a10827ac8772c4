"""`minicompress.compile`: a compiled plan gives the interpreted graph's outputs on every model family
(the published PP-OCR models, the digits classifier, traced modules of hypothesis-drawn shapes, an int8
QDQ model), compiles again for a second input signature, reuses its arena across calls, and refuses bad
example inputs by name.

Tolerance: none. Every lowered or fused step runs the interpreter's own kernel or the same NumPy ufuncs
in the same order (the fused conv chain is the kernel the interpreter's inference plan runs, whose
epilogue keeps the bits of the layers one by one), and every other node runs interpreted, so the outputs
are equal bit for bit; the interpreter itself is checked against torch and onnxruntime elsewhere."""
import importlib.util
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from test_onnx_models import export, randomize_batch_norms
from torch_twins import MobileClassifier

import minicompress as mc
import minicompress.onnx as mco
from minicompress import nn
from minicompress.kernels.fused_elementwise import hard_swish

_spec = importlib.util.find_spec("rapidocr_onnxruntime")     # not imported: its own dependencies are not needed
RAPIDOCR_MODELS = None if _spec is None else Path(_spec.origin).parent / "models"


def rapidocr_model(name):
    path = None if RAPIDOCR_MODELS is None else RAPIDOCR_MODELS / name
    if path is None or not path.is_file():
        pytest.skip("the PP-OCR models are not installed: python -m pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return mco.load(str(path)).eval()


def interpreted(model, *inputs):
    with mc.no_grad():
        out = model(*[mc.tensor(x) for x in inputs])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_same_as_interpreter(model, *inputs, compiled=None):
    compiled = compiled or mc.compile(model, inputs)
    expected = interpreted(model, *inputs)
    got = compiled.run(*inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    return compiled


def text_page(shape, seed=0):
    """Dark bars (-1) on white (1), PP-OCR's normalization: inputs whose outputs span their range."""
    rng = np.random.default_rng(seed)
    x = np.ones(shape, np.float32)
    for n in range(shape[0]):
        for _ in range(4):
            h, w = rng.integers(4, shape[2] // 2), rng.integers(8, shape[3] // 2)
            top, left = rng.integers(0, shape[2] - h), rng.integers(0, shape[3] - w)
            x[n, :, top:top + h, left:left + w] = -1.0
    return x


def only_plan(compiled):
    assert len(compiled.plans) == 1
    return next(iter(compiled.plans.values()))


# ----- the published models ------------------------------------------------------------------------

def test_ppocr_detector_compiled_equals_interpreted():
    model = rapidocr_model("ch_PP-OCRv4_det_infer.onnx")
    compiled = assert_same_as_interpreter(model, text_page((1, 3, 128, 160)))
    plan = only_plan(compiled)
    labels = [step.label for step in plan.steps]
    assert "Conv+BatchNormalization" in labels and any("hard-swish" in (step.name or "") for step in plan.steps)
    assert len(plan.steps) < plan.n_nodes / 2            # chains fused: 330 nodes run as about 130 steps
    one_pass = [s for s in plan.steps if getattr(s, "calls", [(None,)])[0][0] is hard_swish]
    assert len(one_pass) >= 10                            # the Add, Clip, Mul, Div hard-swishes as one pass
    assert not any(step.interpreted for step in plan.steps)   # SE pools, Resize, ConvTranspose, Concat lowered too


def test_ppocr_recognizer_compiled_equals_interpreted_and_folds_its_shape_arithmetic():
    model = rapidocr_model("ch_PP-OCRv4_rec_infer.onnx")
    compiled = assert_same_as_interpreter(model, text_page((2, 3, 48, 160)))
    assert only_plan(compiled).n_folded > 0              # Shape -> Gather -> Concat -> Reshape, fixed per signature


def test_ppocr_classifier_recompiles_for_a_second_signature():
    model = rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    compiled = assert_same_as_interpreter(model, text_page((1, 3, 48, 192)))
    assert_same_as_interpreter(model, text_page((3, 3, 48, 192), seed=1), compiled=compiled)
    assert sorted(shape for ((_, shape),) in compiled.plans) == [(1, 3, 48, 192), (3, 3, 48, 192)]
    assert_same_as_interpreter(model, text_page((1, 3, 48, 192), seed=2), compiled=compiled)
    assert len(compiled.plans) == 2                      # the first signature's plan is reused


# ----- minicompress's own models, traced -----------------------------------------------------------

def digits_classifier(seed=0):
    mc.manual_seed(seed)
    model = nn.create_mobile_classifier(num_classes=10, in_channels=1).eval()
    rng = np.random.default_rng(seed)
    for name, value in model.state_dict().items():
        if name.endswith("running_var"):
            value.data[...] = rng.uniform(0.5, 2.0, value.shape)
        elif name.endswith("running_mean"):
            value.data[...] = rng.normal(0, 0.1, value.shape)
    return model


@pytest.mark.parametrize("batch", [1, 8])
def test_digits_classifier_compiled_equals_the_module(batch):
    model = digits_classifier()
    x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
    compiled = mc.compile(model, (x,))
    with mc.no_grad():
        expected = model(mc.tensor(x)).numpy()
    got = compiled(x)
    assert isinstance(got, mc.Tensor)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert any(len(step.nodes) > 1 for step in only_plan(compiled).steps)


class Block(nn.Module):
    """depthwise conv -> bn -> relu6, a residual add, a pointwise conv -> relu, pooling and a linear head
    (tracing follows layers: the add is nn.Add)."""

    def __init__(self, channels, classes):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU6()
        self.add = nn.Add()
        self.point = nn.Conv2d(channels, 2 * channels, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x):
        y = self.add(self.act(self.bn(self.conv(x))), x)
        y = self.relu(self.point(y))
        return self.head(self.flatten(self.pool(y)))


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(3, 9), st.integers(3, 9), st.integers(0, 2**16))
def test_traced_module_of_drawn_shapes_compiled_equals_the_module(batch, channels, height, width, seed):
    mc.manual_seed(seed)
    model = Block(channels, 4).eval()
    rng = np.random.default_rng(seed)
    model.bn.running_mean.data[...] = rng.normal(0, 0.5, channels)
    model.bn.running_var.data[...] = rng.uniform(0.5, 2.0, channels)
    x = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    compiled = mc.compile(model, (x,))
    with mc.no_grad():
        expected = model(mc.tensor(x)).numpy()
    np.testing.assert_array_equal(compiled(x).numpy(), expected)
    assert [step.label for step in only_plan(compiled).steps][:1] == ["Conv+BatchNormalization+Clip"]


def upsampling_head_file(batch, c_in, kernel, size, seed):
    """x -> ConvTranspose (kernel == stride, bias; an nn.ConvTranspose2d once imported) -> ConvTranspose
    with output_shape (kernel 2, stride 2, no bias; stays an operator) -> Resize nearest by scales (1, 1, 2,
    3) -> Resize nearest to odd sizes (half-pixel, round_prefer_floor): DBNet's upsampling, both copies."""
    rng = np.random.default_rng(seed)
    h, w = size
    h2, w2 = h * kernel[0] * 2, w * kernel[1] * 2
    final = (batch, 2, 2 * h2 + 1, 3 * w2 - 1)
    inits = [helper.make_tensor("w1", TensorProto.FLOAT, [c_in, 3, *kernel], rng.standard_normal((c_in, 3, *kernel)).ravel()),
             helper.make_tensor("b1", TensorProto.FLOAT, [3], rng.standard_normal(3)),
             helper.make_tensor("w2", TensorProto.FLOAT, [3, 2, 2, 2], rng.standard_normal((3, 2, 2, 2)).ravel()),
             helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 3]),
             helper.make_tensor("sizes", TensorProto.INT64, [4], list(final))]
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["t"], kernel_shape=list(kernel), strides=list(kernel)),
             helper.make_node("ConvTranspose", ["t", "w2"], ["u"], kernel_shape=[2, 2], strides=[2, 2],
                              output_shape=[h2, w2]),
             helper.make_node("Resize", ["u", "", "scales"], ["r"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Resize", ["r", "", "", "sizes"], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c_in, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(final))], inits)
    buffer = io.BytesIO()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), buffer)
    return buffer.getvalue()


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 2), st.integers(1, 4), st.tuples(st.integers(1, 3), st.integers(1, 3)),
       st.tuples(st.integers(1, 5), st.integers(1, 5)), st.integers(0, 2**16))
def test_upsampling_head_lowered_equals_interpreted_and_onnxruntime(batch, c_in, kernel, size, seed):
    """Both ConvTransposes and both Resizes are lowered (none interpreted), equal to the interpreter bit for
    bit and to onnxruntime to float32 rounding (sums of at most 4 products)."""
    import onnxruntime as ort
    data = upsampling_head_file(batch, c_in, kernel, size, seed)
    model = mco.load(data).eval()
    x = np.random.default_rng(seed + 1).standard_normal((batch, c_in, *size)).astype(np.float32)
    plan = only_plan(assert_same_as_interpreter(model, x))
    assert [step.label for step in plan.steps] == ["ConvTranspose", "ConvTranspose", "Resize", "Resize"]
    assert not any(step.interpreted for step in plan.steps)
    expected = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(mc.compile(model, (x,)).run(x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [10, 11])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_a_pad_that_is_the_graphs_output_is_lowered(opset, dtype):
    """Constant Pad (attribute pads through opset 10, inputs from 11) lowered, its result the graph's output (a
    buffer the caller keeps, not one from the arena), equal to the interpreter."""
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.INT8
    pads = [0, 1, 2, 0, 0, 3, 0, 1]
    if opset == 10:
        nodes, inits = [helper.make_node("Pad", ["x"], ["y"], pads=pads, value=2.0)], []
    else:
        nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["y"])]
        inits = [helper.make_tensor("pads", TensorProto.INT64, [8], pads),
                 helper.make_tensor("value", elem, [], [2])]
    graph = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", elem, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("y", elem, [1, 5, 3, 5])], inits)
    buffer = io.BytesIO()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), buffer)
    model = mco.load(buffer.getvalue()).eval()
    x = (np.arange(24).reshape(1, 2, 3, 4) - 12).astype(dtype)
    compiled = mc.compile(model, (x,))
    plan = only_plan(compiled)
    assert [(step.label, step.interpreted) for step in plan.steps] == [("Pad", False)]
    first, second = compiled.run(x)[0], compiled.run(x + 1)[0]
    np.testing.assert_array_equal(first, np.pad(x, [(0, 0), (1, 3), (2, 0), (0, 1)], constant_values=2))
    np.testing.assert_array_equal(second, np.pad(x + 1, [(0, 0), (1, 3), (2, 0), (0, 1)], constant_values=2))


# ----- an int8 QDQ model: what the plan does not lower runs interpreted -----------------------------

def test_int8_qdq_classifier_compiled_equals_interpreted(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    torch.manual_seed(0)
    data = export(randomize_batch_norms(MobileClassifier()), [np.zeros((1, 1, 8, 8), np.float32)], 17,
                  {"in0": {0: "batch"}})
    (tmp_path / "float.onnx").write_bytes(data)
    rng = np.random.default_rng(0)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([rng.standard_normal((1, 1, 8, 8)).astype(np.float32) for _ in range(4)])

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"in0": x}

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"), Batches(), quant_format=QuantFormat.QDQ,
                    reduce_range=True)
    model = mco.load(str(tmp_path / "int8.onnx"))
    compiled = assert_same_as_interpreter(model, rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert any(step.interpreted for step in only_plan(compiled).steps)


# ----- the plan's machinery --------------------------------------------------------------------------

def elementwise_file(name):
    """x -> Add 3 -> Clip [0, 6] -> Mul x -> Div 6 (hard-swish) -> Relu, its values named `name`..."""
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info(name + "out", TensorProto.FLOAT, [2, 3, 4])
    inits = [helper.make_tensor(name + "three", TensorProto.FLOAT, [], [3.0]),
             helper.make_tensor(name + "zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor(name + "six", TensorProto.FLOAT, [], [6.0])]
    nodes = [helper.make_node("Add", [name, name + "three"], [name + "a"], name=name + "n0"),
             helper.make_node("Clip", [name + "a", name + "zero", name + "six"], [name + "c"], name=name + "n1"),
             helper.make_node("Mul", [name, name + "c"], [name + "m"], name=name + "n2"),
             helper.make_node("Div", [name + "m", name + "six"], [name + "d"], name=name + "n3"),
             helper.make_node("Relu", [name + "d"], [name + "out"], name=name + "n4")]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    buffer = io.BytesIO()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), buffer)
    return buffer.getvalue()


def test_source_identifiers_are_generated_never_names_from_the_file():
    name = "x); import os; os.system('echo') #"
    model = mco.load(elementwise_file(name))
    x = np.linspace(-5, 5, 24, dtype=np.float32).reshape(2, 3, 4)
    compiled = assert_same_as_interpreter(model, x)
    plan = only_plan(compiled)
    assert "os" not in plan.source.replace("pos", "") and "system" not in plan.source
    assert [step.name for step in plan.steps] == ["hard-swish, Relu"]     # the chain and its Relu: one step


def test_the_arena_is_reused_and_outputs_belong_to_the_caller():
    model = rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    x = text_page((1, 3, 48, 192))
    compiled = mc.compile(model, (x,))
    plan = only_plan(compiled)
    ids = plan.buffer_ids()
    assert ids and len(plan.arena) < len(ids)           # more values than buffers: lifetimes share them
    first = compiled.run(x)[0]
    kept = first.copy()
    second = compiled.run(text_page((1, 3, 48, 192), seed=3))[0]
    assert plan.buffer_ids() == ids and len(compiled.plans) == 1
    np.testing.assert_array_equal(first, kept)           # the second call wrote no output of the first
    assert not np.shares_memory(first, second)
    assert "b0" in str(plan) and "Conv+BatchNormalization" in str(plan)


def test_compile_refuses_bad_example_inputs_by_name():
    model = mco.load(elementwise_file("x"))
    good = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match=r"example_inputs.*takes 1 input"):
        mc.compile(model, (good, good))
    with pytest.raises(ValueError, match=r"example_inputs\[0\].*'x'.*shape"):
        mc.compile(model, (np.zeros((2, 3, 5), np.float32),))
    with pytest.raises(TypeError, match=r"example_inputs\[0\].*'x'.*dtype"):
        mc.compile(model, (np.zeros((2, 3, 4), np.int64),))
    with pytest.raises(TypeError, match=r"example_inputs\[0\].*'x'.*array or Tensor"):
        mc.compile(model, ("a string",))
    with pytest.raises(TypeError, match="model must be"):
        mc.compile(lambda x: x, (good,))
    compiled = mc.compile(model, (good,))
    with pytest.raises(ValueError, match=r"inputs\[0\].*'x'"):
        compiled.run(np.zeros((2, 4, 4), np.float32))

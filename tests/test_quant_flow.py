"""The static post-training quantization flow (fuse -> prepare -> calibrate -> convert) on the digits
classifier, and the same flow against torch's eager mode on a small model with identical weights."""
import numpy as np
import pytest
import torch

import minicompress as mc
from minicompress import nn, quant
from minicompress.quant import modules as nnq

import torch.ao.quantization as tq

from quant_digits import trained_digits_classifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _engine(x86_engine):
    """Every test here compares with torch's x86 quantized engine."""


def calibration_batches(train_loader, count=6):
    return [x for i, (x, _) in enumerate(train_loader) if i < count]


@pytest.fixture(scope="module")
def static_result():
    model, train_loader, test_loader, float_accuracy = trained_digits_classifier()
    fused = quant.fuse_mobile_classifier(model.eval())
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    quant.static.calibrate(prepared, calibration_batches(train_loader))
    quantized = quant.convert(prepared)
    return model, quantized, test_loader, float_accuracy


def test_static_int8_accuracy_within_one_point_of_float(static_result):
    model, quantized, test_loader, float_accuracy = static_result
    impact = quant.evaluate_quantization_impact(model, quantized, test_loader)
    print(f"float {impact['float_accuracy']:.4f}  int8 {impact['quantized_accuracy']:.4f}")
    assert impact["float_accuracy"] == float_accuracy
    assert impact["accuracy_drop"] <= 0.01


def test_converted_classifier_runs_integer_layers(static_result):
    _, quantized, _, _ = static_result
    stem = quantized.stem[0]
    assert isinstance(quantized.quant, nnq.Quantize) and isinstance(quantized.dequant, nnq.DeQuantize)
    assert isinstance(stem, nnq.ConvReLU2d) and stem.weight().int_repr().dtype == np.int8
    assert isinstance(quantized.blocks[0].conv.depthwise, nnq.ConvReLU2d)
    assert isinstance(quantized.blocks[1].skip_add, nnq.QuantizedAdd)
    assert isinstance(quantized.classifier, nnq.Linear)
    assert not any(isinstance(m, (quant.HistogramObserver, nn.BatchNorm2d)) for m in quantized.modules())


def test_quantized_model_is_at_least_3_5x_smaller(static_result):
    model, quantized, _, _ = static_result
    original, static = quant.model_size_bytes(model), quant.model_size_bytes(quantized)
    print(f"float32 {original} bytes, int8 {static} bytes, ratio {original / static:.3f}")
    # The float model: 4 bytes per parameter and BN running statistic.
    expected_float = 4 * sum(p.data.size for p in model.parameters()) + 4 * sum(
        m.running_mean.data.size * 2 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert original == expected_float
    assert original / static >= 3.5


def test_compare_quantization_methods_reports_sizes(static_result):
    model, _, _, _ = static_result
    x = mc.tensor(np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8)).astype(np.float32))
    report = quant.compare_quantization_methods(model, x)
    assert report["original_bytes"] == quant.model_size_bytes(model)
    assert report["static_ratio"] == pytest.approx(report["original_bytes"] / report["static_bytes"])
    assert report["static_ratio"] >= 3.5
    if report["dynamic_bytes"] is not None:
        assert report["original_bytes"] > report["dynamic_bytes"]


def test_fusing_the_classifier_keeps_its_output_in_eval():
    model, _, test_loader, _ = trained_digits_classifier()
    model.eval()
    fused = quant.fuse_mobile_classifier(model)
    assert len(quant.find_fusable_patterns(model)) == 9      # the stem and two convs in each of 4 blocks
    x = next(iter(test_loader))[0]
    np.testing.assert_allclose(fused(x).data, model(x).data, rtol=1e-4, atol=1e-4)


def test_convert_without_calibration_names_the_layer():
    model = nn.create_mobile_classifier().eval()
    model.qconfig = quant.default_qconfig
    prepared = quant.prepare(quant.fuse_mobile_classifier(model))
    with pytest.raises(ValueError, match=r"'quant'.*seen no data"):
        quant.convert(prepared)
    with pytest.raises(ValueError, match="qconfig"):
        quant.prepare(nn.create_mobile_classifier())
    with pytest.raises(ValueError, match="eval"):
        quant.fuse_modules(nn.create_mobile_classifier().train(), [["stem.0", "stem.1", "stem.2"]])


# --------------------------------------------------------------------------------------------------
# The flow against torch's eager mode, same float weights


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = quant.QuantStub()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 5 * 5, 3)
        self.dequant = quant.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc(self.flatten(self.relu(self.bn(self.conv(self.quant(x)))))))


class TorchSmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(4 * 5 * 5, 3)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc(self.flatten(self.relu(self.bn(self.conv(self.quant(x)))))))


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_flow_gives_torchs_weights_qparams_and_outputs(backend):
    """Same weights, same BN statistics, same calibration batches: the quantized weights and every
    layer's (scale, zero_point) equal torch's (output scales to float rounding: the float layers that
    feed the observers are not bit-identical to torch's); outputs are within one step of the final layer's scale."""
    rng = np.random.default_rng(0)
    ours, theirs = SmallNet(), TorchSmallNet()
    ours.bn.running_mean.data[...] = rng.normal(0, 0.2, 4).astype(np.float32)
    ours.bn.running_var.data[...] = rng.uniform(0.5, 2, 4).astype(np.float32)
    ours.bn.weight.data[...] = rng.uniform(0.5, 1.5, 4).astype(np.float32)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.data)) for k, v in ours.state_dict().items()})
    ours.eval(), theirs.eval()
    ours = quant.fuse_modules(ours, [["conv", "bn", "relu"]])
    theirs = tq.fuse_modules(theirs, [["conv", "bn", "relu"]])
    ours.qconfig, theirs.qconfig = quant.get_default_qconfig(backend), tq.get_default_qconfig(backend)
    ours, theirs = quant.prepare(ours), tq.prepare(theirs)
    batches = [rng.normal(0, 1, (8, 2, 5, 5)).astype(np.float32) for _ in range(3)]
    for x in batches:
        ours(mc.tensor(x)), theirs(torch.from_numpy(x))
    ours, theirs = quant.convert(ours), tq.convert(theirs)

    for name in ("conv", "fc"):
        mine, torch_layer = getattr(ours, name), getattr(theirs, name)
        t_weight = torch_layer.weight()
        np.testing.assert_array_equal(mine.weight().int_repr(), t_weight.int_repr().numpy())
        if backend == "x86":
            np.testing.assert_array_equal(mine.weight().q_per_channel_scales(), t_weight.q_per_channel_scales().numpy())
        # The float convs differ from torch's in the last bits, and so do the observed ranges.
        assert mine.scale == pytest.approx(torch_layer.scale, rel=1e-5)
        assert mine.zero_point == torch_layer.zero_point
    assert (ours.quant.scale, ours.quant.zero_point) == (theirs.quant.scale.item(), theirs.quant.zero_point.item())

    if backend == "qnnpack":
        return  # 8-bit activations on torch's x86 engine saturate its 16-bit pair sums; nothing to compare
    x = rng.normal(0, 1, (16, 2, 5, 5)).astype(np.float32)
    out, t_out = ours(mc.tensor(x)).data, theirs(torch.from_numpy(x)).numpy()
    steps = np.abs(out - t_out) / ours.fc.scale
    print(f"{backend}: {np.mean(np.isclose(steps, 0)):.2%} of outputs equal to torch, max {steps.max():.2f} steps")
    assert steps.max() <= 1 + 1e-3


def test_model_size_bytes_counts_what_inference_needs():
    """Hand-counted: float Linear(64, 10) = (640 + 10) * 4 bytes; quantized = 640 int8 weights, 10 float32
    scales (symmetric weights: zero points all 0, not stored), 10 int32 biases, 8 bytes of output qparams,
    and 8 bytes for Quantize's (scale, zero_point)."""
    model = nn.Sequential(quant.QuantStub(), nn.Linear(64, 10), quant.DeQuantStub())
    assert quant.model_size_bytes(model) == (640 + 10) * 4
    model.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(model)
    assert quant.model_size_bytes(prepared) == (640 + 10) * 4       # observers are not counted
    prepared(mc.randn(4, 64))
    assert quant.model_size_bytes(quant.convert(prepared)) == 640 + 10 * 4 + 10 * 4 + 8 + 8


@pytest.mark.parametrize("data", [np.zeros((0, 1, 8, 8), np.float32), [], [np.zeros((2, 1, 8, 8), np.float32),
                                                                          np.zeros((0, 1, 8, 8), np.float32)]],
                         ids=["empty batch", "no batches", "an empty second batch"])
def test_calibration_on_no_samples_raises_naming_data(data):
    from minicompress.quant.static import quantize_static

    with pytest.raises(ValueError, match="data"):
        quantize_static(nn.create_mobile_classifier(10, 1), data)


def test_an_empty_batch_is_refused_before_the_observers_see_it_and_runs_as_in_torch():
    """calibrate refuses an empty first batch by name before running it: the observers' state is as
    prepare left it. The prepared model itself runs an empty batch as torch does, to shape (0, 10)
    (the classifier's Flatten of (0, C, 1, 1) once failed to reshape)."""
    from minicompress.quant.static import calibrate
    from torch_twins import MobileClassifier

    mc.manual_seed(0)
    fused = quant.fuse_mobile_classifier(nn.create_mobile_classifier(10, 1).eval())
    fused.qconfig = quant.get_default_qconfig("x86")
    prepared = quant.prepare(fused)
    before = {k: v.numpy().copy() for k, v in prepared.state_dict().items()}
    with pytest.raises(ValueError, match="data: calibration batch 0 is empty"):
        calibrate(prepared, [np.zeros((0, 1, 8, 8), np.float32)])
    after = prepared.state_dict()
    assert all(np.array_equal(v, after[k].numpy(), equal_nan=True) for k, v in before.items())
    with torch.no_grad():
        expected = MobileClassifier(10, 1).eval()(torch.zeros(0, 1, 8, 8)).shape
    with mc.no_grad():
        assert prepared(mc.zeros(0, 1, 8, 8)).shape == tuple(expected) == (0, 10)

"""quant.mixed_precision: the search against brute force over every assignment, the layers it builds
against torch's per-channel int8 and the int4 reference, and the measured search stepping back."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn
from minicompress.quant import model_size_bytes
from minicompress.quant import mixed_precision as mp
from minicompress.quant.int4 import dequantize_int4, quantize_int4
from minicompress.quant.weight_only import Int4Conv2d, Int4Linear, Int8WeightOnlyConv2d, Int8WeightOnlyLinear


# ----- the search: brute force over all assignments --------------------------------------------

@st.composite
def problems(draw):
    """A few layers, each with a few precisions: drops in multiples of 1/64 (sums exact in float, so
    the brute force and the search compare the same numbers), sizes small ints."""
    layers = draw(st.integers(1, 5))
    sensitivity, sizes = {}, {}
    for i in range(layers):
        precisions = draw(st.lists(st.sampled_from(mp.PRECISIONS), min_size=1, max_size=3, unique=True))
        sensitivity[f"l{i}"] = {p: draw(st.integers(-8, 64)) / 64 for p in precisions}
        sizes[f"l{i}"] = {p: draw(st.integers(0, 40)) for p in precisions}
    return sensitivity, sizes


def _assignments(sensitivity, sizes):
    names = list(sensitivity)
    for combo in itertools.product(*(list(sensitivity[n]) for n in names)):
        choice = dict(zip(names, combo))
        yield choice, sum(sizes[n][p] for n, p in choice.items()), sum(sensitivity[n][p] for n, p in choice.items())


def _cost(choice, sensitivity, sizes):
    return sum(sizes[n][p] for n, p in choice.items()), sum(sensitivity[n][p] for n, p in choice.items())


@settings(max_examples=200, deadline=None)
@given(problems(), st.integers(-8, 200))
def test_choose_with_max_drop_is_the_fewest_bytes_of_all_assignments(problem, drop_64ths):
    sensitivity, sizes = problem
    max_drop = max(drop_64ths, 0) / 64
    feasible = [b for _, b, d in _assignments(sensitivity, sizes) if d <= max_drop]
    if not feasible:
        with pytest.raises(ValueError, match="max_drop"):
            mp.choose_precisions(sensitivity, sizes, max_drop=max_drop)
        return
    size, drop = _cost(mp.choose_precisions(sensitivity, sizes, max_drop=max_drop), sensitivity, sizes)
    assert drop <= max_drop and size == min(feasible)


@settings(max_examples=200, deadline=None)
@given(problems(), st.integers(1, 200))
def test_choose_with_max_bytes_is_the_least_drop_of_all_assignments(problem, max_bytes):
    sensitivity, sizes = problem
    feasible = [d for _, b, d in _assignments(sensitivity, sizes) if b <= max_bytes]
    if not feasible:
        with pytest.raises(ValueError, match="max_bytes"):
            mp.choose_precisions(sensitivity, sizes, max_bytes=max_bytes)
        return
    size, drop = _cost(mp.choose_precisions(sensitivity, sizes, max_bytes=max_bytes), sensitivity, sizes)
    assert size <= max_bytes and drop == min(feasible)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_the_frontier_is_the_pareto_set_of_all_assignments(problem):
    sensitivity, sizes = problem
    points = {(b, d) for _, b, d in _assignments(sensitivity, sizes)}
    pareto = sorted(p for p in points if not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in points))
    frontier = mp.pareto_frontier(sensitivity, sizes)
    assert [(f.bytes, f.predicted_drop) for f in frontier] == pareto
    assert all(_cost(f.choice, sensitivity, sizes) == (f.bytes, f.predicted_drop) for f in frontier)


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "exactly one"), ({"max_drop": 0.1, "max_bytes": 10}, "exactly one"), ({"max_drop": -0.1}, "max_drop"),
    ({"max_drop": float("nan")}, "max_drop"), ({"max_bytes": 0}, "max_bytes"), ({"max_bytes": 2.5}, "max_bytes"),
])
def test_bad_targets_are_refused_by_name(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        mp.choose_precisions({"a": {"int8": 0.0}}, {"a": {"int8": 1}}, **kwargs)


# ----- the layers: against torch's per-channel int8 and the int4 reference ----------------------

def _torch_int8_weight(w):
    """torch's default per-channel weight observer, quantize_per_channel, dequantize."""
    observer = torch.ao.quantization.PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    w = torch.from_numpy(w)
    observer(w)
    scales, zero_points = observer.calculate_qparams()
    return torch.quantize_per_channel(w, scales.double(), zero_points, 0, torch.qint8).dequantize()


def _int4_weight(w, group_size):
    flat = w.reshape(w.shape[0], -1)
    return torch.from_numpy(dequantize_int4(*quantize_int4(flat, group_size), flat.shape[1]).reshape(w.shape))


def _conv_layer(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    in_channels, out_channels = groups * draw(st.integers(1, 6)), groups * draw(st.integers(1, 6))
    kernel = draw(st.sampled_from([1, 3]))
    mc.manual_seed(draw(st.integers(0, 2 ** 16)))
    return nn.Conv2d(in_channels, out_channels, kernel, stride=draw(st.sampled_from([1, 2])), padding=kernel // 2,
                     groups=groups, bias=draw(st.booleans()))


def _torch_conv(layer, x, weight):
    bias = None if layer.bias is None else torch.from_numpy(layer.bias.data)
    return TF.conv2d(torch.from_numpy(x), weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups).numpy()


def _close(got, want):
    # float32 convolutions / products summed in another order than torch's: a few ulps of the terms' scale
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_a_conv_at_each_precision_equals_its_reference(data):
    layer = _conv_layer(data.draw)
    x = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((2, layer.in_channels, 7, 7)).astype(np.float32)
    w = layer.weight.data
    group = mp.int4_group_size(layer, 32)
    with mc.no_grad():
        int8, int4 = mp.quantize_layer(layer, "int8"), mp.quantize_layer(layer, "int4")
        assert type(int8) is Int8WeightOnlyConv2d and type(int4) is Int4Conv2d and int4.group_size == group
        np.testing.assert_array_equal(int8.dequantized_weight(), _torch_int8_weight(w).numpy())
        np.testing.assert_array_equal(int4.dequantized_weight(), _int4_weight(w, group).numpy())
        _close(int8(mc.tensor(x)).data, _torch_conv(layer, x, _torch_int8_weight(w)))
        _close(int4(mc.tensor(x)).data, _torch_conv(layer, x, _int4_weight(w, group)))
        assert mp.quantize_layer(layer, "float32") is layer


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 70), st.integers(1, 20), st.booleans(), st.integers(0, 2 ** 16))
def test_a_linear_at_each_precision_equals_its_reference(in_features, out_features, bias, seed):
    mc.manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=bias)
    x = np.random.default_rng(seed).standard_normal((3, in_features)).astype(np.float32)
    b = None if layer.bias is None else torch.from_numpy(layer.bias.data)
    group = mp.int4_group_size(layer, 32)
    with mc.no_grad():
        int8, int4 = mp.quantize_layer(layer, "int8"), mp.quantize_layer(layer, "int4")
        assert type(int8) is Int8WeightOnlyLinear and type(int4) is Int4Linear
        _close(int8(mc.tensor(x)).data, TF.linear(torch.from_numpy(x), _torch_int8_weight(layer.weight.data), b).numpy())
        _close(int4(mc.tensor(x)).data, TF.linear(torch.from_numpy(x), _int4_weight(layer.weight.data, group), b).numpy())


def _classifier():
    mc.manual_seed(0)
    model = nn.create_mobile_classifier(10, 1, width_mult=0.5).train()
    with mc.no_grad():
        model(mc.tensor(np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)))
    return model.eval()


def test_apply_precisions_gives_each_layer_its_precision_and_the_reference_output():
    model = _classifier()
    x = mc.tensor(np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32))
    choice = {"stem.0": "int4", "blocks.0.conv.depthwise": "int8", "blocks.1.conv.pointwise": "int4",
              "classifier": "int8"}
    mixed = mp.apply_precisions(model, choice)
    kinds = {"int4": (Int4Conv2d, Int4Linear), "int8": (Int8WeightOnlyConv2d, Int8WeightOnlyLinear)}
    layers = dict(mixed.named_modules())
    for name, precision in choice.items():
        assert type(layers[name]) in kinds[precision]
    floats = mp.quantizable_layers(mixed)
    assert set(floats) == set(mp.quantizable_layers(model)) - set(choice)
    # the reference: the float model with each chosen weight replaced by its dequantized reference
    reference = _classifier()
    for name, precision in choice.items():
        layer = dict(reference.named_modules())[name]
        w = layer.weight.data
        ref = _torch_int8_weight(w) if precision == "int8" else _int4_weight(w, mp.int4_group_size(layer))
        layer.weight.data = ref.numpy()
    with mc.no_grad():
        _close(mixed(x).data, reference(x).data)
    assert model_size_bytes(mixed) < model_size_bytes(model)


def test_apply_precisions_refuses_unknown_layers_and_precisions():
    model = _classifier()
    with pytest.raises(ValueError, match="not a float Conv2d or Linear"):
        mp.apply_precisions(model, {"stem.1": "int8"})
    with pytest.raises(ValueError, match="must be one of"):
        mp.apply_precisions(model, {"stem.0": "int2"})


# ----- measuring: sensitivity and the search that steps back -----------------------------------

def _count_quantized(model):
    return {p: sum(type(m) in kinds for m in model.modules()) for p, kinds in
            (("int8", (Int8WeightOnlyLinear, Int8WeightOnlyConv2d)), ("int4", (Int4Linear, Int4Conv2d)))}


def _superadditive(model):
    """A metric whose drop is the sum of the layers' drops times how many layers are quantized: each
    layer alone loses 0.001 at int8 and 0.01 at int4, together they lose more than the sum predicts."""
    counts = _count_quantized(model)
    return 1.0 - (0.001 * counts["int8"] + 0.01 * counts["int4"]) * (counts["int8"] + counts["int4"])


def _mlp():
    mc.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def test_layer_sensitivity_measures_each_layer_alone_and_leaves_the_model_as_it_was():
    model = _mlp()
    before = list(model.modules())
    result = mp.layer_sensitivity(model, _superadditive)
    assert result.baseline == 1.0 and list(model.modules()) == before
    assert result == {name: {"float32": 0.0, "int8": pytest.approx(0.001), "int4": pytest.approx(0.01)}
                      for name in ("0", "2", "4")}
    assert "baseline 1.0000" in str(result)


def test_search_with_max_drop_steps_back_until_the_measured_drop_meets_it():
    model = _mlp()
    result = mp.search_precisions(model, _superadditive, max_drop=0.021)
    # predicted: two int4 layers and one int8 (0.021); measured 0.063, so it steps back along the frontier
    assert len(result.tried) > 1 and result.tried[0][1] > 0.021
    assert result.drop <= 0.021 and result.drop == pytest.approx(1.0 - _superadditive(result.model))
    assert all(measured > 0.021 for _, measured in result.tried[:-1])
    assert result.bytes == model_size_bytes(result.model)


def test_search_with_max_bytes_meets_it_on_the_real_model():
    model = _mlp()
    full = model_size_bytes(model)
    result = mp.search_precisions(model, _superadditive, max_bytes=full // 3)
    assert result.bytes == model_size_bytes(result.model) <= full // 3
    assert result.drop == pytest.approx(1.0 - _superadditive(result.model))
    with pytest.raises(ValueError, match="max_bytes=100 is below the smallest model"):
        mp.search_precisions(model, _superadditive, max_bytes=100)


def test_the_job_stage_measures_uniform_frontier_and_chosen_candidates():
    from minicompress.pipelines.stages import mixed_precision_stage

    result, candidates = mixed_precision_stage(_mlp(), _superadditive, (20,), max_drop=0.021, latency_repeat=1)
    names = ", ".join(c["name"] for c in candidates)
    for name in ("all float32", "all int8", "all int4", "chosen"):
        assert name in names
    assert [c["bytes"] for c in candidates] == sorted(c["bytes"] for c in candidates)
    chosen = [c for c in candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["drop"] == pytest.approx(result.drop)
    for c in candidates:
        assert c["pareto"] == (not any(o["bytes"] <= c["bytes"] and o["metric"] >= c["metric"]
                                       and (o["bytes"], o["metric"]) != (c["bytes"], c["metric"]) for o in candidates))

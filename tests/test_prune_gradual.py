"""Gradual pruning: after every scheduled step each tensor (or all of them, for 'global') holds
exactly round(sparsity * size) zeros of the schedule's sparsity, counted against the whole tensor;
pruned entries stay pruned; strip_pruning leaves plain weights equal to orig * mask.
The expected sparsities come from the PolynomialDecay formula written out here."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.nn as nn
import minicompress.prune as P


def small_model():
    mc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))


def polynomial(step, initial, final, begin, end, power):
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


@settings(max_examples=10, deadline=None)
@given(st.floats(0.0, 0.3), st.floats(0.4, 0.95), st.integers(1, 3), st.sampled_from(["l1_unstructured", "global"]))
def test_sparsity_after_each_scheduled_step_equals_the_schedule(initial, final, frequency, method):
    model = small_model()
    schedule = P.PolynomialDecay(initial, final, begin_step=2, end_step=12, power=3, frequency=frequency)
    pruner = P.GradualPruner(model, schedule, method=method)
    previous = [np.ones(model[0].weight.shape), np.ones(model[3].weight.shape)]
    for step in range(15):
        pruned, sparsity = pruner.step()
        expected = polynomial(step, initial, final, 2, 12, 3)
        assert sparsity == pytest.approx(expected, abs=1e-12)
        assert pruned == (2 <= step <= 12 and (step - 2) % frequency == 0)
        if not pruned:
            continue
        masks = [model[0].weight_mask.data, model[3].weight_mask.data]
        if method == "global":
            total = sum(m.size for m in masks)
            assert sum(int((m == 0).sum()) for m in masks) == round(expected * total)
        else:
            for m in masks:
                assert int((m == 0).sum()) == round(expected * m.size)
        for m, before in zip(masks, previous):
            assert np.all(m[before == 0] == 0)
        previous = [m.copy() for m in masks]
        # some training between pruning steps: the masks must hold
        for module in (model[0], model[3]):
            module.weight_orig.data[...] += 0.01
    assert pruner.sparsity() > 0


def test_explicit_step_and_targets_list():
    model = small_model()
    pruner = P.GradualPruner([(model[3], "weight")], P.ConstantSparsity(0.5, begin_step=10, frequency=5))
    assert pruner(9) == (False, 0.5) and not P.is_pruned(model)
    assert pruner(10) == (True, 0.5)
    assert int((model[3].weight_mask.data == 0).sum()) == 320
    assert pruner(15)[0] and int((model[3].weight_mask.data == 0).sum()) == 320


def test_strip_pruning_leaves_plain_weights_with_zeros():
    model = small_model()
    P.l1_unstructured(model[0], "weight", amount=0.5)
    P.ln_structured(model[3], "weight", amount=3, n=2, dim=0)
    expected = [model[0].weight.data.copy(), model[3].weight.data.copy()]
    x = mc.randn(2, 1, 6, 6)
    before = model(x).data
    assert P.strip_pruning(model) is model
    assert not P.is_pruned(model)
    assert sorted(k for k, _ in model.named_parameters()) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    assert not any(k.endswith("_mask") for k in model.state_dict())
    np.testing.assert_array_equal(model[0].weight.data, expected[0])
    np.testing.assert_array_equal(model[3].weight.data, expected[1])
    np.testing.assert_array_equal(model(x).data, before)


def test_bad_arguments():
    model = small_model()
    schedule = P.ConstantSparsity(0.5, 0)
    with pytest.raises(ValueError, match="method"):
        P.GradualPruner(model, schedule, method="l2")
    with pytest.raises(TypeError, match="schedule"):
        P.GradualPruner(model, 0.5)
    with pytest.raises(ValueError, match="name='kernel'"):
        P.GradualPruner([(model[0], "kernel")], schedule)
    with pytest.raises(ValueError, match="sparsity"):
        P.GradualPruner(model, schedule).prune_to(1.5)


# ----- sensitivity analysis -------------------------------------------------------------------

def test_sensitivity_leaves_the_model_bit_identical_and_prints_a_table():
    model = small_model()
    P.l1_unstructured(model[3], "weight", amount=0.2)
    x = mc.randn(4, 1, 6, 6)
    state = {k: v.data.copy() for k, v in model.state_dict().items()}
    objects = {k: id(v) for k, v in list(model.named_parameters()) + list(model.named_buffers())}
    hooks = [list(m._forward_pre_hooks.items()) for m in model.modules()]
    before = model(x).data

    def evaluate(m):
        return float(np.abs(m(x).data).sum())

    result = P.sensitivity_analysis(model, evaluate, ratios=[0.0, 0.5, 0.9])
    assert list(result) == ["0", "3"] and list(result["0"]) == [0.0, 0.5, 0.9]
    assert result["0"][0.0] == result.baseline == evaluate(model)
    assert result["0"][0.9] != result.baseline
    assert list(model.state_dict()) == list(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.data, state[k])
    assert objects == {k: id(v) for k, v in list(model.named_parameters()) + list(model.named_buffers())}
    assert hooks == [list(m._forward_pre_hooks.items()) for m in model.modules()]
    assert model[3].weight_orig is model[3]._parameters["weight_orig"]
    np.testing.assert_array_equal(model(x).data, before)
    table = str(result)
    assert "baseline" in table and "90%" in table and len(table.splitlines()) == 5


def test_sensitivity_measures_one_layer_at_a_time():
    model = small_model()
    x = mc.randn(4, 1, 6, 6)
    seen = []
    P.sensitivity_analysis(model, lambda m: seen.append((P.is_pruned(m[0]), P.is_pruned(m[3]))) or 0.0,
                           ratios=[0.5], layers=["3"], method="ln_structured")
    assert seen == [(False, False), (False, True)]
    with pytest.raises(ValueError, match="'1'"):
        P.sensitivity_analysis(model, lambda m: 0.0, [0.5], layers=["1"])
    with pytest.raises(ValueError, match="ratios"):
        P.sensitivity_analysis(model, lambda m: 0.0, [1.5])

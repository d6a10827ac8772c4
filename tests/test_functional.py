"""minicompress.functional against torch.nn.functional: activations, softmax family, linear,
normalization and losses, forward and gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp
from hypothesis import strategies as st

import minicompress as mc
import minicompress.functional as F
from harness import check_op
from strategies import FLOATS, arrays, positive, shapes

ACTIVATIONS = {
    "relu": (F.relu, TF.relu),
    "relu6": (F.relu6, TF.relu6),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "elu": (lambda x: F.elu(x, 0.7), lambda x: TF.elu(x, 0.7)),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
    "hardtanh": (F.hardtanh, TF.hardtanh),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(data=st.data(), dtype=FLOATS)
def test_activations(name, data, dtype):
    x = data.draw(arrays(data.draw(shapes()), dtype, -8, 8))
    check_op(*ACTIVATIONS[name], [x])


@given(data=st.data(), dtype=FLOATS)
def test_softmax_and_log_softmax(data, dtype):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    x = data.draw(arrays(shape, dtype, -20, 20))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_op(lambda t: F.softmax(t, dim), lambda t: TF.softmax(t, dim), [x])
    check_op(lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim), [x])


@given(data=st.data(), bias=st.booleans(), dtype=FLOATS)
def test_linear(data, bias, dtype):
    n, i, o = (data.draw(st.integers(1, 6)) for _ in range(3))
    lead = data.draw(st.sampled_from([(n,), (2, n)]))
    inputs = [data.draw(arrays(lead + (i,), dtype)), data.draw(arrays((o, i), dtype))]
    if bias:
        inputs.append(data.draw(arrays((o,), dtype)))
    check_op(F.linear, TF.linear, inputs)


@given(data=st.data(), training=st.booleans(), dtype=FLOATS)
def test_batch_norm_forward_backward_and_running_stats(data, training, dtype):
    shape = data.draw(st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 4, 4)]))
    # A spread along the batch keeps each channel's variance away from 0: for a constant channel
    # (x - mean) is pure rounding noise amplified by 1/sqrt(eps) ~ 316, and no tolerance is honest.
    x = data.draw(arrays(shape, dtype)) + np.linspace(-1, 1, shape[0], dtype=dtype).reshape((-1,) + (1,) * (len(shape) - 1))
    c = shape[1]
    weight, bias = data.draw(arrays((c,), dtype, 0.5, 2)), data.draw(arrays((c,), dtype))
    mean0, var0 = data.draw(arrays((c,), dtype)), data.draw(positive((c,), dtype))
    rm, rv = mc.Tensor(mean0.copy()), mc.Tensor(var0.copy())
    trm, trv = torch.from_numpy(mean0.copy()), torch.from_numpy(var0.copy())
    # float32 batch statistics are sums of up to 32 terms: 1e-4 relative holds with margin.
    check_op(lambda a, w, b: F.batch_norm(a, rm, rv, w, b, training, 0.1, 1e-5),
             lambda a, w, b: TF.batch_norm(a, trm, trv, w, b, training, 0.1, 1e-5),
             [x, weight, bias], grad_atol=1e-4 if dtype == np.float32 else None)
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-6)


@given(data=st.data(), dtype=FLOATS)
def test_layer_norm(data, dtype):
    # spread within each normalized slice, for the reason given in the batch-norm test
    x = data.draw(arrays((3, 4, 5), dtype)) + np.linspace(-1, 1, 20, dtype=dtype).reshape(4, 5)
    w, b = data.draw(arrays((4, 5), dtype)), data.draw(arrays((4, 5), dtype))
    check_op(lambda a, ww, bb: F.layer_norm(a, (4, 5), ww, bb), lambda a, ww, bb: TF.layer_norm(a, (4, 5), ww, bb),
             [x, w, b], grad_atol=1e-4 if dtype == np.float32 else None)


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_and_nll(data, reduction, smoothing):
    n, c = data.draw(st.integers(1, 6)), data.draw(st.integers(2, 5))
    logits = data.draw(arrays((n, c), np.float64, -5, 5))
    target = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    t_mc, t_th = mc.tensor(target), torch.from_numpy(target)
    check_op(lambda x: F.cross_entropy(x, t_mc, reduction=reduction, label_smoothing=smoothing),
             lambda x: TF.cross_entropy(x, t_th, reduction=reduction, label_smoothing=smoothing), [logits])
    weight = np.linspace(0.5, 2.0, c)
    check_op(lambda x: F.nll_loss(x, t_mc, weight=mc.tensor(weight), reduction=reduction, ignore_index=0),
             lambda x: TF.nll_loss(x, t_th, weight=torch.from_numpy(weight), reduction=reduction, ignore_index=0),
             [logits]) if reduction != "mean" or (target != 0).any() else None


def test_cross_entropy_on_spatial_targets():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 3, 4, 5))
    target = rng.integers(0, 3, (2, 4, 5))
    check_op(lambda x: F.cross_entropy(x, mc.tensor(target)),
             lambda x: TF.cross_entropy(x, torch.from_numpy(target)), [logits])


@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none", "batchmean"]), log_target=st.booleans())
def test_kl_div(data, reduction, log_target):
    x = data.draw(arrays((3, 4), np.float64, -4, 0))
    t = data.draw(arrays((3, 4), np.float64, -4, 0) if log_target else arrays((3, 4), np.float64, 0.01, 1))
    fns = (lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
           lambda a, b: TF.kl_div(a, b, reduction=reduction, log_target=log_target))
    check_op(*fns, [x, t])
    if not log_target:  # zero targets contribute 0 (torch's xlogy); d/dtarget is infinite there, so not compared
        t[0] = 0.0
        check_op(*fns, [x, t], nondiff=(1,))


# Values where kl_div's pointwise formula is special: zero, negative, NaN and infinite targets or inputs.
SPECIAL = st.sampled_from([0.0, -0.0, 0.25, 1.0, 3.0, -0.5, -2.0, np.nan, np.inf, -np.inf])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), reduction=st.sampled_from(["mean", "sum", "none", "batchmean"]), log_target=st.booleans(),
       target_grad=st.booleans())
def test_kl_div_propagates_nan_as_torch(data, reduction, log_target, target_grad):
    """NaN, negative and zero targets (and NaN or infinite inputs): torch's xlogy(t, t) - t * x gives
    NaN for a negative or NaN target and 0 for a zero one; forward and both gradients must agree
    elementwise, NaN for NaN (assert_allclose compares NaN positions)."""
    x = data.draw(hnp.arrays(np.float64, (2, 3), elements=st.one_of(SPECIAL, st.floats(-4, 0))))
    t = data.draw(hnp.arrays(np.float64, (2, 3), elements=st.one_of(SPECIAL, st.floats(-4, 4))))
    with np.errstate(all="ignore"):
        check_op(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
                 lambda a, b: TF.kl_div(a, b, reduction=reduction, log_target=log_target),
                 [x, t], nondiff=() if target_grad else (1,))


def test_kl_div_nan_or_negative_target_gives_nan_in_distillation_loss():
    from minicompress.distill import distillation_loss

    s = mc.tensor(np.zeros((2, 3)))
    for bad in (np.nan, -0.5):
        target = np.full((2, 3), 1 / 3)
        target[1, 2] = bad
        assert np.isnan(F.kl_div(F.log_softmax(s, 1), mc.tensor(target), reduction="batchmean").item())
        assert np.isnan(TF.kl_div(torch.zeros(2, 3, dtype=torch.float64).log_softmax(1), torch.from_numpy(target),
                                  reduction="batchmean").item())
    teacher = mc.tensor(np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]]))
    assert np.isnan(distillation_loss(s, teacher, None).item())


@given(x=arrays((3, 4), np.float64), y=arrays((3, 4), np.float64), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss(x, y, reduction):
    check_op(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: TF.mse_loss(a, b, reduction=reduction), [x, y])


def test_dropout_keeps_expectation_and_masks_gradient():
    mc.manual_seed(0)
    x = mc.ones(1000, 100, requires_grad=True)
    y = F.dropout(x, p=0.3, training=True)
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y.data[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data != 0, kept)
    assert F.dropout(x, 0.3, training=False) is x


def test_bad_input_raises_with_argument_name():
    x = mc.randn(2, 3)
    with pytest.raises(ValueError, match="in_features"):
        F.linear(x, mc.randn(4, 5))
    with pytest.raises(ValueError, match="target"):
        F.cross_entropy(x, mc.tensor(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="class index"):
        F.cross_entropy(x, mc.tensor(np.array([0, 7])))
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(mc.randn(2, 3), mc.zeros(4), mc.ones(4))
    with pytest.raises(ValueError, match="dropout probability"):
        F.dropout(x, p=1.5)
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(x, x, reduction="avg")


# ----- mixed dtypes: torch refuses them in these ops instead of promoting ------------------------

def _mixed_dtype_calls(F, tensor):
    """{case: (argument the message must name, call)} for the ops torch refuses mixed dtypes in;
    `F` is either framework's functional module, `tensor(dtype, *shape)` makes an input for it."""
    d, f = np.float64, np.float32
    return {
        "linear input": ("weight", lambda: F.linear(tensor(d, 2, 3), tensor(f, 4, 3), tensor(f, 4))),
        "linear bias": ("bias", lambda: F.linear(tensor(f, 2, 3), tensor(f, 4, 3), tensor(d, 4))),
        "conv2d input": ("weight", lambda: F.conv2d(tensor(d, 1, 2, 4, 4), tensor(f, 3, 2, 3, 3))),
        "conv2d bias": ("bias", lambda: F.conv2d(tensor(f, 1, 2, 4, 4), tensor(f, 3, 2, 3, 3), tensor(d, 3))),
        "batch_norm": ("running_mean", lambda: F.batch_norm(tensor(d, 2, 3), tensor(f, 3), tensor(f, 3) * 0 + 1)),
        "layer_norm": ("weight", lambda: F.layer_norm(tensor(d, 2, 3), (3,), tensor(f, 3), tensor(f, 3))),
        "sdpa": ("key", lambda: F.scaled_dot_product_attention(tensor(d, 1, 2, 3), tensor(f, 1, 2, 3),
                                                              tensor(d, 1, 2, 3))),
        "matmul": ("dtype", lambda: tensor(d, 2, 3) @ tensor(f, 3, 2)),
        "cross_entropy weight": ("weight", lambda: F.cross_entropy(tensor(d, 2, 3), tensor(np.int64, 2) * 0,
                                                                  weight=tensor(f, 3))),
        "nll_loss weight": ("weight", lambda: F.nll_loss(tensor(d, 2, 3), tensor(np.int64, 2) * 0, weight=tensor(f, 3))),
    }


def _mc_tensor(dtype, *shape):
    return mc.tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))


def _torch_tensor(dtype, *shape):
    return torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("case", sorted(_mixed_dtype_calls(F, _mc_tensor)))
def test_mixed_dtypes_raise_as_torch(case):
    with pytest.raises(RuntimeError):
        _mixed_dtype_calls(TF, _torch_tensor)[case][1]()
    argument, call = _mixed_dtype_calls(F, _mc_tensor)[case]
    with pytest.raises(TypeError, match=argument):
        call()


def test_ops_torch_promotes_mixed_dtypes_in_still_promote():
    """Elementwise ops and the losses promote in torch (float32 with float64 gives float64): so here."""
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 0.5)
    for mc_fn, torch_fn in [(lambda x, y: x * y, lambda x, y: x * y),
                            (F.mse_loss, TF.mse_loss),
                            (lambda x, y: F.kl_div(x, y, reduction="sum"), lambda x, y: TF.kl_div(x, y, reduction="sum"))]:
        out, expected = mc_fn(mc.tensor(a), mc.tensor(b)), torch_fn(torch.from_numpy(a), torch.from_numpy(b))
        assert out.dtype == expected.numpy().dtype == np.float64
        np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-12)

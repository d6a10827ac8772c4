"""Data-free quantization (quant/dfq.py): cross-layer equalization, high-bias absorption, bias correction.

The oracles are torch: torch.nn.functional.conv2d computes the chains before and after rescaling (float64),
torch's observers and fake_quantize_per_tensor_affine give the quantized weights, and the clipped normal's
mean is checked against numerical integration. Nothing below is computed by the code under test."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn, quant
from minicompress.autograd import no_grad
from minicompress.quant import dfq
from minicompress.training import digits_loaders, fit

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _chain_reference(x, w1, b1, w2, b2, g1, g2, p1, p2, act):
    """conv2(act(conv1(x))) in torch float64: the function equalization must keep."""
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))
    h = TF.conv2d(t(x), t(w1), t(b1), padding=p1, groups=g1)
    h = {None: h, "relu": TF.relu(h), "relu6": TF.relu6(h)}[act]
    return TF.conv2d(h, t(w2), t(b2), padding=p2, groups=g2).numpy(), h.numpy()


def _conv(weight, bias, groups, padding):
    out, per_group, k = weight.shape[0], weight.shape[1], weight.shape[2]
    conv = nn.Conv2d(per_group * groups, out, k, padding=padding, groups=groups)
    conv.weight.data, conv.bias.data = weight.copy(), bias.copy()
    return conv


@st.composite
def conv_chains(draw):
    """conv1 (dense or depthwise) -> activation -> conv2 (dense or depthwise), float64 weights whose output
    channels have ranges spread over two decades (what makes per-tensor quantization lose precision)."""
    cin, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    g1 = c if draw(st.booleans()) and cin == c else 1
    g2 = c if draw(st.booleans()) else 1
    out = c if g2 == c else draw(st.integers(1, 5))
    k1, k2 = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    w1 = rng.standard_normal((c, cin // g1, k1, k1)) * 10.0 ** rng.uniform(-1, 1, (c, 1, 1, 1))
    w2 = rng.standard_normal((out, c // g2, k2, k2)) * 10.0 ** rng.uniform(-1, 1, (1, c // g2, 1, 1))
    b1, b2 = rng.standard_normal(c), rng.standard_normal(out)
    x = rng.standard_normal((2, cin, 5, 5))
    act = draw(st.sampled_from([None, "relu"]))
    return x, w1, b1, w2, b2, g1, g2, k1 // 2, k2 // 2, act


@settings(max_examples=40, deadline=None)
@given(conv_chains())
def test_equalize_pair_keeps_the_function_and_equalizes_the_ranges(chain):
    x, w1, b1, w2, b2, g1, g2, p1, p2, act = chain
    expected, _ = _chain_reference(x, w1, b1, w2, b2, g1, g2, p1, p2, act)
    first, second = _conv(w1, b1, g1, p1), _conv(w2, b2, g2, p2)
    s = dfq.equalize_pair(first, second, act)
    got, _ = _chain_reference(x, first.weight.data, first.bias.data, second.weight.data, second.bias.data,
                              g1, g2, p1, p2, act)
    # float64 throughout: w / s and w * s round once each (2**-53 relative), so the outputs agree to
    # rounding of sums of a few dozen products of O(10) terms
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-11 * (1 + np.abs(expected).max()))
    # the paper's optimum: the range of output channel c of W1 equals that of input channel c of W2
    r1 = torch.from_numpy(first.weight.data).abs().flatten(1).amax(1).numpy()
    w2t = torch.from_numpy(second.weight.data).abs()
    per_group = w2t.shape[1]
    r2 = torch.stack([w2t[(c // per_group) * (w2t.shape[0] // g2):(c // per_group + 1) * (w2t.shape[0] // g2),
                          c % per_group].amax() for c in range(r1.shape[0])]).numpy()
    live = (np.abs(w1).reshape(w1.shape[0], -1).max(1) > 0) & (r2 > 0)
    np.testing.assert_allclose(r1[live], r2[live], rtol=1e-12)
    assert s.shape == (w1.shape[0],) and (s > 0).all()


@settings(max_examples=25, deadline=None)
@given(conv_chains())
def test_relu6_channels_scale_only_within_reach_of_the_clamp(chain):
    x, w1, b1, w2, b2, g1, g2, p1, p2, _ = chain
    expected, h = _chain_reference(x, w1, b1, w2, b2, g1, g2, p1, p2, "relu6")
    pre = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w1), torch.from_numpy(b1), padding=p1, groups=g1)
    upper = pre.amax(dim=(0, 2, 3)).numpy()             # the pre-activation's bound on this input
    first, second = _conv(w1, b1, g1, p1), _conv(w2, b2, g2, p2)
    s = dfq.equalize_pair(first, second, "relu6", upper=upper)
    got, _ = _chain_reference(x, first.weight.data, first.bias.data, second.weight.data, second.bias.data,
                              g1, g2, p1, p2, "relu6")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-11 * (1 + np.abs(expected).max()))
    assert (s[upper >= 6] == 1).all()
    # without a bound a ReLU6 allows no scaling at all
    first, second = _conv(w1, b1, g1, p1), _conv(w2, b2, g2, p2)
    assert (dfq.equalize_pair(first, second, "relu6") == 1).all()


def _random_bn_classifier(seed):
    """The digits classifier with random weights and random batch-norm statistics, in eval mode."""
    mc.manual_seed(seed)
    model = nn.create_mobile_classifier().eval()
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.data = rng.normal(0, 0.3, c).astype(np.float32)
            m.running_var.data = rng.uniform(0.05, 4, c).astype(np.float32)
            m.weight.data = (rng.uniform(0.2, 2, c) * 10.0 ** rng.uniform(-1, 1, c)).astype(np.float32)
            m.bias.data = rng.normal(0.5, 1.0, c).astype(np.float32)
    return model


EXAMPLE = np.zeros((1, 1, 8, 8), np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_equalize_model_keeps_the_classifier_and_equalizes_every_pair(seed):
    model = _random_bn_classifier(seed)
    x = np.random.default_rng(seed).random((16, 1, 8, 8), dtype=np.float32)
    with no_grad():
        expected = model(mc.tensor(x)).data
    stats = dfq.fold_all_batch_norms(model, EXAMPLE)
    pairs = dfq.equalize(model, EXAMPLE, stats)
    # the residual blocks' pointwise convs feed an add and stay unscaled: five pairs, none across an add
    assert [(p.first, p.second) for p in pairs] == [
        ("stem.0", "blocks.0.conv.depthwise"), ("blocks.0.conv.depthwise", "blocks.0.conv.pointwise"),
        ("blocks.1.conv.depthwise", "blocks.1.conv.pointwise"), ("blocks.2.conv.depthwise", "blocks.2.conv.pointwise"),
        ("blocks.3.conv.depthwise", "blocks.3.conv.pointwise")]
    with no_grad():
        got = model(mc.tensor(x)).data
    # float32: each sweep rounds every rescaled weight (2**-24 relative) and the logits sum a few thousand
    # products through six layers, so they agree to ~1e-5 of their size, not to the last bit
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    for pair in pairs:
        w1 = torch.from_numpy(dfq._conv(model, pair.first).weight.data)
        second = dfq._conv(model, pair.second)
        w2 = torch.from_numpy(second.weight.data)
        r1 = w1.abs().flatten(1).amax(1)
        r2 = w2.abs().amax(dim=(0, 2, 3)) if second.groups == 1 else w2.abs().flatten(1).amax(1)
        np.testing.assert_allclose(r1.numpy(), r2.numpy(), rtol=1e-5)        # converged to tol=1e-6
    # absorption moves max(0, beta - 3 |gamma|) of the (rescaled) statistics and keeps the function but
    # where a pre-activation falls below that bound or a padded conv's border sees the shift
    before = copy.deepcopy(stats)
    absorbed = dfq.absorb_high_bias(model, pairs, stats)
    for name, c in absorbed.items():
        np.testing.assert_allclose(c, np.maximum(0, before[name].mean - 3 * before[name].std))
        np.testing.assert_allclose(stats[name].mean, before[name].mean - c)


def test_absorption_is_exact_through_a_relu_into_a_pointwise_conv():
    rng = np.random.default_rng(3)
    w1, b1 = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4) + 6
    w2, b2 = rng.standard_normal((3, 4, 1, 1)), rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 6, 6)) * 0.1            # pre-activations stay near b1, far above c
    expected, _ = _chain_reference(x, w1, b1, w2, b2, 1, 1, 1, 0, "relu")
    first, second = _conv(w1, b1, 1, 1), _conv(w2, b2, 1, 0)
    model = nn.Sequential(first, nn.ReLU(), second)
    stats = {"0": dfq.PreActivation(np.full(4, 6.0), np.full(4, 1.0))}
    absorbed = dfq.absorb_high_bias(model, [dfq.EqualizationPair("0", "relu", "2")], stats)
    np.testing.assert_allclose(absorbed["0"], np.full(4, 3.0))
    got, _ = _chain_reference(x, first.weight.data, first.bias.data, second.weight.data, second.bias.data,
                              1, 1, 1, 0, "relu")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("low,high", [(0.0, math.inf), (0.0, 6.0)])
def test_clipped_normal_mean_matches_numerical_integration(low, high):
    mean = np.array([-3.0, -0.5, 0.0, 0.7, 2.0, 5.5, 8.0])
    std = np.array([1.0, 0.3, 2.0, 1.5, 0.1, 1.0, 3.0])
    z = torch.linspace(-60, 60, 2_000_001, dtype=torch.float64)
    expected = []
    for mu, sigma in zip(mean, std):
        density = torch.distributions.Normal(float(mu), float(sigma)).log_prob(z).exp()
        expected.append(torch.trapezoid(z.clamp(low, high) * density, z).item())
    np.testing.assert_allclose(dfq.clipped_normal_mean(mean, std, low, high), expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dfq.clipped_normal_mean([-1.0, 2.0, 7.0], [0, 0, 0], low, high),
                               np.clip([-1.0, 2.0, 7.0], low, high))


def _per_tensor_4bit_torch(weight):
    """W~ by torch: its MinMaxObserver (per-tensor symmetric, [-7, 7]) and fake_quantize_per_tensor_affine.
    The narrow range [-7, 7] keeps every level inside it: `convert`, like torch's, saturates weights to the
    dtype (qint8), not to the observer's range, so with [-8, 7] the largest weight (at 7.5 scales) would
    round to level 8."""
    import torch.ao.quantization as tq
    w = torch.from_numpy(np.asarray(weight, np.float32))
    obs = tq.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-7, quant_max=7)
    obs(w)
    scale, zp = obs.calculate_qparams()
    return torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), -7, 7).numpy().astype(np.float64)


FOUR_BIT = quant.QConfig(activation=quant.MinMaxObserver,
                         weight=quant.MinMaxObserver.with_args(dtype=quant.qint8, qscheme=quant.per_tensor_symmetric,
                                                               quant_min=-7, quant_max=7))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.sampled_from([1, 3]), st.booleans(), st.integers(0, 2**31 - 1))
def test_empirical_bias_correction_zeroes_the_mean_output_error(cin, out, k, depthwise, seed):
    rng = np.random.default_rng(seed)
    groups = cin if depthwise else 1
    out = cin if depthwise else out
    conv = nn.Conv2d(cin, out, k, padding=k // 2, groups=groups)
    conv.weight.data = rng.standard_normal(conv.weight.shape).astype(np.float32)
    conv.bias.data = rng.standard_normal(out).astype(np.float32)
    batches = [np.abs(rng.standard_normal((4, cin, 6, 6))).astype(np.float32) + 0.5 for _ in range(3)]
    w, b = conv.weight.data.astype(np.float64), conv.bias.data.astype(np.float64)
    w_q = _per_tensor_4bit_torch(conv.weight.data)
    model = nn.Sequential(conv)
    dfq.correct_bias(model, FOUR_BIT, data=batches)
    x = torch.from_numpy(np.concatenate(batches).astype(np.float64))
    float_out = TF.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=k // 2, groups=groups)
    quant_out = TF.conv2d(x, torch.from_numpy(w_q), torch.from_numpy(conv.bias.data.astype(np.float64)),
                          padding=k // 2, groups=groups)
    error = (quant_out - float_out).mean(dim=(0, 2, 3)).numpy()
    # the correction is a float32 bias: the mean error is zero up to its rounding (2**-24 of |b|)
    np.testing.assert_allclose(error, 0, atol=1e-6 * (1 + np.abs(b).max()))


def test_analytic_bias_correction_matches_the_empirical_one_on_normal_pre_activations():
    """conv1 (1x1, bias only: its output is exactly N(beta, gamma^2) when its input is) -> relu -> a 1x1
    conv: the analytic correction eps E[relu(z)] equals the empirical one up to sampling error."""
    rng = np.random.default_rng(0)
    c, out = 5, 4
    beta, gamma = rng.normal(0.3, 1, c), rng.uniform(0.3, 2, c)
    first = nn.Conv2d(c, c, 1, groups=c)
    first.weight.data = gamma.reshape(c, 1, 1, 1).astype(np.float32)
    first.bias.data = beta.astype(np.float32)
    second = nn.Conv2d(c, out, 1)
    second.weight.data = rng.standard_normal((out, c, 1, 1)).astype(np.float32)
    second.bias.data = np.zeros(out, np.float32)
    model = nn.Sequential(first, nn.ReLU(), second).eval()
    example = np.zeros((1, c, 4, 4), np.float32)
    stats = {"0": dfq.PreActivation(beta, gamma)}
    analytic = dfq.correct_bias(copy.deepcopy(model), FOUR_BIT, stats=stats, example_inputs=example)
    data = [rng.standard_normal((64, c, 16, 16)).astype(np.float32) for _ in range(4)]   # 65536 samples
    empirical = dfq.correct_bias(copy.deepcopy(model), FOUR_BIT, data=data)
    eps = _per_tensor_4bit_torch(second.weight.data) - second.weight.data
    # E[eps x] sampled from 65536 draws: standard error <= |eps| sigma / 256; 5 of those
    bound = 5 * np.abs(eps).reshape(out, c).sum(1) * gamma.max() / 256
    assert set(analytic) == {"2"}
    np.testing.assert_array_less(np.abs(analytic["2"] - empirical["2"]), bound)


def test_correct_bias_needs_data_or_statistics():
    with pytest.raises(ValueError, match="data"):
        dfq.correct_bias(nn.Sequential(nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="example_inputs"):
        dfq.correct_bias(nn.Sequential(nn.Conv2d(1, 1, 1)), stats={})
    with pytest.raises(ValueError, match="fold_all_batch_norms"):
        dfq.equalize(_random_bn_classifier(0), EXAMPLE)
    with pytest.raises(ValueError, match="max_iter"):
        dfq.equalize(nn.Sequential(nn.Conv2d(1, 1, 1)), EXAMPLE, max_iter=0)
    first, second = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)
    first.weight.data[0] = np.nan
    before = second.weight.data.copy()
    with pytest.raises(ValueError, match="finite weights"):
        dfq.equalize_pair(first, second)
    np.testing.assert_array_equal(second.weight.data, before)          # refused before any change


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_trained_digits_equalization_keeps_the_logits_and_never_lowers_the_pairs_precision(seed):
    """A briefly trained classifier (2 epochs: equalization's invariants hold for any weights). Per pair,
    the paper's objective sum_c (r1_c / R1)(r2_c / R2) (per-tensor precision of both layers) is maximal
    after equalization, so it can only grow; the float model's logits do not change."""
    mc.manual_seed(seed)
    train_loader, test_loader = digits_loaders(batch_size=128, seed=seed)
    model = nn.create_mobile_classifier()
    fit(model, train_loader, epochs=2, lr=1e-2)
    model.eval()
    x = next(iter(test_loader))[0]
    with no_grad():
        expected = model(x).data
    folded = copy.deepcopy(model)
    stats = dfq.fold_all_batch_norms(folded, EXAMPLE)
    equalized = copy.deepcopy(folded)
    pairs = dfq.equalize(equalized, EXAMPLE, dict(stats))
    with no_grad():
        got = equalized(x).data
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())   # as above

    def objective(m, pair):
        w1 = torch.from_numpy(dfq._conv(m, pair.first).weight.data).abs()
        second = dfq._conv(m, pair.second)
        w2 = torch.from_numpy(second.weight.data).abs()
        r1 = w1.flatten(1).amax(1)
        r2 = w2.amax(dim=(0, 2, 3)) if second.groups == 1 else w2.flatten(1).amax(1)
        return float((r1 / r1.max() * r2 / r2.max()).sum())

    for pair in pairs:
        assert objective(equalized, pair) >= objective(folded, pair) * (1 - 1e-6)

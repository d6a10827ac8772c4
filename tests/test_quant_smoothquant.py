"""Per-token dynamic quantization (kernels.pertoken, quant.dynamic_per_token) and SmoothQuant
(quant.smoothquant) against torch.

The oracle for the per-token layer is torch doing the same arithmetic: its decomposed
`choose_qparams_per_token_asymmetric` / `quantize_per_token` for the codes, an int64 matmul, and the
dequantization in float64. The smoothing is checked against torch computing the unsmoothed layers. The
whole MiniLM encoder is in test_models_sentence_encoder.py (it shares that file's loaded model).
"""
import numpy as np
import pytest
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn
from minicompress.kernels import qgemm
from minicompress.kernels.pertoken import (dequantize_per_token, dequantize_per_token_reference, quantize_per_token,
                                           quantize_per_token_reference)
from minicompress.nn.module import Module
from minicompress.quant.dynamic_per_token import (PerTokenDynamicQuantizedLinear, linear_dynamic_per_token,
                                                  linear_dynamic_per_token_reference)
from minicompress.quant.dynamic_quantize import quantize_dynamic
from minicompress.nn import SmoothedLinear
from minicompress.quant.smoothquant import get_act_scales, smooth_ln_fcs, smooth_quant, smoothing_factors
from strategies import arrays

EPS32 = 2.0 ** -24     # float32's unit roundoff


@st.composite
def activations(draw, max_rows=9, max_depth=40):
    """(x (M, K) float32 with a few outlier channels, inv_smooth (K,) float32 or None)."""
    rows, depth = draw(st.integers(1, max_rows)), draw(st.integers(1, max_depth))
    x = draw(arrays((rows, depth), low=-4.0, high=4.0))
    gain = draw(arrays((depth,), low=0.01, high=30.0))                  # per-channel magnitudes, as LLM activations
    x = (x * gain).astype(np.float32)
    if draw(st.booleans()):
        x[draw(st.integers(0, rows - 1))] = 0.0                         # an all-zero row (scale at its floor)
    inv = draw(st.none() | arrays((depth,), low=0.05, high=8.0))
    return x, inv


def torch_quantize_per_token(x, inv_smooth):
    """torch's decomposed per-token ops on x / s: (int8 codes, float64 scales, int64 zero points)."""
    v = torch.from_numpy(x) if inv_smooth is None else torch.from_numpy(x) * torch.from_numpy(inv_smooth)
    scales, zps = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric(v, torch.int8)
    codes = torch.ops.quantized_decomposed.quantize_per_token(v, scales, zps, -128, 127, torch.int8)
    return codes.numpy(), scales.numpy().ravel(), zps.numpy().ravel()


@settings(max_examples=60, deadline=None)
@given(activations())
def test_quantize_per_token_kernel_equals_twin_equals_torch(case):
    x, inv = case
    got, twin = quantize_per_token(x, inv), quantize_per_token_reference(x, inv)
    for a, b in zip(got, twin):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    codes, scales, zps = torch_quantize_per_token(x, inv)
    # uint8 codes and zero points are torch's int8 ones + 128 (an exact integer shift); scales float32 in both
    assert np.array_equal(got[0].astype(np.int64) - 128, codes)
    assert np.array_equal(got[1], scales.astype(np.float32))
    assert np.array_equal(got[2].astype(np.int64) - 128, zps)


def test_quantize_per_token_marks_rows_with_nan_or_inf():
    x = np.ones((4, 9), np.float32)
    x[1, 3], x[2, 0], x[3, 8] = np.nan, np.inf, -np.inf
    for result in (quantize_per_token(x), quantize_per_token_reference(x)):
        assert np.isfinite(result[1][0]) and not np.isfinite(result[1][1:]).any()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 9), st.data())
def test_dequantize_per_token_kernel_equals_twin(rows, cols, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    acc0 = rng.integers(-2 ** 24, 2 ** 24, (rows, cols)).astype(np.int32)
    x_scales = rng.uniform(1e-4, 1.0, rows).astype(np.float32)
    x_zps = rng.integers(0, 256, rows).astype(np.int32)
    colsums = rng.integers(-100000, 100000, cols).astype(np.int64)
    w_scales = rng.uniform(1e-4, 1e-1, cols).astype(np.float32)
    for bias in (None, rng.standard_normal(cols).astype(np.float32)):
        assert np.array_equal(dequantize_per_token(acc0, x_scales, x_zps, colsums, w_scales, bias),
                              dequantize_per_token_reference(acc0, x_scales, x_zps, colsums, w_scales, bias))


def _quantized_linear(rng, in_features, out_features, bias=True):
    linear = nn.Linear(in_features, out_features, bias=bias)
    linear.weight.data[...] = rng.standard_normal((out_features, in_features)).astype(np.float32) * 0.2
    return linear, PerTokenDynamicQuantizedLinear.from_float(linear)


@pytest.mark.parametrize("route", qgemm.supported_routes())
@settings(max_examples=25, deadline=None)
@given(activations(max_rows=11, max_depth=70), st.integers(1, 70), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_linear_per_token_equals_reference_and_torch(route, case, out_features, bias, seed):
    x, inv = case
    previous = qgemm.set_route(route)
    try:
        _, layer = _quantized_linear(np.random.default_rng(seed), x.shape[1], out_features, bias)
        weight, b = layer.weight(), layer.bias()
        got = linear_dynamic_per_token(x, weight, b, inv)
    finally:
        qgemm.set_route(previous)
    assert got.dtype == np.float32 and got.shape == (x.shape[0], out_features)
    assert np.array_equal(got, linear_dynamic_per_token_reference(x, weight, b, inv))

    # torch: the same codes, then (xq - zx) @ (wq - zw)^T in int64 and the scaling in float64
    codes, x_scales, x_zps = torch_quantize_per_token(x, inv)
    wq = torch.from_numpy(weight.int_repr().astype(np.int64))
    w_scales = torch.from_numpy(weight.q_per_channel_scales().astype(np.float64))
    acc = (torch.from_numpy(codes.astype(np.int64)) - torch.from_numpy(x_zps)[:, None]) @ wq.T
    scaled = acc.double() * torch.from_numpy(x_scales)[:, None] * w_scales[None, :]
    expected = (scaled if b is None else scaled + torch.from_numpy(b.astype(np.float64))).numpy()
    # ours rounds float32(acc), float32(x_scale * w_scale), their product and the bias sum: each at most half
    # an ulp, i.e. EPS32 relative, of the product (three roundings) or of the result (one)
    bound = 3 * EPS32 * np.abs(scaled.numpy()) + EPS32 * np.abs(expected) + 1e-30
    assert (np.abs(got - expected) <= bound).all()


def test_per_token_module_errors_and_smoothed_from_float():
    rng = np.random.default_rng(0)
    linear, layer = _quantized_linear(rng, 6, 4)
    with pytest.raises(TypeError, match="float32"):
        layer(mc.tensor(np.zeros((2, 6))))
    with pytest.raises(ValueError, match=r"shape \(\*, 6\)"):
        layer(mc.zeros(2, 5))
    x = np.zeros((2, 6), np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer(mc.tensor(x))
    with pytest.raises(TypeError, match="nn.Linear"):
        PerTokenDynamicQuantizedLinear.from_float(nn.ReLU())
    smoothed = SmoothedLinear.from_linear(linear, rng.uniform(0.5, 2.0, 6))
    qsmoothed = PerTokenDynamicQuantizedLinear.from_float(smoothed)
    np.testing.assert_array_equal(qsmoothed.smooth_scales.data, smoothed.smooth_scales.data)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    expected = linear_dynamic_per_token_reference(x, qsmoothed.weight(), qsmoothed.bias(),
                                                  np.float32(1) / smoothed.smooth_scales.data)
    np.testing.assert_array_equal(qsmoothed(mc.tensor(x)).data, expected)
    with pytest.raises(ValueError, match="per_token=True"):
        quantize_dynamic(nn.Sequential(smoothed), {nn.Linear})
    with pytest.raises(TypeError, match="per_token must be a bool"):
        quantize_dynamic(nn.Sequential(linear), per_token="yes")


class PreNormBlock(Module):
    """LayerNorm feeding two Linears and nothing else (a pre-norm block, where smooth_ln_fcs is exact)."""

    def __init__(self, features):
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(features), nn.Linear(features, 5), nn.Linear(features, 3)

    def forward(self, x):
        h = self.ln(x)
        return mc.cat([self.fc1(h), self.fc2(h)], dim=-1)


def _torch_block(block):
    """The block in torch float64, from its (unsmoothed) parameters."""
    p = {k: torch.from_numpy(v.data.astype(np.float64)) for k, v in block.state_dict().items()}

    def run(x):
        h = torch.nn.functional.layer_norm(torch.from_numpy(x).double(), p["ln.weight"].shape, p["ln.weight"],
                                           p["ln.bias"], block.ln.eps)
        return torch.cat([h @ p["fc1.weight"].T + p["fc1.bias"], h @ p["fc2.weight"].T + p["fc2.bias"]], -1).numpy()
    return run


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 24), st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]), st.integers(0, 2 ** 32 - 1))
def test_smooth_ln_fcs_keeps_the_float_outputs(features, alpha, seed):
    rng = np.random.default_rng(seed)
    block = PreNormBlock(features)
    block.ln.weight.data[...] = rng.uniform(0.2, 3.0, features)
    block.ln.bias.data[...] = rng.standard_normal(features)
    x = (rng.standard_normal((2, 7, features)) * rng.uniform(0.1, 20, features)).astype(np.float32)
    expected = _torch_block(block)(x)
    act_scales = get_act_scales(block, lambda m: m(mc.tensor(x)))
    # the reference implementation's formula, in torch
    act = torch.from_numpy(act_scales["fc1"].astype(np.float64))
    w = torch.stack([torch.from_numpy(np.abs(fc.weight.data).max(0).astype(np.float64))
                     for fc in (block.fc1, block.fc2)])
    reference_s = (act.pow(alpha) / w.max(0)[0].clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5).numpy()
    s = smooth_ln_fcs(block.ln, [block.fc1, block.fc2], act_scales["fc1"], alpha)
    np.testing.assert_allclose(s, reference_s, rtol=4 * EPS32)          # float64 formula, rounded to float32 once
    with mc.no_grad():
        got = block(mc.tensor(x)).data
    # float32 throughout: LayerNorm's normalised value (|z| <= sqrt(features)) times gamma / s, then W diag(s):
    # a few roundings of each of `features` products, against torch's float64 of the unsmoothed block
    scale = np.abs(expected).max() + np.abs(block.fc1.bias.data).max() + 1
    assert np.abs(got - expected).max() <= 64 * features * EPS32 * scale


def test_smoothed_linear_and_factors_check_their_arguments():
    linear = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        SmoothedLinear.from_linear(linear, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="alpha must be a number in"):
        smoothing_factors(np.ones(3), [linear], alpha=1.5)
    with pytest.raises(ValueError, match="act_scales has shape"):
        smoothing_factors(np.ones(4), [linear])
    for alpha in (-0.1, 1.5, float("nan"), True):        # refused before the copy and the calibration run

        def calibrate(model):
            raise AssertionError("smooth_quant calibrated despite a bad alpha")
        with pytest.raises(ValueError, match="alpha must be a number in"):
            smooth_quant(linear, calibrate, alpha)
    with pytest.raises(ValueError, match="ran no Linear"):
        get_act_scales(linear, lambda m: None)
    with pytest.raises(TypeError, match="ln must be a LayerNorm"):
        smooth_ln_fcs(linear, [linear], np.ones(3))


def test_smoothed_and_per_token_models_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    model = nn.Sequential(SmoothedLinear.from_linear(nn.Linear(4, 3), rng.uniform(0.5, 2.0, 4)), nn.ReLU(),
                          nn.Linear(3, 2))
    quantized = quantize_dynamic(model, {nn.Linear}, per_token=True)
    assert [type(m) for m in quantized] == [PerTokenDynamicQuantizedLinear, nn.ReLU, PerTokenDynamicQuantizedLinear]
    x = mc.tensor(rng.standard_normal((5, 4)).astype(np.float32))
    for m, name in ((model, "float.mc"), (quantized, "int8.mc")):
        mc.save(m, tmp_path / name)
        np.testing.assert_array_equal(mc.load(tmp_path / name)(x).data, m(x).data)


@settings(max_examples=30, deadline=None)
@given(activations(max_rows=6, max_depth=30), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_smoothed_linear_computes_the_unsmoothed_linear(case, out_features, seed):
    x, _ = case
    rng = np.random.default_rng(seed)
    linear = nn.Linear(x.shape[1], out_features)
    scales = rng.uniform(0.05, 20.0, x.shape[1]).astype(np.float32)
    smoothed = SmoothedLinear.from_linear(linear, scales)
    np.testing.assert_array_equal(smoothed.weight.data, linear.weight.data * scales)
    with mc.no_grad():
        got = smoothed(mc.tensor(x)).data
    w, b = (torch.from_numpy(p.data.astype(np.float64)) for p in (linear.weight, linear.bias))
    products = torch.from_numpy(x.astype(np.float64)).abs() @ w.abs().T          # sum_k |x_k w_k|
    expected = (torch.from_numpy(x.astype(np.float64)) @ w.T + b).numpy()
    # x / s and W s each round once (EPS32 relative), then float32 sums of K products: K + 3 roundings of
    # at most sum_k |x_k w_k|, plus the bias sum
    bound = (x.shape[1] + 3) * EPS32 * products.numpy() + EPS32 * np.abs(expected) + 1e-30
    assert (np.abs(got - expected) <= bound).all()

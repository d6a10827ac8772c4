"""full_range_dynamic_qconfig: per-channel int8 weights and inputs quantized to all 8 bits, against an
oracle composed from torch's own quantization functions (torch's x86 linear_dynamic cannot be the oracle:
its AVX2 path saturates int16 pair sums with 8-bit inputs, which is why torch keeps them to 7 bits)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn, quant
from minicompress.quant import dtypes as qd
from minicompress.quant.dynamic import DynamicQuantizedLinear
from minicompress.quant.dynamic_quantize import quantize_dynamic

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation of quantize_per_tensor


def torch_full_range_linear(x, weight, bias):
    """y = (xq - x_zp)(wq)^T * x_scale * w_scale + b, each piece from torch; the integer sum in float64 (exact)."""
    x_scale, x_zp = torch._choose_qparams_per_tensor(torch.from_numpy(x), False)
    xq = torch.quantize_per_tensor(torch.from_numpy(x), x_scale, x_zp, torch.quint8).int_repr().numpy()
    observer = torch.ao.quantization.PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    w = torch.from_numpy(weight)
    observer(w)
    scales, zps = observer.calculate_qparams()
    wq = torch.quantize_per_channel(w, scales, zps, 0, torch.qint8).int_repr().numpy()
    acc = (xq.astype(np.float64) - x_zp) @ wq.astype(np.float64).T
    scale = (np.float32(x_scale) * scales.numpy().astype(np.float32)).astype(np.float64)
    return acc * scale + bias, xq, wq


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 24), st.integers(1, 6), st.integers(0, 2**16))
def test_full_range_linear_matches_torch_composed_oracle(in_features, out_features, batch, seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(in_features, out_features))
    x = (rng.standard_normal((batch, in_features)) * rng.uniform(0.1, 10)).astype(np.float32)
    qmodel = quantize_dynamic(model, {nn.Linear: quant.full_range_dynamic_qconfig}, dtype=qd.qint8)
    layer = qmodel[0]
    assert isinstance(layer, DynamicQuantizedLinear) and layer.reduce_range is False
    assert layer.weight().is_per_channel()
    expected, _, wq = torch_full_range_linear(x, model[0].weight.data, model[0].bias.data.astype(np.float64))
    np.testing.assert_array_equal(layer.weight().int_repr(), wq)
    got = qmodel(mc.tensor(x)).data
    # one float32 rounding of the scaled sum (fma) against float64: a few ulp of the largest output
    np.testing.assert_allclose(got, expected, rtol=0, atol=4e-7 * max(1.0, np.abs(expected).max()))


def test_full_range_halves_the_input_rounding_error():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(64, 32))
    x = mc.tensor(rng.standard_normal((16, 64)).astype(np.float32))
    with mc.no_grad():
        reference = model(x).data
    errors = {}
    for name, qconfig in (("torch", quant.per_channel_dynamic_qconfig), ("full", quant.full_range_dynamic_qconfig)):
        qmodel = quantize_dynamic(model, {nn.Linear: qconfig}, dtype=qd.qint8)
        errors[name] = np.abs(qmodel(x).data - reference).mean()
    assert errors["full"] < 0.75 * errors["torch"]  # ratio 0.49-0.61 over seeds 0-19 (the input error halves)


def test_default_qconfigs_keep_seven_bit_inputs():
    for qconfig in (quant.default_dynamic_qconfig, quant.per_channel_dynamic_qconfig):
        qmodel = quantize_dynamic(nn.Sequential(nn.Linear(4, 3)), {nn.Linear: qconfig}, dtype=qd.qint8)
        assert qmodel[0].reduce_range is True
    with pytest.raises(TypeError, match="reduce_range must be None, True or False"):
        quant.PlaceholderObserver(dtype=qd.quint8, reduce_range="no")

"""AdaRound (quant/adaround.py): its rectified sigmoid and regulariser against torch (forward and gradient),
the beta schedule's golden values, and what the learned rounding guarantees: every weight rounded up or
down (never further), the layer's output error no larger than round-to-nearest's, and a converted model
that keeps the learned levels. The oracles are torch: its autograd for the formulas, its observers and
fake quantization for round-to-nearest, its conv for the output error."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn, quant
from minicompress.quant.adaround import annealed_beta, rectified_sigmoid, round_layer, rounding_regularizer
from minicompress.quant import modules as nnq

from harness import check_op

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _rectified_sigmoid_torch(v):
    """The paper's h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1), zeta = 1.1, gamma = -0.1."""
    return torch.clamp(torch.sigmoid(v) * 1.2 - 0.1, 0, 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.sampled_from([np.float32, np.float64]))
def test_rectified_sigmoid_matches_torch(n, seed, dtype):
    v = (np.random.default_rng(seed).standard_normal(n) * 4).astype(dtype)   # reaches both clamped ends
    check_op(rectified_sigmoid, _rectified_sigmoid_torch, [v])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.floats(2.0, 20.0), st.integers(0, 2**31 - 1))
def test_rounding_regularizer_matches_torch(n, beta, seed):
    h = np.random.default_rng(seed).uniform(0.01, 0.99, n)
    check_op(lambda t: rounding_regularizer(t, beta), lambda t: (1 - (2 * t - 1).abs() ** beta).sum(), [h])


def test_beta_schedule_golden_values():
    # no regulariser in the first 20 % of 1000 iterations; then 20 -> 2 on a half cosine: at its middle
    # (iteration 600) 2 + 9 (1 + cos(pi / 2)) = 11
    assert annealed_beta(0, 1000) is None and annealed_beta(199, 1000) is None
    assert annealed_beta(200, 1000) == pytest.approx(20.0)
    assert annealed_beta(600, 1000) == pytest.approx(11.0)
    assert annealed_beta(1000, 1000) == pytest.approx(2.0)


FOUR_BIT_PER_TENSOR = quant.MinMaxObserver.with_args(dtype=quant.qint8, qscheme=quant.per_tensor_symmetric,
                                                     quant_min=-7, quant_max=7)


def _torch_grid(weight):
    """(scale, round-to-nearest weight) by torch's MinMaxObserver and fake quantization, [-7, 7]."""
    import torch.ao.quantization as tq
    w = torch.from_numpy(weight)
    obs = tq.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-7, quant_max=7)
    obs(w)
    scale, zp = obs.calculate_qparams()
    return float(scale), torch.fake_quantize_per_tensor_affine(w, float(scale), int(zp), -7, 7)


@pytest.mark.parametrize("seed", range(4))
def test_round_layer_rounds_up_or_down_and_beats_round_to_nearest(seed):
    """A 3x3 conv, 4-bit per-tensor weights, 512 input samples: AdaRound's output error (what it
    minimises) is below round-to-nearest's on the same samples, and each level is floor or ceil of W / s."""
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    conv.weight.data = rng.standard_normal(conv.weight.shape).astype(np.float32)
    conv.bias.data = rng.standard_normal(8).astype(np.float32)
    x = np.abs(rng.standard_normal((512, 6, 5, 5))).astype(np.float32)
    xt, wt, bt = torch.from_numpy(x), torch.from_numpy(conv.weight.data), torch.from_numpy(conv.bias.data)
    target = TF.relu(TF.conv2d(xt, wt, bt, padding=1))
    levels, _, _ = round_layer(conv, x, target.numpy(), FOUR_BIT_PER_TENSOR, activation=True, iterations=300)
    scale, nearest = _torch_grid(conv.weight.data)
    ratio = conv.weight.data.astype(np.float64) / scale
    assert ((levels == np.floor(ratio)) | (levels == np.ceil(ratio))).all()
    assert (np.abs(levels) <= 7).all()

    def error(w):
        return float(((TF.relu(TF.conv2d(xt, w, bt, padding=1)) - target) ** 2).sum(1).mean())

    learned = torch.from_numpy((levels * scale).astype(np.float32))
    assert error(learned) < error(nearest)


def _small_model():
    mc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(),
                         nn.Linear(256, 3)).eval()


def test_converted_model_keeps_the_learned_levels():
    model = quant.fuse_modules(_small_model(), [["0", "1"]])
    data = [np.random.default_rng(i).random((32, 1, 8, 8), dtype=np.float32) for i in range(2)]
    qconfig = quant.QConfig(activation=quant.HistogramObserver.with_args(reduce_range=False),
                            weight=FOUR_BIT_PER_TENSOR)
    levels = quant.adaround(model, data, qconfig, iterations=50)
    assert list(levels) == ["0.0", "2", "4"]                    # forward order, the conv inside ConvReLU2d
    converted = quant.quantize_static(model, data, qconfig)
    for name, layer in (("0.0", converted[0]), ("2", converted[2]), ("4", converted[4])):
        assert isinstance(layer, (nnq.Conv2d, nnq.Linear))
        np.testing.assert_array_equal(layer.weight().int_repr(), levels[name])


def test_adaround_rejects_bad_arguments_before_work():
    model = _small_model()
    for kwargs, name in ((dict(iterations=0), "iterations"), (dict(beta_range=(2, 20)), "beta_range"),
                         (dict(warm_start=1.0), "warm_start"), (dict(batch_size=0), "batch_size")):
        with pytest.raises(ValueError, match=name):
            quant.adaround(copy.deepcopy(model), [np.zeros((1, 1, 8, 8), np.float32)], **kwargs)
    with pytest.raises(ValueError, match="data"):
        quant.adaround(model, [])
    with pytest.raises(ValueError, match="BatchNorm2d"):
        quant.adaround(nn.create_mobile_classifier().eval(), [np.zeros((1, 1, 8, 8), np.float32)])


class _SharedHead(nn.Module):
    """One 3x3 conv applied to two feature-map sizes, as a detector's head is applied to its pyramid levels."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.head(x).flatten(1).sum(1) + self.head(self.pool(x)).flatten(1).sum(1)


@pytest.mark.parametrize("seed", range(3))
def test_a_layer_called_on_two_input_sizes_is_rounded_on_both(seed):
    """The shared conv sees 8x8 and 4x4 inputs: AdaRound takes both (it used to refuse to concatenate
    them), rounds each weight up or down, and its output error summed over both calls (torch's conv) is
    below round-to-nearest's. The inputs are non-negative (as after a ReLU), so their patches are
    correlated: on independent zero-mean inputs the output error is just |W~ - W|^2, which
    round-to-nearest already minimises."""
    rng = np.random.default_rng(seed)
    model = _SharedHead().eval()
    model.head.weight.data = rng.standard_normal(model.head.weight.shape).astype(np.float32)
    data = [np.abs(rng.standard_normal((64, 3, 8, 8))).astype(np.float32) for _ in range(2)]
    w, b = torch.from_numpy(model.head.weight.data.copy()), torch.from_numpy(model.head.bias.data.copy())
    qconfig = quant.QConfig(activation=quant.HistogramObserver.with_args(reduce_range=False),
                            weight=FOUR_BIT_PER_TENSOR)
    levels = quant.adaround(model, data, qconfig, iterations=300)["head"]
    scale, nearest = _torch_grid(w.numpy())
    ratio = w.numpy().astype(np.float64) / scale
    assert ((levels == np.floor(ratio)) | (levels == np.ceil(ratio))).all()
    np.testing.assert_array_equal(model.head.weight.data, (levels * scale).astype(np.float32))

    x = torch.from_numpy(np.concatenate(data))
    inputs = (x, TF.max_pool2d(x, 2))

    def error(weight):
        return sum(float(((TF.conv2d(xi, weight, b, padding=1) - TF.conv2d(xi, w, b, padding=1)) ** 2).sum())
                   for xi in inputs)

    assert error(torch.from_numpy(model.head.weight.data)) < error(nearest)


def test_round_layer_refuses_inputs_and_targets_that_do_not_pair_up():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x, t = np.zeros((4, 2, 5, 5), np.float32), np.zeros((4, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="same length"):
        round_layer(conv, [x, x], [t], FOUR_BIT_PER_TENSOR, iterations=1)
    with pytest.raises(ValueError, match=r"inputs\[0\] has 4 samples but targets\[0\] has 3"):
        round_layer(conv, x, t[:3], FOUR_BIT_PER_TENSOR, iterations=1)

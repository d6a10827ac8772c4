"""The one-pass evaluation batch norm (kernels/norm.py): kernel == NumPy twin bit for bit (same arithmetic,
same order), twin == torch's batch_norm (+ relu) in evaluation mode; the BatchNorm op without grad takes
the kernel and gives the bits of its autograd path; the MobileNet blocks' in-place conv -> bn -> relu gives
the bits of the layers run one by one, and steps aside for hooks, fused layers, training and grad."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn
from minicompress.kernels import norm as K
from minicompress.ops.norm import BatchNorm
from strategies import FLOATS

# torch folds the four per-channel operands into a scale and a shift before the pass (one rounding
# fewer or more per element than x_hat * w + b): a few units in the last place of either dtype.
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def problem(shape, dtype, seed, with_nan=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if with_nan:
        x.flat[rng.integers(x.size)] = np.nan
    channels = shape[1]
    mean, weight, bias = (rng.standard_normal(channels).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 2.0, channels).astype(dtype)
    return x, mean, var, weight, bias


SHAPES = st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple)


@settings(max_examples=30, deadline=None)
@given(SHAPES, FLOATS, st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_kernel_equals_twin_bit_for_bit_and_twin_matches_torch(shape, dtype, relu, with_nan, seed):
    x, mean, var, weight, bias = problem(shape, dtype, seed, with_nan)
    inv_std = (1.0 / np.sqrt(var + 1e-5)).astype(dtype)
    out = K.batch_norm_inference(x, mean, inv_std, weight, bias, relu)
    reference = K.batch_norm_inference_reference(x, mean, inv_std, weight, bias, relu)
    assert out.dtype == x.dtype and out.shape == x.shape
    np.testing.assert_array_equal(out, reference)
    expected = TF.batch_norm(*(torch.from_numpy(a) for a in (x, mean, var, weight, bias)), training=False, eps=1e-5)
    expected = (TF.relu(expected) if relu else expected).numpy()
    np.testing.assert_allclose(reference, expected, **TOLERANCE[dtype])     # NaN where torch has NaN


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_writes_in_place_when_given_its_input(dtype):
    x, mean, var, weight, bias = problem((2, 3, 4, 5), dtype, 0)
    inv_std = (1.0 / np.sqrt(var + 1e-5)).astype(dtype)
    expected = K.batch_norm_inference_reference(x, mean, inv_std, weight, bias, True)
    assert K.batch_norm_inference(x, mean, inv_std, weight, bias, True, out=x) is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5)])
def test_batchnorm_op_without_grad_gives_the_bits_of_its_autograd_path(shape, affine):
    x, mean, var, weight, bias = problem(shape, np.float32, 1)
    weight, bias = (weight, bias) if affine else (None, None)
    with mc.no_grad():
        fast = BatchNorm.apply(mc.tensor(x), mean, var, weight if weight is None else mc.tensor(weight), bias)
    slow = BatchNorm.apply(mc.tensor(x, requires_grad=True), mean, var, weight, bias)
    np.testing.assert_array_equal(fast.data, slow.data)


def _random_classifier(seed=0):
    rng = np.random.default_rng(seed)
    model = nn.create_mobile_classifier(num_classes=5, in_channels=2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for buffer in (m.running_mean, m.weight, m.bias):
                buffer.data[...] = rng.standard_normal(m.num_features)
            m.running_var.data[...] = rng.uniform(0.2, 2.0, m.num_features)
    return model.eval()


def _layer_by_layer(model, x):
    """The classifier's forward with every conv, bn and relu called on its own (the unfused arithmetic)."""
    def triple(conv, bn, relu, h):
        return relu(bn(conv(h)))
    h = triple(*model.stem, model.quant(x))
    for block in model.blocks:
        c = block.conv
        out = triple(c.pointwise, c.bn2, c.relu2, triple(c.depthwise, c.bn1, c.relu1, h))
        h = block.skip_add(out, h) if block.use_residual else out
    return model.dequant(model.classifier(model.dropout(model.flatten(model.pool(h)))))


def test_fused_conv_bn_relu_gives_the_bits_of_the_layers_one_by_one():
    model = _random_classifier()
    x = mc.tensor(np.random.default_rng(1).standard_normal((3, 2, 9, 9)).astype(np.float32))
    x_before = x.data.copy()
    with mc.no_grad():
        fused = model(x).data
        one_by_one = _layer_by_layer(model, x).data
    np.testing.assert_array_equal(fused, one_by_one)
    np.testing.assert_array_equal(x.data, x_before)              # the input is never written


def test_in_place_path_steps_aside_for_hooks_grad_and_training():
    model = _random_classifier()
    x = mc.tensor(np.random.default_rng(2).standard_normal((2, 2, 8, 8)).astype(np.float32))
    seen = []
    handle = model.blocks[0].conv.bn1.register_forward_hook(lambda m, args, out: seen.append(out.data.copy()))
    with mc.no_grad():
        out = model(x).data
    handle.remove()
    assert len(seen) == 1                                        # the hooked bn ran as a layer
    hooked_conv = model.stem[0].register_forward_hook(lambda m, args, out: seen.append(out))
    with mc.no_grad():
        model(x)
    stem_out = seen[-1]
    hooked_conv.remove()
    assert np.array_equal(stem_out.data, model.stem[0](x).data)  # the conv output a hook kept is not overwritten
    with_grad = model(x)                                         # grad enabled: the autograd layers
    np.testing.assert_array_equal(with_grad.data, out)
    model.train()
    with mc.no_grad():
        trained = model(x).data                                   # batch statistics: not the eval formula
    assert not np.array_equal(trained, out)

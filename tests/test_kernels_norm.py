"""The one-pass evaluation batch norm (kernels/norm.py): kernel == NumPy twin bit for bit (same arithmetic,
same order), twin == torch's batch_norm (+ relu) in evaluation mode; the BatchNorm op without grad takes
the kernel and gives the bits of its autograd path; the MobileNet blocks' in-place conv -> bn -> relu gives
the bits of the layers run one by one, and steps aside for hooks, fused layers, training and grad.

The training-mode kernels (batch statistics, forward and backward): kernel == twin to the order of their float64
sums, twin == torch's batch_norm(training=True) forward and autograd gradients, the op's running statistics
and nn.BatchNorm2d in train mode == torch's, and the op's NumPy path (non-contiguous input) agrees."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.functional as F
from minicompress import nn
from minicompress.kernels import norm as K
from minicompress.ops.norm import BatchNorm
import harness
from harness import check_op
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


# ----- training mode ---------------------------------------------------------------------------------------

# Kernel and twin sum in float64 in different orders (sequential per channel; NumPy's pairwise reductions), so a
# statistic may round the other way in the last place of x's dtype; x_hat carries that, scaled by inv_std
# (at most ~1 here: the spread below keeps every channel's variance near 1 or above).
ORDER_TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}
# Against torch: harness.TOLERANCE for values; the float32 gradients subtract per-channel means of sums
# of up to 125 terms from g_hat (torch in float32, we in float64), so 1e-4 absolute, as test_functional.
GRAD_ATOL = {np.float64: 1e-12, np.float32: 1e-4}


@st.composite
def training_shapes(draw):
    """(N, C, ...) with at least 2 values per channel: N = 1 with a spatial size, C = 1, and 2-D (N, C) included."""
    shape = draw(st.sampled_from([(1, 1, 3), (1, 3, 2, 2), (5, 1), (2, 1, 1, 1)]) | SHAPES)
    return shape if shape[0] * int(np.prod(shape[2:])) > 1 else (shape[0] + 1,) + shape[1:]


def training_problem(shape, dtype, seed, with_nan=False):
    """x with a spread of [-1, 1] along each channel's N * K values (a constant channel's x - mean is rounding
    noise amplified by 1 / sqrt(eps) ~ 316, against which no tolerance is honest), weight, bias, upstream g."""
    x, _, _, weight, bias = problem(shape, dtype, seed, with_nan)
    count = shape[0] * int(np.prod(shape[2:]))
    spread = np.linspace(-1, 1, count).reshape((shape[0], 1) + shape[2:])
    rng = np.random.default_rng(seed + 1)
    return (x + spread).astype(dtype), weight, bias, rng.standard_normal(shape).astype(dtype)


def torch_training(x, weight, bias, g, running_mean=None, running_var=None, momentum=0.1):
    """torch's training-mode batch_norm on copies: (out, dx, dweight, dbias)."""
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, weight, bias))
    out = TF.batch_norm(tx, running_mean, running_var, tw, tb, training=True, momentum=momentum, eps=1e-5)
    out.backward(torch.from_numpy(g))
    return out.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


@settings(max_examples=40, deadline=None)
@given(training_shapes(), FLOATS, st.booleans(), st.integers(0, 2**32 - 2))
def test_training_kernels_equal_their_twins_and_twins_match_torch(shape, dtype, with_nan, seed):
    x, weight, bias, g = training_problem(shape, dtype, seed, with_nan)
    forward = K.batch_norm_training(x, weight, bias, 1e-5)
    forward_twin = K.batch_norm_training_reference(x, weight, bias, 1e-5)
    backward = K.batch_norm_training_backward(g, forward[1], forward[4], weight)
    backward_twin = K.batch_norm_training_backward_reference(g, forward_twin[1], forward_twin[4], weight)
    for name, a, b in zip(("out", "x_hat", "mean", "var", "inv_std", "dx", "dweight", "dbias"),
                          forward + backward, forward_twin + backward_twin):
        assert a.dtype == x.dtype and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, **ORDER_TOLERANCE[dtype], err_msg=name)      # NaN where the twin has NaN
    expected = torch_training(x, weight, bias, g)
    np.testing.assert_allclose(forward_twin[0], expected[0], **harness.TOLERANCE[dtype], err_msg="out")
    for name, a, b in zip(("dx", "dweight", "dbias"), backward_twin, expected[1:]):
        np.testing.assert_allclose(a, b, rtol=harness.TOLERANCE[dtype]["rtol"], atol=GRAD_ATOL[dtype], err_msg=name)


@settings(max_examples=30, deadline=None)
@given(training_shapes(), FLOATS, st.booleans(), st.booleans(), st.integers(0, 2**32 - 2))
def test_batch_norm_training_matches_torch_with_running_stats(shape, dtype, affine, with_nan, seed):
    x, weight, bias, _ = training_problem(shape, dtype, seed, with_nan)
    mean0, var0 = np.linspace(-1, 1, shape[1], dtype=dtype), np.linspace(0.5, 2, shape[1], dtype=dtype)
    rm, rv = mc.tensor(mean0.copy()), mc.tensor(var0.copy())
    trm, trv = torch.from_numpy(mean0.copy()), torch.from_numpy(var0.copy())
    if affine:
        check_op(lambda a, w, b: F.batch_norm(a, rm, rv, w, b, True, 0.3, 1e-5),
                 lambda a, w, b: TF.batch_norm(a, trm, trv, w, b, True, 0.3, 1e-5),
                 [x, weight, bias], grad_atol=GRAD_ATOL[dtype], seed=seed)
    else:
        check_op(lambda a: F.batch_norm(a, rm, rv, None, None, True, 0.3, 1e-5),
                 lambda a: TF.batch_norm(a, trm, trv, None, None, True, 0.3, 1e-5),
                 [x], grad_atol=GRAD_ATOL[dtype], seed=seed)
    # running_var takes the unbiased variance (count / (count - 1)); NaN in a channel reaches its buffers
    np.testing.assert_allclose(rm.numpy(), trm.numpy(), **harness.TOLERANCE[dtype])
    np.testing.assert_allclose(rv.numpy(), trv.numpy(), **harness.TOLERANCE[dtype])


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm2d_in_train_mode_matches_torch_over_steps(dtype, affine, momentum):
    ours, theirs = nn.BatchNorm2d(3, momentum=momentum, affine=affine), torch.nn.BatchNorm2d(3, momentum=momentum,
                                                                                                affine=affine)
    theirs = theirs.to(torch.float64) if dtype == np.float64 else theirs
    if dtype == np.float64:
        for t in list(ours.parameters()) + [ours.running_mean, ours.running_var]:
            t.data = t.data.astype(np.float64)
    if affine:
        weight, bias = np.linspace(0.5, 2, 3, dtype=dtype), np.linspace(-1, 1, 3, dtype=dtype)
        ours.weight.data[...], ours.bias.data[...] = weight, bias
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(weight))
            theirs.bias.copy_(torch.from_numpy(bias))
    for step in range(3):
        x, _, _, g = training_problem((4, 3, 5, 6), dtype, step)
        mx, tx = mc.tensor(x, requires_grad=True), torch.from_numpy(x.copy()).requires_grad_()
        out, expected = ours(mx), theirs(tx)
        out.backward(g)
        expected.backward(torch.from_numpy(g))
        tol = harness.TOLERANCE[dtype]
        np.testing.assert_allclose(out.data, expected.detach().numpy(), **tol, err_msg="out")
        np.testing.assert_allclose(mx.grad.data, tx.grad.numpy(), rtol=tol["rtol"], atol=GRAD_ATOL[dtype])
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name).data, getattr(theirs, name).numpy(), **tol, err_msg=name)
        assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == step + 1
    if affine:   # gradients accumulated over the three steps
        for name in ("weight", "bias"):
            np.testing.assert_allclose(getattr(ours, name).grad.data, getattr(theirs, name).grad.numpy(),
                                       rtol=tol["rtol"], atol=GRAD_ATOL[dtype], err_msg=name)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5)])
def test_training_op_takes_the_kernels_and_agrees_with_its_numpy_path(shape):
    """Without grad the forward keeps no x_hat and gives the same bits; a non-contiguous x takes the NumPy
    expressions (float32 reductions, another order), which agree to the order tolerance."""
    x, weight, bias, g = training_problem(shape, np.float32, 3)
    def running():
        return [np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)]
    fast_running, kernel_running = running(), running()
    with mc.no_grad():
        fast = BatchNorm.apply(mc.tensor(x), *fast_running, weight, bias, training=True)
    kernel_x = mc.tensor(x, requires_grad=True)
    kernel_out = BatchNorm.apply(kernel_x, *kernel_running, weight, bias, training=True)
    np.testing.assert_array_equal(fast.data, kernel_out.data)
    for a, b in zip(fast_running, kernel_running):
        np.testing.assert_array_equal(a, b)
    numpy_x = mc.tensor(np.asfortranarray(x), requires_grad=True)
    assert not numpy_x.data.flags.c_contiguous
    numpy_out = BatchNorm.apply(numpy_x, None, None, weight, bias, training=True)
    np.testing.assert_allclose(numpy_out.data, kernel_out.data, **ORDER_TOLERANCE[np.float32])
    kernel_out.backward(g)
    numpy_out.backward(g)
    np.testing.assert_allclose(numpy_x.grad.data, kernel_x.grad.data, rtol=1e-5, atol=1e-5)

"""nn/fused.py: conv -> BatchNorm -> ReLU / ReLU6 as one conv kernel in inference. quant.fuse's ConvReLU2d,
ConvBn2d and ConvBnReLU2d take it under no_grad: the bits of their layers one by one, torch's result within
rounding; with grad, in training mode, or with a hook they run their layers (and gradients still flow);
a pruning pre-hook on the conv still recomputes its weight."""
import numpy as np
import pytest
import torch

import minicompress as mc
from minicompress import nn, prune, quant
from minicompress.nn.fused import fused_conv_forward


def layers(seed, groups=1, bias=True):
    mc.manual_seed(seed)
    conv = nn.Conv2d(4, 8 if groups == 1 else 4, 3, 1, 1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(conv.out_channels)
    rng = np.random.default_rng(seed)
    bn.running_mean.data[:] = rng.normal(0, 0.5, bn.num_features)
    bn.running_var.data[:] = rng.uniform(0.5, 2.0, bn.num_features)
    bn.weight.data[:] = rng.uniform(0.5, 1.5, bn.num_features)
    bn.bias.data[:] = rng.normal(0, 0.5, bn.num_features)
    return conv, bn.eval()


def one_by_one(mods, x):
    for m in mods:
        x = m(x)
    return x.data


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("kind", ["ConvReLU2d", "ConvBn2d", "ConvBnReLU2d", "ConvBnReLU6"])
def test_fused_modules_give_the_bits_of_their_layers_and_torchs_result(kind, groups):
    conv, bn = layers(0, groups)
    mods = {"ConvReLU2d": (conv, nn.ReLU()), "ConvBn2d": (conv, bn), "ConvBnReLU2d": (conv, bn, nn.ReLU()),
            "ConvBnReLU6": (conv, bn, nn.ReLU6())}[kind]
    module = getattr(quant, kind)(*mods).eval() if kind != "ConvBnReLU6" else None
    x = mc.tensor(np.random.default_rng(1).standard_normal((2, 4, 9, 11)).astype(np.float32) * 3)
    with mc.no_grad():
        expected = one_by_one(mods, x)
        fused = (module(x) if module is not None else
                 fused_conv_forward(conv, bn, mods[2], x)).data
    np.testing.assert_array_equal(fused, expected)
    t = torch.nn.functional.conv2d(torch.from_numpy(x.data), torch.from_numpy(conv.weight.data),
                                   torch.from_numpy(conv.bias.data), 1, 1, 1, groups)
    if bn in mods:
        t = torch.nn.functional.batch_norm(t, *(torch.from_numpy(a.data) for a in (bn.running_mean, bn.running_var,
                                                                                  bn.weight, bn.bias)), eps=bn.eps)
    if len(mods) == 3 or kind == "ConvReLU2d":
        t = torch.clamp(t, 0, 6 if kind == "ConvBnReLU6" else None)
    # torch folds the batch norm into a scale and shift: a few float32 ulps of values of size ~10
    np.testing.assert_allclose(fused, t.numpy(), rtol=1e-5, atol=1e-5)


def test_grad_training_and_hooks_run_the_layers():
    conv, bn = layers(2)
    module = quant.ConvBnReLU2d(conv, bn, nn.ReLU()).eval()
    x = mc.tensor(np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32))
    out = module(x)                                          # grad enabled: autograd layers
    out.sum().backward()
    assert conv.weight.grad is not None and bn.weight.grad is not None
    with mc.no_grad():
        assert fused_conv_forward(conv, bn.train(), nn.ReLU(), x) is None      # batch statistics
        bn.eval()
        seen = []
        handle = conv.register_forward_hook(lambda m, args, out: seen.append(out))
        assert fused_conv_forward(conv, bn, nn.ReLU(), x) is None
        module(x)
        handle.remove()
    assert len(seen) == 1


def test_a_pruning_pre_hook_still_applies_its_mask():
    conv, bn = layers(4)
    prune.l1_unstructured(conv, "weight", amount=0.5)
    x = mc.tensor(np.random.default_rng(5).standard_normal((1, 4, 7, 7)).astype(np.float32))
    with mc.no_grad():
        expected = one_by_one((conv, bn, nn.ReLU()), x)
        conv.weight_mask.data[:] = 0                         # the pre-hook must recompute weight from this
        fused = fused_conv_forward(conv, bn, nn.ReLU(), x).data
        zero = one_by_one((conv, bn, nn.ReLU()), x)
    assert not np.array_equal(fused, expected)
    np.testing.assert_array_equal(fused, zero)

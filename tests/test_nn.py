"""nn.Module behaviour and layers against torch.nn: state_dict keys, loading torch weights,
hooks, train/eval, and the MobileNet-style classifier end to end."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minicompress as mc
from minicompress import functional as F, nn
from torch_twins import MobileClassifier as TorchMobileClassifier
from torch_twins import load_into


def _randomize_bn_stats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_mobile_classifier_state_dict_keys_equal_torch():
    ours, theirs = nn.create_mobile_classifier(10, 1), TorchMobileClassifier(10, 1)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert ours.state_dict()[key].shape == tuple(value.shape), key


@pytest.mark.parametrize("training", [False, True])
def test_mobile_classifier_with_torch_weights_matches_torch(training):
    torch.manual_seed(0)
    theirs = TorchMobileClassifier(10, 1)
    _randomize_bn_stats(theirs)
    ours = load_into(nn.create_mobile_classifier(10, 1), theirs)
    ours.train(training)
    theirs.train(training)
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    xm, xt = mc.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_m, out_t = ours(xm), theirs(xt)
    # float32 through ~10 layers with batch statistics: relative 1e-4 is the measured envelope x3
    np.testing.assert_allclose(out_m.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    g = np.random.default_rng(1).standard_normal(out_m.shape).astype(np.float32)
    out_m.backward(g)
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xm.grad.data, xt.grad.numpy(), rtol=1e-3, atol=1e-5)
    named_t = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, named_t[name].grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)
    if training:  # running statistics moved the same way
        for name, b in ours.named_buffers():
            np.testing.assert_allclose(b.data, dict(theirs.named_buffers())[name].numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)


def test_module_registration_traversal_and_repr():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight"]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "2"]
    assert len(list(model.children())) == 3
    text = repr(model)
    assert "(0): Linear(in_features=4, out_features=3, bias=True)" in text and "(1): ReLU()" in text
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    model.eval()
    assert not any(m.training for m in model.modules())


def test_hooks_run_and_are_removable():
    layer = nn.Linear(2, 2)
    seen = []
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    post = layer.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    x = mc.ones(1, 2)
    doubled = layer(x)
    np.testing.assert_allclose(doubled.data, layer.weight.data.sum(1)[None] * 2 + layer.bias.data, rtol=1e-6)
    assert seen == [(1, 2)]
    pre.remove()
    post.remove()
    layer(x)
    assert seen == [(1, 2)] and not layer._forward_hooks and not layer._forward_pre_hooks


def test_load_state_dict_strict_reports_missing_and_mismatched():
    model = nn.Linear(3, 2)
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="size mismatch"):
        model.load_state_dict({"weight": np.zeros((3, 3)), "bias": np.zeros(2)})
    missing, unexpected = model.load_state_dict({"weight": np.ones((2, 3))}, strict=False)
    assert missing == ["bias"] and unexpected == []
    assert (model.weight.data == 1).all()


@given(num_heads=st.sampled_from([1, 2, 4]), n=st.integers(1, 6), seed=st.integers(0, 100))
def test_efficient_attention_matches_torch_composition(num_heads, n, seed):
    dim = 8
    torch.manual_seed(seed)
    layer = nn.EfficientAttention(dim, num_heads, qkv_bias=True)
    qkv, proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
    layer.load_state_dict({"qkv.weight": qkv.weight.detach().numpy(), "qkv.bias": qkv.bias.detach().numpy(),
                           "proj.weight": proj.weight.detach().numpy(), "proj.bias": proj.bias.detach().numpy()})
    x = np.random.default_rng(seed).standard_normal((2, n, dim)).astype(np.float32)
    q, k, v = qkv(torch.from_numpy(x)).reshape(2, n, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    expected = proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, n, dim))
    np.testing.assert_allclose(layer(mc.tensor(x)).data, expected.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        nn.EfficientAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="BatchNorm2d expects input"):
        nn.BatchNorm2d(3)(mc.randn(2, 3))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)


@pytest.mark.parametrize("channels, groups", [(1, 1), (4, 4), (4, 2)])
@pytest.mark.parametrize("grad", [True, False])
def test_conv_names_the_input_channels_it_expects(channels, groups, grad):
    """A 3-channel input to a conv of another in_channels is refused, as torch refuses it, in the user's
    terms: the input's channels and the layer's (with and without grad: the fused inference route)."""
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(channels, 4, 3, groups=groups)(torch.from_numpy(x))
    layer = nn.Conv2d(channels, 4, 3, groups=groups)
    with mc.enable_grad() if grad else mc.no_grad():
        with pytest.raises(ValueError, match=f"the input has 3 channels; the convolution expects {channels} "):
            layer(mc.tensor(x))
        with pytest.raises(ValueError, match=f"the input has 3 channels; the convolution expects {channels} "):
            F.conv2d_fused_inference(mc.tensor(x), layer.weight, layer.bias, groups=groups)


@pytest.mark.parametrize("make, shape", [(lambda: nn.Linear(3, 4), (2, 3)), (lambda: nn.Conv2d(2, 3, 3), (1, 2, 5, 5)),
                                         (lambda: nn.BatchNorm2d(2).eval(), (1, 2, 3, 3)),
                                         (lambda: nn.LayerNorm(3), (2, 3))])
def test_float32_layers_refuse_float64_input_as_torch(make, shape):
    """torch raises on a float64 input to float32 weights rather than promoting; so do these, naming
    the argument."""
    x = np.random.default_rng(0).standard_normal(shape)
    twin = {nn.Linear: lambda: torch.nn.Linear(3, 4), nn.Conv2d: lambda: torch.nn.Conv2d(2, 3, 3),
            nn.BatchNorm2d: lambda: torch.nn.BatchNorm2d(2).eval(), nn.LayerNorm: lambda: torch.nn.LayerNorm(3)}
    layer = make()
    with pytest.raises(RuntimeError):
        twin[type(layer)]()(torch.from_numpy(x))
    with pytest.raises(TypeError, match="weight|running_mean"):
        layer(mc.tensor(x))
    assert layer(mc.tensor(x.astype(np.float32))).dtype == np.float32

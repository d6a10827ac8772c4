"""shrink, sparse inference and the sparsity report.

shrink: channel-pruned models become smaller dense models whose outputs equal the masked model's (eval mode), on the mobile classifier with 30% L2 channel pruning of every non-depthwise conv, on a
plain MLP, with residual additions, and a clear error where the forward cannot be followed.
The reference is the masked model itself, run by the reparametrization (weight_orig * weight_mask)."""
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.nn as nn
import minicompress.prune as P
from minicompress.training import parameter_count


def channel_pruned_classifier(amount, seed):
    mc.manual_seed(seed)
    model = nn.create_mobile_classifier()
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            P.ln_structured(module, "weight", amount=amount, n=2, dim=0)
    # a few training-mode passes give BatchNorm non-trivial running statistics
    model.train()
    for _ in range(2):
        model(mc.randn(16, 1, 8, 8))
    return model.eval()


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 1000))
def test_shrunk_mobile_classifier_equals_the_masked_model(seed):
    masked = channel_pruned_classifier(0.3, seed)
    x = mc.randn(4, 1, 8, 8)
    expected = masked(x).data
    shrunk = P.shrink(masked)
    np.testing.assert_allclose(shrunk.eval()(x).data, expected, rtol=1e-4, atol=1e-5)
    # residual additions keep every channel either branch needs, so 30% pruning removes less than 30%
    # of the parameters: 8-22% measured over seeds
    assert parameter_count(shrunk) < 0.95 * parameter_count(masked)
    assert not P.is_pruned(shrunk) and P.is_pruned(masked)
    assert shrunk.stem[0].out_channels == shrunk.stem[1].num_features == 11  # 16 - round(0.3 * 16)
    assert shrunk.blocks[0].conv.depthwise.groups == 11
    # block 1 adds its input to its output: the channels both residual branches pruned go, others stay
    kept = shrunk.blocks[1].conv.pointwise.out_channels
    assert kept == shrunk.blocks[0].conv.pointwise.out_channels == shrunk.blocks[1].conv.depthwise.in_channels
    assert shrunk.classifier.in_features == shrunk.blocks[3].conv.pointwise.out_channels


def test_shrunk_mlp_equals_the_masked_model_and_keeps_the_output_width():
    mc.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    for layer in (model[0], model[2], model[4]):
        P.ln_structured(layer, "weight", amount=0.5, n=1, dim=0)
    x = mc.randn(5, 6)
    shrunk = P.shrink(model, example_input=x)
    np.testing.assert_allclose(shrunk(x).data, model(x).data, rtol=1e-4, atol=1e-5)
    # the pruned hidden channels go (their biases fold into the next layer); the output layer keeps its width
    assert shrunk[4].out_features == 3
    assert (shrunk[0].out_features, shrunk[2].out_features) == (6, 4)
    layer = nn.Linear(4, 6)
    layer.bias.data[...] = 0
    P.ln_structured(layer, "weight", amount=3, n=2, dim=0)
    assert P.shrink(nn.Sequential(layer, nn.ReLU(), nn.Linear(6, 2)))[0].out_features == 3


class OperatorInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.second(self.first(x) * 2)


def test_a_tensor_computed_outside_a_module_is_named_in_the_error():
    model = OperatorInForward()
    P.ln_structured(model.first, "weight", amount=2, n=2, dim=0)
    with pytest.raises(ValueError, match="'second'.*outside a module"):
        P.shrink(model)
    with pytest.raises(TypeError, match="model must be"):
        P.shrink("model")


def test_batchnorm_constants_of_removed_channels_are_reported():
    masked = channel_pruned_classifier(0.3, 0)
    masked.stem[1].bias.data[...] = 0.5  # spread unevenly by the padded depthwise conv that follows
    with pytest.warns(UserWarning, match="blocks.0.conv.pointwise"):
        P.shrink(masked)


# ----- sparse inference and the sparsity report -----------------------------------------------

def globally_pruned_classifier(amount):
    mc.manual_seed(3)
    model = nn.create_mobile_classifier().eval()
    P.global_unstructured(P.prunable_parameters(model), pruning_method=P.L1Unstructured, amount=amount)
    return model


def test_sparse_layers_match_torch_on_the_same_pruned_weights():
    import torch
    import torch.nn.functional as TF
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32) * (rng.random((6, 5)) > 0.7)
    b = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    layer = P.SparseLinear(w, b)
    assert layer.nnz == np.count_nonzero(w)
    np.testing.assert_allclose(layer(mc.tensor(x)).data, TF.linear(*map(torch.from_numpy, (x, w, b))).numpy(),
                               rtol=1e-4, atol=1e-5)
    wc = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * (rng.random((4, 3, 3, 3)) > 0.8)
    xc = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    conv = P.SparseConv2d(wc, None, stride=2, padding=1)
    expected = TF.conv2d(torch.from_numpy(xc), torch.from_numpy(wc), stride=2, padding=1).numpy()
    np.testing.assert_allclose(conv(mc.tensor(xc)).data, expected, rtol=1e-4, atol=1e-5)


def test_to_sparse_converts_the_sparse_layers_only_and_keeps_outputs(tmp_path):
    from minicompress.io import load, save
    model = globally_pruned_classifier(0.8)
    x = mc.randn(3, 1, 8, 8)
    expected = model(x).data
    converted = P.to_sparse(model, min_sparsity=0.6)
    assert P.is_pruned(model)  # the original is untouched
    kinds = {name: type(m).__name__ for name, m in converted.named_modules()}
    report = P.sparsity_report(model)
    for row in report.layers:
        if row.kind == "Conv2d" and "depthwise" not in row.name or row.kind == "Linear":
            assert kinds[row.name].startswith("Sparse") == (row.sparsity >= 0.6)
    np.testing.assert_allclose(converted(x).data, expected, rtol=1e-4, atol=1e-5)
    save(converted, tmp_path / "sparse.npz")
    np.testing.assert_allclose(load(tmp_path / "sparse.npz")(x).data, expected, rtol=1e-4, atol=1e-5)


def test_sparsity_report_counts_zeros_and_bytes():
    model = globally_pruned_classifier(0.5)
    report = P.sparsity_report(model)
    weights = [m.weight.data for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert report.entries == sum(w.size for w in weights)
    assert report.zeros == round(0.5 * report.entries)
    assert report.dense_bytes == 4 * report.entries
    row = report.layers[-1]
    assert (row.name, row.shape) == ("classifier", (10, 64))
    nnz = row.entries - row.zeros
    assert row.csr_bytes == 8 * nnz + 4 * 11
    text = str(report)
    assert "classifier" in text and "total" in text and f"{report.parameters:,}" in text
    sparse_report = P.sparsity_report(P.to_sparse(model, 0.0))
    assert sparse_report.zeros == report.zeros and sparse_report.csr_bytes == report.csr_bytes


def random_batchnorm(bn, rng):
    n = bn.num_features
    bn.weight.data[...] = rng.uniform(0.5, 1.5, n)
    bn.bias.data[...] = rng.uniform(-0.5, 0.5, n)
    bn.running_mean.data[...] = rng.uniform(-0.5, 0.5, n)
    bn.running_var.data[...] = rng.uniform(0.5, 1.5, n)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_batchnorm_constants_of_removed_channels_fold_into_the_next_bias(kind):
    rng = np.random.default_rng(0)
    mc.manual_seed(0)
    if kind == "linear":
        model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
        x = mc.randn(4, 5)
    else:
        model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        x = mc.randn(2, 2, 6, 6)
        random_batchnorm(model[4], rng)
    random_batchnorm(model[1], rng)
    P.ln_structured(model[0], "weight", amount=3, n=2, dim=0)
    if kind == "conv":
        P.ln_structured(model[3], "weight", amount=2, n=2, dim=0)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = P.shrink(model, example_input=x)
    assert shrunk[1].num_features == 5
    np.testing.assert_allclose(shrunk(x).data, model(x).data, rtol=1e-4, atol=1e-5)


# ----- pruned channels that keep a nonzero conv bias (ln_structured on the weight only) -----------

def biased_conv_model(consumer_padding):
    """conv (with bias) -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> Linear, channels of the first conv
    pruned by `ln_structured` on its weight alone, so each pruned channel is the constant bias[c]."""
    rng = np.random.default_rng(0)
    mc.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=consumer_padding), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[0].bias.data[...] = rng.uniform(-1.0, 1.0, 8)  # both signs: some survive the ReLU, some do not
    random_batchnorm(model[1], rng)
    random_batchnorm(model[4], rng)
    P.ln_structured(model[0], "weight", amount=3, n=2, dim=0)
    return model.eval()


def test_pruned_channels_with_a_conv_bias_are_removed_and_folded_exactly():
    """An unpadded consumer sees each removed channel's constant (bias through BN and ReLU) uniformly,
    so it folds into the consumer's bias and the outputs equal the masked model's. float32 tolerance:
    the folded bias adds the same terms as the masked conv, in another order."""
    model = biased_conv_model(consumer_padding=0)
    x = mc.randn(3, 2, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = P.shrink(model, example_input=x)
    assert shrunk[0].out_channels == shrunk[1].num_features == shrunk[3].in_channels == 5
    assert shrunk[0].bias.shape == (5,)
    assert parameter_count(shrunk) < parameter_count(model)
    np.testing.assert_allclose(shrunk(x).data, model(x).data, rtol=1e-4, atol=1e-5)


def test_pruned_channels_with_a_conv_bias_before_a_padded_conv_warn_with_the_output_change():
    """A padded consumer sees the constant only inside the border, so it cannot be folded: the channels
    still go, and the warning names the layer and the largest output change, which is the change
    measured here against the masked model on the same input."""
    model = biased_conv_model(consumer_padding=1)
    x = mc.randn(3, 2, 6, 6)
    with pytest.warns(UserWarning) as record:
        shrunk = P.shrink(model, example_input=x)
    message = str(record[0].message)
    assert "'3' (constant up to" in message  # the padded consumer, by its name in the Sequential
    assert shrunk[0].out_channels == shrunk[3].in_channels == 5
    change = float(np.max(np.abs(shrunk(x).data.astype(np.float64) - model(x).data)))
    assert change > 1e-3  # the dropped constants do change the output
    reported = float(re.search(r"largest output change on example_input: (\S+) \(", message).group(1))
    np.testing.assert_allclose(reported, change, rtol=1e-2)  # printed with 3 significant digits


def test_to_sparse_of_the_stem_keeps_the_sequential_order():
    """Replacing the first layer of a Sequential keeps it first (a replaced child keeps its place, as
    torch's Module.__setattr__ does), so the converted model computes the same outputs."""
    model = nn.create_mobile_classifier(10, 1).eval()
    P.l1_unstructured(model.stem[0], "weight", amount=0.6)
    x = mc.randn(2, 1, 8, 8)
    with mc.no_grad():
        expected = model(x).data
        converted = P.to_sparse(model, min_sparsity=0.5)
        assert [type(m).__name__ for m in converted.stem] == ["SparseConv2d", "BatchNorm2d", "ReLU"]
        np.testing.assert_allclose(converted(x).data, expected, rtol=1e-5, atol=1e-6)


def test_shrink_of_the_detector_keeps_its_outputs():
    """The detector's forward ends in tensor operations (its head outputs are reshaped and concatenated)
    and calls its shared head once per pyramid level: shrink follows it up to its last layers, gives the
    shared head the same channels on both calls, and the shrunk model computes the masked one's outputs."""
    from minicompress.models import Detector
    mc.manual_seed(0)
    model = Detector(image_size=16, width_mult=0.5).eval()
    rng = np.random.default_rng(0)
    for group in P.tied_output_groups(model):
        out = group[0].weight.shape[0]
        drop = rng.choice(out, out // 4, replace=False)
        for layer in group:                      # one shared ranking per group, as the pipeline prunes
            layer.weight.data[drop] = 0
            if layer.bias is not None:
                layer.bias.data[drop] = 0
    x = mc.tensor(rng.random((2, 1, 16, 16), dtype=np.float32))
    with mc.no_grad():
        expected = model(x).data
        shrunk = P.shrink(model)
        assert sum(p.data.size for p in shrunk.parameters()) < sum(p.data.size for p in model.parameters())
        # the removed channels carry zeros (no bias, BN constants folded exactly): float32 rounding only
        np.testing.assert_allclose(shrunk(x).data, expected, rtol=1e-5, atol=1e-6)

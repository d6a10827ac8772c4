"""minicompress.prune's module-level API against torch.nn.utils.prune on twin layers with the same
weights: masks, the weight_orig / weight_mask reparametrization and its gradients, composition,
global pruning, remove, is_pruned, saving a pruned model, and bad input.

Torch breaks ties among equal scores in an unspecified order, so weights are drawn as a random
permutation of distinct magnitudes with random signs (and channel norms kept apart)."""
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.nn as nn
import minicompress.prune as P
from minicompress.io import load, save

SETTINGS = settings(max_examples=15, deadline=None)


def distinct_weights(shape, seed):
    """Entries with distinct |w| (a permutation of a grid) and random signs, so no ties."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    magnitudes = rng.permutation(np.linspace(0.05, 2.0, size)).astype(np.float32)
    return (magnitudes * rng.choice([-1, 1], size)).reshape(shape).astype(np.float32)


def distinct_channels(shape, dim, seed):
    """Weights whose channels along `dim` have clearly distinct L_n norms for every n: channel c's
    entries have magnitudes within 1% of 2**rank(c), random signs."""
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(shape[dim]).astype(np.float32)
    bases = (2.0 ** ranks).reshape([-1 if d == dim % len(shape) else 1 for d in range(len(shape))])
    jitter = 1 + 0.01 * rng.random(shape)
    return (bases * jitter * rng.choice([-1, 1], shape)).astype(np.float32)


def twins(kind, shape, seed, weight=None):
    """A minicompress layer and its torch twin with the same (tie-free) weight and bias."""
    if kind == "linear":
        mine, theirs = nn.Linear(shape[1], shape[0]), torch.nn.Linear(shape[1], shape[0])
    else:
        mine = nn.Conv2d(shape[1], shape[0], shape[2], padding=1)
        theirs = torch.nn.Conv2d(shape[1], shape[0], shape[2], padding=1)
    weight = distinct_weights(shape, seed) if weight is None else weight
    mine.weight.data[...] = weight
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(weight))
        theirs.bias.copy_(torch.from_numpy(mine.bias.data))
    return mine, theirs


layers = st.one_of(
    st.tuples(st.just("linear"), st.tuples(st.integers(1, 6), st.integers(1, 7))),
    st.tuples(st.just("conv"), st.tuples(st.integers(1, 4), st.integers(1, 3), st.sampled_from([1, 3]))),
)


def conv_shape(kind, shape):
    return shape if kind == "linear" else (shape[0], shape[1], shape[2], shape[2])


@SETTINGS
@given(layers, st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_l1_unstructured_mask_and_reparametrization_match_torch(layer, amount, seed):
    kind, shape = layer
    mine, theirs = twins(kind, conv_shape(kind, shape), seed)
    P.l1_unstructured(mine, "weight", amount=amount)
    tprune.l1_unstructured(theirs, "weight", amount=amount)
    np.testing.assert_array_equal(mine.weight_mask.data, theirs.weight_mask.numpy())
    assert [k for k, _ in mine.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert [k for k, _ in mine.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    assert list(mine.state_dict()) == list(theirs.state_dict())
    np.testing.assert_array_equal(mine.weight.data, theirs.weight.detach().numpy())


@SETTINGS
@given(layers, st.integers(0, 2**16), st.data())
def test_ln_structured_mask_matches_torch(layer, seed, data):
    kind, shape = layer
    shape = conv_shape(kind, shape)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    mine, theirs = twins(kind, shape, seed, distinct_channels(shape, dim, seed))
    n = data.draw(st.sampled_from([1, 2, float("inf")]))
    amount = data.draw(st.one_of(st.floats(0.0, 1.0), st.integers(0, shape[dim])))
    P.ln_structured(mine, "weight", amount=amount, n=n, dim=dim)
    tprune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
    np.testing.assert_array_equal(mine.weight_mask.data, theirs.weight_mask.numpy())


@SETTINGS
@given(st.integers(0, 2**16), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_composition_of_two_prunings_matches_torch(seed, first, second):
    mine, theirs = twins("conv", (4, 3, 3, 3), seed)
    # the structured step ranks channels by the norm of what survives: keep those norms apart
    mine.weight.data[...] *= (10.0 ** np.arange(4, dtype=np.float32)).reshape(4, 1, 1, 1)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(mine.weight.data))
    P.l1_unstructured(mine, "weight", amount=first)
    tprune.l1_unstructured(theirs, "weight", amount=first)
    P.ln_structured(mine, "weight", amount=second, n=2, dim=0)
    tprune.ln_structured(theirs, "weight", amount=second, n=2, dim=0)
    P.l1_unstructured(mine, "weight", amount=second)
    tprune.l1_unstructured(theirs, "weight", amount=second)
    np.testing.assert_array_equal(mine.weight_mask.data, theirs.weight_mask.numpy())
    assert len(mine._forward_pre_hooks) == 1


@SETTINGS
@given(st.integers(0, 2**16), st.floats(0.0, 1.0))
def test_gradients_reach_weight_orig_through_the_mask_as_in_torch(seed, amount):
    mine, theirs = twins("linear", (5, 6), seed)
    P.l1_unstructured(mine, "weight", amount=amount)
    tprune.l1_unstructured(theirs, "weight", amount=amount)
    x = np.random.default_rng(seed).standard_normal((3, 6)).astype(np.float32)
    out = mine(mc.tensor(x))
    expected = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    (out * out).sum().backward()
    (expected * expected).sum().backward()
    np.testing.assert_allclose(mine.weight_orig.grad.data, theirs.weight_orig.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(mine.weight_orig.grad.data[mine.weight_mask.data == 0] == 0)


@SETTINGS
@given(st.integers(0, 2**16), st.floats(0.0, 1.0), st.floats(0.0, 0.5))
def test_global_unstructured_matches_torch(seed, amount, earlier):
    mine = [twins("linear", (4, 5), seed)[0], twins("conv", (3, 2, 3, 3), seed + 1)[0]]
    theirs = [twins("linear", (4, 5), seed)[1], twins("conv", (3, 2, 3, 3), seed + 1)[1]]
    # distinct magnitudes across both tensors: scale the second set apart from the first
    mine[1].weight.data[...] *= 2.03
    with torch.no_grad():
        theirs[1].weight.mul_(2.03)
    P.l1_unstructured(mine[0], "weight", amount=earlier)
    tprune.l1_unstructured(theirs[0], "weight", amount=earlier)
    P.global_unstructured([(m, "weight") for m in mine], pruning_method=P.L1Unstructured, amount=amount)
    tprune.global_unstructured([(m, "weight") for m in theirs], pruning_method=tprune.L1Unstructured, amount=amount)
    for m, t in zip(mine, theirs):
        np.testing.assert_array_equal(m.weight_mask.data, t.weight_mask.numpy())


def test_random_methods_prune_the_same_counts_as_torch():
    mine, theirs = twins("conv", (6, 4, 3, 3), 0)
    P.random_unstructured(mine, "weight", amount=0.3)
    tprune.random_unstructured(theirs, "weight", amount=0.3)
    assert (mine.weight_mask.data == 0).sum() == int((theirs.weight_mask == 0).sum())
    mine, theirs = twins("conv", (6, 4, 3, 3), 0)
    P.random_structured(mine, "weight", amount=2, dim=1)
    tprune.random_structured(theirs, "weight", amount=2, dim=1)
    zero_channels = (mine.weight_mask.data.sum(axis=(0, 2, 3)) == 0).sum()
    assert zero_channels == int((theirs.weight_mask.sum(dim=(0, 2, 3)) == 0).sum()) == 2


def test_custom_from_mask_identity_and_n_m():
    layer = nn.Linear(8, 2)
    P.identity(layer, "weight")
    assert np.all(layer.weight_mask.data == 1)
    mask = np.zeros((2, 8), np.float32)
    mask[:, ::2] = 1
    P.custom_from_mask(layer, "weight", mask)
    np.testing.assert_array_equal(layer.weight_mask.data, mask)
    other = nn.Linear(8, 3)
    P.n_m_structured(other, "weight", n=2, m=4)
    groups = other.weight_mask.data.reshape(3, 2, 4)
    assert np.all(groups.sum(axis=-1) == 2)
    absolute = np.abs(other.weight_orig.data).reshape(3, 2, 4)
    kept_min = np.where(groups == 1, absolute, np.inf).min(-1)
    pruned_max = np.where(groups == 0, absolute, -np.inf).max(-1)
    assert np.all(kept_min >= pruned_max)


def test_remove_and_is_pruned_match_torch():
    mine, theirs = twins("conv", (4, 3, 3, 3), 7)
    model = nn.Sequential(mine, nn.ReLU())
    assert not P.is_pruned(model)
    P.ln_structured(mine, "weight", amount=0.5, n=2, dim=0)
    tprune.ln_structured(theirs, "weight", amount=0.5, n=2, dim=0)
    assert P.is_pruned(model) and tprune.is_pruned(theirs)
    P.remove(mine, "weight")
    tprune.remove(theirs, "weight")
    assert not P.is_pruned(model)
    assert isinstance(mine.weight, nn.Parameter) and not mine._forward_pre_hooks
    assert list(mine.state_dict()) == list(theirs.state_dict())
    np.testing.assert_array_equal(mine.weight.data, theirs.weight.detach().numpy())
    with pytest.raises(ValueError, match="has to be pruned"):
        P.remove(mine, "weight")


def test_a_pruned_model_saves_and_loads_with_its_mask(tmp_path):
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    P.l1_unstructured(model[0], "weight", amount=0.5)
    save(model, tmp_path / "pruned.npz")
    loaded = load(tmp_path / "pruned.npz")
    assert P.is_pruned(loaded)
    loaded[0].weight_orig.data[...] = 1.0
    x = mc.randn(3, 6)
    model[0].weight_orig.data[...] = 1.0
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    np.testing.assert_array_equal(loaded[0].weight.data, loaded[0].weight_mask.data)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: P.l1_unstructured(m, "weight", amount=1.5), ValueError, "amount=1.5"),
    (lambda m: P.l1_unstructured(m, "weight", amount=-0.1), ValueError, "amount=-0.1"),
    (lambda m: P.l1_unstructured(m, "weight", amount=21), ValueError, "amount=21"),
    (lambda m: P.l1_unstructured(m, "weights", amount=0.5), ValueError, "name='weights'"),
    (lambda m: P.ln_structured(m, "weight", amount=0.5, n=2, dim=2), ValueError, "dim=2"),
    (lambda m: P.n_m_structured(m, "weight", n=3, m=2), ValueError, "n=3, m=2"),
    (lambda m: P.n_m_structured(m, "weight", n=2, m=3), ValueError, "multiple of m=3"),
    (lambda m: P.l1_unstructured("model", "weight", amount=0.5), TypeError, "module must be"),
    (lambda m: P.global_unstructured([(m, "weight")], P.L1Unstructured, amount=2.0), ValueError, "amount=2.0"),
    (lambda m: P.global_unstructured([(m, "weight")], P.LnStructured, amount=0.5), TypeError, "unstructured"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(nn.Linear(5, 4))

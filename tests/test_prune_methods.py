"""minicompress.prune.methods against torch.nn.utils.prune: masks of every method, their composition
(PruningContainer) and global pruning, on hypothesis-drawn shapes, amounts and scores.

Torch breaks ties among equal scores in an unspecified order, so the comparisons draw scores with
distinct magnitudes (and channel norms apart); the tie rule of minicompress is tested on its own.
Random methods cannot match torch's random numbers: their pruned counts and structure are compared.
"""
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicompress.prune import methods as M
from strategies import FLOATS, shapes

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def distinct_magnitudes(draw, shape, dtype=np.float32):
    """Values with pairwise distinct |x| in [1/64, 4], random signs."""
    size = int(np.prod(shape))
    magnitudes = draw(hnp.arrays(np.float32, size, elements=st.floats(0.015625, 4.0, width=32), unique=True))
    signs = draw(hnp.arrays(np.int8, size, elements=st.sampled_from([-1, 1])))
    return (magnitudes * signs).astype(dtype).reshape(shape)


def binary_masks(shape, dtype=np.float32):
    return hnp.arrays(np.bool_, shape).map(lambda m: m.astype(dtype))


def amounts(size):
    """An int count in [0, size] or a float fraction in [0, 1]."""
    return st.one_of(st.integers(0, size), st.floats(0.0, 1.0))


def torch_named(method):
    method._tensor_name = "weight"
    return method


def torch_container(*methods):
    container = tprune.PruningContainer()
    container._tensor_name = "weight"
    for method in methods:
        container.add_pruning_method(torch_named(method))
    return container


def as_torch(a):
    return torch.from_numpy(np.array(a, copy=True))


# --------------------------------------------------------------------------------------------------
# Single methods, deterministic: equal to torch


@SETTINGS
@given(data=st.data(), dtype=FLOATS)
def test_l1_unstructured_equals_torch(data, dtype):
    shape = data.draw(shapes(min_dims=1, max_dims=4))
    t = data.draw(distinct_magnitudes(shape, dtype))
    default_mask = data.draw(st.one_of(st.just(np.ones(shape, dtype)), binary_masks(shape, dtype)))
    amount = data.draw(amounts(t.size))
    mask = M.L1Unstructured(amount).compute_mask(t, default_mask)
    expected = tprune.L1Unstructured(amount).compute_mask(as_torch(t), as_torch(default_mask)).numpy()
    assert mask.dtype == expected.dtype and mask.shape == expected.shape
    np.testing.assert_array_equal(mask, expected)


NORMS = [1, 2, 3, 0.5, -1, float("inf"), float("-inf"), "fro", "nuc"]


@SETTINGS
@given(data=st.data(), dtype=FLOATS, n=st.sampled_from(NORMS))
def test_ln_structured_equals_torch(data, dtype, n):
    ndim = 3 if n == "nuc" else data.draw(st.integers(2, 3 if n == "fro" else 4))  # torch's matrix-norm limits
    shape = data.draw(shapes(min_dims=ndim, max_dims=ndim, max_side=4))
    t = data.draw(distinct_magnitudes(shape, dtype))
    dim = data.draw(st.integers(-ndim, ndim - 1))
    norms = np.sort(tprune._compute_norm(as_torch(t).double(), n, dim).numpy())
    assume(np.all(np.diff(norms) > 1e-3 * (1 + norms[-1])))  # no near-ties: float32 norms may reorder them
    amount = data.draw(amounts(shape[dim]))
    default_mask = data.draw(st.one_of(st.just(np.ones(shape, dtype)), binary_masks(shape, dtype)))
    mask = M.LnStructured(amount, n, dim).compute_mask(t, default_mask)
    expected = tprune.LnStructured(amount, n, dim).compute_mask(as_torch(t), as_torch(default_mask)).numpy()
    assert mask.dtype == expected.dtype
    np.testing.assert_array_equal(mask, expected)


@SETTINGS
@given(data=st.data())
def test_custom_from_mask_and_identity_equal_torch(data):
    shape = data.draw(shapes())
    t = data.draw(distinct_magnitudes(shape))
    default_mask, custom = data.draw(binary_masks(shape)), data.draw(binary_masks(shape))
    mask = M.CustomFromMask(custom).compute_mask(t, default_mask)
    expected = tprune.CustomFromMask(as_torch(custom)).compute_mask(as_torch(t), as_torch(default_mask))
    np.testing.assert_array_equal(mask, expected.numpy())
    identity = tprune.Identity().compute_mask(as_torch(t), as_torch(default_mask))
    np.testing.assert_array_equal(M.Identity().compute_mask(t, default_mask), identity.numpy())


@SETTINGS
@given(data=st.data())
def test_prune_multiplies_by_the_mask_of_the_importance_scores(data):
    shape = data.draw(shapes(min_dims=2, max_dims=3))
    t, scores = data.draw(distinct_magnitudes(shape)), data.draw(distinct_magnitudes(shape))
    amount = data.draw(amounts(shape[0]))
    pruned = M.LnStructured(amount, 1, 0).prune(t, importance_scores=scores)
    expected = tprune.LnStructured(amount, 1, 0).prune(as_torch(t), importance_scores=as_torch(scores))
    np.testing.assert_array_equal(pruned, expected.numpy())


def test_ties_prune_the_lowest_index_first():
    np.testing.assert_array_equal(M.L1Unstructured(2).compute_mask(np.ones(5), np.ones(5)), [0, 0, 1, 1, 1])
    t = np.array([[1.0, -2.0, 2.0, 1.0], [3.0, 0.5, -1.0, 0.0]])
    np.testing.assert_array_equal(M.L1Unstructured(3).compute_mask(t, np.ones_like(t)),
                                  [[0, 1, 1, 1], [1, 0, 1, 0]])
    channels = np.array([[1.0, 2.0, 2.0, 1.0], [1.0, 2.0, 2.0, 1.0]])  # column norms 2, 4, 4, 2
    np.testing.assert_array_equal(M.LnStructured(3, 1, dim=1).compute_mask(channels, np.ones((2, 4))),
                                  [[0, 0, 1, 0], [0, 0, 1, 0]])


def test_mask_dtype_follows_t():
    assert M.L1Unstructured(1).compute_mask(np.ones(3, np.float64), np.ones(3)).dtype == np.float64
    assert M.L1Unstructured(1).compute_mask(np.arange(3), np.ones(3, np.int64)).dtype == np.float32


# --------------------------------------------------------------------------------------------------
# Random methods: exact counts and structure


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_unstructured_prunes_torchs_count_of_surviving_entries(data, seed):
    shape = data.draw(shapes())
    t = data.draw(distinct_magnitudes(shape))
    default_mask = data.draw(binary_masks(shape))
    amount = data.draw(amounts(int(default_mask.sum())))
    method = M.RandomUnstructured(amount, generator=np.random.default_rng(seed))
    mask = M.compose_mask(method, t, default_mask)
    expected = torch_container(tprune.RandomUnstructured(amount)).compute_mask(as_torch(t), as_torch(default_mask))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert np.all(mask <= default_mask)
    assert int((mask == 0).sum()) == int((expected == 0).sum())


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_structured_prunes_whole_channels(data, seed):
    shape = data.draw(shapes(min_dims=2, max_dims=4))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    t = data.draw(distinct_magnitudes(shape))
    amount = data.draw(amounts(shape[dim]))
    mask = M.RandomStructured(amount, dim, generator=np.random.default_rng(seed)).compute_mask(t, np.ones(shape))
    expected = tprune.RandomStructured(amount, dim).compute_mask(as_torch(t), torch.ones(shape))
    channels = np.moveaxis(mask, dim, 0).reshape(shape[dim], -1)
    assert np.all((channels == 0).all(axis=1) | (channels == 1).all(axis=1)), "a channel is partly pruned"
    expected_channels = torch.movedim(expected, dim, 0).reshape(shape[dim], -1)
    assert int((channels[:, 0] == 0).sum()) == int((expected_channels[:, 0] == 0).sum())


def test_random_methods_follow_the_seed():
    t = np.arange(1.0, 41.0).reshape(5, 8)
    first = M.RandomUnstructured(0.5, generator=np.random.default_rng(7)).compute_mask(t, np.ones_like(t))
    again = M.RandomUnstructured(0.5, generator=np.random.default_rng(7)).compute_mask(t, np.ones_like(t))
    np.testing.assert_array_equal(first, again)
    import minicompress as mc
    mc.manual_seed(3)
    first = M.RandomStructured(2, dim=0).compute_mask(t, np.ones_like(t))
    mc.manual_seed(3)
    np.testing.assert_array_equal(first, M.RandomStructured(2, dim=0).compute_mask(t, np.ones_like(t)))
    assert (first == 0).all(axis=1).sum() == 2


# --------------------------------------------------------------------------------------------------
# Composition (PruningContainer) and global pruning


@SETTINGS
@given(data=st.data(), dtype=FLOATS)
def test_composition_equals_torch_pruning_container(data, dtype):
    ndim = data.draw(st.integers(2, 3))
    shape = data.draw(shapes(min_dims=ndim, max_dims=ndim, min_side=2, max_side=5))
    t = data.draw(distinct_magnitudes(shape, dtype))
    mask, torch_mask = np.ones(shape, dtype), torch.ones(shape, dtype=torch.from_numpy(t).dtype)
    mine, theirs = M.PruningContainer(), []
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            amount = data.draw(amounts(int(torch_mask.sum())))
            method, torch_method = M.L1Unstructured(amount), tprune.L1Unstructured(amount)
        else:
            dim = data.draw(st.integers(-ndim, ndim - 1))
            norms = np.sort(tprune._compute_norm(as_torch(t).double(), 2, dim).numpy())
            assume(np.all(np.diff(norms) > 1e-3 * (1 + norms[-1])))
            alive = int((torch.movedim(torch_mask, dim, 0).reshape(shape[dim], -1).sum(1) != 0).sum())
            amount = data.draw(amounts(alive))
            method, torch_method = M.LnStructured(amount, 2, dim), tprune.LnStructured(amount, 2, dim)
        mine.add_pruning_method(method)
        theirs.append(torch_method)
        mask = mine.compute_mask(t, mask)
        torch_mask = torch_container(*theirs).compute_mask(as_torch(t), torch_mask)
        assert mask.dtype == torch_mask.numpy().dtype
        np.testing.assert_array_equal(mask, torch_mask.numpy())


@SETTINGS
@given(data=st.data(), premasked=st.booleans())
def test_global_masks_equal_torch_global_unstructured(data, premasked):
    torch.manual_seed(0)
    modules = [torch.nn.Linear(data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))),
               torch.nn.Conv2d(data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), 2),
               torch.nn.Linear(data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)))]
    sizes = [m.weight.numel() for m in modules]
    values = data.draw(distinct_magnitudes((sum(sizes),)))
    weights = [v.reshape(m.weight.shape) for v, m in zip(np.split(values, np.cumsum(sizes)[:-1]), modules)]
    with torch.no_grad():
        for m, w in zip(modules, weights):
            m.weight.copy_(as_torch(w))
    default_masks = None
    if premasked:
        for m in modules:
            tprune.l1_unstructured(m, "weight", amount=data.draw(st.floats(0, 1)))
        default_masks = [m.weight_mask.numpy().copy() for m in modules]
    alive = sum(sizes) if default_masks is None else int(sum(d.sum() for d in default_masks))
    amount = data.draw(amounts(alive))
    masks = M.global_compute_masks(weights, default_masks, amount, M.L1Unstructured)
    tprune.global_unstructured([(m, "weight") for m in modules], tprune.L1Unstructured, amount=amount)
    for mask, m in zip(masks, modules):
        np.testing.assert_array_equal(mask, m.weight_mask.numpy())


# --------------------------------------------------------------------------------------------------
# N:M semi-structured


def torch_nm_mask(t, n, m, dim):
    """Keep the n largest |t| of every m consecutive entries along dim: topk + scatter."""
    lanes = torch.movedim(torch.from_numpy(t), dim, -1)
    groups = lanes.reshape(*lanes.shape[:-1], -1, m).abs()
    keep = torch.zeros_like(groups).scatter_(-1, groups.topk(n, dim=-1).indices, 1.0)
    return torch.movedim(keep.reshape(lanes.shape), -1, dim).numpy()


@SETTINGS
@given(data=st.data(), dtype=FLOATS)
def test_nm_keeps_the_n_largest_of_every_group(data, dtype):
    m = data.draw(st.integers(1, 4))
    n = data.draw(st.integers(0, m))
    ndim = data.draw(st.sampled_from([2, 4]))
    shape = list(data.draw(shapes(min_dims=ndim, max_dims=ndim, max_side=3)))
    shape[1] = m * data.draw(st.integers(1, 3))
    t = data.draw(distinct_magnitudes(tuple(shape), dtype))
    mask = M.NMStructured(n, m).compute_mask(t, np.ones_like(t))
    groups = np.moveaxis(mask, 1, -1).reshape(-1, m)
    assert np.all(groups.sum(axis=1) == n)
    np.testing.assert_array_equal(mask, torch_nm_mask(t, n, m, 1))


@SETTINGS
@given(data=st.data())
def test_nm_on_top_of_a_mask_keeps_at_most_n_surviving(data):
    shape = (data.draw(st.integers(1, 4)), 4 * data.draw(st.integers(1, 3)))
    t = data.draw(distinct_magnitudes(shape))
    default_mask = data.draw(binary_masks(shape))
    mask = M.PruningContainer(M.NMStructured(2, 4)).compute_mask(t, default_mask)
    assert np.all(mask <= default_mask)
    kept, alive = mask.reshape(-1, 4).sum(axis=1), default_mask.reshape(-1, 4).sum(axis=1)
    np.testing.assert_array_equal(kept, np.minimum(alive, 2))
    np.testing.assert_array_equal(mask, torch_nm_mask(t * default_mask, 2, 4, 1) * default_mask)


# --------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("amount, error", [(-1, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                           ("0.5", TypeError), (None, TypeError)])
def test_bad_amount_raises_as_torch(amount, error):
    with pytest.raises(error):
        tprune.L1Unstructured(amount)
    for method in (M.L1Unstructured, M.RandomUnstructured, lambda a: M.LnStructured(a, 2), M.RandomStructured):
        with pytest.raises(error, match="amount"):
            method(amount)


def test_bad_arguments_raise():
    t = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="amount=13"):
        M.L1Unstructured(13).compute_mask(t, np.ones_like(t))
    with pytest.raises(ValueError, match="amount=5"):
        M.LnStructured(5, 1, dim=0).compute_mask(t, np.ones_like(t))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        M.LnStructured(1, 1).compute_mask(np.ones(4), np.ones(4))
    for dim in (2, -3):
        with pytest.raises(IndexError, match=f"dim={dim}"):
            M.RandomStructured(1, dim).compute_mask(t, np.ones_like(t))
        with pytest.raises(ValueError, match=f"dim={dim}"):
            M.LnStructured(1, 1, dim).compute_mask(t, np.ones_like(t))
    with pytest.raises(TypeError, match="t must be a numpy array"):
        M.L1Unstructured(1).compute_mask(torch.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="default_mask shape"):
        M.L1Unstructured(1).compute_mask(t, np.ones(12))
    with pytest.raises(ValueError, match="n must be"):
        M.LnStructured(1, "max")
    with pytest.raises(TypeError, match="n must be"):
        M.LnStructured(1, None)
    with pytest.raises(ValueError, match="'nuc'"):
        M.LnStructured(1, "nuc").compute_mask(t, np.ones_like(t))
    with pytest.raises(TypeError, match="generator"):
        M.RandomUnstructured(1, generator=0)
    with pytest.raises(ValueError, match="n=3, m=2"):
        M.NMStructured(3, 2)
    with pytest.raises(TypeError, match="m must be an int"):
        M.NMStructured(2, 4.0)
    with pytest.raises(ValueError, match="multiple of m=3"):
        M.NMStructured(1, 3).compute_mask(t, np.ones_like(t))
    with pytest.raises(ValueError, match="mask shape"):
        M.CustomFromMask(np.ones(3)).compute_mask(t, np.ones_like(t))
    with pytest.raises(ValueError, match="no method"):
        M.PruningContainer().compute_mask(t, np.ones_like(t))
    with pytest.raises(TypeError, match="BasePruningMethod"):
        M.PruningContainer(tprune.L1Unstructured(1))


def test_bad_global_arguments_raise():
    a, b = np.ones((2, 3)), np.ones(4)
    with pytest.raises(TypeError, match="'unstructured'"):
        M.global_compute_masks([a, b], None, 1, M.NMStructured)
    with pytest.raises(TypeError, match="got LnStructured of type 'structured'"):  # needs n and dim to build
        M.global_compute_masks([a, b], None, 1, M.LnStructured)
    with pytest.raises(TypeError, match="BasePruningMethod subclass"):
        M.global_compute_masks([a, b], None, 1, M.L1Unstructured(1))
    with pytest.raises(ValueError, match="1 masks for 2 tensors"):
        M.global_compute_masks([a, b], [np.ones((2, 3))], 1)
    with pytest.raises(ValueError, match=r"default_masks\[1\] shape"):
        M.global_compute_masks([a, b], [np.ones((2, 3)), np.ones(5)], 1)
    with pytest.raises(ValueError, match="amount=11"):
        M.global_compute_masks([a, b], None, 11)
    with pytest.raises(ValueError, match="at least one"):
        M.global_compute_masks([], None, 1)

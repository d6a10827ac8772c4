"""Tensor ops and autograd against torch: forward and gradients on hypothesis-drawn shapes."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minicompress as mc
from harness import check_op
from strategies import FLOATS, arrays, broadcastable_pair, positive, shapes

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(pair=broadcastable_pair())
def test_broadcasting_binary_ops(name, pair):
    check_op(BINARY[name], BINARY[name], pair)


@given(pair=broadcastable_pair(low=0.5, high=3.0))
def test_division_broadcasts(pair):
    check_op(lambda a, b: a / b, lambda a, b: a / b, pair)


@given(x=arrays((3, 4), low=0.2, high=2.0), exponent=st.sampled_from([2, 3, 0.5, -1.5]))
def test_pow_scalar_exponent(x, exponent):
    check_op(lambda a: a ** exponent, lambda a: a ** exponent, [x])


@given(pair=broadcastable_pair(low=0.2, high=2.0))
def test_pow_tensor_exponent(pair):
    check_op(lambda a, b: a ** b, lambda a, b: a ** b, pair)


UNARY = {
    "exp": (lambda t: t.exp(), -3, 3),
    "log": (lambda t: t.log(), 0.1, 5),
    "sqrt": (lambda t: t.sqrt(), 0.1, 5),
    "abs": (lambda t: t.abs(), -3, 3),
    "neg": (lambda t: -t, -3, 3),
    "sigmoid": (lambda t: t.sigmoid(), -30, 30),
    "tanh": (lambda t: t.tanh(), -5, 5),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), dtype=FLOATS)
def test_unary_ops(name, data, dtype):
    fn, low, high = UNARY[name]
    x = data.draw(arrays(data.draw(shapes()), dtype, low, high))
    check_op(fn, fn, [x])


@given(x=arrays((4, 5)), lo=st.floats(-2, 0), hi=st.floats(0, 2))
def test_clamp(x, lo, hi):
    check_op(lambda t: t.clamp(lo, hi), lambda t: t.clamp(lo, hi), [x])


@given(data=st.data(), keepdim=st.booleans())
def test_reductions_with_dim_and_keepdim(data, keepdim):
    shape = data.draw(shapes(min_dims=1, max_dims=4, min_side=2))
    x = data.draw(arrays(shape, np.float64))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_op(lambda t: t.sum(dim, keepdim), lambda t: t.sum(dim, keepdim), [x])
    check_op(lambda t: t.mean(dim, keepdim), lambda t: t.mean(dim, keepdim), [x])
    check_op(lambda t: t.var(dim, keepdim=keepdim), lambda t: t.var(dim, keepdim=keepdim), [x])
    check_op(lambda t: t.amax(dim, keepdim), lambda t: t.amax(dim, keepdim), [x])
    check_op(lambda t: t.amin(dim, keepdim), lambda t: t.amin(dim, keepdim), [x])
    check_op(lambda t: t.max(dim, keepdim)[0], lambda t: t.max(dim, keepdim)[0], [x])


@given(x=arrays((3, 4, 2), np.float64))
def test_full_reductions(x):
    for fn in (lambda t: t.sum(), lambda t: t.mean(), lambda t: t.max(), lambda t: t.min(),
               lambda t: t.var(), lambda t: t.var(unbiased=False), lambda t: t.std()):
        check_op(fn, fn, [x])


def test_max_with_dim_returns_values_and_indices():
    x = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], np.float32)
    values, indices = mc.tensor(x).max(dim=1)
    t_values, t_indices = torch.tensor(x).max(dim=1)
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())


@given(x=arrays((2, 3, 4)))
def test_movement_ops(x):
    cases = [
        (lambda t: t.reshape(4, 6), lambda t: t.reshape(4, 6)),
        (lambda t: t.view(-1), lambda t: t.view(-1)),
        (lambda t: t.transpose(0, 2), lambda t: t.transpose(0, 2)),
        (lambda t: t.permute(1, 2, 0), lambda t: t.permute(1, 2, 0)),
        (lambda t: t.flatten(1), lambda t: t.flatten(1)),
        (lambda t: t.unsqueeze(1).squeeze(1), lambda t: t.unsqueeze(1).squeeze(1)),
        (lambda t: t[1, :, ::2], lambda t: t[1, :, ::2]),
        (lambda t: t[..., 1:3], lambda t: t[..., 1:3]),
        (lambda t: t.T, lambda t: t.permute(2, 1, 0) if False else t.transpose(-1, -2)),
    ]
    for mc_fn, th_fn in cases:
        check_op(mc_fn, th_fn, [x])


@pytest.mark.parametrize("shape, start, end", [((0, 16, 1, 1), 1, -1), ((2, 0, 3), 1, -1), ((0, 3), 0, -1),
                                               ((3, 0, 2, 4), 1, 2)])
def test_flatten_of_an_empty_tensor_as_torch(shape, start, end):
    x = np.zeros(shape, np.float32)
    assert mc.tensor(x).flatten(start, end).shape == tuple(torch.from_numpy(x).flatten(start, end).shape)


def test_advanced_indexing_accumulates_repeated_indices():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx = np.array([0, 2, 0, 0])
    check_op(lambda t: t[mc.tensor(idx)], lambda t: t[torch.from_numpy(idx)], [x])


@given(a=arrays((2, 3)), b=arrays((2, 3)), c=arrays((2, 3)), dim=st.integers(-2, 1))
def test_cat_and_stack(a, b, c, dim):
    check_op(lambda *t: mc.cat(t, dim), lambda *t: torch.cat(t, dim), [a, b, c])
    check_op(lambda *t: mc.stack(t, dim), lambda *t: torch.stack(t, dim), [a, b, c])


@given(data=st.data())
def test_matmul_shapes(data):
    m, k, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    batch = data.draw(st.sampled_from([(), (2,), (3, 1)]))
    other_batch = data.draw(st.sampled_from([(), (1,)] if batch else [()]))
    a = data.draw(arrays(batch + (m, k), np.float64))
    b = data.draw(arrays(other_batch + (k, n), np.float64))
    check_op(lambda x, y: x @ y, lambda x, y: x @ y, [a, b])
    v = data.draw(arrays((k,), np.float64))
    check_op(lambda x, y: x @ y, lambda x, y: x @ y, [a, v])
    check_op(lambda x, y: y @ x, lambda x, y: y @ x, [b, v])


def test_gradients_accumulate_across_backward_calls():
    x = mc.tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    t = torch.tensor([1.0, -2.0], requires_grad=True)
    (t * 3).sum().backward()
    (t * t).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


def test_shared_subexpression_gets_both_gradient_paths():
    check_op(lambda a: (a * a + a.exp()) * a, lambda a: (a * a + a.exp()) * a, [np.array([0.5, -1.0], np.float32)])


def test_deep_chain_does_not_hit_recursion_limit():
    x = mc.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    y.sum().backward()
    assert x.grad.numpy()[0] == 1.0
    assert y.item() == 10_001.0


def test_no_grad_records_nothing_and_detach_cuts_the_graph():
    x = mc.tensor([1.0, 2.0], requires_grad=True)
    with mc.no_grad():
        y = x * 2
    assert not y.requires_grad
    z = (x.detach() * x).sum()
    z.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0])


def test_comparisons_give_boolean_tensors_without_grad():
    x = mc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal(mask.numpy(), [False, True, True])


def test_constructors_and_seed():
    assert mc.zeros(2, 3).shape == (2, 3) and mc.ones((4,)).dtype == np.float32
    np.testing.assert_array_equal(mc.arange(5).numpy(), np.arange(5))
    mc.manual_seed(3)
    a = mc.randn(3).numpy().copy()
    mc.manual_seed(3)
    np.testing.assert_array_equal(a, mc.randn(3).numpy())
    assert mc.tensor([1.5]).dtype == np.float32 and mc.tensor([1.5], dtype="float64").dtype == np.float64


def test_bad_input_errors_name_the_problem():
    with pytest.raises(TypeError, match="dtype"):
        mc.tensor([1.0], dtype="complex256")
    with pytest.raises(RuntimeError, match="scalar"):
        mc.tensor([1.0, 2.0], requires_grad=True).backward()
    with pytest.raises(ValueError, match="dim"):
        mc.tensor([[1.0]]).sum(dim=3)
    with pytest.raises(TypeError, match="floating point"):
        mc.tensor([1, 2]).requires_grad_()

"""nn.LSTM, nn.GRU, nn.LSTMCell and nn.GRUCell against torch.nn: the torch module's state_dict is
loaded into ours, then output, final states and the gradients wrt input, initial state and every
parameter are compared on hypothesis-drawn sizes and values."""
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import nn
from minicompress.nn.rnn import gru_cell, lstm_cell
from strategies import FLOATS, arrays

# float64 agrees to rounding; the recurrence and the gradient sums over time stay far above 1e-10.
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-9, atol=1e-11)}
PAIRS = {"LSTM": (nn.LSTM, torch.nn.LSTM), "GRU": (nn.GRU, torch.nn.GRU),
         "LSTMCell": (nn.LSTMCell, torch.nn.LSTMCell), "GRUCell": (nn.GRUCell, torch.nn.GRUCell)}


def _twins(kind, dtype, seed, *args, **kwargs):
    """A torch module with its own init and ours holding the same weights (keys must match exactly)."""
    ours_cls, torch_cls = PAIRS[kind]
    torch.manual_seed(seed)
    theirs = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    if dtype == np.float64:
        theirs = theirs.double()
        for p in ours.parameters():
            p.data = p.data.astype(np.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _leaves(arrays_):
    """The same arrays as minicompress and torch leaves that require grad."""
    return ([mc.tensor(a.copy(), requires_grad=True) for a in arrays_],
            [torch.tensor(a.copy(), requires_grad=True) for a in arrays_])


def _compare(ours_out, torch_out, ours_leaves, torch_leaves, ours, theirs, dtype, seed):
    """Compare every output, then backprop the same random upstream through all of them and compare
    the gradients of the inputs, the initial states and every parameter."""
    tol = TOLERANCE[dtype]
    rng = np.random.default_rng(seed)
    loss_m, loss_t = 0, 0
    for k, (m, t) in enumerate(zip(ours_out, torch_out)):
        assert m.shape == tuple(t.shape), f"output {k}: shape {m.shape} != torch {tuple(t.shape)}"
        assert m.dtype == dtype
        np.testing.assert_allclose(m.data, t.detach().numpy(), **tol, err_msg=f"output {k}")
        upstream = rng.standard_normal(m.shape).astype(dtype)
        loss_m = loss_m + (m * mc.tensor(upstream)).sum()
        loss_t = loss_t + (t * torch.from_numpy(upstream)).sum()
    loss_m.backward()
    loss_t.backward()
    for k, (m, t) in enumerate(zip(ours_leaves, torch_leaves)):
        np.testing.assert_allclose(m.grad.data, t.grad.numpy(), **tol, err_msg=f"gradient of input {k}")
    torch_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, torch_params[name].grad.numpy(), **tol, err_msg=name)


@st.composite
def layer_configs(draw):
    return dict(kind=draw(st.sampled_from(["LSTM", "GRU"])), dtype=draw(FLOATS),
                seq_len=draw(st.integers(1, 5)), batch=draw(st.integers(1, 3)),
                input_size=draw(st.integers(1, 5)), hidden_size=draw(st.integers(1, 5)),
                num_layers=draw(st.integers(1, 2)), bias=draw(st.booleans()),
                bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()),
                batched=draw(st.booleans()), with_hx=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=15, deadline=None)
@given(config=layer_configs(), data=st.data())
def test_lstm_and_gru_match_torch(config, data):
    c = config
    ours, theirs = _twins(c["kind"], c["dtype"], c["seed"], c["input_size"], c["hidden_size"],
                          num_layers=c["num_layers"], bias=c["bias"], batch_first=c["batch_first"],
                          bidirectional=c["bidirectional"])
    directions = 2 if c["bidirectional"] else 1
    batch = (c["batch"],) if c["batched"] else ()
    if not c["batched"]:
        x_shape = (c["seq_len"], c["input_size"])  # batch_first plays no part for unbatched input
    elif c["batch_first"]:
        x_shape = (c["batch"], c["seq_len"], c["input_size"])
    else:
        x_shape = (c["seq_len"], c["batch"], c["input_size"])
    state_shape = (c["num_layers"] * directions,) + batch + (c["hidden_size"],)
    num_states = 2 if c["kind"] == "LSTM" else 1
    inputs = [data.draw(arrays(x_shape, c["dtype"]), label="input")]
    if c["with_hx"]:
        inputs += [data.draw(arrays(state_shape, c["dtype"], -1, 1), label=f"h{k}") for k in range(num_states)]
    ours_leaves, torch_leaves = _leaves(inputs)
    if not c["with_hx"]:
        hx_m = hx_t = None
    elif num_states == 2:
        hx_m, hx_t = tuple(ours_leaves[1:]), tuple(torch_leaves[1:])
    else:
        hx_m, hx_t = ours_leaves[1], torch_leaves[1]
    out_m, state_m = ours(ours_leaves[0], hx_m)
    out_t, state_t = theirs(torch_leaves[0], hx_t)
    state_m = state_m if num_states == 2 else (state_m,)
    state_t = state_t if num_states == 2 else (state_t,)
    _compare([out_m, *state_m], [out_t, *state_t], ours_leaves, torch_leaves, ours, theirs, c["dtype"], c["seed"])


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(["LSTMCell", "GRUCell"]), dtype=FLOATS, batch=st.integers(1, 4),
       input_size=st.integers(1, 6), hidden_size=st.integers(1, 6), bias=st.booleans(), batched=st.booleans(),
       with_hx=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_cells_match_torch(kind, dtype, batch, input_size, hidden_size, bias, batched, with_hx, seed, data):
    ours, theirs = _twins(kind, dtype, seed, input_size, hidden_size, bias=bias)
    lead = (batch,) if batched else ()
    num_states = 2 if kind == "LSTMCell" else 1
    inputs = [data.draw(arrays(lead + (input_size,), dtype), label="input")]
    if with_hx:
        inputs += [data.draw(arrays(lead + (hidden_size,), dtype, -1, 1), label=f"h{k}") for k in range(num_states)]
    ours_leaves, torch_leaves = _leaves(inputs)
    hx_m = (tuple(ours_leaves[1:]) if num_states == 2 else ours_leaves[1]) if with_hx else None
    hx_t = (tuple(torch_leaves[1:]) if num_states == 2 else torch_leaves[1]) if with_hx else None
    out_m, out_t = ours(ours_leaves[0], hx_m), theirs(torch_leaves[0], hx_t)
    out_m = out_m if num_states == 2 else (out_m,)
    out_t = out_t if num_states == 2 else (out_t,)
    _compare(out_m, out_t, ours_leaves, torch_leaves, ours, theirs, dtype, seed)


def test_cell_functions_take_precomputed_projections():
    """lstm_cell / gru_cell on given gate pre-activations equal torch's cells with an identity-like
    input projection: the entry point a quantized variant builds on."""
    rng = np.random.default_rng(0)
    H = 3
    for kind, gates, fn in (("LSTMCell", 4, lstm_cell), ("GRUCell", 3, gru_cell)):
        gx, gh = rng.standard_normal((2, 2, gates * H)).astype(np.float32)
        state = rng.standard_normal((2, H)).astype(np.float32)
        theirs = PAIRS[kind][1](gates * H, H)
        with torch.no_grad():  # W_ih = I and b = 0, so the input projection is gx; W_hh h is replaced by gh
            theirs.weight_ih.copy_(torch.eye(gates * H))
            theirs.bias_ih.zero_()
            theirs.weight_hh.zero_()
            theirs.bias_hh.copy_(torch.from_numpy(gh[0]))
            h = torch.from_numpy(state)
            expected = theirs(torch.from_numpy(gx[:1]), (h[:1], h[:1]) if gates == 4 else h[:1])
        got = fn(mc.tensor(gx[:1]), mc.tensor(gh[:1]), mc.tensor(state[:1]))
        got, expected = (got, expected) if gates == 4 else ((got,), (expected,))
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.data, e.numpy(), rtol=1e-5, atol=1e-6)


def test_overriding_project_changes_both_projections():
    """`_project` is the single place weights meet activations: scaling its output by 0 leaves only
    the gate nonlinearities of zero, whose values torch gives for all-zero weights and biases."""
    class ZeroProjection(nn.GRU):
        def _project(self, x, weight, bias):
            return super()._project(x, weight, bias) * 0.0

    ours = ZeroProjection(3, 4, num_layers=2)
    theirs = torch.nn.GRU(3, 4, num_layers=2)
    with torch.no_grad():
        for p in theirs.parameters():
            p.zero_()
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out_m, h_m = ours(mc.tensor(x))
    out_t, h_t = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out_m.data, out_t.detach().numpy(), atol=1e-7)
    np.testing.assert_allclose(h_m.data, h_t.detach().numpy(), atol=1e-7)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_interlayer_dropout(kind):
    ours, theirs = _twins(kind, np.float32, 0, 3, 4, num_layers=2, dropout=1.0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    # p = 1 zeroes layer 0's output in training: deterministic in both, so comparable with torch
    out_m, out_t = ours(mc.tensor(x))[0], theirs(torch.from_numpy(x))[0]
    np.testing.assert_allclose(out_m.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    ours.eval()
    theirs.eval()
    out_m, out_t = ours(mc.tensor(x))[0], theirs(torch.from_numpy(x))[0]
    np.testing.assert_allclose(out_m.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)

    ours.dropout = 0.5
    eval_out = ours(mc.tensor(x))[0].data
    ours.train()
    mc.manual_seed(1)
    first = ours(mc.tensor(x))[0].data
    mc.manual_seed(1)
    again = ours(mc.tensor(x))[0].data
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, eval_out)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_init_is_uniform_within_one_over_sqrt_hidden(kind):
    hidden = 64
    module = PAIRS[kind][0](16, hidden, bias=True)
    bound = 1 / math.sqrt(hidden)
    values = np.concatenate([p.data.ravel() for p in module.parameters()])
    assert np.abs(values).max() <= bound
    # U(-b, b): mean 0, standard deviation b / sqrt(3); thousands of draws pin both down
    assert abs(values.mean()) < 0.05 * bound
    assert abs(values.std() - bound / math.sqrt(3)) < 0.05 * bound


def test_parameter_names_and_shapes_match_torch():
    for kind in ("LSTM", "GRU"):
        ours = PAIRS[kind][0](3, 5, num_layers=2, bidirectional=True)
        theirs = PAIRS[kind][1](3, 5, num_layers=2, bidirectional=True)
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
               [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
        assert repr(ours) == repr(theirs)


def test_layer_validation():
    lstm, gru = nn.LSTM(3, 4, num_layers=2), nn.GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="input must have 2 or 3 dimensions"):
        lstm(mc.zeros(2, 2, 2, 3))
    with pytest.raises(ValueError, match="input_size=3"):
        lstm(mc.zeros(5, 2, 4))
    with pytest.raises(ValueError, match=r"hx\[0\] must have shape \(2, 2, 4\)"):
        lstm(mc.zeros(5, 2, 3), (mc.zeros(1, 2, 4), mc.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"hx\[1\] must have shape \(2, 2, 4\)"):
        lstm(mc.zeros(5, 2, 3), (mc.zeros(2, 2, 4), mc.zeros(2, 3, 4)))
    with pytest.raises(ValueError, match=r"hx\[0\] must have shape \(2, 4\)"):  # unbatched input, batched hx
        lstm(mc.zeros(5, 3), (mc.zeros(2, 1, 4), mc.zeros(2, 1, 4)))
    with pytest.raises(TypeError, match="hx must be a tuple"):
        lstm(mc.zeros(5, 2, 3), mc.zeros(2, 2, 4))
    with pytest.raises(ValueError, match=r"hx must have shape \(1, 2, 4\)"):  # batch_first: batch is dim 0
        gru(mc.zeros(2, 5, 3), mc.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="dtype"):
        gru(mc.zeros(2, 5, 3, dtype=np.float64))
    with pytest.raises(TypeError, match="input must be a Tensor"):
        gru(np.zeros((2, 5, 3), np.float32))


def test_cell_validation():
    cell = nn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match="input must have 1 or 2 dimensions"):
        cell(mc.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="input_size=3"):
        cell(mc.zeros(2, 5))
    with pytest.raises(ValueError, match=r"hx\[1\] must have shape \(2, 4\)"):
        cell(mc.zeros(2, 3), (mc.zeros(2, 4), mc.zeros(2, 5)))
    with pytest.raises(ValueError, match=r"hx must have shape \(4,\)"):
        nn.GRUCell(3, 4)(mc.zeros(3), mc.zeros(1, 4))


def test_constructor_validation():
    with pytest.raises(ValueError, match="hidden_size"):
        nn.LSTM(3, 0)
    with pytest.raises(TypeError, match="input_size"):
        nn.GRU(3.0, 4)
    with pytest.raises(ValueError, match="num_layers"):
        nn.GRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        nn.LSTM(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(TypeError, match="bias"):
        nn.GRUCell(3, 4, bias=1)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.LSTM(3, 4, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.LSTM(3, 4, num_layers=2, dropout=0.2)

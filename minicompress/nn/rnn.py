"""Recurrent layers: LSTM and GRU (multi-layer, bidirectional) and their single-step cells, as torch.nn.

The math of one time step lives in two short functions, `lstm_cell` and `gru_cell`. They take the two
gate pre-activations already projected,

    gates_x = W_ih x_t + b_ih        gates_h = W_hh h_{t-1} + b_hh

so the projections are the only place where weights meet activations. Every module computes them
with `_project(x, weight, bias)` (a plain `F.linear` here); a dynamically quantized variant overrides
that one method (int8 weights, activations quantized on the fly) and reuses everything else.

The layers are differentiable Tensor ops (linear, sigmoid, tanh, slicing, stack, cat), so autograd
needs no code of its own here. Parameter names, shapes, gate order and initialisation are torch's,
so `load_state_dict(torch_module.state_dict())` moves weights across unchanged.
"""
import math
import numbers
import warnings

from .. import functional as F
from ..tensor import Tensor, cat, stack, zeros
from . import init
from .module import Module, Parameter

__all__ = ["lstm_cell", "gru_cell", "LSTM", "GRU", "LSTMCell", "GRUCell"]


# ----- the math of one step ---------------------------------------------------------------------

def lstm_cell(gates_x, gates_h, c):
    """One LSTM step (torch.nn.LSTMCell), from the projections of x_t and h_{t-1}, each (B, 4H).

    The 4H columns are the gates in torch's order i, f, g, o:

        i = sigmoid(x_i + h_i)      input gate
        f = sigmoid(x_f + h_f)      forget gate
        g = tanh(x_g + h_g)         candidate cell
        o = sigmoid(x_o + h_o)      output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    Returns (h', c'), each (B, H).
    """
    H = c.shape[-1]
    gates = gates_x + gates_h
    i = gates[..., 0 * H:1 * H].sigmoid()
    f = gates[..., 1 * H:2 * H].sigmoid()
    g = gates[..., 2 * H:3 * H].tanh()
    o = gates[..., 3 * H:4 * H].sigmoid()
    c_next = f * c + i * g
    return o * c_next.tanh(), c_next


def gru_cell(gates_x, gates_h, h):
    """One GRU step (torch.nn.GRUCell), from the projections of x_t and h_{t-1}, each (B, 3H).

    The 3H columns are the gates in torch's order r, z, n. The reset gate scales the hidden
    projection *including its bias* b_hn, which is why the two projections stay separate:

        r = sigmoid(x_r + h_r)      reset gate
        z = sigmoid(x_z + h_z)      update gate
        n = tanh(x_n + r * h_n)     candidate, h_n = W_hn h + b_hn
        h' = (1 - z) * n + z * h

    Returns h', (B, H).
    """
    H = h.shape[-1]
    r = (gates_x[..., 0 * H:1 * H] + gates_h[..., 0 * H:1 * H]).sigmoid()
    z = (gates_x[..., 1 * H:2 * H] + gates_h[..., 1 * H:2 * H]).sigmoid()
    n = (gates_x[..., 2 * H:3 * H] + r * gates_h[..., 2 * H:3 * H]).tanh()
    return (1 - z) * n + z * h


# ----- validation ------------------------------------------------------------------------------

def _check_size(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_state(state, name, shape, dtype):
    if not isinstance(state, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(state).__name__}")
    if state.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {state.shape}")
    if state.dtype != dtype:
        raise ValueError(f"{name} has dtype {state.dtype}, but the input has dtype {dtype}")


# ----- shared by layers and cells ----------------------------------------------------------------

class _Recurrent(Module):
    """What the layers and the cells share: the projection, the cell, the init and the input checks.

    Subclasses set `_num_gates` (4 for LSTM, 3 for GRU), `_num_states` (2: (h, c), or 1: (h,)) and
    `_cell(gates_x, gates_h, state) -> new state tuple`; the hidden output is always `state[0]`.
    """

    _num_gates = _num_states = None

    def _project(self, x, weight, bias):
        """weight @ x + bias for a batch of rows x (B, in) -> (B, gates * H): override to quantize."""
        return F.linear(x, weight, bias)

    def _cell(self, gates_x, gates_h, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, x, state, weight_ih, weight_hh, bias_ih, bias_hh):
        """One time step for x (B, in) and state, a tuple of (B, H) tensors with h first."""
        return self._cell(self._project(x, weight_ih, bias_ih), self._project(state[0], weight_hh, bias_hh), state)

    def reset_parameters(self):
        """torch's init: every weight and bias ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _check_input(self, input, ndims):
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.ndim not in ndims:
            raise ValueError(f"{name}: input must have {' or '.join(map(str, ndims))} dimensions, "
                             f"got shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input's last dimension must equal input_size={self.input_size}, "
                             f"got shape {input.shape}")
        if input.dtype != self.weight_dtype:
            raise ValueError(f"{name}: input dtype {input.dtype} does not match the weights' dtype "
                             f"{self.weight_dtype}; convert one to the other")

    def _states(self, hx, shape, dtype):
        """hx as a tuple of `_num_states` tensors of `shape` (zeros when hx is None), checked."""
        if hx is None:
            return tuple(zeros(*shape, dtype=dtype) for _ in range(self._num_states))
        if self._num_states == 1:
            _check_state(hx, "hx", shape, dtype)
            return (hx,)
        if not isinstance(hx, (tuple, list)) or len(hx) != self._num_states:
            raise TypeError(f"hx must be a tuple (h_0, c_0) of {self._num_states} tensors, got {type(hx).__name__}")
        for k, state in enumerate(hx):
            _check_state(state, f"hx[{k}]", shape, dtype)
        return tuple(hx)


class _LSTMMixin:
    _num_gates, _num_states = 4, 2

    def _cell(self, gates_x, gates_h, state):
        return lstm_cell(gates_x, gates_h, state[1])


class _GRUMixin:
    _num_gates, _num_states = 3, 1

    def _cell(self, gates_x, gates_h, state):
        return (gru_cell(gates_x, gates_h, state[0]),)


# ----- multi-layer, bidirectional layers ----------------------------------------------------------

class _RNNBase(_Recurrent):
    """The loop over layers, directions and time shared by LSTM and GRU (torch.nn.RNNBase).

    Shapes (L = seq len, N = batch, D = 2 if bidirectional else 1, H = hidden_size):
        input  (L, N, input_size), (N, L, input_size) with batch_first, or unbatched (L, input_size)
        hx     (D * num_layers, N, H) per state, or (D * num_layers, H) for unbatched input
        output (L, N, D * H) (batch_first: (N, L, D * H)); h_n and c_n shaped as hx.
    Layer k > 0 reads the concatenated outputs of both directions of layer k - 1, after dropout
    (in training only, and not after the last layer).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__()
        self.input_size = _check_size(input_size, "input_size")
        self.hidden_size = _check_size(hidden_size, "hidden_size")
        self.num_layers = _check_size(num_layers, "num_layers")
        self.bias = _check_bool(bias, "bias")
        self.batch_first = _check_bool(batch_first, "batch_first")
        self.bidirectional = _check_bool(bidirectional, "bidirectional")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (the probability of zeroing), got {dropout!r}")
        self.dropout = float(dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between recurrent layers only, so it does nothing "
                          f"with num_layers=1", stacklevel=2)
        gates = self._num_gates * hidden_size
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                names = self._weight_names(layer, direction)
                setattr(self, names[0], Parameter(zeros(gates, layer_input)))
                setattr(self, names[1], Parameter(zeros(gates, hidden_size)))
                if bias:
                    setattr(self, names[2], Parameter(zeros(gates)))
                    setattr(self, names[3], Parameter(zeros(gates)))
        self.reset_parameters()

    @staticmethod
    def _weight_names(layer, direction):
        suffix = "_reverse" if direction == 1 else ""
        return tuple(f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _weights(self, layer, direction):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction; biases None without bias."""
        return tuple(getattr(self, name) if self.bias or k < 2 else None
                     for k, name in enumerate(self._weight_names(layer, direction)))

    @property
    def weight_dtype(self):
        return self.weight_ih_l0.dtype

    def _run_direction(self, steps, state, weights, reverse):
        """Run one direction of one layer over the list of per-step inputs; return outputs and last state."""
        outputs = [None] * len(steps)
        for t in (reversed(range(len(steps))) if reverse else range(len(steps))):
            state = self._step(steps[t], state, *weights)
            outputs[t] = state[0]
        return outputs, state

    def forward(self, input, hx=None):
        self._check_input(input, (2, 3))
        batched = input.ndim == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        time_dim = 1 if self.batch_first else 0
        length, batch = input.shape[time_dim], input.shape[1 - time_dim]
        directions = 2 if self.bidirectional else 1
        shape = (self.num_layers * directions,) + ((batch,) if batched else ()) + (self.hidden_size,)
        states = self._states(hx, shape, input.dtype)
        if not batched:
            states = tuple(s.unsqueeze(1) for s in states)

        # Work on a list of (N, features) steps: each layer reads the previous layer's list directly.
        steps = [input[:, t] if self.batch_first else input[t] for t in range(length)]
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                out, last = self._run_direction(steps, tuple(s[k] for s in states), self._weights(layer, direction),
                                                reverse=direction == 1)
                outputs.append(out)
                finals.append(last)
            steps = outputs[0] if directions == 1 else [cat(pair, dim=-1) for pair in zip(*outputs)]
            if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
                steps = [F.dropout(step, self.dropout, training=True) for step in steps]

        output = stack(steps, dim=time_dim)
        h_n = tuple(stack([last[i] for last in finals], dim=0) for i in range(self._num_states))
        if not batched:
            output = output.squeeze(1 - time_dim)
            h_n = tuple(s.squeeze(1) for s in h_n)
        return output, (h_n if self._num_states > 1 else h_n[0])

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class LSTM(_LSTMMixin, _RNNBase):
    """Multi-layer long short-term memory, as torch.nn.LSTM (no proj_size).

    forward(input, hx=None) -> (output, (h_n, c_n)); hx is (h_0, c_0), zeros when None.
    Each step is `lstm_cell`; weight_ih_l{k} is (4H, in) with gate rows i, f, g, o.

    >>> lstm = LSTM(8, 16, num_layers=2, batch_first=True)
    >>> out, (h, c) = lstm(mc.randn(4, 10, 8))       # out (4, 10, 16), h and c (2, 4, 16)
    """


class GRU(_GRUMixin, _RNNBase):
    """Multi-layer gated recurrent unit, as torch.nn.GRU.

    forward(input, hx=None) -> (output, h_n); hx is h_0, zeros when None.
    Each step is `gru_cell`; weight_ih_l{k} is (3H, in) with gate rows r, z, n.

    >>> gru = GRU(8, 16, bidirectional=True)
    >>> out, h = gru(mc.randn(10, 4, 8))             # out (10, 4, 32), h (2, 4, 16)
    """


# ----- single-step cells -------------------------------------------------------------------------

class _CellBase(_Recurrent):
    """One step with weights weight_ih (G*H, input_size), weight_hh (G*H, H), bias_ih, bias_hh (G*H,).

    input (N, input_size) or unbatched (input_size,); each state (N, H) or (H,), zeros when None.
    """

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size = _check_size(input_size, "input_size")
        self.hidden_size = _check_size(hidden_size, "hidden_size")
        self.bias = _check_bool(bias, "bias")
        gates = self._num_gates * hidden_size
        self.weight_ih = Parameter(zeros(gates, input_size))
        self.weight_hh = Parameter(zeros(gates, hidden_size))
        if bias:
            self.bias_ih = Parameter(zeros(gates))
            self.bias_hh = Parameter(zeros(gates))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    @property
    def weight_dtype(self):
        return self.weight_ih.dtype

    def _forward_states(self, input, hx):
        self._check_input(input, (1, 2))
        batched = input.ndim == 2
        state = self._states(hx, input.shape[:-1] + (self.hidden_size,), input.dtype)
        if not batched:
            input, state = input.unsqueeze(0), tuple(s.unsqueeze(0) for s in state)
        state = self._step(input, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return state if batched else tuple(s.squeeze(0) for s in state)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(_LSTMMixin, _CellBase):
    """One LSTM step, as torch.nn.LSTMCell: forward(input, hx=None) -> (h', c'), hx = (h, c)."""

    def forward(self, input, hx=None):
        return self._forward_states(input, hx)


class GRUCell(_GRUMixin, _CellBase):
    """One GRU step, as torch.nn.GRUCell: forward(input, hx=None) -> h'."""

    def forward(self, input, hx=None):
        return self._forward_states(input, hx)[0]

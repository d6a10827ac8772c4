"""Dynamically quantized LSTM and GRU, as `torch.ao.nn.quantized.dynamic.LSTM` / `GRU`.

The recurrent layers of `nn.rnn` compute every weight-times-activation product in one method,
`_project(x, weight, bias)`; the cell math (`lstm_cell`, `gru_cell`), the loop over layers, directions
and time, and the input checks are reused unchanged. Here the weights are qint8 QTensors and
`_project` is `linear_dynamic` (float input quantized on the fly, integer GEMM, float output + float bias).

One detail decides the quantization ranges and follows torch (aten/src/ATen/native/RNN.cpp, FullLayer):
the input projection W_ih x_t of a layer and direction is computed for the whole sequence at once, so
x is quantized with one (scale, zero_point) over all L * N rows; the hidden projection W_hh h_{t-1}
runs step by step, so each h_{t-1} (N rows) gets its own.

    >>> qlstm = DynamicQuantizedLSTM.from_float(nn.LSTM(8, 16, num_layers=2, batch_first=True))
    >>> out, (h, c) = qlstm(mc.randn(4, 10, 8))
"""
import numpy as np

from ..autograd import no_grad
from ..nn import rnn as nn_rnn
from ..tensor import Tensor, stack
from .dynamic import linear_dynamic, weight_observer_for
from .modules import quantize_weight


class _DynamicRNNBase(nn_rnn._RNNBase):
    """The float layer's structure with weight_ih_l{k}[_reverse], weight_hh_... as qint8 QTensors and the
    biases as float32 buffers. The constructor quantizes torch-style randomly initialised weights, as
    torch's does; `from_float` is the usual way to build one."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self._quantize_weights(self, lambda: weight_observer_for(self))

    def _quantize_weights(self, source, make_observer):
        """Take every weight of float layer `source` (possibly self) as a qint8 QTensor, each with its
        own observer built by `make_observer` (so its own scale), and every bias as a float buffer."""
        directions = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            for direction in range(directions):
                for k, name in enumerate(self._weight_names(layer, direction)):
                    value = getattr(source, name) if (self.bias or k < 2) else None
                    if name in self._parameters:
                        del self._parameters[name]
                    if k < 2:
                        observer = make_observer()
                        with no_grad():
                            observer(value.detach())
                        setattr(self, name, quantize_weight(value.data, observer))
                    elif value is not None:
                        self.register_buffer(name, Tensor(value.data.astype(np.float32)))

    def get_weight(self):
        """{"weight_ih_l0": qint8 QTensor, "weight_hh_l0": ..., ...}, as torch's `get_weight()`."""
        return {name: getattr(self, name) for layer in range(self.num_layers)
                for direction in range(2 if self.bidirectional else 1)
                for name in self._weight_names(layer, direction)[:2]}

    def get_bias(self):
        """{"bias_ih_l0": float32 array, ...} (empty without bias), as torch's `get_bias()`."""
        if not self.bias:
            return {}
        return {name: getattr(self, name).data for layer in range(self.num_layers)
                for direction in range(2 if self.bidirectional else 1)
                for name in self._weight_names(layer, direction)[2:]}

    @property
    def weight_dtype(self):
        return np.dtype(np.float32)

    def _project(self, x, weight, bias):
        return Tensor._wrap(linear_dynamic(x.data, weight, None if bias is None else bias.data))

    def _run_direction(self, steps, state, weights, reverse):
        """As the float layer's, but W_ih x is projected for the whole sequence at once (see the module
        docstring), then the cell runs step by step with W_hh h projected per step."""
        weight_ih, weight_hh, bias_ih, bias_hh = weights
        gates_x = self._project(stack(steps), weight_ih, bias_ih)
        outputs = [None] * len(steps)
        for t in (reversed(range(len(steps))) if reverse else range(len(steps))):
            state = self._cell(gates_x[t], self._project(state[0], weight_hh, bias_hh), state)
            outputs[t] = state[0]
        return outputs, state

    def forward(self, input, hx=None):
        with no_grad():
            return super().forward(input, hx)

    @classmethod
    def from_float(cls, mod):
        """The dynamic twin of float `mod` (an nn.LSTM / nn.GRU): same sizes, each weight quantized with
        mod.qconfig's weight observer (default_dynamic_qconfig's: per-tensor symmetric qint8)."""
        if type(mod) is not cls._float_type:
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(mod).__name__}")
        make_observer = lambda: weight_observer_for(mod)  # noqa: E731 - one fresh observer per weight
        qmod = cls.__new__(cls)
        nn_rnn._RNNBase.__init__(qmod, mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first,
                                 mod.dropout, mod.bidirectional)
        qmod._quantize_weights(mod, make_observer)
        return qmod.train(mod.training)

    def extra_repr(self):
        return super().extra_repr() + ", dtype=qint8"


class DynamicQuantizedLSTM(nn_rnn._LSTMMixin, _DynamicRNNBase):
    """nn.LSTM with qint8 weights and activations quantized per projection call (torch.ao.nn.quantized.dynamic.LSTM).

    forward(input, hx=None) -> (output, (h_n, c_n)), shapes as nn.LSTM; inference only.
    """

    _float_type = nn_rnn.LSTM


class DynamicQuantizedGRU(nn_rnn._GRUMixin, _DynamicRNNBase):
    """nn.GRU with qint8 weights and activations quantized per projection call (torch.ao.nn.quantized.dynamic.GRU).

    forward(input, hx=None) -> (output, h_n), shapes as nn.GRU; inference only.
    """

    _float_type = nn_rnn.GRU

"""Dynamically quantized LSTM, GRU and their cells, as `torch.ao.nn.quantized.dynamic.LSTM` / `GRU` /
`LSTMCell` / `GRUCell`.

The recurrent layers of `nn.rnn` compute every weight-times-activation product in one method,
`_project(x, weight, bias)`; the cell math (`lstm_cell`, `gru_cell`), the loop over layers, directions
and time, and the input checks are reused unchanged. Here the weights are qint8 QTensors and
`_project` is `linear_dynamic` (float input quantized on the fly, integer GEMM, float output + float bias).

One detail decides the quantization ranges and follows torch (aten/src/ATen/native/RNN.cpp, FullLayer):
the input projection W_ih x_t of a layer and direction is computed for the whole sequence at once, so
x is quantized with one (scale, zero_point) over all L * N rows; the hidden projection W_hh h_{t-1}
runs step by step, so each h_{t-1} (N rows) gets its own. A cell quantizes x and h separately.

    >>> qlstm = DynamicQuantizedLSTM.from_float(nn.LSTM(8, 16, num_layers=2, batch_first=True))
    >>> out, (h, c) = qlstm(mc.randn(4, 10, 8))
"""
import numpy as np

from ..autograd import no_grad
from ..nn import rnn as nn_rnn
from ..tensor import Tensor, stack
from .dynamic import linear_dynamic, pack_dynamic_weight, weight_observer_for
from .modules import quantize_weight


class _DynamicWeights:
    """What the dynamic layers and cells share: qint8 weights, float32 bias buffers, float32 inputs, and
    `_project` as `linear_dynamic`. Subclasses list their (weight_ih, weight_hh, bias_ih, bias_hh) names
    per layer and direction in `_weight_groups()`."""

    def _quantize_weights(self, source, make_observer):
        """Take every weight of float module `source` (possibly self) as a qint8 QTensor, each with its
        own observer built by `make_observer` (so its own scale), and every bias as a float buffer."""
        for group in self._weight_groups():
            for k, name in enumerate(group):
                value = getattr(source, name) if (self.bias or k < 2) else None
                if name in self._parameters:
                    del self._parameters[name]
                if k < 2:
                    observer = make_observer()
                    with no_grad():
                        observer(value.detach())
                    setattr(self, name, quantize_weight(value.data, observer))
                elif value is None:
                    setattr(self, name, None)
                else:
                    self.register_buffer(name, Tensor(value.data.astype(np.float32)))

    def get_weight(self):
        """{"weight_ih_l0": qint8 QTensor, "weight_hh_l0": ..., ...}, as torch's `get_weight()`."""
        return {name: getattr(self, name) for group in self._weight_groups() for name in group[:2]}

    def get_bias(self):
        """{"bias_ih_l0": float32 array, ...} (empty without bias), as torch's `get_bias()`."""
        if not self.bias:
            return {}
        return {name: getattr(self, name).data for group in self._weight_groups() for name in group[2:]}

    @property
    def weight_dtype(self):
        return np.dtype(np.float32)

    def _project(self, x, weight, bias):
        return Tensor._wrap(linear_dynamic(x.data, weight, None if bias is None else bias.data,
                                           packed=self._packed(weight)))

    def _packed(self, weight):
        """`pack_dynamic_weight(weight)`, prepared once per weight (the hidden projection runs at every time
        step; packing it there cost more than the product) and kept while that weight object stays; not
        saved (io.TRANSIENT_ATTRIBUTES)."""
        memo = self.__dict__.setdefault("_packed_weight", {})
        entry = memo.get(id(weight))
        if entry is None or entry[0] is not weight:
            entry = memo[id(weight)] = (weight, pack_dynamic_weight(weight))
        return entry[1]

    @classmethod
    def from_float(cls, mod):
        """The dynamic twin of float `mod`: same sizes, each weight quantized with mod.qconfig's weight
        observer (default_dynamic_qconfig's: per-tensor symmetric qint8), the biases kept in float."""
        if type(mod) is not cls._float_type:
            raise TypeError(f"{cls.__name__}.from_float expects an nn.{cls._float_type.__name__}, "
                            f"got {type(mod).__name__}")
        qmod = cls._float_shaped_like(mod)
        qmod._quantize_weights(mod, lambda: weight_observer_for(mod))
        return qmod.train(mod.training)

    def extra_repr(self):
        return super().extra_repr() + ", dtype=qint8"


class _DynamicRNNBase(_DynamicWeights, nn_rnn._RNNBase):
    """The float layer's structure with weight_ih_l{k}[_reverse], weight_hh_... as qint8 QTensors and the
    biases as float32 buffers. The constructor quantizes torch-style randomly initialised weights, as
    torch's does; `from_float` is the usual way to build one."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self._quantize_weights(self, lambda: weight_observer_for(self))

    @classmethod
    def _float_shaped_like(cls, mod):
        """An instance with `mod`'s sizes and options, its float weights not yet quantized."""
        qmod = cls.__new__(cls)
        nn_rnn._RNNBase.__init__(qmod, mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first,
                                 mod.dropout, mod.bidirectional)
        return qmod

    def _weight_groups(self):
        return [self._weight_names(layer, direction) for layer in range(self.num_layers)
                for direction in range(2 if self.bidirectional else 1)]

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


class _DynamicCellBase(_DynamicWeights, nn_rnn._CellBase):
    """One step with qint8 weight_ih, weight_hh and float32 bias_ih, bias_hh: both projections quantize
    their own input (torch.ops.quantized.quantized_lstm_cell_dynamic / quantized_gru_cell_dynamic)."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self._quantize_weights(self, lambda: weight_observer_for(self))

    @classmethod
    def _float_shaped_like(cls, mod):
        qmod = cls.__new__(cls)
        nn_rnn._CellBase.__init__(qmod, mod.input_size, mod.hidden_size, mod.bias)
        return qmod

    def _weight_groups(self):
        return [("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def _forward_states(self, input, hx):
        with no_grad():
            return super()._forward_states(input, hx)


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


class DynamicQuantizedLSTMCell(nn_rnn._LSTMMixin, _DynamicCellBase):
    """nn.LSTMCell with qint8 weights (torch.ao.nn.quantized.dynamic.LSTMCell): forward(input, hx=None) -> (h', c')."""

    _float_type = nn_rnn.LSTMCell

    def forward(self, input, hx=None):
        return self._forward_states(input, hx)


class DynamicQuantizedGRUCell(nn_rnn._GRUMixin, _DynamicCellBase):
    """nn.GRUCell with qint8 weights (torch.ao.nn.quantized.dynamic.GRUCell): forward(input, hx=None) -> h'."""

    _float_type = nn_rnn.GRUCell

    def forward(self, input, hx=None):
        return self._forward_states(input, hx)[0]

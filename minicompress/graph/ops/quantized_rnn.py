"""com.microsoft DynamicQuantizeLSTM: what `onnxruntime.quantization.quantize_dynamic` writes for an LSTM.

The LSTM of `rnn.py` with int8 weights, W (dirs, input, 4H) and R (dirs, hidden, 4H) (transposed against
ONNX LSTM's), per direction one scale and zero point or one per gate column, and the float inputs of both
products quantized on the fly, as onnxruntime's kernel does (rnn_helpers.cc, ComputeGemm on uint8 weights):

    a_scale, a_zp = dynamic_qparams(A)       uint8, range [min(A, 0), max(A, 0)], as DynamicQuantizeLinear
    A_q = saturate(round(A / a_scale) + a_zp)
    A @ W  ~  float32(sum_k (A_q - a_zp)(W_q - w_zp)) * float32(a_scale * w_scale)

The input product runs once over the whole sequence (A = X, every step and batch row together, one
a_scale); the recurrent one once per step (A = h_{t-1} of the batch). The gates then add the float bias as
in LSTM (Wb + Rb), in that order: (xW + hR) + b.
"""
import numpy as np

from ..registry import Op, register
from .quantized import dynamic_matmul
from .rnn import _check, _directions, _finish, _order, _prepare, _sigmoid

MS = "com.microsoft"


def _recurrence(x, lens, reverse, w, r, bias, peep, h, c, arithmetic):
    """One direction: (outputs (seq, batch, H), (final h, final c)), stepping as onnxruntime's
    UniDirectionalLstm does: the input product over the first max(lens) steps at once, then per step the
    recurrent product of the previous step's outputs, which are 0 for rows already past their length (so
    they take no part in that step's input range)."""
    seq, batch, inputs = x.shape
    hidden = h.shape[-1]
    steps = int(lens.max()) if batch else 0
    xw = np.zeros((seq, batch, 4 * hidden), np.float32)
    if steps:
        xw[:steps] = dynamic_matmul(x[:steps].reshape(-1, inputs), *w, arithmetic).reshape(steps, batch, 4 * hidden)
    order, cols = _order(seq, batch, lens, reverse), np.arange(batch)
    outs = np.zeros((seq, batch, hidden), np.float32)
    previous = h
    for step in range(steps):
        gates = (xw[order[step], cols] + dynamic_matmul(previous, *r, arithmetic)) + bias
        i, o, f, g = np.split(gates, 4, axis=-1)
        i, f = _sigmoid(i + peep[0] * c), _sigmoid(f + peep[2] * c)
        c_new = f * c + i * np.tanh(g)
        h_new = _sigmoid(o + peep[1] * c_new) * np.tanh(c_new)
        live = (step < lens)[:, None]
        h, c = np.where(live, h_new, h), np.where(live, c_new, c)
        previous = np.where(live, h_new, 0).astype(np.float32)
        outs[order[step], cols] = previous
    return outs, (h, c)


@register("DynamicQuantizeLSTM", 1, domain=MS)
class DynamicQuantizeLSTM(Op):
    uses_arithmetic = True

    def run(self, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, w_scale=None,
            w_zero_point=None, r_scale=None, r_zero_point=None, *, activation_alpha=None, activation_beta=None,
            activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0):
        _check(activations, clip, ["sigmoid", "tanh", "tanh"], "DynamicQuantizeLSTM")
        if input_forget:
            raise NotImplementedError("DynamicQuantizeLSTM with input_forget=1 is not supported")
        if w_scale is None or r_scale is None:
            raise ValueError("DynamicQuantizeLSTM needs W_scale and R_scale")
        x, lens = _prepare(x, sequence_lens, 0)
        batch, hidden = x.shape[1], r.shape[1]
        ys, finals = [], []
        for d, reverse in enumerate(_directions(direction)):
            ws, rs = np.asarray(w_scale)[d], np.asarray(r_scale)[d]
            wz = 0 if w_zero_point is None else np.asarray(w_zero_point)[d]
            rz = 0 if r_zero_point is None else np.asarray(r_zero_point)[d]
            bias = np.zeros(4 * hidden, np.float32) if b is None else b[d, :4 * hidden] + b[d, 4 * hidden:]
            peep = np.zeros((3, hidden), np.float32) if p is None else p[d].reshape(3, hidden)
            h0 = np.zeros((batch, hidden), np.float32) if initial_h is None else initial_h[d]
            c0 = np.zeros((batch, hidden), np.float32) if initial_c is None else initial_c[d]
            y, states = _recurrence(x, lens, reverse, (w[d], ws, wz), (r[d], rs, rz), bias, peep, h0, c0,
                                    self.arithmetic)
            ys.append(y)
            finals.append(states)
        return tuple(a.astype(np.float32, copy=False) for a in _finish(ys, finals))

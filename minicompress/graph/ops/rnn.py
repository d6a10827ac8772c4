"""LSTM and GRU (ONNX layout: X (seq, batch, input), gates stacked per direction), default activations.

    LSTM (gates i, o, f, c):  i = s(x Wi + h Ri + p_i c + b_i),  f = s(x Wf + h Rf + p_f c + b_f),
                              g = tanh(x Wc + h Rc + b_c),  c' = f c + i g,
                              o = s(x Wo + h Ro + p_o c' + b_o),  h' = o tanh(c')
    GRU (gates z, r, h):      z = s(x Wz + h Rz + b_z),  r = s(x Wr + h Rr + b_r),
                              n = tanh(x Wh + (r h) Rh + Rb_h + Wb_h)      (linear_before_reset = 0)
                              n = tanh(x Wh + r (h Rh + Rb_h) + Wb_h)      (linear_before_reset = 1)
                              h' = (1 - z) n + z h

`sequence_lens` stops each batch element at its length (its state is carried, its outputs are 0), and the
reverse direction runs over each element's own length. Other activations, `clip` and `input_forget` are
not supported (an error, not a different result). `layout=1` (opset 14's batch first: X (batch, seq, input),
Y (batch, seq, dirs, H), states (batch, dirs, H)) is the same computation on transposed arrays; onnxruntime
does not run it, so it is checked against onnx's recorded node cases.
"""
import numpy as np

from ..registry import Op, register


def _sigmoid(x):
    return 0.5 * np.tanh(0.5 * x) + 0.5


def _check(activations, clip, defaults, op):
    if clip is not None:
        raise NotImplementedError(f"{op} with clip is not supported")
    if activations is not None and [a.lower() for a in activations] != defaults * (len(activations) // len(defaults)):
        raise NotImplementedError(f"{op} activations {activations} are not supported (only the defaults)")


def _order(seq, batch, lens, reverse):
    """Time indices (seq, batch) that each step reads: t, or the element's own reversal."""
    t = np.arange(seq)[:, None].repeat(batch, 1)
    if not reverse:
        return t
    return np.where(t < lens[None, :], lens[None, :] - 1 - t, t)


def _run(cell, x, lens, states, reverse):
    seq, batch = x.shape[:2]
    order = _order(seq, batch, lens, reverse)
    cols = np.arange(batch)
    outs = np.zeros((seq, batch, states[0].shape[-1]), x.dtype)
    for step in range(seq):
        new = cell(x[order[step], cols], *states)
        live = (step < lens)[:, None]
        states = tuple(np.where(live, n, s) for n, s in zip(new, states))
        outs[order[step], cols] = np.where(live, new[0], 0)
    return outs, states


def _prepare(x, sequence_lens, layout):
    if layout:                                                  # batch first: (batch, seq, input)
        x = np.swapaxes(x, 0, 1)
    seq, batch = x.shape[:2]
    lens = np.full(batch, seq, np.int64) if sequence_lens is None else sequence_lens.astype(np.int64)
    return x, lens


def _states(state, layout):
    """initial_h / initial_c as (dirs, batch, H); layout=1 gives them as (batch, dirs, H)."""
    return state if state is None or not layout else np.swapaxes(state, 0, 1)


def _finish(ys, finals, layout=0):
    y = np.stack(ys, axis=1)                                    # (seq, dirs, batch, H)
    finals = [np.stack(f, axis=0) for f in zip(*finals)]        # each (dirs, batch, H)
    if layout:                                                  # (batch, seq, dirs, H) and (batch, dirs, H)
        return (np.transpose(y, (2, 0, 1, 3)),) + tuple(np.swapaxes(f, 0, 1) for f in finals)
    return (y,) + tuple(finals)


def _directions(direction):
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


@register("LSTM", 7)
class LSTM(Op):
    def run(self, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *,
            activation_alpha=None, activation_beta=None, activations=None, clip=None, direction="forward",
            hidden_size=None, input_forget=0, layout=0):
        _check(activations, clip, ["sigmoid", "tanh", "tanh"], "LSTM")
        if input_forget:
            raise NotImplementedError("LSTM with input_forget=1 is not supported")
        x, lens = _prepare(x, sequence_lens, layout)
        initial_h, initial_c = _states(initial_h, layout), _states(initial_c, layout)
        hidden = r.shape[-1]
        batch = x.shape[1]
        ys, finals = [], []
        for d, reverse in enumerate(_directions(direction)):
            wd, rd = w[d].T, r[d].T
            bias = np.zeros(4 * hidden, x.dtype) if b is None else b[d, :4 * hidden] + b[d, 4 * hidden:]
            peep = np.zeros(3 * hidden, x.dtype) if p is None else p[d]
            pi, po, pf = peep[:hidden], peep[hidden:2 * hidden], peep[2 * hidden:]

            def cell(xt, h, c, wd=wd, rd=rd, bias=bias, pi=pi, po=po, pf=pf):
                gates = xt @ wd + h @ rd + bias
                i, o, f, g = np.split(gates, 4, axis=-1)
                i, f = _sigmoid(i + pi * c), _sigmoid(f + pf * c)
                c_new = f * c + i * np.tanh(g)
                o = _sigmoid(o + po * c_new)
                return o * np.tanh(c_new), c_new

            h0 = np.zeros((batch, hidden), x.dtype) if initial_h is None else initial_h[d]
            c0 = np.zeros((batch, hidden), x.dtype) if initial_c is None else initial_c[d]
            y, states = _run(cell, x, lens, (h0, c0), reverse)
            ys.append(y)
            finals.append(states)
        return tuple(a.astype(x.dtype, copy=False) for a in _finish(ys, finals, layout))


@register("GRU", 7)
class GRU(Op):
    def run(self, x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None,
            activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None,
            linear_before_reset=0, layout=0):
        _check(activations, clip, ["sigmoid", "tanh"], "GRU")
        x, lens = _prepare(x, sequence_lens, layout)
        initial_h = _states(initial_h, layout)
        hidden = r.shape[-1]
        batch = x.shape[1]
        ys, finals = [], []
        for d, reverse in enumerate(_directions(direction)):
            wd, rd = w[d].T, r[d]
            wb = np.zeros(3 * hidden, x.dtype) if b is None else b[d, :3 * hidden]
            rb = np.zeros(3 * hidden, x.dtype) if b is None else b[d, 3 * hidden:]
            rz_r, r_h = rd[:2 * hidden].T, rd[2 * hidden:].T

            def cell(xt, h, wd=wd, wb=wb, rb=rb, rz_r=rz_r, r_h=r_h):
                xg = xt @ wd + wb
                zr = _sigmoid(xg[:, :2 * hidden] + h @ rz_r + rb[:2 * hidden])
                z, rr = zr[:, :hidden], zr[:, hidden:]
                if linear_before_reset:
                    n = np.tanh(xg[:, 2 * hidden:] + rr * (h @ r_h + rb[2 * hidden:]))
                else:
                    n = np.tanh(xg[:, 2 * hidden:] + (rr * h) @ r_h + rb[2 * hidden:])
                return ((1 - z) * n + z * h,)

            h0 = np.zeros((batch, hidden), x.dtype) if initial_h is None else initial_h[d]
            y, states = _run(cell, x, lens, (h0,), reverse)
            ys.append(y)
            finals.append(states)
        return tuple(a.astype(x.dtype, copy=False) for a in _finish(ys, finals, layout))

"""ONNX LSTM and GRU against onnxruntime: directions, biases, initial states, peepholes, sequence lengths,
linear_before_reset; and torch's exported nn.LSTM / nn.GRU."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx_harness import assert_matches
from test_onnx_models import assert_close_to_onnxruntime, export

SETTINGS = settings(max_examples=10, deadline=None)
# float32 recurrences over a few steps: both runtimes round each matmul differently
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@SETTINGS
@given(seq=st.integers(1, 4), batch=st.integers(1, 3), inp=st.integers(1, 4), hidden=st.integers(1, 4),
       extras=st.booleans(), lens=st.booleans(), layout=st.just(0), lbr=st.sampled_from([0, 1]),
       seed=st.integers(0, 2**31 - 1))
def test_recurrent_ops(op_type, direction, seq, batch, inp, hidden, extras, lens, layout, lbr, seed):
    rng = np.random.default_rng(seed)
    dirs, gates = 2 if direction == "bidirectional" else 1, 4 if op_type == "LSTM" else 3

    def arr(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)
    x = arr(batch, seq, inp) if layout else arr(seq, batch, inp)
    inputs = [("x", x), ("w", arr(dirs, gates * hidden, inp)), ("r", arr(dirs, gates * hidden, hidden))]
    state = (lambda: arr(batch, dirs, hidden)) if layout else (lambda: arr(dirs, batch, hidden))
    if extras or lens:
        inputs.append(("b", arr(dirs, 2 * gates * hidden)))
        inputs.append(("l", rng.integers(1, seq + 1, batch).astype(np.int32) if lens else None))
        inputs.append(("h", state()))
        if op_type == "LSTM":
            inputs += [("c", state()), ("p", arr(dirs, 3 * hidden))]
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout}
    if op_type == "GRU":
        attrs["linear_before_reset"] = lbr
    assert_matches(op_type, inputs, attrs, opset=14, n_outputs=3 if op_type == "LSTM" else 2, **TOL)


@pytest.mark.parametrize("kind", [torch.nn.LSTM, torch.nn.GRU])
def test_torch_recurrent_layers_match_onnxruntime(kind):
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = kind(5, 6, num_layers=2, bidirectional=True, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    assert_close_to_onnxruntime(export(Net(), [x], 14, {"in0": {0: "n", 1: "t"}}),
                                [np.random.default_rng(1).standard_normal((3, 6, 5)).astype(np.float32)])

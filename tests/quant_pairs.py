"""The same quantized tensors for minicompress and torch, shared by the tests and benchmarks/bench_quant.py."""
import numpy as np
import torch

import minicompress as mc
from minicompress import quant
from minicompress.quant import modules as nnq


def quantized_pair(x, scale, zp):
    """The same quint8 activation for both frameworks."""
    return (quant.quantize_per_tensor(mc.tensor(x), scale, zp, "quint8"),
            torch.quantize_per_tensor(torch.from_numpy(x), scale, zp, torch.quint8))


def weight_pair(w):
    """w quantized per output channel, symmetric qint8 (the x86 default), for both frameworks; torch is
    given our scales and zero points and must produce the same codes."""
    observer = quant.PerChannelMinMaxObserver(dtype="qint8", qscheme="per_channel_symmetric")
    observer(mc.tensor(w))
    ours = nnq.quantize_weight(w, observer)
    theirs = torch.quantize_per_channel(torch.from_numpy(w), torch.from_numpy(ours.q_per_channel_scales()),
                                        torch.from_numpy(ours.q_per_channel_zero_points()), 0, torch.qint8)
    np.testing.assert_array_equal(ours.int_repr(), theirs.int_repr().numpy())
    return ours, theirs

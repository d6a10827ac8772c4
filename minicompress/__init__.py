"""minicompress: neural-network compression (quantization, pruning, distillation) in NumPy and Numba,
checked against PyTorch.

The top level mirrors `torch`: `tensor`, `Tensor`, `no_grad`, dtypes, constructors and `manual_seed`.
"""
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .random import manual_seed, rand, randint, randn, randperm
from .tensor import (Tensor, arange, as_dtype, bool_, cat, float32, float64, full, int8, int32, int64, maximum,
                     minimum, ones, ones_like, stack, tensor, uint8, where, zeros, zeros_like)

__version__ = "0.1.0"

# Quantized dtypes and qschemes live at the top level, as in torch.
from .quant.dtypes import (per_channel_affine, per_channel_symmetric, per_tensor_affine, per_tensor_symmetric,
                           qint8, qint32, quint8)

from .io import load, save  # noqa: E402  (model files need the layer classes above)
from .graph.compiler import compile  # noqa: E402  (torch.compile's name)

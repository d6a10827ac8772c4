"""Weight-only int8 embeddings: each row of the table stored as uint8 levels with its own float32 scale and
offset, as fbgemm's fused 8-bit row-wise format (`torch.ops.quantized.embedding_bag_byte_prepack` / `_unpack`).

Per row w (D,), in float32:

    offset  = min(w)                    scale = (max(w) - min(w)) / 255
    q       = rint((w - offset) * (255 / (max(w) - min(w) + 1e-8)))          uint8, round half to even
    w_hat   = q * scale + offset                                                 what a lookup returns

A lookup dequantizes only the rows it picks; the table takes 1 + 8 / D bytes per entry instead of 4
(all-MiniLM-L6-v2's 30522 x 384 word table: 46.9 MB -> 11.8 MB). There is no activation to quantize and no
gradient (inference only).
"""
import numpy as np

from ..nn.layers import Embedding
from ..nn.module import Module
from ..tensor import Tensor


def rowwise_quantize(weight):
    """float32 (N, D) -> (uint8 levels (N, D), float32 scales (N,), float32 offsets (N,))."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (num_embeddings, embedding_dim), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight contains NaN or infinite values, which have no int8 range")
    lo, hi = w.min(axis=1), w.max(axis=1)
    span = hi - lo
    scales = span / np.float32(255)
    inverse = np.float32(255) / (span + np.float32(1e-8))
    levels = np.rint((w - lo[:, None]) * inverse[:, None])
    return np.clip(levels, 0, 255).astype(np.uint8), scales.astype(np.float32), lo.astype(np.float32)


def rowwise_dequantize(levels, scales, offsets):
    return levels.astype(np.float32) * scales[..., None] + offsets[..., None]


class QuantizedEmbedding(Module):
    """nn.Embedding with its table in 8-bit rows (module docstring); forward(indices) -> float32 rows."""

    def __init__(self, levels, scales, offsets, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = levels.shape
        self.padding_idx = padding_idx
        self.register_buffer("weight_levels", Tensor(np.ascontiguousarray(levels, np.uint8)))
        self.register_buffer("weight_scales", Tensor(np.asarray(scales, np.float32)))
        self.register_buffer("weight_offsets", Tensor(np.asarray(offsets, np.float32)))

    @classmethod
    def from_float(cls, mod):
        if not isinstance(mod, Embedding):
            raise TypeError(f"{cls.__name__}.from_float expects an nn.Embedding, got {type(mod).__name__}")
        return cls(*rowwise_quantize(mod.weight.data), padding_idx=mod.padding_idx)

    def dequantized_weight(self):
        return rowwise_dequantize(self.weight_levels.data, self.weight_scales.data, self.weight_offsets.data)

    def forward(self, input):
        indices = input.data if isinstance(input, Tensor) else np.asarray(input)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"input must hold integer indices, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise IndexError(f"input holds indices in [{indices.min()}, {indices.max()}], outside "
                             f"[0, {self.num_embeddings})")
        return Tensor(rowwise_dequantize(self.weight_levels.data[indices], self.weight_scales.data[indices],
                                         self.weight_offsets.data[indices]))

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, dtype=uint8 rows (scale, offset)"


def quantize_embeddings(model, inplace=True):
    """Replace every nn.Embedding inside `model` by a QuantizedEmbedding; returns the model."""
    import copy

    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, Embedding):
                module._modules[name] = QuantizedEmbedding.from_float(child)  # in place: the order of children stays
    return model

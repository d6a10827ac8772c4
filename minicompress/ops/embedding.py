"""Embedding lookup, as `torch.nn.functional.embedding`.

    out[..., :] = weight[indices[...], :]          weight (num_embeddings, embedding_dim), indices int (*)
    dweight[i]  = sum of g[...] over every position where indices == i      (repeated indices add up)

With `padding_idx`, that row's gradient is zero (torch never updates the padding vector).
"""
import numpy as np

from ..autograd import Function


class Embedding(Function):
    """Rows of `weight` picked by integer `indices`; the backward scatter-adds into a zero matrix."""

    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None):
        ctx.shape, ctx.indices, ctx.padding_idx = weight.shape, indices, padding_idx
        return weight[indices]

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        np.add.at(grad, ctx.indices.reshape(-1), g.reshape(-1, ctx.shape[1]))
        if ctx.padding_idx is not None:
            grad[ctx.padding_idx] = 0
        return grad, None

"""Losses. `nll_loss` is the one primitive with its own backward; cross-entropy, MSE and KL are
compositions of differentiable ops (see `functional.py`)."""
import numpy as np

from ..autograd import Function


class NLLLoss(Function):
    """-sum_i w[y_i] logp[i, y_i] / (sum_i w[y_i] for 'mean'), skipping `ignore_index`, as torch.

    logp is (N, C) or (N, C, d1, ...); target holds class indices of shape (N,) or (N, d1, ...).
    The gradient is -w[y_i] / normaliser at (i, y_i) and zero elsewhere.
    """

    @staticmethod
    def forward(ctx, logp, target, weight=None, ignore_index=-100, reduction="mean"):
        classes = logp.shape[1]
        moved = np.moveaxis(logp, 1, -1).reshape(-1, classes)
        flat_target = target.reshape(-1).astype(np.int64)
        valid = flat_target != ignore_index
        safe_target = np.where(valid, flat_target, 0)
        if np.any((safe_target < 0) | (safe_target >= classes)):
            bad = flat_target[valid & ((flat_target < 0) | (flat_target >= classes))][0]
            raise ValueError(f"target contains class index {bad}, expected values in [0, {classes})")
        w = np.ones(classes, dtype=logp.dtype) if weight is None else weight.astype(logp.dtype)
        sample_w = w[safe_target] * valid
        picked = moved[np.arange(len(flat_target)), safe_target]
        losses = -picked * sample_w
        if reduction == "none":
            out, scale = losses.reshape(target.shape), None
        elif reduction == "sum":
            out, scale = losses.sum(), 1.0
        elif reduction == "mean":
            total = sample_w.sum()
            out, scale = losses.sum() / total, 1.0 / total
        else:
            raise ValueError(f"reduction={reduction!r} is not one of 'none', 'mean', 'sum'")
        ctx.saved = (sample_w, safe_target)
        ctx.shape, ctx.reduction, ctx.scale = logp.shape, reduction, scale
        return np.asarray(out, dtype=logp.dtype)

    @staticmethod
    def backward(ctx, g):
        sample_w, safe_target = ctx.saved
        classes = ctx.shape[1]
        per_sample = -sample_w * (g.reshape(-1) if ctx.reduction == "none" else g * ctx.scale)
        grad = np.zeros((len(safe_target), classes), dtype=g.dtype)
        grad[np.arange(len(safe_target)), safe_target] = per_sample
        moved_shape = (ctx.shape[0],) + ctx.shape[2:] + (classes,)
        return np.moveaxis(grad.reshape(moved_shape), -1, 1), None, None

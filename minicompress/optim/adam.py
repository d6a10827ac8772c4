"""Adam and AdamW, as torch.optim.Adam / AdamW (bias-corrected moments).

    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
    p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
Adam adds weight_decay * p to g; AdamW instead shrinks p by lr * weight_decay * p first.
"""
import math

import numpy as np

from .optimizer import Optimizer, _check_non_negative


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        _check_non_negative(lr, "lr")
        _check_non_negative(eps, "eps")
        _check_non_negative(weight_decay, "weight_decay")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p, grad, state in self._params_with_grad(group):
                if wd and self._decoupled:
                    p.data *= 1 - lr * wd
                elif wd:
                    grad = grad + wd * p.data
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m *= b1
                m += (1 - b1) * grad
                v *= b2
                v += (1 - b2) * grad * grad
                step_size = lr / (1 - b1 ** t)
                denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
                p.data -= (step_size * m / denom).astype(p.dtype, copy=False)


class AdamW(Adam):
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

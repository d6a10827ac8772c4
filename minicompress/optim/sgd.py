"""Stochastic gradient descent with momentum, Nesterov and weight decay, as torch.optim.SGD.

    g = grad + weight_decay * p
    b = momentum * b + (1 - dampening) * g      (b = g on the first step)
    g = g + momentum * b  if nesterov  else  b
    p = p - lr * g
"""
from .optimizer import Optimizer, _check_non_negative


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            _check_non_negative(value, name)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self):
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p, grad, state in self._params_with_grad(group):
                if wd:
                    grad = grad + wd * p.data
                if momentum:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.copy()
                    else:
                        buf *= momentum
                        buf += (1 - group["dampening"]) * grad
                    grad = grad + momentum * buf if group["nesterov"] else buf
                p.data -= (lr * grad).astype(p.dtype, copy=False)

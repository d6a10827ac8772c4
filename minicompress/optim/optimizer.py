"""The Optimizer base class: parameter groups, per-parameter state, zero_grad, state_dict."""
import numpy as np


class Optimizer:
    """Holds `param_groups` (lists of parameters with their hyper-parameters) as torch does."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        self.state = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        group["params"] = list(group["params"])
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def _params_with_grad(self, group):
        for p in group["params"]:
            if p.grad is not None:
                yield p, p.grad.data, self.state.setdefault(id(p), {})

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self):
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        return {"state": {index[k]: {n: np.copy(v) if isinstance(v, np.ndarray) else v for n, v in s.items()}
                          for k, s in self.state.items() if k in index},
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]}


def _check_non_negative(value, name):
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")

"""Sensitivity analysis: how much a metric moves when each layer alone is pruned.

    result = sensitivity_analysis(model, lambda m: accuracy(m, test_loader), ratios=[0.25, 0.5, 0.75])
    print(result)            # one row per layer, one column per ratio
    result.plot("sens.png")  # if matplotlib is installed

For every prunable layer and every ratio, that layer's weight is pruned to `ratio` of the whole
tensor (entries already pruned are counted in, as in `GradualPruner`), the model is evaluated, and
the layer is put back exactly as it was: the same Parameter and buffer objects, their arrays
restored, the same hooks. Layers that lose little at high ratios can be pruned harder (Han et al.
2015, "Learning both Weights and Connections", section 4).
"""
import numbers

import numpy as np

from ..nn.module import Module
from .gradual import prunable_parameters
from .methods import L1Unstructured, LnStructured, RandomUnstructured
from .reparam import current_mask, original, set_mask

METHODS = {
    "l1_unstructured": lambda ratio: L1Unstructured(ratio),
    "random_unstructured": lambda ratio: RandomUnstructured(ratio),
    "ln_structured": lambda ratio: LnStructured(ratio, n=2, dim=0),
}


class SensitivityResult(dict):
    """{layer_name: {ratio: metric}}, plus `baseline` (the metric of the untouched model); prints as a table."""

    def __init__(self, *args, baseline=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline = baseline

    def ratios(self):
        return sorted({r for row in self.values() for r in row})

    def __str__(self):
        ratios = self.ratios()
        headers = ["layer"] + [f"{r:.0%}" if isinstance(r, float) else str(r) for r in ratios]
        rows = [[name] + [f"{row[r]:.4f}" if r in row else "" for r in ratios] for name, row in self.items()]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        title = f"metric when one layer is pruned (baseline {self.baseline:.4f})" if self.baseline is not None \
            else "metric when one layer is pruned"
        return "\n".join([title, line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])

    def plot(self, path):
        """Save a line per layer (metric against ratio) to `path`; needs matplotlib."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("SensitivityResult.plot needs matplotlib (pip install matplotlib); "
                              "print(result) shows the same numbers as a table") from exc
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, row in self.items():
            ratios = sorted(row)
            ax.plot(ratios, [row[r] for r in ratios], marker="o", label=name)
        if self.baseline is not None:
            ax.axhline(self.baseline, color="gray", linestyle="--", label="baseline")
        ax.set_xlabel("pruning ratio of the layer")
        ax.set_ylabel("metric")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


def _snapshot(module):
    """Everything pruning a tensor of `module` can change, with copies of the arrays."""
    stores = {key: dict(getattr(module, key)) for key in ("_parameters", "_buffers", "_forward_pre_hooks")}
    arrays = {id(t): (t, t.data.copy()) for store in ("_parameters", "_buffers")
              for t in stores[store].values() if t is not None}
    attributes = dict(module.__dict__)
    histories = {id(h): (h, list(h.history)) for h in stores["_forward_pre_hooks"].values() if hasattr(h, "history")}
    return stores, arrays, attributes, histories


def _restore(module, snapshot):
    stores, arrays, attributes, histories = snapshot
    for key, saved in stores.items():
        store = getattr(module, key)
        store.clear()
        store.update(saved)
    for tensor, data in arrays.values():
        tensor.data = data
    module.__dict__.clear()
    module.__dict__.update(attributes)
    for hook, history in histories.values():
        hook.history = history


def sensitivity_analysis(model, evaluate, ratios, layers=None, method="l1_unstructured"):
    """The metric of `model` with each layer alone pruned to each ratio.

    Args:
        model: a Module; it is left bit-for-bit as it was.
        evaluate: callable(model) -> float (e.g. test accuracy).
        ratios: fractions in [0, 1] of each weight to prune, counted against the whole tensor.
        layers: qualified module names to analyse; default every Conv2d and Linear.
        method: 'l1_unstructured', 'random_unstructured' or 'ln_structured' (L2 norm of output channels).

    Returns:
        SensitivityResult {layer_name: {ratio: metric}} with `.baseline` the unpruned metric.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable(model) -> float, got {type(evaluate).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    ratios = list(ratios)
    for r in ratios:
        if not isinstance(r, numbers.Real) or isinstance(r, bool) or not 0.0 <= r <= 1.0:
            raise ValueError(f"ratios must hold fractions in [0, 1], got {r!r}")
    names = {id(m): n for n, m in model.named_modules()}
    candidates = {names[id(m)]: m for m, _ in prunable_parameters(model)}
    if layers is None:
        layers = list(candidates)
    for name in layers:
        if name not in candidates:
            raise ValueError(f"layers: {name!r} is not a Conv2d or Linear of the model (choose from {list(candidates)})")
    result = SensitivityResult(baseline=float(evaluate(model)))
    for name in layers:
        module = candidates[name]
        result[name] = {}
        for ratio in ratios:
            snapshot = _snapshot(module)
            try:
                scores = original(module, "weight") * current_mask(module, "weight")
                mask = METHODS[method](float(ratio)).compute_mask(scores, np.ones(scores.shape, scores.dtype))
                set_mask(module, "weight", mask * current_mask(module, "weight"))
                result[name][ratio] = float(evaluate(model))
            finally:
                _restore(module, snapshot)
    return result

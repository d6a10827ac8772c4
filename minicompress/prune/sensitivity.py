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
import pickle

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


def sensitivity_analysis(model, evaluate, ratios, layers=None, method="l1_unstructured", executor=None, seed=None):
    """The metric of `model` with each layer alone pruned to each ratio.

    Every (layer, ratio) pair is one independent task: prune that layer of the model, evaluate, put
    the layer back. Each task runs with the default generator seeded from its own seed (spawned from
    `seed` in task order with numpy's SeedSequence), so 'random_unstructured' and any randomness in
    `evaluate` draw the same numbers whichever process runs the task, and the result is identical
    with or without an executor.

    Args:
        model: a Module; it is left bit-for-bit as it was.
        evaluate: callable(model) -> float (e.g. test accuracy), carrying its own data (say
            `functools.partial(accuracy, loader=test_loader)`).
        ratios: fractions in [0, 1] of each weight to prune, counted against the whole tensor.
        layers: qualified module names to analyse; default every Conv2d and Linear.
        method: 'l1_unstructured', 'random_unstructured' or 'ln_structured' (L2 norm of output channels).
        executor: None to run the tasks here one after another, or any `concurrent.futures.Executor`
            (`ProcessPoolExecutor(2)`, Dask's `distributed.Client(...).get_executor()`, Ray's
            `RayExecutor()`), to which every task is submitted with the pickled model, `evaluate`
            (which must then be picklable by that executor: a module-level function or a partial of
            one for a process pool; see `minicompress.training.parallel`) and its seed. The baseline runs here.
        seed: int seeding the tasks; None draws one from `minicompress.random.default_generator()`
            (so `manual_seed` fixes it too).

    Returns:
        SensitivityResult {layer_name: {ratio: metric}} with `.baseline` the unpruned metric.
    """
    from ..training import parallel
    from ..random import default_generator

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
    parallel.check_executor(executor)
    if seed is None:
        seed = int(default_generator().integers(2 ** 63))
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    names = {id(m): n for n, m in model.named_modules()}
    candidates = {names[id(m)]: m for m, _ in prunable_parameters(model)}
    if layers is None:
        layers = list(candidates)
    for name in layers:
        if name not in candidates:
            raise ValueError(f"layers: {name!r} is not a Conv2d or Linear of the model (choose from {list(candidates)})")
    pairs = [(name, ratio) for name in layers for ratio in ratios]
    seeds = [int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(int(seed)).spawn(len(pairs))]
    # Here the tasks prune the caller's model and restore it; on an executor each worker unpickles its copy.
    try:
        shipped = model if executor is None else pickle.dumps(model)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"model must be picklable to run on an executor ({exc}); a hook or attribute that is "
                        f"a lambda or a local function cannot be sent to a worker") from exc
    tasks = [(shipped, name, float(ratio), method, task_seed, evaluate)
             for (name, ratio), task_seed in zip(pairs, seeds)]
    result = SensitivityResult(baseline=float(evaluate(model)))
    metrics = parallel.run_tasks(_prune_one_layer_and_evaluate, tasks, executor)
    for name in layers:
        result[name] = {}
    for (name, ratio), metric in zip(pairs, metrics):
        result[name][ratio] = metric
    return result


def _prune_one_layer_and_evaluate(model, name, ratio, method, seed, evaluate):
    """One task of `sensitivity_analysis`: `model` (a Module, or one pickled to bytes) with layer `name`
    pruned to `ratio` by `method`, evaluated under a default generator seeded with `seed`; the layer is
    restored afterwards."""
    from ..random import fork_rng

    if isinstance(model, bytes):
        model = pickle.loads(model)
    module = dict(model.named_modules())[name]
    snapshot = _snapshot(module)
    try:
        with fork_rng(seed):
            scores = original(module, "weight") * current_mask(module, "weight")
            mask = METHODS[method](ratio).compute_mask(scores, np.ones(scores.shape, scores.dtype))
            set_mask(module, "weight", mask * current_mask(module, "weight"))
            return float(evaluate(model))
    finally:
        _restore(module, snapshot)

"""Module-level pruning, with torch.nn.utils.prune's names, argument order and defaults.

    prune.l1_unstructured(model.classifier, "weight", amount=0.5)
    model.classifier.weight_orig, model.classifier.weight_mask    # Parameter, buffer
    prune.remove(model.classifier, "weight")                      # zeros made permanent

Every function here picks a method from `methods.py`, computes its mask on the tensor's importance
scores (the tensor itself unless `importance_scores` is given) and hands the mask to
`reparam.set_mask`. Pruning a tensor that is already pruned composes the new method with the old
mask as torch's PruningContainer does (`methods.compose_mask`): `amount` then counts what is still
unpruned, so two rounds of `l1_unstructured(amount=0.5)` leave 25% of the entries.
"""
import numbers

import numpy as np

from ..tensor import Tensor
from . import methods as M
from .reparam import check_target, current_mask, find_hook, is_pruned, remove, set_mask

__all__ = ["identity", "random_unstructured", "l1_unstructured", "random_structured", "ln_structured",
           "global_unstructured", "custom_from_mask", "n_m_structured", "remove", "is_pruned", "apply_method"]


def _scores(module, name, importance_scores):
    """Importance scores as an array: `importance_scores` if given (shape-checked), else the current
    (masked) tensor, as torch's `getattr(module, name)`."""
    target = getattr(module, name)
    if importance_scores is None:
        return np.asarray(target.data)
    scores = importance_scores.data if isinstance(importance_scores, Tensor) else np.asarray(importance_scores)
    if scores.shape != target.shape:
        raise ValueError(f"importance_scores shape {scores.shape} must equal the shape of {name!r}, {target.shape}")
    return scores


def apply_method(module, name, method, importance_scores=None):
    """Prune `module.<name>` with a BasePruningMethod instance (torch's `BasePruningMethod.apply`).

    First pruning: mask = method.compute_mask(scores, ones). Later ones: the new method is composed
    with the stored mask (`compose_mask`). Returns module.
    """
    check_target(module, name)
    if not isinstance(method, M.BasePruningMethod):
        raise TypeError(f"method must be a BasePruningMethod instance, got {type(method).__name__}")
    scores = _scores(module, name, importance_scores)
    default_mask = current_mask(module, name)
    if find_hook(module, name) is None:
        mask = method.compute_mask(scores, default_mask)
    else:
        mask = M.compose_mask(method, scores, default_mask)
    set_mask(module, name, mask, repr(method))
    return module


def identity(module, name):
    """Reparametrize with a mask of ones: nothing pruned (torch.nn.utils.prune.identity)."""
    return apply_method(module, name, M.Identity())


def random_unstructured(module, name, amount):
    """Prune `amount` entries chosen at random (int: a count; float in [0, 1]: a fraction)."""
    return apply_method(module, name, M.RandomUnstructured(amount))


def l1_unstructured(module, name, amount, importance_scores=None):
    """Prune the `amount` entries of smallest absolute importance score."""
    return apply_method(module, name, M.L1Unstructured(amount), importance_scores)


def random_structured(module, name, amount, dim):
    """Prune `amount` whole channels along `dim`, chosen at random."""
    return apply_method(module, name, M.RandomStructured(amount, dim))


def ln_structured(module, name, amount, n, dim=-1, importance_scores=None):
    """Prune the `amount` channels along `dim` of smallest L_n norm (n as torch.norm's p).
    dim=0 of a Conv2d / Linear weight removes output channels, which `shrink` can then cut away."""
    return apply_method(module, name, M.LnStructured(amount, n, dim), importance_scores)


def n_m_structured(module, name, n=2, m=4, dim=1, importance_scores=None):
    """Keep the n largest of every m consecutive entries along `dim` (N:M sparsity; torch has none)."""
    return apply_method(module, name, M.NMStructured(n, m, dim), importance_scores)


def custom_from_mask(module, name, mask):
    """Prune with a precomputed mask (array or Tensor of the tensor's shape), times any earlier mask."""
    mask = mask.data if isinstance(mask, Tensor) else mask
    return apply_method(module, name, M.CustomFromMask(np.asarray(mask)))


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prune several tensors together, with one threshold across all of them
    (torch.nn.utils.prune.global_unstructured).

    Args:
        parameters: iterable of (module, name) pairs.
        pruning_method: an unstructured BasePruningMethod subclass, e.g. L1Unstructured.
        importance_scores: optional dict {(module, name): scores}; missing pairs use the tensor.
        **kwargs: `amount`, counted over all surviving entries of all tensors.

    The masks come from `methods.global_compute_masks` (already-pruned entries stay pruned and are
    not counted again) and are applied with `custom_from_mask`.
    """
    parameters = list(parameters)
    if not parameters:
        raise ValueError("parameters must hold at least one (module, name) pair, got none")
    for i, pair in enumerate(parameters):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"parameters[{i}] must be a (module, name) pair, got {pair!r}")
        check_target(*pair)
    if not (isinstance(pruning_method, type) and issubclass(pruning_method, M.BasePruningMethod)
            and pruning_method.PRUNING_TYPE == "unstructured"):
        raise TypeError(f"pruning_method must be a BasePruningMethod subclass of PRUNING_TYPE 'unstructured' "
                        f"(e.g. L1Unstructured), got {pruning_method!r}")
    if set(kwargs) != {"amount"}:
        raise TypeError(f"global_unstructured takes the keyword argument amount (only), got {sorted(kwargs)}")
    if importance_scores is not None and not isinstance(importance_scores, dict):
        raise TypeError(f"importance_scores must be a dict {{(module, name): scores}} or None, "
                        f"got {type(importance_scores).__name__}")
    importance_scores = importance_scores or {}
    scores = [_scores(module, name, importance_scores.get((module, name))) for module, name in parameters]
    default_masks = [current_mask(module, name) for module, name in parameters]
    masks = M.global_compute_masks(scores, default_masks, kwargs["amount"], pruning_method)
    for (module, name), mask in zip(parameters, masks):
        custom_from_mask(module, name, mask)

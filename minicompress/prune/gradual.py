"""Gradual pruning during training (Zhu & Gupta 2017, "To prune, or not to prune"), and stripping
the masks afterwards.

    pruner = GradualPruner(model, PolynomialDecay(0.0, 0.5, begin_step=0, end_step=300, frequency=50))
    for x, y in loader:
        ...; optimizer.step()
        pruner.step()              # prunes when the schedule says so
    strip_pruning(model)           # plain weights with zeros

At a pruning step the schedule gives a sparsity s and every target tensor gets a fresh mask with
round(s * size) zeros MEASURED AGAINST THE WHOLE TENSOR (never an amount compounded on what is
already pruned, as repeated `l1_unstructured` calls would do). The scores are the masked weights
|orig * mask| (tfmot scores the weights, which it keeps masked), so an entry once pruned scores 0
and stays pruned while the sparsity rises. With method='global' one threshold holds across all
targets (`methods.global_compute_masks`) and s is the sparsity of all of them together.
"""
import numbers

import numpy as np

from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from .methods import L1Unstructured, global_compute_masks
from .reparam import check_target, current_mask, original, pruned_parameters, remove, set_mask
from .schedules import PruningSchedule

METHODS = ("l1_unstructured", "global")


def prunable_parameters(model, types=(Conv2d, Linear)):
    """[(module, 'weight')] for every module of `types` in model, in module order."""
    return [(m, "weight") for m in model.modules() if isinstance(m, types)]


class GradualPruner:
    """Applies `schedule` to the target tensors each time it is stepped.

    Args:
        targets: a Module (every Conv2d and Linear weight in it) or a list of (module, name) pairs.
        schedule: a PruningSchedule (ConstantSparsity, PolynomialDecay): step -> (should_prune, sparsity).
        method: 'l1_unstructured' (each tensor to the sparsity on its own) or 'global' (one L1
            threshold across all targets).

    `step()` advances an internal counter (starting at 0) and prunes if the schedule says so;
    `pruner(step)` does the same for an explicit step. Both return (pruned, sparsity).
    """

    def __init__(self, targets, schedule, method="l1_unstructured"):
        if isinstance(targets, Module):
            targets = prunable_parameters(targets)
        targets = list(targets)
        if not targets:
            raise ValueError("targets must name at least one (module, name) pair, got none")
        for i, pair in enumerate(targets):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"targets[{i}] must be a (module, name) pair, got {pair!r}")
            check_target(*pair)
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(f"schedule must be a PruningSchedule (ConstantSparsity, PolynomialDecay), "
                            f"got {type(schedule).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.targets, self.schedule, self.method = targets, schedule, method
        self.step_count = 0

    def _scores(self):
        return [original(m, n) * current_mask(m, n) for m, n in self.targets]

    def prune_to(self, sparsity):
        """Set every target to `sparsity` (of the whole tensor, or of all targets for 'global')."""
        if not isinstance(sparsity, numbers.Real) or not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be a float in [0, 1], got {sparsity!r}")
        scores = self._scores()
        if self.method == "global":
            masks = global_compute_masks(scores, None, float(sparsity), L1Unstructured)
        else:
            masks = [L1Unstructured(float(sparsity)).compute_mask(s, np.ones(s.shape, s.dtype)) for s in scores]
        for (module, name), mask in zip(self.targets, masks):
            set_mask(module, name, mask, f"{type(self).__name__}(sparsity={float(sparsity):.4f}, "
                                         f"method={self.method!r})")

    def __call__(self, step):
        should_prune, sparsity = self.schedule(step)
        if should_prune:
            self.prune_to(sparsity)
        return should_prune, sparsity

    def step(self):
        result = self(self.step_count)
        self.step_count += 1
        return result

    def sparsity(self):
        """Measured sparsity: zeros in the masked targets over their total size."""
        zeros = sum(int(np.count_nonzero(current_mask(m, n) == 0)) for m, n in self.targets)
        return zeros / sum(current_mask(m, n).size for m, n in self.targets)


def strip_pruning(model):
    """Make every pruning in `model` permanent (`remove` on each pruned tensor): plain Parameters
    holding zeros where pruned, no `_orig`, `_mask` or hooks left. Returns model (modified in place)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    for _, module, name in pruned_parameters(model):
        remove(module, name)
    return model

"""Pruning, mirroring torch.nn.utils.prune, plus what torch lacks: gradual schedules, sensitivity
analysis, shrinking channel-pruned layers into smaller dense ones, and sparse (CSR) inference.

    methods.py        compute_mask(t, default_mask) for every method, composition, global pruning
    reparam.py        weight = weight_orig * weight_mask, recomputed by a forward pre-hook
    api.py            l1_unstructured, ln_structured, global_unstructured, remove, ... on modules
    schedules.py      ConstantSparsity, PolynomialDecay
    gradual.py        GradualPruner (a schedule applied during training), strip_pruning
    sensitivity.py    sensitivity_analysis: the metric when each layer alone is pruned
    shrink.py         shrink: channel-pruned layers become smaller dense layers; tied_output_groups
    sparse.py         CSRMatrix and the sparse linear / conv2d forward
    sparse_modules.py SparseLinear, SparseConv2d, to_sparse
    report.py         sparsity_report
    heads.py          attention heads: importance (Michel et al., 2019), heads_to_prune, prune_heads
"""
from .api import (custom_from_mask, global_unstructured, identity, l1_unstructured, ln_structured, n_m_structured,
                  random_structured, random_unstructured)
from .methods import (BasePruningMethod, CustomFromMask, Identity, L1Unstructured, LnStructured, NMStructured,
                      PruningContainer, RandomStructured, RandomUnstructured, compose_mask, global_compute_masks)
from .reparam import PruningReparam, is_pruned, remove
from .schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from .gradual import GradualPruner, prunable_parameters, strip_pruning
from .sensitivity import SensitivityResult, sensitivity_analysis
from .shrink import shrink, tied_output_groups
from .heads import head_importance, heads_to_prune, prune_heads
from .report import LayerSparsity, SparsityReport, sparsity_report
from .sparse import CSRMatrix
from .sparse_modules import SparseConv2d, SparseLinear, to_sparse

SERIALIZABLE_HOOKS = (PruningReparam,)


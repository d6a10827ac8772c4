"""The stages the jobs share: prune (with fine-tuning and `shrink`) and quantize a trained model.

    model = prune_model(model, 0.3, structured=True, train_loader=loader, finetune_epochs=5, lr=1e-3)
    int8 = quantize_model(model, "static", loader)

Latency is measured by `training.latency_per_image`; each job's report (`pipelines/report.py`) holds the rows.
"""
from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np

from .. import nn
from ..training import fit, latency_per_image, parameter_count


def conv_bn_pairs(model):
    """(conv, batch norm) pairs where a BatchNorm2d directly follows a non-depthwise Conv2d over the same
    channels in the module tree's order (the conv-bn-relu units of the models here)."""
    modules = [m for _, m in model.named_modules()]
    return [(a, b) for a, b in zip(modules, modules[1:])
            if isinstance(a, nn.Conv2d) and a.groups == 1 and isinstance(b, nn.BatchNorm2d)
            and b.num_features == a.out_channels]


def prune_model(model, amount, structured, train_loader, finetune_epochs, lr, log=None, finetune=None):
    """Prune `model` in place, fine-tune with the masks in place, make the masks permanent, and for
    structured pruning `shrink` to smaller dense layers and fine-tune once more. Returns the model.

    `finetune_epochs` is one count for both fine-tunes or a pair (before the shrink, after it); 0
    skips a fine-tune. `finetune(model, epochs)` trains in place; by default `fit` on `train_loader` with Adam(lr) and
    cross-entropy (a detector passes its own loop).

    Structured: L2 (n=2) channel pruning along dim 0 of every conv-bn unit, one shared ranking for the
    convs whose outputs a residual addition ties (`tied_output_groups`); the batch norm's weight
    and bias get the same channel mask, so a pruned channel is exactly zero after it (otherwise the
    batch norm turns it into a constant that `shrink` cannot remove). The depthwise conv that reads
    a pruned channel loses it through `shrink`; its own batch norm's constant for that channel is
    what the fine-tune after shrinking absorbs. Unstructured: one global L1 threshold over every
    conv and linear weight.
    """
    from .. import prune as P

    before, after = _epoch_pair(finetune_epochs)
    if finetune is None:
        def finetune(m, epochs):
            fit(m, train_loader, epochs, lr=lr, log=log)
    if amount == 0:
        return model
    if structured:
        batch_norm_after = {id(conv): bn for conv, bn in conv_bn_pairs(model)}
        for tied in P.tied_output_groups(model):
            convs = [conv for conv in tied if id(conv) in batch_norm_after]
            if not convs:
                continue
            # Convs whose outputs a residual add sums rank their channels together (summed squared L2
            # norms), so they prune the same channels and `shrink` can remove all of them.
            joint = sum((conv.weight.data.reshape(conv.out_channels, -1).astype(np.float64) ** 2).sum(1)
                        for conv in convs)
            for conv in convs:
                scores = np.broadcast_to(joint.reshape((-1,) + (1,) * (conv.weight.ndim - 1)), conv.weight.shape)
                P.ln_structured(conv, "weight", amount=amount, n=2, dim=0, importance_scores=scores)
                keep = conv.weight_mask.data.reshape(conv.out_channels, -1).any(axis=1).astype(np.float32)
                bn = batch_norm_after[id(conv)]
                P.custom_from_mask(bn, "weight", keep)
                P.custom_from_mask(bn, "bias", keep)
    else:
        targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        P.global_unstructured(targets, pruning_method=P.L1Unstructured, amount=amount)
    if before:
        finetune(model, before)
    P.strip_pruning(model)
    if not structured:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the depthwise batch-norm constants, absorbed just below
        model = P.shrink(model)
    if after:
        finetune(model, after)
    return model


def _epoch_pair(finetune_epochs):
    """(before, after) fine-tune epochs from one count or a pair of counts >= 0 (ValueError otherwise)."""
    pair = tuple(finetune_epochs) if isinstance(finetune_epochs, (tuple, list)) else (finetune_epochs,) * 2
    if len(pair) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in pair):
        raise ValueError(f"finetune_epochs must be an int >= 0 or a pair (before shrink, after shrink) of them, "
                         f"got {finetune_epochs!r}")
    return pair


def quantize_model(model, mode, train_loader, calibration_batches=8, qat_epochs=2, lr=1e-3, log=None):
    """A quantized copy of `model`: 'static' (fuse, calibrate on `calibration_batches` training batches,
    convert), 'dynamic' (Linear layers) or 'qat' (fake-quant fine-tuning for `qat_epochs`, then convert)."""
    from .. import quant as Q

    if mode == "dynamic":
        return Q.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=Q.qint8)
    if mode == "static":
        from ..quant.static import quantize_static
        return quantize_static(model, itertools.islice(train_loader, calibration_batches))
    if mode == "qat":
        model = copy.deepcopy(model).train()
        model = Q.fuse_mobile_classifier(model, inplace=True, is_qat=True)
        model.qconfig = Q.get_default_qat_qconfig("x86")
        prepared = Q.prepare_qat(model, inplace=True)
        fit(prepared, train_loader, qat_epochs, lr=lr, log=log)
        return Q.convert(prepared.eval(), inplace=True)
    raise ValueError(f"unknown quantization mode {mode!r}")


def stage_costs(model, sample_shape, latency_repeat):
    """The cost fields every job's stage row ends with (`report.COST_FIELDS`): parameters, bytes
    (`quant.model_size_bytes`), and ms per image at batch 1 and batch 64."""
    from ..quant import model_size_bytes
    latency = latency_per_image(model, sample_shape, repeat=latency_repeat)
    return parameter_count(model), model_size_bytes(model), latency[1] * 1e3, latency[64] * 1e3

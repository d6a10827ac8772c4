"""The stages the jobs share: prune (with fine-tuning and `shrink`) and quantize a trained model.

    model = prune_model(model, 0.3, structured=True, train_loader=loader, finetune_epochs=5, lr=1e-3)
    int8 = quantize_model(model, "static", loader)
    result, candidates = mixed_precision_stage(model, evaluate, (1, 8, 8), max_drop=0.01)

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


# How many points of the predicted Pareto frontier the mixed-precision stage measures, besides the
# uniform precisions and the chosen point.
FRONTIER_POINTS = 6


def _choice_summary(choice):
    counts = {p: sum(v == p for v in choice.values()) for p in ("float32", "int8", "int4")}
    return " / ".join(f"{n} {p}" for p, n in counts.items() if n)


def mixed_precision_stage(model, evaluate, sample_shape, max_drop=None, max_bytes=None, latency_repeat=20, log=None,
                          fold_batch_norms=True):
    """Per-layer float32 / int8 / int4 weights of float `model` meeting `max_drop` (in `evaluate`'s units)
    or `max_bytes` (`quant.mixed_precision.search_precisions`), and the candidates of its Pareto table.

    With `fold_batch_norms` (the default) the search runs on a copy with every conv -> batch norm folded
    into the conv (`quant.fold_all_batch_norms`, as static int8 does): the same function up to float32
    rounding, without the float batch-norm arrays, which on the digits classifier weigh more than its
    int4 weights. The "all float32" candidate is then that folded model.

    Returns (MixedPrecisionResult, candidates): one dict per candidate (all float32, all int8, all int4, up
    to FRONTIER_POINTS points spread along the predicted frontier, the chosen one), each measured: name,
    precisions, bytes, metric, predicted and measured drop, latency at batch 1 and 64 (ms per image), and
    whether it is on the measured frontier (no other candidate is as small and as good, and smaller or better).
    """
    from ..quant import mixed_precision as mp
    from ..quant import model_size_bytes

    if fold_batch_norms:
        from ..quant import fold_all_batch_norms
        from ..tensor import Tensor
        model = copy.deepcopy(model).eval()
        fold_all_batch_norms(model, Tensor(np.zeros((1,) + tuple(sample_shape), np.float32)))
    result = mp.search_precisions(model, evaluate, max_drop=max_drop, max_bytes=max_bytes, log=log)
    layers = list(result.sensitivity)
    named = [(f"all {p}", {n: p for n in layers}) for p in mp.PRECISIONS]
    frontier = result.frontier
    picks = sorted({round(i * (len(frontier) - 1) / max(1, FRONTIER_POINTS - 1)) for i in range(FRONTIER_POINTS)})
    named += [(f"frontier {i}", frontier[i].choice) for i in picks]
    named.append(("chosen", result.choice))
    predicted = {tuple(p.choice.items()): p.predicted_drop for p in frontier}
    candidates, seen = [], {}
    for name, choice in named:
        key = tuple(choice.items())
        if key in seen:                    # a uniform precision that is also a frontier point, or the chosen one
            seen[key]["name"] += f", {name}"
            continue
        candidate = result.model if choice == result.choice else mp.apply_precisions(model, choice)
        metric = result.metric if choice == result.choice else float(evaluate(candidate))
        latency = latency_per_image(candidate, sample_shape, repeat=latency_repeat)
        row = {"name": name, "precisions": _choice_summary(choice), "bytes": model_size_bytes(candidate),
               "metric": metric, "drop": result.baseline - metric,
               "predicted_drop": predicted.get(key, sum(result.sensitivity[n][p] for n, p in choice.items())),
               "latency_b1_ms": latency[1] * 1e3, "latency_b64_ms": latency[64] * 1e3,
               "chosen": choice == result.choice, "pareto": False}
        seen[key] = row
        candidates.append(row)
    for row in candidates:
        row["pareto"] = not any(o["bytes"] <= row["bytes"] and o["metric"] >= row["metric"]
                                and (o["bytes"] < row["bytes"] or o["metric"] > row["metric"]) for o in candidates)
    candidates.sort(key=lambda r: r["bytes"])
    return result, candidates

"""Post-training static quantization: run calibration data through a prepared model (its observers record
ranges), then convert; `quantize_static` is the whole fuse -> prepare -> calibrate -> convert flow on a copy.

    int8 = quantize_static(model, calibration_batches)              # torch's x86 qconfig unless model.qconfig
    calibrate(prepared, batches)                                    # the observers' part only
"""
import copy

import numpy as np

from ..tensor import Tensor


def _batches(data):
    """Inputs from `data`: a Tensor / array (one batch) or an iterable of batches or (x, y) tuples."""
    if isinstance(data, (Tensor, np.ndarray)):
        yield data if isinstance(data, Tensor) else Tensor(np.asarray(data, np.float32))
        return
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield Tensor(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else x


def calibrate(model, data):
    """Run every input of `data` through `model` in eval mode without gradients (observers record ranges).

    `data` is one batch (a Tensor or array) or an iterable of batches or (x, y) tuples; it must hold at
    least one batch, and no batch may be empty (ValueError naming `data`), since an observer that has
    seen nothing has no range to convert with."""
    from ..autograd import no_grad

    model.eval()
    batches = 0
    with no_grad():
        for x in _batches(data):
            if x.ndim == 0 or x.shape[0] == 0:
                raise ValueError(f"data: calibration batch {batches} is empty (shape {x.shape}); every batch "
                                 f"needs at least one sample for the observers to record a range")
            model(x)
            batches += 1
    if batches == 0:
        raise ValueError("data holds no batches; calibration needs at least one non-empty batch")
    return model


def quantize_static(model, data, qconfig=None):
    """fuse -> prepare -> calibrate on `data` -> convert, on a copy of `model` (which is left untouched).
    qconfig: `model.qconfig` if set, else torch's x86 default."""
    from .fuse import fuse_mobile_classifier
    from .prepare import convert, prepare
    from .qconfig import get_default_qconfig

    float_model = copy.deepcopy(model).eval()
    fused = fuse_mobile_classifier(float_model, inplace=True)
    fused.qconfig = qconfig or getattr(model, "qconfig", None) or get_default_qconfig("x86")
    prepared = prepare(fused, inplace=True)
    calibrate(prepared, data)
    return convert(prepared, inplace=True)

"""How many bytes a model needs at inference, and the before / after comparison of quantization methods
(static quantization itself is in `static.py`).

`model_size_bytes(model)` counts what an inference engine has to store, not Python overhead:

    float parameters                       their bytes (float32: 4 per element)
    buffers                                their bytes (BN running_mean / running_var), except
                                           `num_batches_tracked` (training bookkeeping) and non-persistent ones
    observers and fake quantizers          nothing (calibration / training state, dropped by convert)
    a quantized weight (any QTensor held   1 byte per int8 level, plus 4 bytes (float32) per scale and
      by a module)                         4 bytes (int32) per zero point, one pair per tensor or per channel;
                                           zero points that are all 0 (symmetric weights, the default) are
                                           implied by the scheme and not stored
    a quantized layer's bias               4 bytes per element (int32 in the accumulator's scale)
    a quantized layer's output qparams     8 bytes (float32 scale, int32 zero point); Quantize and the
                                           quantized add likewise

So a float conv with BN counts W, gamma, beta, running mean and variance; its quantized, BN-folded
version counts W in int8, a scale and zero point per output channel, the int32 bias and its output qparams.
"""
import copy

import numpy as np

from ..nn.module import Module
from ..tensor import Tensor
from ..qtensor import QTensor
from ..training import accuracy
from .fake_quantize import FakeQuantize
from .observer import ObserverBase
from .static import quantize_static

QPARAM_BYTES = 8   # float32 scale + int32 zero point


def _qtensor_bytes(q):
    if q.is_per_channel():
        scales, zero_points = q.q_per_channel_scales(), q.q_per_channel_zero_points()
    else:
        scales, zero_points = np.array([q.q_scale()]), np.array([q.q_zero_point()])
    zero_point_bytes = 0 if not zero_points.any() else 4 * zero_points.size
    return q.int_repr().nbytes + 4 * scales.size + zero_point_bytes


def _module_own_bytes(module):
    from .modules import QuantizedModule

    total = 0
    for param in module._parameters.values():
        if param is not None:
            total += param.data.nbytes
    for name, buf in module._buffers.items():
        if buf is not None and name != "num_batches_tracked" and name not in module._non_persistent:
            total += buf.data.nbytes
    for name, value in vars(module).items():
        if isinstance(value, QTensor):
            total += _qtensor_bytes(value)
        elif isinstance(module, QuantizedModule) and name == "bias" and isinstance(value, np.ndarray):
            total += value.size * 4
    if isinstance(module, QuantizedModule) and hasattr(module, "scale") and hasattr(module, "zero_point"):
        total += QPARAM_BYTES
    return total


def model_size_bytes(model):
    """The bytes `model` needs at inference (see the module docstring for exactly what is counted)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    total, stack = 0, [model]
    while stack:
        module = stack.pop()
        if isinstance(module, (ObserverBase, FakeQuantize)):
            continue
        total += _module_own_bytes(module)
        stack.extend(m for m in module._modules.values() if m is not None)
    return total


def compare_quantization_methods(model, data, executor=None):
    """Sizes of `model` in float, after static quantization (calibrated on `data`) and after dynamic
    quantization of its Linear layers, with the compression ratios float / quantized.

    The two quantizations are independent tasks: with `executor` (any `concurrent.futures.Executor`:
    `ProcessPoolExecutor`, Dask's `Client.get_executor()`, Ray's `RayExecutor`) both are submitted to
    it, with the model and the calibration batches (an iterable `data` is read into a list first), and
    the quantized models come back; the result is the same as with `executor=None`, which runs them
    here one after the other. See `minicompress.training.parallel`.

    Returns a dict: original_bytes, static_bytes, dynamic_bytes, static_ratio, dynamic_ratio, and the
    quantized models under static_model / dynamic_model. dynamic_* are None when `quant.dynamic` is not
    available.
    """
    from ..training import parallel

    parallel.check_executor(executor)
    original = model_size_bytes(model)
    try:
        from . import dynamic  # noqa: F401
        kinds = ("static", "dynamic")
    except ImportError:
        kinds = ("static",)
    if executor is not None and not isinstance(data, (Tensor, np.ndarray)):
        data = list(data)
    models = dict(zip(kinds, parallel.run_tasks(_quantize, [(kind, model, data) for kind in kinds], executor)))
    static_model = models["static"]
    result = {"original_bytes": original, "static_bytes": model_size_bytes(static_model), "static_model": static_model,
              "dynamic_bytes": None, "dynamic_ratio": None, "dynamic_model": None}
    result["static_ratio"] = original / result["static_bytes"]
    if "dynamic" in models:
        dynamic_model = models["dynamic"]
        result.update(dynamic_bytes=model_size_bytes(dynamic_model), dynamic_model=dynamic_model)
        result["dynamic_ratio"] = original / result["dynamic_bytes"]
    return result


def _quantize(kind, model, data):
    """One task of `compare_quantization_methods`: a 'static' or 'dynamic' quantized copy of `model`."""
    if kind == "static":
        return quantize_static(model, data)
    from ..nn.layers import Linear
    from .dynamic_quantize import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model).eval(), {Linear})


def evaluate_quantization_impact(float_model, quantized_model, loader):
    """Test accuracy of both models on `loader` and the drop (float - quantized), as fractions."""
    float_accuracy = accuracy(float_model, loader)
    quantized_accuracy = accuracy(quantized_model, loader)
    return {"float_accuracy": float_accuracy, "quantized_accuracy": quantized_accuracy,
            "accuracy_drop": float_accuracy - quantized_accuracy}

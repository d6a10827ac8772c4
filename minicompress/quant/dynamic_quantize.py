"""`quantize_dynamic`, as `torch.ao.quantization.quantize_dynamic`: which layers become their dynamically
quantized versions (weights int8 ahead of time, activations quantized on the fly), and the swap.

The layers themselves are in `dynamic.py` (Linear), `dynamic_per_token.py` (Linear with one input range per
token, `per_token=True`) and `dynamic_rnn.py` (LSTM, GRU and their cells).
"""
import copy

from ..nn import layers as nn_layers
from ..nn.layers import SmoothedLinear
from ..nn import rnn as nn_rnn
from ..nn.module import Module
from . import dtypes as qd
from .dynamic import DynamicQuantizedLinear
from .dynamic_per_token import PerTokenDynamicQuantizedLinear, per_token_dynamic_qconfig
from .dynamic_rnn import DynamicQuantizedGRU, DynamicQuantizedGRUCell, DynamicQuantizedLSTM, DynamicQuantizedLSTMCell
from .prepare import _swap, propagate_qconfig_
from .qconfig import QConfig, default_dynamic_qconfig


def default_dynamic_quant_module_mappings():
    """float type -> dynamic type, as `torch.ao.quantization.get_default_dynamic_quant_module_mappings`."""
    return {nn_layers.Linear: DynamicQuantizedLinear, nn_rnn.LSTM: DynamicQuantizedLSTM,
            nn_rnn.GRU: DynamicQuantizedGRU, nn_rnn.LSTMCell: DynamicQuantizedLSTMCell,
            nn_rnn.GRUCell: DynamicQuantizedGRUCell}


def per_token_dynamic_quant_module_mappings():
    """float type -> per-token dynamic type (Linear layers only; a SmoothedLinear keeps its factor)."""
    return {nn_layers.Linear: PerTokenDynamicQuantizedLinear, SmoothedLinear: PerTokenDynamicQuantizedLinear}


def _check_dtype(dtype):
    try:
        checked = qd.check_dtype(dtype)
    except (TypeError, ValueError):
        checked = None
    if checked is not qd.qint8:
        raise ValueError(f"dtype={dtype!r} is not supported: dynamic quantization here is qint8 only "
                         f"(torch's float16 / quint4x2 variants are not implemented)")


def _qconfig_dict(model, qconfig_spec, mapping, default=default_dynamic_qconfig):
    """qconfig_spec (None, a set of types / names, or a dict to QConfig) as a dict, every entry checked."""
    if qconfig_spec is None:
        qconfig_spec = set(mapping)
    if isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        qconfig_spec = dict.fromkeys(qconfig_spec, default)
    if not isinstance(qconfig_spec, dict):
        raise TypeError(f"qconfig_spec must be None, a set of module types / names, or a dict mapping them to a "
                        f"QConfig; got {type(qconfig_spec).__name__}")
    names = {name for name, _ in model.named_modules()}
    for key, qconfig in qconfig_spec.items():
        if isinstance(key, str):
            if key not in names:
                raise ValueError(f"qconfig_spec names {key!r}, which is not a submodule of the model")
        elif isinstance(key, type) and issubclass(key, Module):
            if key not in mapping:
                raise ValueError(f"qconfig_spec entry {key.__name__} has no dynamically quantized version; "
                                 f"expected one of {sorted(t.__name__ for t in mapping)} or a submodule name")
        else:
            raise TypeError(f"qconfig_spec entry {key!r} must be a Module subclass or a submodule name (str)")
        if qconfig is not None and not isinstance(qconfig, QConfig):
            raise TypeError(f"qconfig_spec[{key!r}] must be a QConfig or None, got {type(qconfig).__name__}")
    return qconfig_spec


def quantize_dynamic(model, qconfig_spec=None, dtype=qd.qint8, mapping=None, inplace=False, per_token=False):
    """Replace layers with dynamically quantized ones, as `torch.ao.quantization.quantize_dynamic`.

    Args:
        model: a Module. Its children are swapped recursively; the root itself is not (as torch).
        qconfig_spec: which layers to quantize: None (every nn.Linear, LSTM, GRU, LSTMCell and GRUCell), a
            set of module types and / or dotted submodule names (each with `default_dynamic_qconfig`), or a dict
            mapping them to a QConfig (None excludes a submodule). Children inherit their parent's qconfig.
        dtype: qint8 (the only dtype implemented).
        mapping: float type -> dynamic type; default `default_dynamic_quant_module_mappings()`.
        inplace: modify `model` itself; otherwise a deep copy is quantized and `model` is left untouched.
        per_token: quantize each Linear's input row by row (`PerTokenDynamicQuantizedLinear`, weights per
            output channel by default: `per_token_dynamic_qconfig`); not torch's. Needed for the
            SmoothedLinear layers of `smoothquant.smooth_lm`, which are quantized with their factor.

    Returns:
        The quantized model, in eval mode.
    Raises:
        ValueError: an unsupported dtype, a type without a dynamic version, or an unknown submodule name.
        TypeError: a model that is not a Module, or a malformed qconfig_spec.

    >>> qmodel = quantize_dynamic(model, {nn.Linear}, dtype=qint8)
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a Module, got {type(model).__name__}")
    _check_dtype(dtype)
    if not isinstance(per_token, bool):
        raise TypeError(f"per_token must be a bool, got {per_token!r}")
    if mapping is None:
        mapping = per_token_dynamic_quant_module_mappings() if per_token else default_dynamic_quant_module_mappings()
    smoothed = [name for name, m in model.named_modules() if type(m) is SmoothedLinear]
    if smoothed and SmoothedLinear not in mapping:
        raise ValueError(f"the model has SmoothedLinear layers ({smoothed[0]!r}, ...): quantize them with "
                         f"per_token=True, which applies their factor before quantizing each token")
    qconfig_dict = _qconfig_dict(model, qconfig_spec, mapping, per_token_dynamic_qconfig if per_token
                                 else default_dynamic_qconfig)
    if per_token and nn_layers.Linear in qconfig_dict and SmoothedLinear not in qconfig_dict:
        qconfig_dict[SmoothedLinear] = qconfig_dict[nn_layers.Linear]     # a SmoothedLinear is a Linear
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    propagate_qconfig_(model, qconfig_dict)
    _swap(model, mapping, prefix="", check_observed=False)
    for module in model.modules():
        module.__dict__.pop("qconfig", None)
    return model

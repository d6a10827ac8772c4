"""A readable description of a model: every layer with its arrays' shapes and dtypes, sparsity and bytes.

Bytes are what each array occupies (`ndarray.nbytes`), so an int8 weight counts one byte per entry;
the total is `quant.model_size_bytes(model)`.
"""
import numpy as np

from ..tensor import Tensor


def _arrays(module):
    """(name, array) for a module's own parameters, buffers and array attributes (quantized weights)."""
    for name, p in module._parameters.items():
        if p is not None:
            yield name, p.data
    for name, b in module._buffers.items():
        if b is not None:
            yield name, b.data
    for name, value in vars(module).items():
        if isinstance(value, np.ndarray) and value.size > 1:
            yield name, value
        elif isinstance(value, Tensor) and name not in module._parameters and name not in module._buffers:
            yield name, value.data
        elif hasattr(value, "int_repr") and callable(value.int_repr):
            yield name, np.asarray(value.int_repr().data if isinstance(value.int_repr(), Tensor) else value.int_repr())


def layer_rows(model):
    """One row per module that owns arrays: (name, type, [(array name, shape, dtype)], sparsity, bytes)."""
    rows = []
    for name, module in model.named_modules():
        arrays = list(_arrays(module))
        if not arrays:
            continue
        weights = [a for n, a in arrays if "weight" in n]
        zeros = sum(int((a == 0).sum()) for a in weights)
        total = sum(a.size for a in weights)
        rows.append((name or "(model)", type(module).__name__,
                     [(n, tuple(a.shape), str(a.dtype)) for n, a in arrays],
                     zeros / total if total else 0.0, sum(a.nbytes for _, a in arrays)))
    return rows


def describe_model(model):
    from ..quant import model_size_bytes

    lines = [f"{type(model).__name__}", f"{'layer':38s} {'type':24s} {'sparsity':>8s} {'bytes':>10s}  arrays"]
    for name, kind, arrays, sparsity, nbytes in layer_rows(model):
        described = ", ".join(f"{n} {'x'.join(map(str, s)) or 'scalar'} {d}" for n, s, d in arrays)
        lines.append(f"{name:38s} {kind:24s} {sparsity:8.1%} {nbytes:10,d}  {described}")
    lines.append(f"total: {model_size_bytes(model):,} bytes (model_size_bytes)")
    return "\n".join(lines)

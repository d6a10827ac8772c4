"""sparsity_report: how sparse each layer is, and what it would weigh dense and in CSR.

    print(sparsity_report(model))

One row per weight of a Linear, Conv2d (masked weight if pruned) or Sparse layer: its shape, entries,
zeros, sparsity, bytes stored dense, and bytes in CSR (`CSRMatrix.nbytes`: nnz values, nnz int32
column indices, rows + 1 int32 row pointers); then the totals over those weights, and the count of
every parameter of the model. CSR pays off only above 50% sparsity for float32.
"""
from dataclasses import dataclass, field

import numpy as np

from ..nn.layers import Conv2d, Linear
from ..nn.module import Module
from .reparam import current_mask, find_hook, original
from .sparse_modules import _SparseWeight


@dataclass
class LayerSparsity:
    name: str
    kind: str
    shape: tuple
    entries: int
    zeros: int
    dense_bytes: int
    csr_bytes: int

    @property
    def sparsity(self):
        return self.zeros / self.entries if self.entries else 0.0


@dataclass
class SparsityReport:
    layers: list = field(default_factory=list)
    parameters: int = 0

    @property
    def entries(self):
        return sum(r.entries for r in self.layers)

    @property
    def zeros(self):
        return sum(r.zeros for r in self.layers)

    @property
    def sparsity(self):
        """Global sparsity over the reported weights."""
        return self.zeros / self.entries if self.entries else 0.0

    @property
    def dense_bytes(self):
        return sum(r.dense_bytes for r in self.layers)

    @property
    def csr_bytes(self):
        return sum(r.csr_bytes for r in self.layers)

    def __str__(self):
        headers = ["layer", "kind", "shape", "entries", "zeros", "sparsity", "dense bytes", "CSR bytes"]
        rows = [[r.name, r.kind, "x".join(map(str, r.shape)), f"{r.entries:,}", f"{r.zeros:,}", f"{r.sparsity:.1%}",
                 f"{r.dense_bytes:,}", f"{r.csr_bytes:,}"] for r in self.layers]
        rows.append(["total", "", "", f"{self.entries:,}", f"{self.zeros:,}", f"{self.sparsity:.1%}",
                     f"{self.dense_bytes:,}", f"{self.csr_bytes:,}"])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        line = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        body = [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
        return "\n".join(body + [f"parameters in the model: {self.parameters:,}"])


def _csr_bytes(nnz, rows, itemsize):
    return nnz * (itemsize + 4) + (rows + 1) * 4


def sparsity_report(model):
    """A SparsityReport of every Linear / Conv2d / Sparse layer weight in `model`."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a minicompress.nn.Module, got {type(model).__name__}")
    report = SparsityReport(parameters=int(sum(p.data.size for p in model.parameters())))
    for name, module in model.named_modules():
        if isinstance(module, _SparseWeight):
            shape, entries = module.weight_shape, int(np.prod(module.weight_shape))
            itemsize = module.weight_data.data.itemsize
            nnz = int(np.count_nonzero(module.weight_data.data))
        elif isinstance(module, (Linear, Conv2d)):
            weight = original(module, "weight")
            if find_hook(module, "weight") is not None:
                weight = weight * current_mask(module, "weight")
            shape, entries, itemsize = weight.shape, weight.size, weight.itemsize
            nnz = int(np.count_nonzero(weight))
        else:
            continue
        report.layers.append(LayerSparsity(name or type(module).__name__, type(module).__name__, tuple(shape),
                                           entries, entries - nnz, entries * itemsize,
                                           _csr_bytes(nnz, shape[0], itemsize)))
    return report

"""TensorDataset and DataLoader, as torch.utils.data, for in-memory data.

The loader yields tuples of batched tensors; `shuffle=True` reorders with a seeded generator so
that two loaders with the same seed give the same batches (a new order every epoch).
"""
import operator

import numpy as np

from ..tensor import Tensor


class TensorDataset:
    """Samples are the i-th rows of equally long tensors (or arrays)."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in tensors]
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got {[len(a) for a in arrays]}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(Tensor._wrap(a[index]) for a in self.arrays)


def _positive_index(value, name):
    """A positive integer of any integral type (`operator.index`: int, numpy integers), not a bool."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class DataLoader:
    """Iterate over a dataset in batches of `batch_size` (the last one smaller unless drop_last)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=0):
        batch_size = _positive_index(batch_size, "batch_size")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.generator = np.random.default_rng(seed)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            if self.drop_last and len(index) < self.batch_size:
                return
            if isinstance(self.dataset, TensorDataset):
                yield tuple(Tensor._wrap(a[index]) for a in self.dataset.arrays)
            else:
                samples = [self.dataset[int(i)] for i in index]
                yield tuple(Tensor._wrap(np.stack([s[j].data if isinstance(s[j], Tensor) else np.asarray(s[j])
                                                   for s in samples])) for j in range(len(samples[0])))

"""The package's random number generator: one documented, seedable default, as `torch.manual_seed`.

Everything random in minicompress (initialisation, dropout, shuffling, random pruning) draws from
`default_generator()` unless it is handed its own `numpy.random.Generator`.
"""
import contextlib
import copy

import numpy as np

from .tensor import Tensor, as_dtype, float32

_generator = np.random.default_rng(0)  # the documented default: seed 0 until manual_seed is called


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (and return it)."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


@contextlib.contextmanager
def fork_rng(seed=None):
    """Run a block with its own default generator, restoring the caller's afterwards (as
    `torch.random.fork_rng`); `seed` reseeds the block's generator, None continues from a copy of
    the caller's state. Sweeps use it so that a task draws the same numbers wherever it runs."""
    global _generator
    saved = _generator
    _generator = copy.deepcopy(saved)
    try:
        if seed is not None:
            manual_seed(seed)
        yield _generator
    finally:
        _generator = saved


def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def randn(*shape, dtype=float32, requires_grad=False, generator=None):
    rng = generator or _generator
    return Tensor(rng.standard_normal(_shape(shape)).astype(as_dtype(dtype)), requires_grad=requires_grad)


def rand(*shape, dtype=float32, requires_grad=False, generator=None):
    rng = generator or _generator
    return Tensor(rng.random(_shape(shape)).astype(as_dtype(dtype)), requires_grad=requires_grad)


def randint(low, high=None, size=(), generator=None):
    if high is None:
        low, high = 0, low
    rng = generator or _generator
    return Tensor(rng.integers(low, high, size=tuple(size)).astype(np.int64))


def randperm(n, generator=None):
    rng = generator or _generator
    return Tensor(rng.permutation(n).astype(np.int64))

"""Pruning methods as pure functions of arrays: `compute_mask(t, default_mask) -> mask`.

Each class mirrors a `torch.nn.utils.prune.BasePruningMethod` subclass, minus the module machinery
(the `weight = weight_orig * weight_mask` reparametrization and its forward pre-hook live in the
module-level API, which calls these). `t` holds the importance scores (usually the weight itself),
`default_mask` the mask left by earlier pruning (ones if none). The returned mask is a new array of
`t`'s shape and floating dtype (float32 for integer or boolean scores), 1 where a weight is kept.

Amounts follow torch: an int is a count, a float in [0, 1] a fraction rounded with Python's `round`
(half to even), `round(amount * size)`.

Ties: torch picks the pruned entries with `torch.topk(..., largest=False)`, whose order among equal
scores is unspecified. Here every choice is a stable `argsort` of the scores, so among equal scores
the lowest (flat, channel or in-group) index is pruned first. Without ties the masks equal torch's.

Random methods draw from the `numpy.random.Generator` they are given, else from
`minicompress.random.default_generator()` (seed 0 until `minicompress.manual_seed(seed)`); they
prune exactly the same number of entries or channels as torch, not the same ones.

Composition (`compose_mask`, `PruningContainer`) applies a new method to what is still unpruned,
as torch's `PruningContainer.compute_mask`: an unstructured amount counts the surviving entries,
a structured amount the channels that still have a nonzero mask entry.
"""
import numbers
from abc import ABC, abstractmethod

import numpy as np
from numpy.exceptions import AxisError

from ..random import default_generator

# --------------------------------------------------------------------------------------------------
# Validation helpers (torch.nn.utils.prune's, with the argument named in every message)


def _validate_pruning_amount_init(amount):
    """Check `amount` before the tensor is known.

    Raises:
        TypeError: if amount is not a real number.
        ValueError: if amount is a negative int or a float outside [0, 1].
    """
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"amount must be an int or a float, got {amount!r} of type {type(amount).__name__}")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"amount={amount} should be a non-negative int (a count) or a float in [0, 1]")
    elif not 0.0 <= float(amount) <= 1.0:
        raise ValueError(f"amount={amount} should be a float in the range [0, 1] or a non-negative int")


def _compute_nparams_toprune(amount, tensor_size):
    """Number of entries (or channels) to prune: `amount` if an int, else `round(amount * tensor_size)`."""
    if isinstance(amount, numbers.Integral):
        return int(amount)
    return round(float(amount) * tensor_size)


def _validate_pruning_amount(amount, tensor_size):
    """Check a count of entries to prune against the number there are.

    Raises:
        ValueError: if amount is an int larger than tensor_size.
    """
    if isinstance(amount, numbers.Integral) and amount > tensor_size:
        raise ValueError(f"amount={amount} should be at most the number of parameters to prune, {tensor_size}")


def _validate_structured_pruning(t):
    """Channels need at least two dimensions.

    Raises:
        ValueError: if t has fewer than 2 dimensions.
    """
    if t.ndim <= 1:
        raise ValueError(f"structured pruning needs a tensor of 2 or more dimensions, got t of shape {t.shape}")


def _validate_pruning_dim(t, dim):
    """Return `dim` as a non-negative axis of t.

    Raises:
        TypeError: if dim is not an int.
        numpy.exceptions.AxisError (a ValueError and an IndexError, as torch raises IndexError):
            if dim is outside [-t.ndim, t.ndim).
    """
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if not -t.ndim <= dim < t.ndim:
        raise AxisError(f"dim={dim} is out of range for t of shape {t.shape} (expected {-t.ndim} <= dim < {t.ndim})")
    return int(dim) % t.ndim


def _validate_norm(n):
    """`n` as torch.norm's `p`: a real number (inf, -inf, 0 and negatives included), 'fro' or 'nuc'."""
    if isinstance(n, str):
        if n not in ("fro", "nuc"):
            raise ValueError(f"n must be a real number, 'fro' or 'nuc', got {n!r}")
    elif not isinstance(n, numbers.Real) or isinstance(n, bool):
        raise TypeError(f"n must be a real number, 'fro' or 'nuc', got {n!r} of type {type(n).__name__}")


def _compute_norm(t, n, dim):
    """L_n norm of every channel of t along `dim` over all its other entries (torch.norm(t, p=n, dims)).

    Returns shape (t.shape[dim],). For a real n it is (sum |x|^n)^(1/n) over the channel, with the
    usual limits: n=inf max |x|, n=-inf min |x|, n=0 the count of nonzeros. 'fro' is n=2 ('fro' in torch
    needs at most two reduced dims; here any number). 'nuc' is the sum of singular values and needs
    exactly two reduced dims, i.e. a 3-D t.
    """
    channels = np.moveaxis(t, dim, 0)
    float_type = np.result_type(t.dtype, np.float32)
    if n == "nuc":
        if t.ndim != 3:
            raise ValueError(f"n='nuc' needs exactly two dims besides dim, got t of shape {t.shape}")
        return np.linalg.norm(channels.astype(float_type), "nuc", axis=(1, 2))
    flat = channels.reshape(channels.shape[0], int(np.prod(channels.shape[1:]))).astype(float_type)
    with np.errstate(divide="ignore"):  # a negative n over a zero entry: |0|^n = inf, and the norm 0
        return np.linalg.norm(flat, ord=2 if n == "fro" else n, axis=1)


def _validate_generator(generator):
    if generator is not None and not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or None, got {type(generator).__name__}")


def _mask_dtype(t):
    return t.dtype if t.dtype.kind == "f" else np.dtype(np.float32)


def _check_scores_and_mask(t, default_mask):
    """Validate the arguments of compute_mask; return a fresh copy of default_mask in the mask dtype."""
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "biuf":
        raise TypeError(f"t must be a numpy array of real numbers, got {type(t).__name__}"
                        + (f" of dtype {t.dtype}" if isinstance(t, np.ndarray) else ""))
    if not isinstance(default_mask, np.ndarray):
        raise TypeError(f"default_mask must be a numpy array, got {type(default_mask).__name__}")
    if default_mask.shape != t.shape:
        raise ValueError(f"default_mask shape {default_mask.shape} must equal t shape {t.shape}")
    return np.array(default_mask, dtype=_mask_dtype(t), order="C")


def _prune_along(mask, dim, channels):
    """mask with every index in `channels` along `dim` zeroed (a new array)."""
    keep = np.ones(mask.shape[dim], dtype=mask.dtype)
    keep[channels] = 0
    return mask * keep.reshape([-1 if d == dim else 1 for d in range(mask.ndim)])


# --------------------------------------------------------------------------------------------------
# Methods


class BasePruningMethod(ABC):
    """A pruning rule: `compute_mask(t, default_mask)` returns the mask to keep (1) or prune (0) each entry.

    PRUNING_TYPE tells `compose_mask` which part of t a later method sees: 'unstructured' the surviving
    entries, 'structured' the surviving channels along `self.dim`, 'global' the whole tensor.
    """

    PRUNING_TYPE = None

    @abstractmethod
    def compute_mask(self, t, default_mask):
        """Mask of t's shape that respects default_mask (entries it zeroes stay zero)."""

    def prune(self, t, default_mask=None, importance_scores=None):
        """t * mask, the mask computed from importance_scores (t itself if None), as torch's `prune`."""
        scores = t if importance_scores is None else importance_scores
        if np.shape(scores) != np.shape(t):
            raise ValueError(f"importance_scores shape {np.shape(scores)} must equal t shape {np.shape(t)}")
        mask = self.compute_mask(scores, np.ones(np.shape(t)) if default_mask is None else default_mask)
        return t * mask

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "mask")
        return f"{type(self).__name__}({args})"


class Identity(BasePruningMethod):
    """Prune nothing: the mask is default_mask (a reparametrization with a mask of ones)."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        return _check_scores_and_mask(t, default_mask)


class RandomUnstructured(BasePruningMethod):
    """Prune `amount` entries of t chosen uniformly at random (torch.nn.utils.prune.RandomUnstructured).

    generator: numpy.random.Generator; None draws from minicompress.random.default_generator().
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount, generator=None):
        _validate_pruning_amount_init(amount)
        _validate_generator(generator)
        self.amount = amount
        self.generator = generator

    def compute_mask(self, t, default_mask):
        mask = _check_scores_and_mask(t, default_mask)
        nparams_toprune = _compute_nparams_toprune(self.amount, t.size)
        _validate_pruning_amount(nparams_toprune, t.size)
        rng = default_generator() if self.generator is None else self.generator
        np.put(mask, rng.choice(t.size, size=nparams_toprune, replace=False), 0)
        return mask


class L1Unstructured(BasePruningMethod):
    """Prune the `amount` entries of smallest |t| (torch.nn.utils.prune.L1Unstructured).

    Example: L1Unstructured(amount=2).compute_mask(np.array([3., -1., 2., 0.5]), np.ones(4))
    is [1., 0., 1., 0.].
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_pruning_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):
        mask = _check_scores_and_mask(t, default_mask)
        nparams_toprune = _compute_nparams_toprune(self.amount, t.size)
        _validate_pruning_amount(nparams_toprune, t.size)
        smallest_first = np.argsort(np.abs(t), axis=None, kind="stable")
        np.put(mask, smallest_first[:nparams_toprune], 0)
        return mask


class RandomStructured(BasePruningMethod):
    """Prune `amount` whole channels along `dim`, chosen uniformly at random
    (torch.nn.utils.prune.RandomStructured). The mask is the channel mask times default_mask.

    generator: numpy.random.Generator; None draws from minicompress.random.default_generator().
    """

    PRUNING_TYPE = "structured"

    def __init__(self, amount, dim=-1, generator=None):
        _validate_pruning_amount_init(amount)
        _validate_generator(generator)
        self.amount = amount
        self.dim = dim
        self.generator = generator

    def compute_mask(self, t, default_mask):
        mask = _check_scores_and_mask(t, default_mask)
        _validate_structured_pruning(t)
        dim = _validate_pruning_dim(t, self.dim)
        nchannels = t.shape[dim]
        nparams_toprune = _compute_nparams_toprune(self.amount, nchannels)
        _validate_pruning_amount(nparams_toprune, nchannels)
        rng = default_generator() if self.generator is None else self.generator
        return _prune_along(mask, dim, rng.choice(nchannels, size=nparams_toprune, replace=False))


class LnStructured(BasePruningMethod):
    """Prune the `amount` channels along `dim` of smallest L_n norm (torch.nn.utils.prune.LnStructured).

    The norm of channel c is taken over all entries t[..., c, ...] (see `_compute_norm` for n). The
    mask is the channel mask times default_mask. dim=0 of a Linear or Conv weight prunes output units,
    dim=1 input features or channels.
    """

    PRUNING_TYPE = "structured"

    def __init__(self, amount, n, dim=-1):
        _validate_pruning_amount_init(amount)
        _validate_norm(n)
        self.amount = amount
        self.n = n
        self.dim = dim

    def compute_mask(self, t, default_mask):
        mask = _check_scores_and_mask(t, default_mask)
        _validate_structured_pruning(t)
        dim = _validate_pruning_dim(t, self.dim)
        nchannels = t.shape[dim]
        nparams_toprune = _compute_nparams_toprune(self.amount, nchannels)
        _validate_pruning_amount(nparams_toprune, nchannels)
        smallest_first = np.argsort(_compute_norm(t, self.n, dim), kind="stable")
        return _prune_along(mask, dim, smallest_first[:nparams_toprune])


class NMStructured(BasePruningMethod):
    """N:M semi-structured sparsity: in every group of m consecutive weights along `dim`, keep the n of
    largest |t| (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; 2:4 on Ampere GPUs).

    dim=1 is the input dimension of a Linear (out, in) or Conv2d (out, in, kh, kw) weight: the groups
    are t[o, g*m:(g+1)*m, i, j] for every other index fixed. t.shape[dim] must be a multiple of m.

    Entries default_mask already zeroes are scored below every surviving one, so they count among the
    m - n pruned of their group when they can; every group ends with at most n nonzeros. The rule
    looks at whole groups rather than at a slice of surviving entries or channels, hence
    PRUNING_TYPE 'global' (torch has no N:M method).
    """

    PRUNING_TYPE = "global"

    def __init__(self, n=2, m=4, dim=1):
        for name, value in (("n", n), ("m", m)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if m < 1 or not 0 <= n <= m:
            raise ValueError(f"expected m >= 1 and 0 <= n <= m, got n={n}, m={m}")
        self.n, self.m, self.dim = int(n), int(m), dim

    def compute_mask(self, t, default_mask):
        mask = _check_scores_and_mask(t, default_mask)
        dim = _validate_pruning_dim(t, self.dim)
        if t.shape[dim] % self.m:
            raise ValueError(f"t.shape[{dim}]={t.shape[dim]} (t of shape {t.shape}) is not a multiple of m={self.m}")
        scores = np.where(mask != 0, np.abs(t).astype(np.float64), -np.inf)
        lanes = np.moveaxis(scores, dim, -1)
        groups = lanes.reshape(*lanes.shape[:-1], -1, self.m)
        smallest_first = np.argsort(groups, axis=-1, kind="stable")
        keep = np.ones(groups.shape, dtype=mask.dtype)
        np.put_along_axis(keep, smallest_first[..., :self.m - self.n], 0, axis=-1)
        return mask * np.moveaxis(keep.reshape(lanes.shape), -1, dim)


class CustomFromMask(BasePruningMethod):
    """Apply a precomputed mask: default_mask * mask (torch.nn.utils.prune.CustomFromMask)."""

    PRUNING_TYPE = "global"

    def __init__(self, mask):
        if not isinstance(mask, np.ndarray) or mask.dtype.kind not in "biuf":
            raise TypeError(f"mask must be a numpy array of numbers, got {type(mask).__name__}")
        self.mask = mask

    def compute_mask(self, t, default_mask):
        start = _check_scores_and_mask(t, default_mask)
        if self.mask.shape != start.shape:
            raise ValueError(f"mask shape {self.mask.shape} must equal default_mask shape {start.shape}")
        return start * self.mask.astype(start.dtype)


# --------------------------------------------------------------------------------------------------
# Composition and global pruning


def compose_mask(method, t, default_mask):
    """Apply `method` on top of `default_mask`, to the part of t still unpruned
    (torch.nn.utils.prune.PruningContainer.compute_mask, its `_combine_masks`).

    - 'unstructured': method sees the 1-D array t[default_mask == 1], so a float amount is a
      fraction of the surviving entries and pruned entries are never chosen twice.
    - 'structured': method sees t restricted to the channels along method.dim whose mask is not all
      zero (torch's `mask.sum(other dims) != 0`), so the amount counts surviving channels.
    - 'global': method sees all of t and default_mask.

    The partial mask is written back into a copy of default_mask; returns the combined mask.
    """
    mask = _check_scores_and_mask(t, default_mask)
    if method.PRUNING_TYPE == "unstructured":
        part = mask == 1
    elif method.PRUNING_TYPE == "structured":
        if not hasattr(method, "dim"):
            raise TypeError(f"a method of PRUNING_TYPE 'structured' needs a `dim` attribute, {method!r} has none")
        dim = _validate_pruning_dim(t, method.dim)
        alive = mask.sum(axis=tuple(d for d in range(t.ndim) if d != dim)) != 0
        part = (slice(None),) * dim + (alive,)
    elif method.PRUNING_TYPE == "global":
        part = (...,)
    else:
        raise ValueError(f"unrecognised PRUNING_TYPE {method.PRUNING_TYPE!r} of {method!r}: "
                         "expected 'unstructured', 'structured' or 'global'")
    mask[part] = method.compute_mask(t[part], mask[part])
    return mask


class PruningContainer(BasePruningMethod):
    """The sequence of methods applied to one tensor, in order (torch.nn.utils.prune.PruningContainer).

    Its `compute_mask` applies the latest method on top of default_mask (the earlier methods' result)
    through `compose_mask`.
    """

    def __init__(self, *methods):
        self._pruning_methods = ()
        for method in methods:
            self.add_pruning_method(method)

    def add_pruning_method(self, method):
        if not isinstance(method, BasePruningMethod):
            raise TypeError(f"method must be a BasePruningMethod instance, got {type(method).__name__}")
        self._pruning_methods += (method,)

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, index):
        return self._pruning_methods[index]

    def compute_mask(self, t, default_mask):
        if not self._pruning_methods:
            raise ValueError("PruningContainer holds no method to compute a mask with")
        return compose_mask(self._pruning_methods[-1], t, default_mask)

    def __repr__(self):
        return f"PruningContainer({', '.join(map(repr, self._pruning_methods))})"


def global_compute_masks(tensors, default_masks, amount, method=L1Unstructured):
    """Masks for several tensors pruned together (the math of torch's `global_unstructured`).

    The scores of all tensors are raveled into one vector (in order), `method(amount)` is composed on
    top of the concatenated default masks (so one threshold holds across tensors and `amount` counts
    the surviving entries of all of them), and the result is split back into one mask per tensor.

    Args:
        tensors: sequence of arrays of importance scores (usually the weights).
        default_masks: sequence of masks of the same shapes, or None for masks of ones.
        amount: int count or float fraction of all surviving entries to prune.
        method: a BasePruningMethod subclass of PRUNING_TYPE 'unstructured', built as method(amount).

    Returns:
        list of masks, mask i of tensors[i]'s shape and mask dtype.
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors must hold at least one array, got none")
    for i, t in enumerate(tensors):
        if not isinstance(t, np.ndarray) or t.dtype.kind not in "biuf":
            raise TypeError(f"tensors[{i}] must be a numpy array of real numbers, got {type(t).__name__}")
    masks = [np.ones(t.shape) for t in tensors] if default_masks is None else list(default_masks)
    if len(masks) != len(tensors):
        raise ValueError(f"default_masks has {len(masks)} masks for {len(tensors)} tensors")
    for i, (t, m) in enumerate(zip(tensors, masks)):
        if np.shape(m) != t.shape:
            raise ValueError(f"default_masks[{i}] shape {np.shape(m)} must equal tensors[{i}] shape {t.shape}")
    if not (isinstance(method, type) and issubclass(method, BasePruningMethod)):
        raise TypeError(f"method must be a BasePruningMethod subclass, got {method!r}")
    if method.PRUNING_TYPE != "unstructured":  # checked on the class: a structured one needs more arguments
        raise TypeError(f"global pruning needs a method of PRUNING_TYPE 'unstructured', got {method.__name__} "
                        f"of type {method.PRUNING_TYPE!r}")
    pruner = method(amount)
    scores = np.concatenate([t.ravel() for t in tensors])
    mask = compose_mask(pruner, scores, np.concatenate([np.ravel(m) for m in masks]))
    pieces = np.split(mask, np.cumsum([t.size for t in tensors])[:-1])
    return [p.reshape(t.shape).astype(_mask_dtype(t)) for p, t in zip(pieces, tensors)]

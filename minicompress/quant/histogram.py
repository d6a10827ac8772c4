"""The arithmetic of torch's `HistogramObserver`: a running histogram and the L2 search for a clipping range.

An observer built on these functions gives torch's `HistogramObserver.calculate_qparams()` for the same
sequence of batches (torch 2.13, `torch/ao/quantization/observer.py`):

1. `observe(state, x)` (torch's `forward`): the first batch is binned with `histc` over [x.min(), x.max()].
   A later batch that widens the range is binned over the new range, and the old histogram is carried
   over by `combine_histograms`: each old bin is split into `upsample_rate` (16) equal parts whose
   midpoints are re-binned into the new range (`upscale_histogram`).
2. `non_linear_param_search(state, dst_nbins)`: starting from the full range, repeatedly trim the side
   holding less mass by the next 1e-5 quantile step, and keep the trimmed range while its quantization
   error keeps falling. The error of quantizing to `dst_nbins` (2**bits) equal levels over bins
   [start, end] assumes the values spread uniformly inside each histogram bin; for a source bin with
   density d = count / width, a part at distances [a, b] from the centre of the level it rounds to costs

       d * integral_a^b x^2 dx = d * (b**3 - a**3) / 3                       (`compute_quantization_error`)

   and a source bin spans: its head up to the end of its first level, (end_level - begin_level - 1)
   whole levels, and its tail from the start of its last level.
3. `calculate_histogram_qparams`: `qparams.calculate_qparams` on the range found.

Every step repeats torch's float32 arithmetic in torch's order (torch's `linspace` is a fused
multiply-add per element, its `histc` bins x as int((x - lo) * bins / (hi - lo)), its `bincount`
accumulates float32 weights in index order, its `cumsum` runs in float64), so histograms agree bit for
bit. One step cannot be repeated exactly: torch sums float32 vectors (the total mass, each candidate's
error) in a blocked order of its own; these sums are taken in float64 here and rounded to float32 once,
which can differ from torch's in the last bit. The search only compares errors of different ranges,
so that matters only when two candidates are within a rounding error of each other.

    >>> state = HistogramState(bins=64)
    >>> for batch in (np.linspace(-1, 1, 101, dtype=np.float32), np.linspace(-2, 3, 51, dtype=np.float32)):
    ...     state = observe(state, batch)
    >>> calculate_histogram_qparams(state)
    (array([0.01930147], dtype=float32), array([104]))
"""
import warnings

import numpy as np

from . import dtypes as qd
from .affine import fma_float32
from .qparams import EPS, calculate_qparams

f32 = np.float32


class HistogramState:
    """What a histogram observer remembers: `histogram` (float32, `bins` counts) over [min_val, max_val]
    (float32; inf / -inf before the first batch), and the `upsample_rate` used when the range widens."""

    def __init__(self, bins=2048, upsample_rate=16, histogram=None, min_val=np.inf, max_val=-np.inf):
        for name, value in (("bins", bins), ("upsample_rate", upsample_rate)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        self.bins, self.upsample_rate = int(bins), int(upsample_rate)
        self.histogram = np.zeros(self.bins, f32) if histogram is None else np.asarray(histogram, f32)
        if self.histogram.shape != (self.bins,):
            raise ValueError(f"histogram has shape {self.histogram.shape}; expected ({self.bins},)")
        self.min_val, self.max_val = f32(min_val), f32(max_val)

    @property
    def initialized(self):
        return not (self.min_val == np.inf or self.max_val == -np.inf)

    def replace(self, histogram, min_val, max_val):
        return HistogramState(self.bins, self.upsample_rate, histogram, min_val, max_val)

    def __repr__(self):
        return (f"HistogramState(bins={self.bins}, upsample_rate={self.upsample_rate}, "
                f"min_val={self.min_val}, max_val={self.max_val})")


def linspace(start, end, steps):
    """`torch.linspace(start, end, steps)` in float32, bit for bit.

    step = (end - start) / (steps - 1); the first half is start + step * i and the second half
    end - step * (steps - 1 - i), each a fused multiply-add, so both ends are exact.
    """
    start, end = f32(start), f32(end)
    if steps == 1:
        return np.array([start], f32)
    step = (end - start) / f32(steps - 1)
    i = np.arange(steps)
    from_start = fma_float32(step, i.astype(f32), start)
    from_end = fma_float32(-step, (steps - 1 - i).astype(f32), end)
    return np.where(i < steps // 2, from_start, from_end)


def histc(x, bins, min, max):
    """`torch.histc(x, bins, min, max)` for float32 `x`: counts of `bins` equal bins over [min, max].

    Bin of v: int((v - lo) * bins / (hi - lo)) in float32, the last bin closed on the right; values
    outside [lo, hi] are not counted. If min == max the data's range is used, and if that is a single
    value v, the range becomes [min(v - 1, next float below v), max(v + 1, next float above v)].
    """
    x = np.asarray(x, f32).reshape(-1)
    lo, hi = float(min), float(max)
    if lo == hi and x.size:
        lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        lo = np.minimum(float(np.nextafter(f32(lo), f32(-np.inf))), lo - 1)
        hi = np.maximum(float(np.nextafter(f32(hi), f32(np.inf))), hi + 1)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"histc range [{min}, {max}] must be finite with min <= max")
    lo, hi = f32(lo), f32(hi)
    inside = x[(x >= lo) & (x <= hi)]
    position = ((inside - lo) * f32(bins) / (hi - lo)).astype(np.int64)
    return np.bincount(np.minimum(position, bins - 1), minlength=bins).astype(f32)


def upscale_histogram(histogram, orig_min, orig_max, update_min, update_max, upsample_rate=16):
    """Re-bin `histogram` over [orig_min, orig_max] into the same number of bins over the wider
    [update_min, update_max], as torch's `HistogramObserver._upscale_histogram`.

    Each bin is split into `upsample_rate` parts holding count / upsample_rate, and each part lands in
    the new bin containing its midpoint (torch.bucketize(right=True), clamped to the valid bins).
    """
    bins = histogram.size
    fine = np.repeat(histogram, upsample_rate) / f32(upsample_rate)
    bin_size = (f32(orig_max) - f32(orig_min)) / f32(bins * upsample_rate)
    midpoints = linspace(orig_min, orig_max, bins * upsample_rate + 1)[:-1] + f32(0.5) * bin_size
    boundaries = linspace(update_min, update_max, bins + 1)
    target = np.clip(np.searchsorted(boundaries, midpoints, side="right") - 1, 0, bins - 1)
    upscaled = np.zeros(bins, f32)
    np.add.at(upscaled, target, fine)  # float32, in index order: torch.bincount(weights=...)
    return upscaled


def combine_histograms(orig_hist, orig_min, orig_max, update_hist, update_min, update_max, upsample_rate=16):
    """The histogram of all batches so far over [update_min, update_max], as torch's
    `HistogramObserver._combine_histograms`: `update_hist` (the new batch, already binned over the new
    range) plus the old histogram carried over to the new range."""
    if update_min == orig_min and update_max == orig_max:
        return orig_hist + update_hist
    if orig_min == orig_max:
        mass = f32(orig_hist.sum(dtype=np.float64))
        return histc(np.array([orig_min], f32), orig_hist.size, update_min, update_max) * mass + update_hist
    if update_min > orig_min or update_max < orig_max:
        raise ValueError(f"the new range [{update_min}, {update_max}] must contain the old one "
                         f"[{orig_min}, {orig_max}]")
    return update_hist + upscale_histogram(orig_hist, orig_min, orig_max, update_min, update_max, upsample_rate)


def observe(state, x):
    """The state after also observing the batch `x`, as torch's `HistogramObserver.forward`.

    x is rounded to float32 (the observer's buffers are float32). Infinite values are dropped with a
    warning, as torch does; NaN raises ValueError (torch would corrupt the histogram).
    """
    x = np.asarray(x, f32).reshape(-1)
    if x.size == 0:
        return state
    if np.isnan(x).any():
        raise ValueError("x contains NaN, which cannot be placed in a histogram")
    if np.isinf(x).any():
        warnings.warn("inf detected in the input, ignoring those values", RuntimeWarning, stacklevel=2)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return state
    x_min, x_max = x.min(), x.max()
    if not state.initialized:
        return state.replace(histc(x, state.bins, x_min, x_max), x_min, x_max)
    new_min, new_max = np.minimum(state.min_val, x_min), np.maximum(state.max_val, x_max)
    update = histc(x, state.bins, new_min, new_max)
    combined = combine_histograms(state.histogram, state.min_val, state.max_val, update, new_min, new_max,
                                  state.upsample_rate)
    return state.replace(combined, new_min, new_max)


def _get_norm(delta_begin, delta_end, density):
    """density * integral_{delta_begin}^{delta_end} x^2 dx, in float32 and torch's order."""
    return density * ((delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / f32(3))


def compute_quantization_error(histogram, min_val, max_val, next_start_bin, next_end_bin, dst_nbins):
    """L2 error of quantizing the histogram to `dst_nbins` levels spread over bins
    [next_start_bin, next_end_bin], as torch's `HistogramObserver._compute_quantization_error`.

    Bin widths are Python floats (float64) as in torch; every array operation is float32.
    """
    bins = histogram.size
    bin_width = (float(max_val) - float(min_val)) / bins
    dst_bin_width = bin_width * (next_end_bin - next_start_bin + 1) / dst_nbins
    if dst_bin_width == 0.0:
        return 0.0
    width, dst_width, half_dst = f32(bin_width), f32(dst_bin_width), f32(dst_bin_width / 2)
    last_level = f32(dst_nbins - 1)

    src_bin_begin = (np.arange(bins) - next_start_bin).astype(f32) * width
    src_bin_end = src_bin_begin + width
    dst_bin_of_begin = np.clip(np.floor_divide(src_bin_begin, dst_width), f32(0), last_level)
    dst_bin_of_begin_center = (dst_bin_of_begin + f32(0.5)) * dst_width
    dst_bin_of_end = np.clip(np.floor_divide(src_bin_end, dst_width), f32(0), last_level)
    density = histogram / width

    head = _get_norm(src_bin_begin - dst_bin_of_begin_center, np.full(bins, half_dst), density)
    whole = (dst_bin_of_end - dst_bin_of_begin - f32(1)) * _get_norm(-half_dst, half_dst, density)
    dst_bin_of_end_center = dst_bin_of_end * dst_width + half_dst
    tail = _get_norm(-half_dst, src_bin_end - dst_bin_of_end_center, density)
    norm = head + whole + tail
    return float(f32(norm.sum(dtype=np.float64)))


def non_linear_param_search(state, dst_nbins=256):
    """(new_min, new_max): the clipping range with the least L2 quantization error found by torch's
    greedy quantile search, `HistogramObserver._non_linear_param_search` (see the module docstring).

    dst_nbins is 2**bits of the target dtype (256 for quint8 / qint8, whatever the quant range).
    """
    if not state.initialized:
        raise ValueError("the histogram is empty: observe at least one batch first")
    histogram, bins = state.histogram, state.bins
    bin_width = (state.max_val - state.min_val) / f32(bins)
    total = float(f32(histogram.sum(dtype=np.float64)))
    c_sum = np.cumsum(histogram, dtype=np.float64).astype(f32)

    stepsize = 1e-5
    alpha, beta = 0.0, 1.0
    start_bin, end_bin = 0, bins - 1
    norm_min = float("inf")
    while alpha < beta:
        next_alpha, next_beta = alpha + stepsize, beta - stepsize
        # the bins holding the next_alpha and next_beta quantiles
        low, high = f32(next_alpha * total), f32(next_beta * total)
        left, right = start_bin, end_bin
        while left < end_bin and c_sum[left] < low:
            left += 1
        while right > start_bin and c_sum[right] > high:
            right -= 1

        next_start_bin, next_end_bin = start_bin, end_bin
        if (left - start_bin) > (end_bin - right):
            next_start_bin, alpha = left, next_alpha
        else:
            next_end_bin, beta = right, next_beta
        if next_start_bin == start_bin and next_end_bin == end_bin:
            continue

        norm = compute_quantization_error(histogram, state.min_val, state.max_val, next_start_bin,
                                          next_end_bin, dst_nbins)
        if norm > norm_min:
            break
        norm_min = norm
        start_bin, end_bin = next_start_bin, next_end_bin

    new_min = state.min_val + bin_width * f32(start_bin)
    new_max = state.min_val + bin_width * f32(end_bin + 1)
    return new_min, new_max


def calculate_histogram_qparams(state, dtype=qd.quint8, qscheme=qd.per_tensor_affine, quant_min=None,
                                quant_max=None, reduce_range=False, eps=EPS):
    """(scale, zero_point) of torch's `HistogramObserver.calculate_qparams()` for this state.

    Per-tensor schemes only, as torch's HistogramObserver; an unobserved state gives (1.0, 0).
    """
    dtype, qscheme = qd.check_dtype(dtype), qd.check_qscheme(qscheme)
    if qscheme.per_channel:
        raise ValueError(f"qscheme={qscheme!r}: the histogram observer supports per-tensor schemes only")
    if not state.initialized:
        return np.ones(1, f32), np.zeros(1, np.int64)
    new_min, new_max = non_linear_param_search(state, 2**dtype.bits)
    return calculate_qparams(new_min, new_max, dtype, qscheme, quant_min, quant_max, reduce_range, eps)

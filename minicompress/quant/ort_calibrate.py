"""onnxruntime's calibrators (`onnxruntime.quantization.calibrate`): the range each method gives a tensor.

A calibrator sees every calibration batch of one tensor (`collect(batch)`) and then gives its range
(`compute_range()` -> (lowest, highest), float32), which `ort_qparams.compute_scale_zp` turns into a scale
and zero point. The arithmetic is onnxruntime's, step for step, so the ranges are equal to the bit:

    minmax        lowest = min over batches of the batch's min, highest likewise (MinMaxCalibrater: one
                  ReduceMin / ReduceMax per batch, then nanmin / nanmax across them)
    entropy       a histogram of the values, num_bins bins over [-t, t], t = max|x|; for every candidate
                  window of i bins each side of the centre (i = num_quantized_bins/2 .. num_bins/2) the
                  KL divergence between the window's distribution (outliers added to its end bins) and
                  that distribution merged into num_quantized_bins bins; the window of least divergence,
                  clipped to [min, max]. At onnxruntime's defaults (128 bins, 128 quantized bins) there is a
                  single candidate, the whole histogram, so Entropy returns exactly MinMax's range.
    percentile    symmetric (the default): a histogram of |x| (num_bins = 2048 bins over [min|x|, max|x|]);
                  t = the first bin edge whose CDF reaches percentile / 100 (default 99.999); the range
                  [-t, t] clipped to [min, max]. Not symmetric: the edges at (100 - p) / 200 and
                  1 - (100 - p) / 200 of a histogram of x over [-max|x|, max|x|]
    distribution  a histogram of x (num_bins >= 512, default 2048) over [-max|x|, max|x|]; the range is its
                  outer edges, [-max|x|, max|x|] (the mean and std it also records serve float8 only)

How the batches are pooled matters for the histogram methods: `quantize_static` runs every batch first and
hands the list of outputs to `HistogramCollector.collect` at once, which flattens `np.asarray(list)`: one
histogram of all samples together (its histogram-merging path is only taken when `collect_data` is called
again). So these calibrators keep the batches and build the histogram when the range is asked for;
`new_pass()` closes a pass, and the next pass's histogram is merged into it as a second `collect_data`
call merges it (the histogram grows by whole bins; `merge_value_histogram`, `merge_absolute_histogram`).
(onnxruntime's `np.asarray` also requires batches of one shape; here they are concatenated, which is the
same array when it works.)

On the same arrays the ranges are onnxruntime's to the bit. On a model, the arrays are the float graph's
values as minicompress computes them, which differ from onnxruntime's in the last bits (another summation
order): a range then differs by about 1e-7 relative, and where a range is symmetric, [-t, t] (percentile,
distribution), the uint8 zero point round(127.5) is a tie that this last bit sends to 127 or 128.

The observers at the bottom wrap a calibrator as a module for a QConfig: `OrtMinMaxObserver`,
`OrtEntropyObserver`, `OrtPercentileObserver`, `OrtDistributionObserver`; `calculate_qparams()` gives
onnxruntime's (scale, zero point) for uint8 activations.
"""
from __future__ import annotations

import copy

import numpy as np

from ..nn.module import Module
from ..tensor import Tensor
from .ort_qparams import compute_scale_zp, qmin_qmax

METHODS = ("minmax", "entropy", "percentile", "distribution")
# create_calibrator's defaults per method: (num_bins, num_quantized_bins, percentile, symmetric)
DEFAULTS = {"minmax": (None, None, None, False), "entropy": (128, 128, None, False),
            "percentile": (2048, None, 99.999, True), "distribution": (2048, None, None, False)}


def _flat(batches):
    arrays = [np.asarray(b).ravel() for b in batches]
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def _min_max(data):
    if data.size:
        return np.nanmin(data), np.nanmax(data)
    return np.array(0, data.dtype), np.array(0, data.dtype)


def value_histogram(data, num_bins):
    """(hist, edges, min, max, threshold): `num_bins` bins over [-t, t], t = max|x| (`collect_value`)."""
    min_value, max_value = _min_max(data)
    threshold = np.array(max(abs(min_value), abs(max_value)), dtype=data.dtype)
    hist, edges = np.histogram(data, num_bins, range=(-threshold, threshold))
    return hist, edges, min_value, max_value, threshold


def absolute_histogram(data, num_bins):
    """(hist, edges (float32), min, max): `num_bins` bins of |x| over [min|x|, max|x|] (`collect_absolute_value`)."""
    min_value, max_value = _min_max(data)
    hist, edges = np.histogram(np.absolute(data), bins=num_bins)
    return hist, edges.astype(data.dtype), min_value, max_value


def merge_value_histogram(old, data):
    """`old` (value_histogram's tuple) and the values `data` as one histogram (`merge_histogram`): data
    within the old threshold is binned on the old edges; beyond it, the histogram grows by whole old bins
    on both sides (or, from a zero threshold, is rebinned over the new one) and the old counts are added
    in the middle."""
    old_hist, old_edges, old_min, old_max, old_threshold = old
    new_min, new_max = _min_max(data)
    threshold = np.array(max(abs(new_min), abs(new_max)), dtype=data.dtype)
    if threshold <= old_threshold:
        hist, _ = np.histogram(data, len(old_hist), range=(-old_threshold, old_threshold))
        return hist + old_hist, old_edges, min(old_min, new_min), max(old_max, new_max), old_threshold
    if old_threshold == 0:
        hist, edges = np.histogram(data, len(old_hist), range=(-threshold, threshold))
        hist += old_hist
    else:
        stride = 2 * old_threshold / len(old_hist)
        half = int((threshold - old_threshold) // stride + 1)
        bins = len(old_hist) + 2 * half
        threshold = half * stride + old_threshold
        hist, edges = np.histogram(data, bins, range=(-threshold, threshold))
        hist[half:bins - half] += old_hist
    return hist, edges, min(old_min, new_min), max(old_max, new_max), threshold


def merge_absolute_histogram(old, data):
    """`old` (absolute_histogram's tuple) and |data| as one histogram (`collect_absolute_value` on a second
    call): the old edges, extended by bins of the old width up to max|data|; the old counts added in front."""
    old_hist, old_edges, old_min, old_max = old
    min_value, max_value = _min_max(data)
    data = np.absolute(data)
    top = np.nanmax(data)
    if top > old_edges[-1]:
        width = old_edges[1] - old_edges[0]
        old_edges = np.hstack((old_edges, np.arange(old_edges[-1] + width, top + width, width)))
    hist, edges = np.histogram(data, bins=old_edges)
    hist[:len(old_hist)] += old_hist
    return hist, edges.astype(data.dtype), min(old_min, min_value), max(old_max, max_value)


def _clip(lowest, highest, min_value, max_value):
    return (min_value if lowest < min_value else lowest), (max_value if highest > max_value else highest)


def percentile_range(hist, edges, min_value, max_value, percentile, symmetric):
    """The percentile range of a histogram (`compute_percentile`); see the module docstring."""
    cdf = np.cumsum(hist / hist.sum())
    if symmetric:
        right = np.searchsorted(cdf, percentile / 100.0)
        lowest, highest = -np.array(edges[right], edges.dtype), np.array(edges[right], edges.dtype)
    else:
        cut = (100.0 - percentile) / 200.0
        lowest = np.array(edges[np.searchsorted(cdf, cut)], edges.dtype)
        highest = np.array(edges[np.searchsorted(cdf, 1.0 - cut)], edges.dtype)
    return _clip(lowest, highest, min_value, max_value)


def smooth_distribution(p, eps=0.0001):
    """Zeros replaced by eps, the amount taken off the non-zero bins (quant_utils.smooth_distribution);
    None when every bin is zero."""
    is_zeros = (p == 0).astype(np.float32)
    is_nonzeros = (p != 0).astype(np.float32)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * float(n_zeros) / float(n_nonzeros)
    hist = p.astype(np.float32)
    hist += eps * is_zeros + (-eps1) * is_nonzeros
    return hist


def kl_divergence(pk, qk):
    """sum p log(p / q) of the normalised float32 distributions (calibrate.entropy, scipy's formula)."""
    pk = np.asarray(pk).astype(np.float32)
    pk = 1.0 * pk / np.sum(pk, axis=0, keepdims=True)
    qk = np.asarray(qk).astype(np.float32)
    qk = 1.0 * qk / np.sum(qk, axis=0, keepdims=True)
    terms = np.empty(pk.shape, pk.dtype)
    terms[:] = pk * np.log(pk / qk)
    terms[(pk == 0) & (qk >= 0)] = 0
    terms[~((pk > 0) & (qk > 0))] = np.inf
    return np.sum(terms, axis=0).astype(pk.dtype)


def entropy_range(hist, edges, min_value, max_value, num_quantized_bins):
    """The window of least KL divergence (`get_entropy_threshold`); see the module docstring."""
    num_bins = hist.size
    zero_bin = num_bins // 2
    half = num_quantized_bins // 2
    dtype = edges.dtype
    divergences = np.zeros(zero_bin - half + 1)
    windows = [(np.array(0, dtype), np.array(0, dtype))] * divergences.size
    for i in range(half, zero_bin + 1):
        start, end = zero_bin - i, min(zero_bin + i + 1, num_bins)
        windows[i - half] = (edges[start], edges[end])
        sliced = hist[start:end].copy()
        p = sliced.copy()
        p[0] += sum(hist[:start])
        p[-1] += sum(hist[end:])
        nonzeros = (p != 0).astype(np.int64)
        merged = sliced.size // num_quantized_bins
        quantized = np.zeros(num_quantized_bins, np.int64)
        for k in range(num_quantized_bins):
            quantized[k] = sum(sliced[k * merged:(k + 1) * merged])
        quantized[-1] += sum(sliced[num_quantized_bins * merged:])
        q = np.zeros(p.size, np.int64)
        for k in range(num_quantized_bins):
            norm = sum(nonzeros[k * merged:(k + 1) * merged])
            if norm != 0:
                q[k * merged:(k + 1) * merged] = quantized[k] / norm
        p, q = smooth_distribution(p), smooth_distribution(q)
        divergences[i - half] = np.inf if p is None or q is None else np.array(kl_divergence(p, q), dtype)
    lowest, highest = windows[int(np.argmin(divergences))]
    return _clip(lowest, highest, min_value, max_value)


def check_calibration_args(method, num_bins=None, num_quantized_bins=None, percentile=None):
    """(method, num_bins, num_quantized_bins, percentile, symmetric) with onnxruntime's defaults filled in;
    ValueError naming the argument otherwise."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    bins, qbins, pct, symmetric = DEFAULTS[method]
    if percentile is not None:
        if method != "percentile":
            raise ValueError(f"percentile={percentile!r} applies to method 'percentile' only, not {method!r}")
        if not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
            raise ValueError(f"percentile={percentile!r} must be a number in [0, 100]")
        pct = float(percentile)
    if num_bins is not None:
        if method == "minmax":
            raise ValueError("num_bins applies to the histogram methods, not 'minmax'")
        if not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins={num_bins!r} must be a positive int")
        bins = num_bins
    if num_quantized_bins is not None:
        if method != "entropy":
            raise ValueError(f"num_quantized_bins applies to method 'entropy' only, not {method!r}")
        if not isinstance(num_quantized_bins, int) or num_quantized_bins < 2:
            raise ValueError(f"num_quantized_bins={num_quantized_bins!r} must be an int >= 2")
        qbins = num_quantized_bins
    if method == "entropy" and bins // 2 < qbins // 2:
        raise ValueError(f"num_bins={bins} must be at least num_quantized_bins={qbins} (the entropy search "
                         "tries windows of num_quantized_bins to num_bins bins)")
    if method == "distribution" and bins < 512:
        raise ValueError(f"num_bins={bins}: onnxruntime's distribution calibrator needs num_bins >= 512")
    return method, bins, qbins, pct, symmetric


class Calibrator:
    """The range of one tensor by `method` (module docstring), from batches given to `collect`.

    Args:
        method: "minmax", "entropy", "percentile" or "distribution".
        num_bins, num_quantized_bins, percentile: as onnxruntime's extra options; None = its default.
        symmetric: None = the method's default (True for percentile, else False); minmax with
            symmetric=True gives [-max|x|, max|x|] (CalibTensorRangeSymmetric).
    """

    def __init__(self, method="minmax", num_bins=None, num_quantized_bins=None, percentile=None, symmetric=None):
        self.method, self.num_bins, self.num_quantized_bins, self.percentile, default_symmetric = \
            check_calibration_args(method, num_bins, num_quantized_bins, percentile)
        self.symmetric = default_symmetric if symmetric is None else bool(symmetric)
        self.batches = []
        self.passes = []             # the batches of earlier calibration passes (new_pass)
        self.min_value = self.max_value = None

    def new_pass(self):
        """Close the batches collected so far as one pass, as one `collect_data(reader)` call of onnxruntime's
        calibrator: its histogram of the next pass is merged into this one's (merge_histogram), where all
        batches of one pass make one histogram. quantize_static makes a single pass. MinMax is unchanged."""
        if self.batches:
            self.passes.append(self.batches)
            self.batches = []

    def collect(self, batch):
        batch = np.asarray(batch)
        if self.method == "minmax":
            low, high = _min_max(batch.ravel())
            self.min_value = low if self.min_value is None else np.nanmin([self.min_value, low])
            self.max_value = high if self.max_value is None else np.nanmax([self.max_value, high])
        else:
            self.batches.append(batch.ravel().copy())

    @property
    def observed(self):
        return self.min_value is not None or bool(self.batches) or bool(self.passes)

    def _histogram(self, absolute):
        passes = self.passes + ([self.batches] if self.batches else [])
        state = None
        for batches in passes:
            data = _flat(batches)
            if absolute:
                state = absolute_histogram(data, self.num_bins) if state is None else \
                    merge_absolute_histogram(state, data)
            else:
                state = value_histogram(data, self.num_bins) if state is None else \
                    merge_value_histogram(state, data)
        return state

    def compute_range(self):
        """(lowest, highest) as float32 NumPy scalars."""
        if not self.observed:
            raise ValueError("the calibrator has seen no batch")
        if self.method == "minmax":
            low, high = np.asarray(self.min_value), np.asarray(self.max_value)
            if self.symmetric:
                bound = np.nanmax([np.abs(low), np.abs(high)], axis=0)
                return -bound, bound
            return low, high
        if self.method == "percentile" and self.symmetric:
            hist, edges, low, high = self._histogram(absolute=True)
            return percentile_range(hist, edges, low, high, self.percentile, True)
        hist, edges, low, high, _ = self._histogram(absolute=False)
        if self.method == "percentile":
            return percentile_range(hist, edges, low, high, self.percentile, False)
        if self.method == "entropy":
            return entropy_range(hist, edges, low, high, self.num_quantized_bins)
        return edges.min(), edges.max()                          # distribution

    def __deepcopy__(self, memo):
        other = copy.copy(self)
        other.batches, other.passes = list(self.batches), [list(p) for p in self.passes]
        return other


class OrtObserver(Module):
    """An observer whose range is onnxruntime's calibrator's and whose (scale, zero point) is onnxruntime's
    `compute_scale_zp` for uint8 ([0, 255]; [0, 127] with reduce_range). forward records and returns x."""

    method = "minmax"

    def __init__(self, num_bins=None, num_quantized_bins=None, percentile=None, symmetric=None,
                 reduce_range=False, dtype=None):
        super().__init__()
        from . import dtypes as qd
        self.dtype = qd.quint8 if dtype is None else qd.check_dtype(dtype)
        if self.dtype is not qd.quint8:
            raise ValueError(f"dtype={self.dtype!r}: onnxruntime's calibrators here serve quint8 activations")
        self.is_dynamic = False
        self.reduce_range = bool(reduce_range)
        self.calibrator = Calibrator(self.method, num_bins, num_quantized_bins, percentile, symmetric)

    @classmethod
    def with_args(cls, **kwargs):
        from .observer import _PartialWrapper
        from functools import partial
        return _PartialWrapper(partial(cls, **kwargs))

    @property
    def observed(self):
        return self.calibrator.observed

    def forward(self, x):
        self.calibrator.collect(np.asarray(x.data if isinstance(x, Tensor) else x, np.float32))
        return x

    def calculate_range(self):
        return self.calibrator.compute_range()

    def calculate_qparams(self):
        """(scale float32 (1,), zero_point int64 (1,)) as the other observers return them."""
        low, high = self.calculate_range()
        qmin, qmax = qmin_qmax(np.uint8, self.reduce_range)
        zero_point, scale = compute_scale_zp(np.float32(low), np.float32(high), qmin, qmax, False)
        return np.asarray(scale, np.float32).reshape(1), np.asarray(zero_point, np.int64).reshape(1)


class OrtMinMaxObserver(OrtObserver):
    """onnxruntime's MinMax calibrator as an observer."""
    method = "minmax"


class OrtEntropyObserver(OrtObserver):
    """onnxruntime's Entropy calibrator (KL search over a histogram; at 128/128 bins it equals MinMax)."""
    method = "entropy"


class OrtPercentileObserver(OrtObserver):
    """onnxruntime's Percentile calibrator (|x| histogram of 2048 bins, 99.999th percentile, symmetric)."""
    method = "percentile"


class OrtDistributionObserver(OrtObserver):
    """onnxruntime's Distribution calibrator (range = the histogram's outer edges, [-max|x|, max|x|])."""
    method = "distribution"


OBSERVERS = {cls.method: cls for cls in (OrtMinMaxObserver, OrtEntropyObserver, OrtPercentileObserver,
                                         OrtDistributionObserver)}

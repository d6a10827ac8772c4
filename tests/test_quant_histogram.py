"""The histogram observer's arithmetic against torch's HistogramObserver fed the same batches:
histograms and ranges bit for bit after every batch, and the final (scale, zero_point); plus the
torch primitives it repeats (linspace, histc, the upscaling) on their own."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import HistogramObserver

from minicompress.quant import dtypes
from minicompress.quant import histogram as hist

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch: reduce_range / inf warnings

TORCH = {dtypes.quint8: torch.quint8, dtypes.qint8: torch.qint8, dtypes.qint32: torch.qint32,
         dtypes.per_tensor_affine: torch.per_tensor_affine, dtypes.per_tensor_symmetric: torch.per_tensor_symmetric}
FLOAT32 = st.floats(-1e6, 1e6, width=32)


def assert_bits_equal(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual, expected)
    assert actual.tobytes() == expected.tobytes(), f"\n{actual}\n!=\n{expected}"


@st.composite
def batches(draw):
    """1-4 float32 batches: normal, uniform, skewed with an outlier, or with a repeated value; later
    batches often widen the range (which exercises the upscaling). Constant and spike-shaped data run the
    search to its end (1e5 steps, seconds in torch): `test_constant_and_spiky_batches_match_torch`."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 300))
        kind = draw(st.sampled_from(["normal", "uniform", "outliers", "repeated"]))
        scale = 10.0 ** draw(st.integers(-3, 3))
        x = {"normal": lambda: rng.standard_normal(n) * scale + rng.uniform(-1, 1) * scale,
             "uniform": lambda: rng.uniform(-1, 3, n) * scale * (i + 1),
             "outliers": lambda: np.concatenate([rng.exponential(scale, n), [-50 * scale]]),
             "repeated": lambda: np.concatenate([rng.standard_normal(n), np.full(n, rng.standard_normal())]) * scale,
             }[kind]()
        out.append(x.astype(np.float32))
    return out


@st.composite
def observer_settings(draw):
    dtype = draw(st.sampled_from([dtypes.quint8, dtypes.qint8, dtypes.qint32]))
    qscheme = draw(st.sampled_from([dtypes.per_tensor_affine, dtypes.per_tensor_symmetric]))
    reduce_range = dtype is not dtypes.qint32 and not (qscheme.symmetric and dtype is dtypes.quint8) \
        and draw(st.booleans())
    quant_min = quant_max = None
    if dtype is not dtypes.qint32 and draw(st.booleans()):
        quant_min = draw(st.integers(dtype.quant_min, 0))
        quant_max = draw(st.integers(max(quant_min + 1, 0), dtype.quant_max))
    return dict(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min, quant_max=quant_max)


@settings(max_examples=30, deadline=None)
@given(xs=batches(), config=observer_settings(), bins=st.sampled_from([1, 64, 100, 256, 2048]),
       upsample_rate=st.sampled_from([16, 4]))
def test_observer_matches_torch_histogram_observer(xs, config, bins, upsample_rate):
    observer = HistogramObserver(bins=bins, **{k: TORCH.get(v, v) if k in ("dtype", "qscheme") else v
                                               for k, v in config.items()})
    observer.upsample_rate = upsample_rate
    state = hist.HistogramState(bins, upsample_rate)
    for x in xs:
        observer(torch.from_numpy(x))
        state = hist.observe(state, x)
        assert_bits_equal(state.histogram, observer.histogram.numpy())
        assert_bits_equal(np.array([state.min_val, state.max_val]),
                          np.array([observer.min_val.item(), observer.max_val.item()], np.float32))

    _assert_search_and_qparams_match(state, observer, config)


def _assert_search_and_qparams_match(state, observer, config):
    new_min, new_max = hist.non_linear_param_search(state, 2 ** config["dtype"].bits)
    t_min, t_max = observer._non_linear_param_search()
    # Exact, including the search: its float32 sums taken in another order (see histogram.py) could only
    # flip a comparison between two candidate ranges whose errors agree to the last bit.
    assert_bits_equal(np.array([new_min, new_max]), np.array([t_min.item(), t_max.item()], np.float32))
    scale, zero_point = hist.calculate_histogram_qparams(state, **config)
    t_scale, t_zero_point = observer._calculate_qparams(t_min, t_max)  # = observer.calculate_qparams()
    assert_bits_equal(scale, t_scale.numpy())
    np.testing.assert_array_equal(zero_point, t_zero_point.numpy())


@pytest.mark.parametrize("xs", [[np.full(10, 0.3)], [np.full(10, -2.0), np.array([1.0, -5.0, 7.0])],
                                [np.concatenate([np.zeros(500), np.linspace(-1, 1, 5)]), np.full(3, 9.0)]],
                         ids=["constant", "constant-then-wider", "spike"])
def test_constant_and_spiky_batches_match_torch(xs):
    observer, state = HistogramObserver(bins=64), hist.HistogramState(64)
    for x in xs:
        observer(torch.from_numpy(x.astype(np.float32)))
        state = hist.observe(state, x)
        assert_bits_equal(state.histogram, observer.histogram.numpy())
    _assert_search_and_qparams_match(state, observer, dict(dtype=dtypes.quint8))


@settings(max_examples=25, deadline=None)
@given(start=FLOAT32, end=FLOAT32, steps=st.one_of(st.integers(1, 3000), st.sampled_from([32769, 40000])))
def test_linspace_matches_torch(start, end, steps):
    expected = torch.linspace(torch.tensor(start), torch.tensor(end), steps).numpy()
    assert_bits_equal(hist.linspace(start, end, steps), expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=FLOAT32, width=st.floats(1e-3, 1e4), bins=st.integers(1, 300),
       constant=st.booleans())
def test_histc_matches_torch_including_bin_edges(seed, low, width, bins, constant):
    high = np.float32(low + width) if not constant else np.float32(low)
    edges = hist.linspace(low, high, bins + 1)
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(low, high, 50), edges, np.nextafter(edges, np.float32(np.inf)),
                        np.nextafter(edges, np.float32(-np.inf)), [low - 1.0, high + 1.0]]).astype(np.float32)
    if constant:
        x[:] = low
    expected = torch.histc(torch.from_numpy(x), bins, min=float(low), max=float(high)).numpy()
    assert_bits_equal(hist.histc(x, bins, low, high), expected)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bins=st.integers(1, 64), upsample_rate=st.integers(1, 16))
def test_upscale_histogram_matches_torch(seed, bins, upsample_rate):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 100, bins).astype(np.float32) / np.float32(rng.choice([1, 3, 16]))
    orig_min, orig_max = np.sort(rng.standard_normal(2)).astype(np.float32)
    update_min = np.float32(orig_min - abs(rng.standard_normal()))
    update_max = np.float32(orig_max + abs(rng.standard_normal()))
    observer = HistogramObserver(bins=bins)
    observer.upsample_rate = upsample_rate
    expected = observer._upscale_histogram(torch.from_numpy(counts), *map(torch.tensor, (orig_min, orig_max,
                                                                                       update_min, update_max)))
    actual = hist.upscale_histogram(counts, orig_min, orig_max, update_min, update_max, upsample_rate)
    assert_bits_equal(actual, expected.numpy())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bins=st.sampled_from([8, 100, 2048]), dtype=st.sampled_from([8, 32]))
def test_quantization_error_matches_torch(seed, bins, dtype):
    rng = np.random.default_rng(seed)
    observer = HistogramObserver(bins=bins)
    observer(torch.from_numpy(rng.standard_normal(500).astype(np.float32)))
    observer.dst_nbins = 2**dtype
    start = int(rng.integers(0, bins))
    end = int(rng.integers(start, bins))
    expected = observer._compute_quantization_error(start, end)
    actual = hist.compute_quantization_error(observer.histogram.numpy(), observer.min_val.item(),
                                             observer.max_val.item(), start, end, 2**dtype)
    # torch sums the float32 per-bin errors in a blocked order, here in float64: a few float32 ulps
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=0)


def test_infinite_values_are_dropped_and_nan_rejected():
    observer, state = HistogramObserver(bins=8), hist.HistogramState(8)
    x = np.array([1.0, np.inf, -2.0, -np.inf], np.float32)
    observer(torch.from_numpy(x))
    with pytest.warns(RuntimeWarning, match="inf"):
        state = hist.observe(state, x)
    assert_bits_equal(state.histogram, observer.histogram.numpy())
    with pytest.warns(RuntimeWarning):
        assert hist.observe(state, np.array([np.inf], np.float32)) is state
    with pytest.raises(ValueError, match="NaN"):
        hist.observe(state, np.array([np.nan], np.float32))


def test_unobserved_state_gives_torch_defaults_and_bad_input_raises():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_scale, t_zero_point = HistogramObserver().calculate_qparams()
    scale, zero_point = hist.calculate_histogram_qparams(hist.HistogramState())
    assert_bits_equal(scale, t_scale.numpy())
    np.testing.assert_array_equal(zero_point, t_zero_point.numpy())
    assert hist.observe(hist.HistogramState(), np.zeros(0, np.float32)).initialized is False
    with pytest.raises(ValueError, match="per-tensor"):
        hist.calculate_histogram_qparams(hist.HistogramState(), qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="observe"):
        hist.non_linear_param_search(hist.HistogramState())
    with pytest.raises(ValueError, match="bins=0"):
        hist.HistogramState(bins=0)
    with pytest.raises(ValueError, match="histogram has shape"):
        hist.HistogramState(bins=4, histogram=np.zeros(3))
    with pytest.raises(ValueError, match="must contain the old one"):
        hist.combine_histograms(np.ones(4, np.float32), -1.0, 1.0, np.ones(4, np.float32), 0.0, 2.0)

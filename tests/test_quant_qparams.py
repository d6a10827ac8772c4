"""calculate_qparams against torch's MinMaxObserver / PerChannelMinMaxObserver fed the same batches:
scale equal in float32, zero point equal; the quant-range defaults; the dtype and qscheme constants;
and bad input."""
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver
from torch.ao.quantization.utils import calculate_qmin_qmax as torch_calculate_qmin_qmax

from minicompress.quant import dtypes
from minicompress.quant.qparams import calculate_qmin_qmax, calculate_qparams, validate_qparams

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch: reduce_range will be deprecated

TORCH = {dtypes.quint8: torch.quint8, dtypes.qint8: torch.qint8, dtypes.qint32: torch.qint32,
         dtypes.per_tensor_affine: torch.per_tensor_affine, dtypes.per_tensor_symmetric: torch.per_tensor_symmetric,
         dtypes.per_channel_affine: torch.per_channel_affine,
         dtypes.per_channel_symmetric: torch.per_channel_symmetric,
         dtypes.per_channel_affine_float_qparams: torch.per_channel_affine_float_qparams}


@st.composite
def observer_settings(draw, schemes):
    """(dtype, qscheme, reduce_range, quant_min, quant_max) that torch's observers accept."""
    dtype = draw(st.sampled_from([dtypes.quint8, dtypes.qint8, dtypes.qint32]))
    qscheme = draw(st.sampled_from(schemes))
    reduce_range = dtype is not dtypes.qint32 and draw(st.booleans())
    if qscheme.symmetric and dtype is dtypes.quint8:
        reduce_range = False
    quant_min = quant_max = None
    if dtype is not dtypes.qint32 and draw(st.booleans()):
        quant_min = draw(st.integers(dtype.quant_min, 0))
        quant_max = draw(st.integers(max(quant_min + 1, 0), dtype.quant_max))
    return dtype, qscheme, reduce_range, quant_min, quant_max


@st.composite
def batches(draw, shape):
    """A few float32 batches of very different magnitudes; some all positive, all negative or constant."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["normal", "positive", "negative", "constant", "zeros"]))
        scale = 10.0 ** draw(st.integers(-8, 8))
        x = rng.standard_normal(shape) * scale
        x = {"positive": np.abs(x), "negative": -np.abs(x), "constant": np.full(shape, x.flat[0]),
             "zeros": np.zeros(shape)}.get(kind, x)
        out.append(x.astype(np.float32))
    return out


def _torch_qparams(observer, xs):
    for x in xs:
        observer(torch.from_numpy(x))
    scale, zero_point = observer.calculate_qparams()
    return scale.numpy(), zero_point.numpy()


def assert_qparams_equal(actual, expected):
    """Scales equal bit for bit, except that a NaN only has to be a NaN. A quant range that reduce_range
    halves to one level (quant_min=0, quant_max=1) over an all-zero channel divides 0 by 0 in both;
    IEEE 754 leaves the sign of that NaN open: x86 gives 0xffc00000 (NumPy here), torch returns
    0x7fc00000 and ARM gives 0x7fc00000 for both. A NaN scale means the same to every consumer."""
    (scale, zero_point), (t_scale, t_zero_point) = actual, expected
    assert scale.dtype == np.float32 and scale.shape == t_scale.shape
    nan = np.isnan(scale)
    np.testing.assert_array_equal(nan, np.isnan(t_scale))
    assert scale[~nan].tobytes() == t_scale[~nan].tobytes(), (scale, t_scale)
    np.testing.assert_array_equal(zero_point, t_zero_point)


@settings(max_examples=50, deadline=None)
@given(config=observer_settings([dtypes.per_tensor_affine, dtypes.per_tensor_symmetric]),
       xs=batches((5, 3)))
def test_per_tensor_qparams_match_minmax_observer(config, xs):
    dtype, qscheme, reduce_range, quant_min, quant_max = config
    observer = MinMaxObserver(dtype=TORCH[dtype], qscheme=TORCH[qscheme], reduce_range=reduce_range,
                              quant_min=quant_min, quant_max=quant_max)
    expected = _torch_qparams(observer, xs)
    min_val, max_val = min(x.min() for x in xs), max(x.max() for x in xs)
    actual = calculate_qparams(min_val, max_val, dtype, qscheme, quant_min, quant_max, reduce_range)
    assert_qparams_equal(actual, expected)
    assert actual[1].dtype == np.int64
    assert (observer.quant_min, observer.quant_max) == calculate_qmin_qmax(quant_min, quant_max, dtype, reduce_range)


@settings(max_examples=50, deadline=None)
@given(config=observer_settings([dtypes.per_channel_affine, dtypes.per_channel_symmetric,
                                 dtypes.per_channel_affine_float_qparams]),
       axis=st.integers(0, 2), xs=batches((4, 3, 2)))
@example(config=(dtypes.qint8, dtypes.per_channel_symmetric, True, 0, 1), axis=0,
         xs=[np.zeros((4, 3, 2), np.float32)])  # one level, zero range: a NaN scale (see assert_qparams_equal)
def test_per_channel_qparams_match_per_channel_minmax_observer(config, axis, xs):
    dtype, qscheme, reduce_range, quant_min, quant_max = config
    observer = PerChannelMinMaxObserver(ch_axis=axis, dtype=TORCH[dtype], qscheme=TORCH[qscheme],
                                        reduce_range=reduce_range, quant_min=quant_min, quant_max=quant_max)
    expected = _torch_qparams(observer, xs)
    others = tuple(d for d in range(3) if d != axis)
    min_val = np.min([x.min(axis=others) for x in xs], axis=0)
    max_val = np.max([x.max(axis=others) for x in xs], axis=0)
    actual = calculate_qparams(min_val, max_val, dtype, qscheme, quant_min, quant_max, reduce_range)
    assert_qparams_equal(actual, expected)


@settings(max_examples=25, deadline=None)
@given(config=observer_settings([dtypes.per_tensor_affine]), eps=st.floats(1e-12, 1e-2))
def test_eps_bounds_the_scale_as_in_torch(config, eps):
    dtype, qscheme, reduce_range, quant_min, quant_max = config
    observer = MinMaxObserver(dtype=TORCH[dtype], reduce_range=reduce_range, quant_min=quant_min,
                              quant_max=quant_max, eps=eps)
    xs = [np.array([-3e-6, 1e-6], np.float32)]
    expected = _torch_qparams(observer, xs)
    assert_qparams_equal(calculate_qparams(-3e-6, 1e-6, dtype, qscheme, quant_min, quant_max, reduce_range, eps),
                         expected)


def test_qmin_qmax_defaults_match_torch():
    for dtype in (dtypes.quint8, dtypes.qint8, dtypes.qint32):
        for reduce_range in (False, True):
            expected = torch_calculate_qmin_qmax(None, None, False, TORCH[dtype], reduce_range)
            assert calculate_qmin_qmax(None, None, dtype, reduce_range) == expected
    assert calculate_qmin_qmax(-7, 7, dtypes.qint8, True) == torch_calculate_qmin_qmax(-7, 7, True, torch.qint8, True)
    assert calculate_qmin_qmax(0, 15, "quint8") == (0, 15)


def test_unobserved_range_gives_torch_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = MinMaxObserver().calculate_qparams()
        expected_per_channel = PerChannelMinMaxObserver().calculate_qparams()
    for actual, want in ((calculate_qparams(np.inf, -np.inf), expected),
                         (calculate_qparams(np.array([]), np.array([]), qscheme="per_channel_affine"),
                          expected_per_channel)):
        assert_qparams_equal(actual, (want[0].numpy(), want[1].numpy()))


def test_documented_symmetric_zero_points():
    """qint8: 0; quint8: 128, or the rounded-down middle of a custom range."""
    assert calculate_qparams(-1.0, 2.0, "qint8", "per_tensor_symmetric")[1].tolist() == [0]
    assert calculate_qparams(-1.0, 2.0, "quint8", "per_tensor_symmetric")[1].tolist() == [128]
    assert calculate_qparams(-1.0, 2.0, "quint8", "per_tensor_symmetric", 0, 15)[1].tolist() == [7]


# ----- validation ---------------------------------------------------------------------------------

def test_validate_qparams_normalizes_and_rejects():
    scale, zero_point = validate_qparams([0.1, 0.2], np.array([0, 255], np.uint8), "quint8")
    assert scale.dtype == np.float64 and zero_point.dtype == np.int64 and zero_point.tolist() == [0, 255]
    for bad_scale in (0.0, -0.5, np.nan, np.inf, 1e-50, 1e-45):
        with pytest.raises(ValueError, match="scale"):
            validate_qparams(bad_scale, 0, dtypes.qint8)
    for dtype, bad_zero_point in ((dtypes.qint8, 128), (dtypes.qint8, -129), (dtypes.quint8, -1),
                                  (dtypes.qint32, 2**31)):
        with pytest.raises(ValueError, match=f"zero_point={bad_zero_point}"):
            validate_qparams(1.0, bad_zero_point, dtype)
    with pytest.raises(TypeError, match="zero_point"):
        validate_qparams(1.0, 0.5, dtypes.qint8)
    with pytest.raises(TypeError, match="scale"):
        validate_qparams("1.0", 0, dtypes.qint8)
    with pytest.raises(ValueError, match="same length"):
        validate_qparams([1.0, 2.0], [0], dtypes.qint8)


def test_calculate_qparams_rejects_bad_input():
    with pytest.raises(ValueError, match="must not exceed"):
        calculate_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="must not exceed"):
        calculate_qparams(np.array([0.0, 2.0]), np.array([1.0, 1.0]), qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="NaN"):
        calculate_qparams(np.nan, 1.0)
    with pytest.raises(ValueError, match="finite"):
        calculate_qparams(-np.inf, 1.0)
    with pytest.raises(ValueError, match="same length"):
        calculate_qparams(np.zeros(2), np.zeros(3), qscheme="per_channel_affine")
    with pytest.raises(ValueError, match="reduce_range"):
        calculate_qparams(-1.0, 1.0, "quint8", "per_tensor_symmetric", reduce_range=True)
    with pytest.raises(ValueError, match="contain 0"):
        calculate_qparams(-1.0, 1.0, "quint8", quant_min=1, quant_max=255)
    with pytest.raises(ValueError, match="less than"):
        calculate_qparams(-1.0, 1.0, "qint8", quant_min=0, quant_max=0)
    with pytest.raises(ValueError, match="exceed the range"):
        calculate_qparams(-1.0, 1.0, "qint8", quant_min=0, quant_max=255)
    with pytest.raises(ValueError, match="both or neither"):
        calculate_qparams(-1.0, 1.0, quant_min=0)
    with pytest.raises(ValueError, match="eps"):
        calculate_qparams(-1.0, 1.0, eps=0.0)
    with pytest.raises(ValueError, match="not a known quantized dtype"):
        calculate_qparams(-1.0, 1.0, dtype="quint4")
    with pytest.raises(TypeError, match="not a quantized dtype"):
        calculate_qparams(-1.0, 1.0, dtype=torch.quint8)
    with pytest.raises(ValueError, match="not a known qscheme"):
        calculate_qparams(-1.0, 1.0, qscheme="per_group")
    with pytest.raises(TypeError, match="not a qscheme"):
        calculate_qparams(-1.0, 1.0, qscheme=dtypes.qint8)


# ----- the constants ------------------------------------------------------------------------------

def test_dtype_and_qscheme_constants():
    assert repr(dtypes.quint8) == "minicompress.quint8" and repr(dtypes.per_channel_affine) == \
        "minicompress.per_channel_affine"
    for dtype, storage in ((dtypes.quint8, np.uint8), (dtypes.qint8, np.int8), (dtypes.qint32, np.int32)):
        info = torch.iinfo(TORCH[dtype])
        assert (dtype.quant_min, dtype.quant_max, dtype.bits) == (info.min, info.max, info.bits)
        assert dtype.storage == np.dtype(storage) and dtypes.dtype_of_storage(storage) is dtype
        assert dtypes.check_dtype(dtype.name) is dtype and dtypes.check_dtype(dtype) is dtype
        assert pickle.loads(pickle.dumps(dtype)) is dtype
    assert dtypes.qint8.is_signed and not dtypes.quint8.is_signed
    assert dtypes.check_qscheme("per_tensor_symmetric").symmetric
    assert dtypes.per_channel_symmetric.per_channel and not dtypes.per_tensor_affine.per_channel
    with pytest.raises(AttributeError, match="immutable"):
        dtypes.qint8.quant_min = 0
    with pytest.raises(TypeError, match="not a quantized dtype"):
        dtypes.check_dtype(np.int8)
    with pytest.raises(TypeError, match="float32"):
        dtypes.dtype_of_storage(np.float32)

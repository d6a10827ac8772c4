"""The MSE observers (quant/observer.py: MSEObserver, PerChannelMSEObserver): the range they pick is the one
a brute-force search finds with torch's own pieces (its observers' qparams for each shrunk range, its fake
quantization for the rounding error), and a weight already on that grid keeps it when observed again (what
`convert` does after AdaRound). torch has no MSE observer, so the oracle is the search written with torch."""
import numpy as np
import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import quant

GRID, MAX_SHRINK = 100, 0.8

SCHEMES = {  # name: (minicompress observer, torch observer, dtypes, qscheme pair)
    "per tensor symmetric": (quant.MSEObserver, tq.MinMaxObserver, quant.per_tensor_symmetric,
                             torch.per_tensor_symmetric),
    "per tensor affine": (quant.MSEObserver, tq.MinMaxObserver, quant.per_tensor_affine, torch.per_tensor_affine),
    "per channel symmetric": (quant.PerChannelMSEObserver, tq.PerChannelMinMaxObserver,
                              quant.per_channel_symmetric, torch.per_channel_symmetric),
    "per channel affine": (quant.PerChannelMSEObserver, tq.PerChannelMinMaxObserver, quant.per_channel_affine,
                           torch.per_channel_affine),
}
RANGES = {"int4": (quant.qint8, torch.qint8, -7, 7), "int8": (quant.qint8, torch.qint8, -128, 127),
          "uint4": (quant.quint8, torch.quint8, 0, 15)}


def _torch_search(weight, scheme, bits):
    """Scales and zero points of the shrink factor p = 1 - i / GRID with the least squared error of torch's
    fake quantization, per channel (or for the tensor); ties keep the larger p."""
    _, torch_observer, _, torch_scheme = SCHEMES[scheme]
    _, dtype, qmin, qmax = RANGES[bits]
    w = torch.from_numpy(weight)
    per_channel = torch_observer is tq.PerChannelMinMaxObserver
    observer = torch_observer(dtype=dtype, qscheme=torch_scheme, quant_min=qmin, quant_max=qmax)
    observer(w)
    lo, hi = observer.min_val.clone(), observer.max_val.clone()
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    best = None
    for i in range(int(MAX_SHRINK * GRID)):
        p = np.float32(1 - i / GRID)
        scale, zero_point = observer._calculate_qparams(lo * torch.tensor(p), hi * torch.tensor(p))
        if per_channel:
            rounded = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, qmin, qmax)
        else:
            rounded = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zero_point), qmin, qmax)
        error = ((rounded.reshape(rows.shape).numpy().astype(np.float64) - rows.numpy()) ** 2).sum(axis=1)
        scale, zero_point = scale.numpy().reshape(-1), zero_point.numpy().reshape(-1)
        if best is None:
            best = [error, scale, zero_point]
        else:
            better = error < best[0]
            best = [np.where(better, error, best[0]), np.where(better, scale, best[1]),
                    np.where(better, zero_point, best[2])]
    return best[1], best[2]


def _observer(scheme, bits):
    cls, _, qscheme, _ = SCHEMES[scheme]
    dtype, _, qmin, qmax = RANGES[bits]
    return cls(dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)


def _weight(seed, shape, outliers):
    """Normal weights with a few channels' largest entries made `outliers` times larger: the case the search
    is for (at 1 nothing sticks out)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    flat = w.reshape(shape[0], -1)
    flat[np.arange(shape[0]), rng.integers(0, flat.shape[1], shape[0])] *= np.float32(outliers)
    return w


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(SCHEMES)), st.sampled_from(sorted(RANGES)),
       st.sampled_from([(6, 20), (4, 3, 3, 3), (1, 50), (16, 8)]), st.sampled_from([1.0, 4.0, 20.0]),
       st.integers(0, 2**31 - 1))
def test_range_is_the_brute_force_search_with_torch(scheme, bits, shape, outliers, seed):
    assume(not (bits == "uint4" and "symmetric" in scheme))   # symmetric quint8 centres at 128, off [0, 15]
    weight = _weight(seed, shape, outliers)
    observer = _observer(scheme, bits)
    observer(mc.tensor(weight))
    scale, zero_point = observer.calculate_qparams()
    expected_scale, expected_zero_point = _torch_search(weight, scheme, bits)
    np.testing.assert_array_equal(np.asarray(scale, np.float32).reshape(-1), expected_scale)
    np.testing.assert_array_equal(np.asarray(zero_point).reshape(-1), expected_zero_point)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("seed", range(3))
def test_clipping_lowers_the_error_of_weights_with_outliers(scheme, seed):
    """At 4 bits with one large weight per channel the search shrinks the range, and torch's fake
    quantization of the weight on that grid has less squared error than on min / max's grid."""
    weight = _weight(seed, (8, 64), 6.0)
    observer = _observer(scheme, "int4")
    observer(mc.tensor(weight))
    scale, zero_point = observer.calculate_qparams()
    minmax = (quant.PerChannelMinMaxObserver if "channel" in scheme else quant.MinMaxObserver)(
        dtype=quant.qint8, qscheme=SCHEMES[scheme][2], quant_min=-7, quant_max=7)
    minmax(mc.tensor(weight))
    minmax_scale, minmax_zero_point = minmax.calculate_qparams()

    def error(s, z):
        w = torch.from_numpy(weight)
        s, z = torch.from_numpy(np.asarray(s, np.float32).reshape(-1)), torch.from_numpy(np.asarray(z).reshape(-1))
        if "channel" in scheme:
            out = torch.fake_quantize_per_channel_affine(w, s, z.int(), 0, -7, 7)
        else:
            out = torch.fake_quantize_per_tensor_affine(w, float(s[0]), int(z[0]), -7, 7)
        return float(((out - w).double() ** 2).sum())

    assert (np.asarray(scale) <= np.asarray(minmax_scale)).all()
    assert error(scale, zero_point) < error(minmax_scale, minmax_zero_point)


@pytest.mark.parametrize("scheme", ["per channel symmetric", "per tensor symmetric"])
@pytest.mark.parametrize("seed", range(3))
def test_a_weight_on_its_grid_keeps_the_grid(scheme, seed):
    """convert observes a weight again after AdaRound put it on the grid: symmetric 4-bit, the same scales
    (to one float32 rounding of M / 7) and so the same levels."""
    weight = _weight(seed, (8, 3, 3, 3), 6.0)
    observer = _observer(scheme, "int4")
    observer(mc.tensor(weight))
    scale, zero_point = observer.calculate_qparams()
    s = torch.from_numpy(np.asarray(scale, np.float32).reshape(-1))
    w = torch.from_numpy(weight)
    if "channel" in scheme:
        on_grid = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(8, dtype=torch.int32), 0, -7, 7)
    else:
        on_grid = torch.fake_quantize_per_tensor_affine(w, float(s[0]), 0, -7, 7)
    again = _observer(scheme, "int4")
    again(mc.tensor(on_grid.numpy()))
    scale_again, _ = again.calculate_qparams()
    np.testing.assert_allclose(scale_again, scale, rtol=2e-7)
    levels = on_grid.numpy().reshape(weight.shape[0] if "channel" in scheme else 1, -1) / \
        np.asarray(scale_again, np.float32).reshape(-1, 1)
    np.testing.assert_array_equal(np.rint(levels), np.rint(on_grid.numpy().reshape(levels.shape)
                                                             / s.numpy().reshape(-1, 1)))


def test_a_restored_observer_falls_back_to_min_max():
    """A state_dict carries min / max, not the values: a fresh observer loaded from it gives min / max's qparams."""
    weight = _weight(0, (4, 16), 6.0)
    observer = _observer("per tensor symmetric", "int4")
    observer(mc.tensor(weight))
    restored = _observer("per tensor symmetric", "int4")
    restored.load_state_dict(observer.state_dict())
    minmax = quant.MinMaxObserver(dtype=quant.qint8, qscheme=quant.per_tensor_symmetric, quant_min=-7, quant_max=7)
    minmax(mc.tensor(weight))
    np.testing.assert_array_equal(restored.calculate_qparams()[0], minmax.calculate_qparams()[0])


@pytest.mark.parametrize("kwargs, message", [({"grid": 0}, "grid=0"), ({"grid": 2.5}, "grid=2.5"),
                                             ({"max_shrink": 1.0}, "max_shrink=1.0"),
                                             ({"max_shrink": 0}, "max_shrink=0")])
@pytest.mark.parametrize("cls", [quant.MSEObserver, quant.PerChannelMSEObserver])
def test_bad_search_arguments_are_refused_by_name(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)

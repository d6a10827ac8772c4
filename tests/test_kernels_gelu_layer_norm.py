"""The float32 GELU and layer-norm kernels (kernels/gelu.py, kernels/norm.py) against their NumPy twins and
torch, on hypothesis-drawn shapes and values; through F.gelu / F.layer_norm without grad (the kernels' path)
and with grad (gradients still torch's).

GELU tolerance: the kernel's erf is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), so gelu moves by at most
0.75e-7 |x| from x Phi(x), plus the rounding of a few float32 operations and of exp (an ulp or two of values
below 1); torch's own erf has the same bound and rounds 1 + erf near 1. Each side's error is then a few
1e-7 |x|; the bound used is 1e-6 |x| + 1e-7 (the + 1e-7 for |x| tiny, where only rounding is left).

Layer-norm tolerance: mean and variance are float32 sums of D terms in different orders on each side, an
error of ~ log2(D) ulps of max|x|, which the normalisation divides by the row's std and multiplies by the
weight: 64 eps (1 + max|x| / std) max(1, max|w|) + 4 eps max|b|.
"""
import numpy as np
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
import minicompress.functional as F
from minicompress.kernels import gelu as G
from minicompress.kernels import norm as N

EPS32 = 2.0 ** -23


@st.composite
def activations(draw):
    shape = tuple(draw(st.lists(st.integers(1, 70), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([0.01, 1.0, 4.0, 30.0]))).astype(np.float32)
    x.flat[0] = draw(st.sampled_from([0.0, -0.0, 1e-30, -12.0, 9.0, np.inf, -np.inf, np.nan]))
    return x


def gelu_tolerance(x):
    return 1e-6 * np.abs(np.nan_to_num(x, posinf=0, neginf=0)) + 1e-7


def assert_close_elementwise(got, want, atol):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert (np.isnan(got) == np.isnan(want)).all(), "NaN where the other has a number"
    infinite = np.isinf(want)
    assert (got[infinite] == want[infinite]).all(), "a different value where the other is infinite"
    finite = np.isfinite(want)
    error = np.abs(got[finite] - want[finite])
    assert (error <= atol[finite]).all(), f"max error {error.max()}"


@settings(max_examples=60, deadline=None)
@given(x=activations(), approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_kernel_matches_twin_and_torch(x, approximate):
    with np.errstate(invalid="ignore", over="ignore"):
        want_exact = G.gelu_reference(x, approximate)
    with mc.no_grad():
        got = F.gelu(mc.tensor(x), approximate).data
    torch_out = TF.gelu(torch.from_numpy(x), approximate=approximate).numpy()
    tol = gelu_tolerance(x)
    assert_close_elementwise(got, want_exact, tol)
    # torch's exact gelu gives NaN at +inf (inf * (1 + erf) with its erf's 1 - r t exp(-x^2) = 1 - 0 * ...
    # evaluated as inf * 0 inside); the formula's limit, which the kernel gives, is inf: compared off +inf
    finite = ~np.isposinf(x) if approximate == "none" else np.ones(x.shape, bool)
    assert_close_elementwise(got[finite], torch_out[finite], tol[finite])


@settings(max_examples=20, deadline=None)
@given(x=activations(), approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_gradient_still_matches_torch(x, approximate):
    x = np.nan_to_num(x, posinf=5, neginf=-5)
    mine = mc.tensor(x, requires_grad=True)
    out = F.gelu(mine, approximate)
    out.sum().backward()
    theirs = torch.from_numpy(x).requires_grad_()
    want = TF.gelu(theirs, approximate=approximate)
    want.sum().backward()
    np.testing.assert_allclose(out.data, want.detach().numpy(), rtol=0, atol=gelu_tolerance(x).max())
    # exact: Phi(x) + x phi(x) is of size <= 1.25, float32 rounding of each side. tanh: the backward (NumPy,
    # unchanged) forms 1 - t^2 with t = tanh(u) near +-1 and multiplies it by x (1 + 3 * 0.044715 x^2) / 2
    atol = 1e-6 + (0 if approximate == "none" else 2 * EPS32 * np.abs(x) * (1 + 0.134 * x * x))
    np.testing.assert_allclose(mine.grad.data, theirs.grad.numpy(), rtol=0, atol=np.max(atol))


@st.composite
def rows(draw):
    lead = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)))
    size = draw(st.sampled_from([1, 2, 15, 64, 384, 400]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.sampled_from([0.0, 1.0, -10.0]))
    x = (rng.uniform(-3, 3, lead + (size,)) + offset).astype(np.float32)
    affine = draw(st.booleans())
    weight = rng.standard_normal(size).astype(np.float32) if affine else None
    bias = rng.standard_normal(size).astype(np.float32) if affine else None
    return x, weight, bias, draw(st.sampled_from([1e-5, 1e-12]))


def layer_norm_tolerance(x, weight, bias):
    spread = max(float(x.std(axis=-1).min()), 1e-3) if x.shape[-1] > 1 else 1.0
    w = 1.0 if weight is None else max(1.0, float(np.abs(weight).max()))
    b = 0.0 if bias is None else float(np.abs(bias).max())
    return 64 * EPS32 * (1 + float(np.abs(x).max()) / spread) * w + 4 * EPS32 * b


@settings(max_examples=60, deadline=None)
@given(rows())
def test_layer_norm_kernel_matches_twin_and_torch(problem):
    x, weight, bias, eps = problem
    size = x.shape[-1]
    w = np.ones(size, np.float32) if weight is None else weight
    b = np.zeros(size, np.float32) if bias is None else bias
    tol = layer_norm_tolerance(x, weight, bias)
    kernel = N.layer_norm_inference(x, w, b, eps)
    np.testing.assert_allclose(kernel, N.layer_norm_inference_reference(x, w, b, eps), rtol=0, atol=tol)
    with mc.no_grad():
        got = F.layer_norm(mc.tensor(x), (size,), None if weight is None else mc.tensor(weight),
                           None if bias is None else mc.tensor(bias), eps).data
    assert got.dtype == np.float32 and got.shape == x.shape
    want = TF.layer_norm(torch.from_numpy(x), (size,), None if weight is None else torch.from_numpy(weight),
                         None if bias is None else torch.from_numpy(bias), eps).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def test_layer_norm_over_two_trailing_dims_takes_the_kernel_and_matches_torch():
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    with mc.no_grad():
        got = F.layer_norm(mc.tensor(x), (5, 6), mc.tensor(w), None).data
    want = TF.layer_norm(torch.from_numpy(x), (5, 6), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=layer_norm_tolerance(x.reshape(3, 4, 30), w, None))

"""One harness that compares a minicompress op with its torch counterpart: shape, dtype, forward
and every input gradient, with separate tolerances for forward and gradient.

The upstream gradient is a random array (not ones), so a backward that ignores or mis-routes it
cannot pass by accident. torch is the oracle; nothing here is computed by minicompress.
"""
import numpy as np
import torch

import minicompress as mc

# float32: the default tolerance of the project. float64 results agree to rounding only.
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-9, atol=1e-12)}


def to_torch(array, requires_grad=False):
    t = torch.from_numpy(np.array(array, copy=True))
    return t.requires_grad_(requires_grad) if requires_grad else t


def check_op(mc_fn, torch_fn, inputs, grad=True, seed=0, rtol=None, atol=None, grad_rtol=None, grad_atol=None,
             nondiff=()):
    """Run `mc_fn(*tensors)` and `torch_fn(*tensors)` on copies of `inputs` (NumPy arrays) and
    compare. Inputs whose index is in `nondiff`, or that are not floating point, get no gradient."""
    arrays = [np.asarray(a) for a in inputs]
    dtype = next(a.dtype.type for a in arrays if a.dtype.kind == "f")
    tol = dict(TOLERANCE[dtype])
    tol.update({k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None})
    gtol = dict(tol)
    gtol.update({k: v for k, v in (("rtol", grad_rtol), ("atol", grad_atol)) if v is not None})
    wants = [grad and a.dtype.kind == "f" and i not in nondiff for i, a in enumerate(arrays)]
    mc_in = [mc.Tensor(a.copy(), requires_grad=w) for a, w in zip(arrays, wants)]
    th_in = [to_torch(a, w) for a, w in zip(arrays, wants)]
    mc_out, th_out = mc_fn(*mc_in), torch_fn(*th_in)
    assert mc_out.shape == tuple(th_out.shape), f"shape {mc_out.shape} != torch {tuple(th_out.shape)}"
    assert mc_out.dtype == th_out.detach().numpy().dtype, f"dtype {mc_out.dtype} != torch {th_out.dtype}"
    np.testing.assert_allclose(mc_out.data, th_out.detach().numpy(), **tol, err_msg="forward")
    if not any(wants):
        return mc_out
    upstream = np.random.default_rng(seed).standard_normal(mc_out.shape).astype(mc_out.dtype)
    mc_out.backward(upstream)
    th_out.backward(torch.from_numpy(upstream))
    for i, (m, t, w) in enumerate(zip(mc_in, th_in, wants)):
        if not w:
            continue
        expected = np.zeros_like(arrays[i]) if t.grad is None else t.grad.numpy()
        assert m.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(m.grad.data, expected, **gtol, err_msg=f"gradient of input {i}")
    return mc_out

"""Optimizers and schedules against torch.optim: same parameters after several steps."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minicompress as mc
from minicompress import optim

CASES = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum_wd": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01)),
    "sgd_nesterov": (lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda p: optim.Adam(p, lr=0.01, weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(seed=st.integers(0, 1000))
def test_optimizer_matches_torch_over_steps(name, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    mine = mc.Tensor(w0.copy(), requires_grad=True)
    theirs = torch.tensor(w0.copy(), requires_grad=True)
    make_mine, make_theirs = CASES[name]
    opt_m, opt_t = make_mine([mine]), make_theirs([theirs])
    for g in grads:
        opt_m.zero_grad()
        opt_t.zero_grad()
        (mine * mc.Tensor(g)).sum().backward()
        (theirs * torch.from_numpy(g)).sum().backward()
        opt_m.step()
        opt_t.step()
    # float64 parameters: agreement to rounding of a handful of float operations
    np.testing.assert_allclose(mine.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_schedulers_match_torch():
    for make_mine, make_theirs in [
        (lambda o: optim.StepLR(o, step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (lambda o: optim.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ]:
        opt_m = optim.SGD([mc.zeros(1, requires_grad=True)], lr=0.3)
        opt_t = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
        sm, st_ = make_mine(opt_m), make_theirs(opt_t)
        for _ in range(10):
            opt_t.step()
            sm.step()
            st_.step()
            np.testing.assert_allclose(sm.get_last_lr(), st_.get_last_lr(), rtol=1e-12)


def test_optimizer_rejects_bad_arguments():
    p = [mc.zeros(1, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])

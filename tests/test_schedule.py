"""NoiseSchedule against an independent NumPy computation of the DDPM formulas (to 1e-6)."""

import math

import numpy as np
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.models.schedule import NoiseSchedule


def numpy_tables(T, kind):
    """beta, alpha-bar by explicit loops (no cumprod), as in Ho et al. / Nichol & Dhariwal."""
    if kind == "linear":
        betas = [min(1e-4 * 1000 / T + i * (0.02 - 1e-4) * 1000 / T / (T - 1), 0.999) for i in range(T)]
    else:
        f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
        betas = [min(1 - f[t] / f[t - 1], 0.999) for t in range(1, T + 1)]
    abar, prod = [1.0], 1.0
    for b in betas:
        prod *= 1 - b
        abar.append(prod)
    return np.array([0.0] + betas), np.array(abar)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("T", [10, 1000])
def test_q_and_posterior_match_independent_formulas(kind, T):
    sched = NoiseSchedule(T, kind)
    betas, abar = numpy_tables(T, kind)
    np.testing.assert_allclose(sched.betas.numpy(), betas, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sched.alpha_bars.numpy(), abar, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((7, 3))
    xt = rng.standard_normal((7, 3))
    for t in [1, 2, T // 2, T]:
        mean, std = sched.q_mean_std(torch.tensor(x0), t)
        np.testing.assert_allclose(mean.numpy(), math.sqrt(abar[t]) * x0, atol=1e-6)
        np.testing.assert_allclose(std.numpy().ravel(), [math.sqrt(1 - abar[t])], atol=1e-6)
        if t < 2:
            continue
        # posterior by completing the square (notes 004): precision alpha_t/beta_t + 1/(1 - abar_{t-1}),
        # linear term sqrt(alpha_t)/beta_t x_t + sqrt(abar_{t-1})/(1 - abar_{t-1}) x_0
        a, b = 1 - betas[t], betas[t]
        prec = a / b + 1 / (1 - abar[t - 1])
        var_ref = 1 / prec
        mean_ref = (math.sqrt(a) / b * xt + math.sqrt(abar[t - 1]) / (1 - abar[t - 1]) * x0) / prec
        m, v = sched.q_posterior(torch.tensor(xt), torch.tensor(x0), t)
        np.testing.assert_allclose(v.numpy().ravel(), [var_ref], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(m.numpy(), mean_ref, atol=1e-6)


def test_posterior_is_bayes_rule_on_the_joint_gaussian():
    """q(x_{t-1} | x_t, x_0) from conditioning the joint of (x_{t-1}, x_t) given x_0 (scalar case)."""
    sched = NoiseSchedule(50, "cosine")
    t, x0, xt = 30, 0.7, -0.4
    ab_prev, ab, a = (float(sched.alpha_bars[t - 1]), float(sched.alpha_bars[t]), float(sched.alphas[t]))
    # x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev); x_t = sqrt(a) x_{t-1} + sqrt(1 - a) e
    var_prev = 1 - ab_prev
    cov = math.sqrt(a) * var_prev
    var_t = a * var_prev + (1 - a)
    mean = math.sqrt(ab_prev) * x0 + cov / var_t * (xt - math.sqrt(ab) * x0)
    var = var_prev - cov**2 / var_t
    m, v = sched.q_posterior(torch.tensor([[xt]], dtype=torch.float64), torch.tensor([[x0]], dtype=torch.float64), t)
    assert abs(float(m) - mean) < 1e-9 and abs(float(v) - var) < 1e-9


def test_follows_dtype_and_device_and_checks_input():
    sched = NoiseSchedule(100)
    x = torch.zeros(4, 2, dtype=torch.float32)
    mean, std = sched.q_mean_std(x, torch.tensor([1, 2, 3, 100]))
    assert mean.dtype == torch.float32 and std.shape == (4, 1)
    assert sched.alpha_bars.dtype == torch.float64
    assert sched.q_sample(x.double(), 5, torch.ones(4, 2, dtype=torch.float64)).dtype == torch.float64
    eps = torch.randn(4, 2)
    xt = sched.q_sample(x + 1, 40, eps)
    torch.testing.assert_close(sched.predict_x0(xt, 40, eps), x + 1, atol=1e-5, rtol=0)
    torch.testing.assert_close(sched.eps_from_x0(xt, 40, x + 1), eps, atol=1e-4, rtol=0)
    with pytest.raises(InputError, match="steps t in 0..100"):
        sched.q_mean_std(x, 101)
    with pytest.raises(InputError, match="schedule must be one of"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(InputError, match="positive integer"):
        NoiseSchedule(0)
    assert float(sched.beta_tildes[1]) == 0.0


def test_steps_are_checked_once_per_tensor_and_again_after_a_change(monkeypatch):
    """The range check reads a tensor (a host sync): remembered for an unchanged tensor, redone otherwise."""
    sched = NoiseSchedule(100)
    x = torch.zeros(3, 2)
    t = torch.tensor([1, 50, 100])
    syncs = []
    original = torch.aminmax

    def counting(*a, **k):
        syncs.append(1)
        return original(*a, **k)

    monkeypatch.setattr(torch, "aminmax", counting)
    for name in ("betas", "alphas", "alpha_bars", "beta_tildes"):
        sched.at(name, t, x)
    assert len(syncs) == 1
    t[0] = -1  # in place: a new version, checked again
    with pytest.raises(InputError, match=r"got values in -1\.\.100"):
        sched.at("betas", t, x)
    with pytest.raises(InputError, match=r"got values in -1\.\.100"):   # a failed check is not remembered
        sched.at("betas", t, x)
    with pytest.raises(InputError, match="got 101"):                     # a Python int: no tensor read
        sched.at("betas", 101, x)
    assert len(syncs) == 3
    with torch.inference_mode():
        bad = torch.tensor([-3, 4])
        with pytest.raises(InputError, match=r"got values in -3\.\.4"):
            sched.at("betas", bad, x)


def test_tables_are_rounded_once_per_dtype_from_float64():
    sched = NoiseSchedule(50, "cosine")
    t = torch.tensor([[0], [7], [50]])
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        like = torch.zeros(3, 4, dtype=dtype)
        got = sched.at("post_coef_x0", t, like)
        assert got.dtype == dtype and got.shape == (3, 1, 1)
        assert torch.equal(got, sched.post_coef_x0[t].to(dtype).view(3, 1, 1))
        assert sched.table("post_coef_x0", like) is sched.table("post_coef_x0", like)
    assert sched.at("betas", t, like, event_dims=0).shape == (3, 1)

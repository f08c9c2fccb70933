"""DDPM: Gaussian known answers, the training program vs the literal chain, samplers, shapes, errors."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from ppl_dgm.errors import InputError
from ppl_dgm.evaluation.mmd import mmd2
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.diagnostics import elbo_terms
from ppl_dgm.models.diffusion import DDPM

from .gaussian_helpers import OptimalEps

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)


def closed_form_elbo(schedule, mu, sigma, variance="beta"):
    """E_{x_0 ~ N(mu, Sigma)} of the chain ELBO with the optimal eps, from traces of Gaussian covariances."""
    D, I = len(mu), torch.eye(len(mu), dtype=torch.float64)
    b, a, ab = schedule.betas, schedule.alphas, schedule.alpha_bars
    bt = schedule.beta_tildes
    T = schedule.timesteps
    second = float(torch.trace(sigma) + mu @ mu)                      # E ||x_0||^2
    L_T = 0.5 * ((1 - ab[T]) * D + ab[T] * second - D - D * math.log(1 - ab[T]))
    total = float(L_T)
    for t in range(1, T + 1):
        C = ab[t] * sigma + (1 - ab[t]) * I
        tr = float(torch.trace(I - (1 - ab[t]) * torch.linalg.inv(C)))   # E ||eps - E[eps | x_t]||^2
        c2 = float(b[t] ** 2 / (a[t] * (1 - ab[t])))       # ||mu-tilde - mu_theta||^2 per ||eps - eps*||^2
        if t == 1:
            total += 0.5 * D * math.log(2 * math.pi * b[1]) + c2 * tr / (2 * b[1])
        else:
            s2 = float(bt[t] if variance == "beta_tilde" else b[t])
            total += c2 * tr / (2 * s2) + 0.5 * D * (bt[t] / s2 - 1 - math.log(bt[t] / s2))
    return -total


def exact_log_lik():
    """E log N(x; mu, Sigma) = -H = -(D/2) log(2 pi e) - (1/2) log det Sigma."""
    return -0.5 * (2 * math.log(2 * math.pi * math.e) + math.log(float(torch.linalg.det(SIGMA))))


def optimal_ddpm(T, schedule="linear", variance="beta"):
    m = DDPM(2, timesteps=T, schedule=schedule, variance=variance).double()
    m.net = OptimalEps(m.schedule, MU, SIGMA)
    return m.eval()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_gaussian_optimal_eps_bound_and_gap_shrinks_with_T(schedule, variance):
    """Closed-form expected ELBO with the optimal (linear) eps-predictor vs the exact E log p(x).

    sigma_t^2 = beta_t: the gap goes to 0 as T grows (0.11, 0.009, 0.001 nats for the linear schedule).
    sigma_t^2 = beta-tilde_t: it shrinks but levels off (~0.7 nats): beta-tilde_t ~ beta_t (t-1)/t is too
    small at the first steps for data with a density, a bias that does not vanish with T.
    """
    exact = exact_log_lik()
    gaps = []
    for T in (10, 100, 1000):
        m = optimal_ddpm(T, schedule, variance)
        gaps.append(exact - closed_form_elbo(m.schedule, MU, SIGMA, variance))
    assert all(g > 0 for g in gaps), gaps
    assert gaps[0] > gaps[1] > gaps[2], gaps
    if variance == "beta":
        assert gaps[2] < 2e-3, gaps


def test_chain_elbo_matches_closed_form_and_is_below_log_p():
    torch.manual_seed(0)
    m = optimal_ddpm(100)
    x = torch.distributions.MultivariateNormal(MU, SIGMA).sample((20_000,))
    ce = m.chain_elbo(x, seed=1)
    ref = closed_form_elbo(m.schedule, MU, SIGMA)
    assert abs(ce.elbo - ref) < 0.05, (ce.elbo, ref)
    assert ce.elbo < exact_log_lik()
    assert ce.L.shape == (100,) and ce.bits_per_dim == pytest.approx(-ce.elbo / (2 * math.log(2)))


def test_training_program_is_unbiased_for_the_chain_elbo():
    """The subsampled-plate program (k of T steps) averages to the full-chain ELBO; its per-site terms too."""
    torch.manual_seed(0)
    m = optimal_ddpm(20).train()
    m.t_per_step, m.loss = 4, "elbo"
    x = torch.distributions.MultivariateNormal(MU, SIGMA).sample((4000,))
    ref = closed_form_elbo(m.schedule, MU, SIGMA)
    # the plate draws k of T steps uniformly; averaging its estimate over a partition of 1..T into T/k
    # groups (each group's estimate scaled by T/k) must give the full-chain ELBO
    groups = torch.randperm(20).reshape(5, 4)
    ests = []
    for g in groups:
        cond = {"t": g}
        ests.append(elbo_terms(pyro.condition(m.model, data=cond), pyro.condition(m.guide, data=cond), x).elbo)
    assert abs(np.mean(ests) - ref) < 0.05, (np.mean(ests), ref)
    assert np.std(ests) > 0.5                                   # the groups really differ
    full = elbo_terms(m.chain_model, m.chain_guide, x)                 # the literal chain: sites x_20 .. x_1, x
    assert set(full.kl_sites) == {f"x_{t}" for t in range(1, 21)} and abs(full.elbo - ref) < 0.1


def test_eval_strata_partition_the_chain():
    """Eval-mode strata: {1} first, about geometric, covering 1..T once; k = min(t_eval, T)."""
    m = DDPM(2, timesteps=1000)
    e = m.strata()
    assert len(e) == m.t_eval + 1 and e[0] == 0 and e[1] == 1 and e[-1] == 1000 and bool((e.diff() > 0).all())
    assert e.diff()[:8].tolist() == [1] * 8 and int(e.diff().argmax()) == m.t_eval - 1   # fine first, widest last
    small = DDPM(2, timesteps=10)
    assert small.strata().tolist() == list(range(11))                # T <= t_eval: every step, weight 1


def test_eval_mode_program_is_a_low_variance_estimate_of_the_chain_elbo():
    """model/guide in eval mode (one step per geometric stratum, scaled by its size) vs ``chain_elbo``.

    A DDPM (T = 1000) briefly fitted to 2-D Gaussian data, 1,000 held-out examples: the eval-mode estimate
    agrees with the full chain within 4 standard errors (both from repeated draws), its spread between
    draws is < 0.1 nats, and at least 20 times below that of the training-mode subsample (8 uniform steps).
    """
    torch.manual_seed(0)
    p = torch.distributions.MultivariateNormal(MU.float(), SIGMA.float())
    x, held_out = p.sample((2048,)), p.sample((1000,))
    m = DDPM(2, timesteps=1000, hidden=(64, 64), t_per_step=8, loss="elbo")
    fit_svi(m, x, epochs=3, batch_size=128, lr=3e-3, progress=False)

    def draws(train: bool, r: int = 16) -> np.ndarray:
        m.train(train)
        torch.manual_seed(1)
        return np.array([elbo_terms(m.model, m.guide, held_out).elbo for _ in range(r)])

    chain = np.array([m.chain_elbo(held_out, seed=s).elbo for s in range(4)])
    ev, tr = draws(False), draws(True)
    se = math.sqrt(ev.var(ddof=1) / len(ev) + chain.var(ddof=1) / len(chain))
    assert abs(ev.mean() - chain.mean()) < 4 * se, (ev.mean(), chain.mean(), se)
    assert ev.std(ddof=1) < 0.1 and tr.std(ddof=1) > 20 * ev.std(ddof=1), (ev.std(ddof=1), tr.std(ddof=1))


def test_simple_loss_is_weighted_eps_mse():
    """With loss="simple" in training, each step term is ||eps - eps_theta||^2 / 2 (scaled by T/k)."""
    torch.manual_seed(0)
    m = DDPM(2, timesteps=50, t_per_step=50, loss="simple").train()
    x = torch.randn(64, 2)
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().differentiable_loss(m.model, m.guide, x)
    pyro.set_rng_seed(3)
    with pyro.poutine.trace() as tr:
        m.guide(x)
    x_t = tr.trace.nodes["x_t"]["value"]
    t = torch.arange(1, 51).reshape(-1, 1)
    eps = m.schedule.eps_from_x0(x_t, t, x)
    with torch.no_grad():
        mse = ((eps - m.eps(x_t, t)) ** 2).sum(-1) / 2
    L_T = float(torch.distributions.kl_divergence(m.q_t(x, 50), m._prior(x)).sum())
    # t = 1 is the decoder's -log N(x_0; mu, beta_1): its eps-MSE part plus the normaliser, both scaled
    w = m._weight(t, x).ravel().double()
    const = 0.5 * 2 * math.log(2 * math.pi * float(m.schedule.betas[1])) * float(w[0])
    # t >= 2: the variance part of the KL, D/2 (r - 1 - log r), r = beta-tilde_t / sigma_t^2, constant in theta
    r = m.schedule.beta_tildes[2:] / m.schedule.betas[2:]
    const += float((0.5 * 2 * (r - 1 - r.log()) * w[1:]).sum())
    assert float(loss.detach()) == pytest.approx(float(mse.sum()) + L_T + 64 * const, rel=1e-4)


def test_samplers_shapes_trajectory_and_errors():
    m = DDPM(2, timesteps=30)
    tr = m.trajectory(7, record=4)
    assert tr.x.shape == (7, 2) and tr.xs.shape == (4, 7, 2) and tr.steps[0] == 30 and tr.steps[-1] == 0
    torch.testing.assert_close(tr.xs[-1], tr.x)
    d = m.trajectory(5, sampler="ddim", steps=10, eta=0.5, record=3)
    assert d.x.shape == (5, 2) and d.steps == [30, 13, 0] or len(d.steps) == 3
    img = DDPM(64, timesteps=10, image_shape=(8, 8))
    s = img.sample(3)
    assert img.arch == "unet" and s.shape == (3, 64) and float(s.min()) >= 0 and float(s.max()) <= 1
    with pytest.raises(InputError, match="steps must be an integer in 1..30"):
        m.sample(2, sampler="ddim", steps=31)
    with pytest.raises(InputError, match="sampler must be one of"):
        m.sample(2, sampler="euler")
    with pytest.raises(InputError, match="t_per_step"):
        DDPM(2, timesteps=10, t_per_step=11)
    with pytest.raises(InputError, match="loss must be one of"):
        DDPM(2, loss="l1")


def test_ddim_with_all_steps_and_eta_one_matches_ddpm_in_distribution():
    """DDIM(S = T, eta = 1) is the DDPM chain with sigma_t^2 = beta-tilde_t (Song et al. §4.1)."""
    torch.manual_seed(0)
    m = optimal_ddpm(200).float()
    m.net.float()
    a = m.sample(1500, sampler="ddim", steps=200, eta=1.0).double()
    b = m.sample(1500).double()
    x = torch.distributions.MultivariateNormal(MU, SIGMA).sample((1500,))
    for s in (a, b):
        torch.testing.assert_close(s.mean(0), MU, atol=0.08, rtol=0)
        torch.testing.assert_close(torch.cov(s.T), SIGMA, atol=0.15, rtol=0)   # ~4 standard errors
    assert mmd2(a, x) < 5e-3 and mmd2(b, x) < 5e-3


def test_discretized_image_bound_is_in_bits_per_dim():
    torch.manual_seed(0)
    m = DDPM(64, timesteps=10, image_shape=(8, 8), base_channels=8)
    x = torch.rand(6, 64)
    ce = m.chain_elbo(x)
    assert ce.bits_per_dim > 0 and math.isfinite(ce.elbo)       # a discrete likelihood: log P <= 0
    assert set(m.chain_elbo(x).as_dict()) >= {"elbo", "bits_per_dim", "L_t"}


def test_fit_svi_trains_2d_fast():
    torch.manual_seed(0)
    x = torch.distributions.MultivariateNormal(MU.float(), SIGMA.float()).sample((1024,))
    m = DDPM(2, timesteps=50, hidden=(32, 32), t_per_step=4)
    before = m.chain_elbo(x[:256], seed=0).elbo
    res = fit_svi(m, x, test=x[:256], epochs=4, batch_size=128, lr=3e-3, progress=False)
    after = m.chain_elbo(x[:256], seed=0).elbo
    assert after > before + 1.0 and "test_elbo" in res.history[-1]


@pytest.mark.slow
def test_trained_network_elbo_within_margin_of_exact():
    """Margin: 0.15 nats per example (T = 100, loss "elbo", 2-D Gaussian data)."""
    torch.manual_seed(0)
    x = torch.distributions.MultivariateNormal(MU.float(), SIGMA.float()).sample((20_000,))
    m = DDPM(2, timesteps=100, loss="elbo", t_per_step=16, hidden=(128, 128))
    fit_svi(m, x, epochs=30, batch_size=256, lr=2e-3, lr_schedule="cosine", progress=False)
    # chain_elbo draws x_t once per example and step: one 5,000-example estimate varies by ~0.05 nats
    # between seeds, so score 20,000 fresh examples with 4 seeds (sd of the mean ~0.013 nats) and
    # compare with the exact mean log-density of the same examples.
    p = torch.distributions.MultivariateNormal(MU.float(), SIGMA.float())
    fresh = p.sample((20_000,))
    elbo = sum(m.chain_elbo(fresh, seed=s).elbo for s in range(4)) / 4
    exact = float(p.log_prob(fresh).mean())
    assert exact - 0.15 < elbo < exact + 0.05, (elbo, exact)


@pytest.mark.slow
def test_2d_toy_mmd_beats_a_fitted_gaussian():
    from ppl_dgm.data import load_dataset

    ds = load_dataset("moons")
    torch.manual_seed(0)
    m = DDPM(2)
    fit_svi(m, ds.x_train, epochs=40, batch_size=128, lr=1e-3, progress=False)
    x = m.sample(4000).numpy()
    tr = ds.x_train.numpy()
    g = np.random.default_rng(0).multivariate_normal(tr.mean(0), np.cov(tr.T), 4000)
    assert mmd2(x, ds.x_test) < 0.5 * mmd2(g, ds.x_test)


def test_ddpm_refuses_bad_input_in_one_line():
    """Before: a wrong width failed inside the network's matrix product, eps took steps beyond T, DDIM read
    steps=0 as the default 50, timesteps=0 was reported as a bad t_per_step."""
    m = DDPM(2, timesteps=50)
    for call, match in [
        (lambda: m.eps(torch.rand(5, 3), torch.ones(5, dtype=torch.long)), r"expected x_t of shape \(\.\.\., 2\)"),
        (lambda: m.eps(torch.rand(5, 2), torch.full((5,), 99)), "expected steps t in 0..50; got values in 99..99"),
        (lambda: fit_svi(m, torch.rand(20, 3), epochs=1, progress=False), r"expected x of shape \(N, 2\); got "
                                                                           r"shape \(20, 3\)"),
        (lambda: m.sample(4, sampler="ddim", steps=0), "steps must be an integer in 1..50"),
        (lambda: DDPM(2, timesteps=0), "timesteps must be a positive integer; got 0"),
        (lambda: elbo_terms(m.model, m.guide, torch.rand(4, 2), num_particles=0),
         "expected num_particles as a positive integer; got 0"),
    ]:
        with pytest.raises(InputError, match=match):
            call()

"""Objectives: beta, warm-up and free bits must change the loss by exactly the KL they weight.

A weight that is silently ignored (lightning-bolts#328) makes every test here fail.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference import (
    IWAE,
    AnalyticELBO,
    FreeBitsELBO,
    KLWarmup,
    MonteCarloELBO,
    check_guide,
    elbo_terms,
    fit_svi,
    make_objective,
)
from ppl_dgm.models import VAE


@pytest.fixture
def vae_batch(digits):
    torch.manual_seed(0)
    return VAE(digits.dim, latent_dim=4, hidden=[32]), digits.x_train[:50]


def closed_form_kl(vae, x):
    """notes 002: KL = 1/2 sum_k (sigma_k^2 + mu_k^2 - 1 - log sigma_k^2), per example and dim: (N, K)."""
    mu, sigma = vae.encode(x)
    return 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log())


def loss_at(obj, vae, x, seed=1):
    pyro.set_rng_seed(seed)
    return obj.loss(vae.model, vae.guide, x)


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0, 4.0])
def test_analytic_loss_changes_by_beta_minus_one_times_kl(vae_batch, beta):
    vae, x = vae_batch
    kl = float(closed_form_kl(vae, x).detach().sum())
    base = loss_at(AnalyticELBO(), vae, x)
    weighted = loss_at(AnalyticELBO(beta=beta), vae, x)
    assert kl > 1.0
    assert weighted - base == pytest.approx((beta - 1) * kl, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("cls", [MonteCarloELBO, IWAE])
def test_monte_carlo_loss_changes_by_beta_minus_one_times_log_ratio(vae_batch, cls):
    vae, x = vae_batch
    pyro.set_rng_seed(1)
    tr = pyro.poutine.trace(vae.guide).get_trace(x)
    z = tr.nodes["z"]["value"]
    log_ratio = float((tr.nodes["z"]["fn"].log_prob(z) - vae.prior(len(x), x).log_prob(z)).sum().detach())
    base, weighted = loss_at(cls(), vae, x), loss_at(cls(beta=3.0), vae, x)
    assert abs(log_ratio) > 1.0
    assert weighted - base == pytest.approx(2.0 * log_ratio, rel=1e-4, abs=1e-3)


def test_weight_only_on_named_sites(vae_batch):
    vae, x = vae_batch
    base = loss_at(AnalyticELBO(), vae, x)
    assert loss_at(AnalyticELBO(beta=4.0, sites=("w",)), vae, x) == pytest.approx(base, rel=1e-6)
    assert loss_at(AnalyticELBO(beta=4.0, sites=("z",)), vae, x) != pytest.approx(base, rel=1e-3)


def test_warmup_schedule_scales_kl(vae_batch):
    vae, x = vae_batch
    kl = float(closed_form_kl(vae, x).detach().sum())
    obj = AnalyticELBO(beta=2.0, warmup_epochs=4)
    assert [KLWarmup(4)(e) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    values = []
    for epoch in (0, 1, 2, 4):
        obj.set_epoch(epoch, 10)
        values.append(loss_at(obj, vae, x))
    recon_only = values[0]
    for epoch, v in zip((1, 2, 4), values[1:]):
        assert v - recon_only == pytest.approx(2.0 * min(1, epoch / 4) * kl, rel=1e-4)


def test_free_bits_floor_per_dimension(vae_batch):
    vae, x = vae_batch
    kl_nd = closed_form_kl(vae, x).detach()
    base = loss_at(AnalyticELBO(), vae, x)
    recon = base - float(kl_nd.sum())
    lam = 0.3
    floored = float(kl_nd.mean(0).clamp(min=lam).sum()) * len(x)
    assert loss_at(FreeBitsELBO(free_bits=lam), vae, x) == pytest.approx(recon + floored, rel=1e-4)
    assert float(kl_nd.mean(0).min()) < lam  # the floor is active on some dimension
    # a floor above every dimension's KL: the KL term is constant, so the encoder's scale gets no KL gradient
    obj = FreeBitsELBO(free_bits=50.0)
    assert loss_at(obj, vae, x) == pytest.approx(recon + 50.0 * 4 * len(x), rel=1e-4)


def test_iwae_k1_is_elbo_and_large_k_reaches_log_marginal():
    # z ~ N(0, 1), x | z ~ N(z, 1)  =>  p(x) = N(0, 2); a deliberately imperfect guide
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2 + 0.3, 1.0))

    x = torch.tensor([-1.0, 0.5, 2.0])
    log_px = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(x).sum())
    pyro.set_rng_seed(3)
    k1 = IWAE(1).loss(model, guide, x)
    pyro.set_rng_seed(3)
    mc = MonteCarloELBO(1).loss(model, guide, x)
    assert k1 == pytest.approx(mc, rel=1e-5)
    pyro.set_rng_seed(3)
    big = IWAE(20_000).loss(model, guide, x)
    elbo = AnalyticELBO(200).loss(model, guide, x)
    assert big == pytest.approx(-log_px, abs=0.02)
    assert elbo > big + 0.1  # -ELBO is a looser bound than -IWAE


def test_make_objective_by_name_and_bad_input():
    assert isinstance(make_objective("elbo"), MonteCarloELBO)
    assert isinstance(make_objective("analytic"), AnalyticELBO)
    assert make_objective("iwae", particles=7).num_particles == 7
    assert isinstance(make_objective("analytic", free_bits=0.5), FreeBitsELBO)
    for kw, msg in [(dict(name="renyi"), "objective must be one of"), (dict(beta=-1.0), "beta must be"),
                    (dict(particles=0), "particles"), (dict(name="iwae", free_bits=1.0), "free bits applies"),
                    (dict(warmup_epochs=-2), "warm-up")]:
        with pytest.raises(InputError, match=msg):
            make_objective(**kw)


def test_fit_svi_calls_set_epoch_and_beta_lowers_fitted_kl(digits):
    calls = []

    class Recorder(AnalyticELBO):
        def set_epoch(self, epoch, epochs):
            calls.append((epoch, epochs))
            super().set_epoch(epoch, epochs)

    kls, weights = {}, {}
    for beta in (1.0, 4.0):
        torch.manual_seed(0)
        vae = VAE(digits.dim, latent_dim=4, hidden=[64])
        fit = fit_svi(vae, digits.x_train, loss=Recorder(beta=beta), epochs=10, batch_size=128, lr=3e-3,
                      progress=False, seed=0)
        kls[beta] = elbo_terms(vae.model, vae.guide, digits.x_test, num_particles=5).kl
        weights[beta] = [h["kl_weight"] for h in fit.history]
    assert calls[:3] == [(0, 10), (1, 10), (2, 10)]
    assert weights == {1.0: [1.0] * 10, 4.0: [4.0] * 10}  # each epoch's weight in its history record
    assert kls[4.0] < 0.75 * kls[1.0], kls


def test_fit_svi_history_states_the_warmup_weights(digits):
    vae = VAE(digits.dim, latent_dim=2, hidden=[8])
    fit = fit_svi(vae, digits.x_train[:100], loss=AnalyticELBO(beta=0.5, warmup_epochs=2), epochs=4, batch_size=50,
                  progress=False, seed=0)
    assert [h["kl_weight"] for h in fit.history] == [0.0, 0.25, 0.5, 0.5]  # as the NumPyro backend's history


def test_warmup_and_free_bits_change_fitted_kl(digits):
    def fitted_kl(obj):
        torch.manual_seed(0)
        vae = VAE(digits.dim, latent_dim=6, hidden=[64])
        fit_svi(vae, digits.x_train, loss=obj, epochs=10, batch_size=128, lr=3e-3, progress=False, seed=0)
        return vae, elbo_terms(vae.model, vae.guide, digits.x_test, num_particles=5).kl

    _, plain = fitted_kl(AnalyticELBO())
    _, warm = fitted_kl(AnalyticELBO(warmup_epochs=100))  # weight <= 0.11 throughout
    vae, free = fitted_kl(FreeBitsELBO(free_bits=2.0))
    assert warm > 1.3 * plain, (warm, plain)
    assert free > 1.2 * plain, (free, plain)
    mu, sigma = vae.encode(digits.x_test)
    per_dim = (0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log())).mean(0)
    assert float(per_dim.min()) > 1.0  # no dimension collapses below the floor's basin


def test_beta_sweep_kl_falls_reconstruction_error_rises(digits):
    kl, rec = [], []
    for beta in (0.5, 1.0, 2.0, 4.0):
        torch.manual_seed(0)
        vae = VAE(digits.dim, latent_dim=8, hidden=[64])
        fit_svi(vae, digits.x_train, loss=make_objective("analytic", beta=beta), epochs=20, batch_size=128,
                lr=3e-3, progress=False, seed=0)
        pyro.set_rng_seed(0)
        t = elbo_terms(vae.model, vae.guide, digits.x_test, num_particles=10)
        kl.append(t.kl)
        rec.append(-t.reconstruction)
    assert all(a > b for a, b in zip(kl, kl[1:])), kl
    assert all(a < b for a, b in zip(rec, rec[1:])), rec


# -- the guide protocol --------------------------------------------------------------------------------
def _guide_with(name="z", dim=4, event=True):
    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            d = dist.Normal(torch.zeros(x.shape[0], dim), 1.0)
            pyro.sample(name, d.to_event(1) if event else d)
    return guide


@pytest.mark.parametrize("guide, message", [
    (_guide_with(name="w"), "guide does not sample the model's latent site 'z'"),
    (_guide_with(dim=3), r"guide site 'z' has shape \(50, 3\); expected the model's shape \(50, 4\)"),
])
def test_mismatched_guide_is_refused_naming_the_site(vae_batch, guide, message):
    vae, x = vae_batch
    with pytest.raises(InputError, match=message):
        check_guide(vae.model, guide, x)
    with pytest.raises(InputError, match=message.replace("50", "64")):
        fit_svi(vae, x.repeat(2, 1), guide=guide, epochs=1, batch_size=64, progress=False)


def test_extra_guide_site_is_refused(vae_batch):
    vae, x = vae_batch

    def guide(x, y=None):
        vae.guide(x)
        pyro.sample("extra", dist.Normal(0.0, 1.0))

    with pytest.raises(InputError, match="guide site 'extra' is not a site of the model"):
        check_guide(vae.model, guide, x)
    check_guide(vae.model, vae.guide, x)  # the family's own guide passes


def _linear_model(D_out):
    """z_n ~ N(0, I_2), x_n ~ N(W z_n, I) with W of shape (D_out, 2)."""
    W = torch.ones(D_out, 2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T, 1.0).to_event(1), obs=x)
    return model


def _param_guide(extra_rows=0):
    def guide(x):
        loc = pyro.param("loc", torch.zeros(x.shape[0] + extra_rows, 2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
    return guide


@pytest.mark.parametrize("model, guide, message", [
    # a guide drawing N + 1 rows inside pyro.plate("data", N)
    (_linear_model(3), _param_guide(extra_rows=1),
     r"^shape problem at guide site 'z' inside plate 'data': expected size 10 .* at dim -1; got 11$"),
    # an observed value with 4 columns where the likelihood has event shape (3,)
    (_linear_model(3), _param_guide(), r"^shape problem at model site 'x': expected a value of shape \(10, 3\) "
                                       r"\(batch shape \(10,\), event shape \(3,\)\); got \(10, 4\)$"),
])
def test_shape_problem_is_refused_naming_the_site(model, guide, message):
    x = torch.randn(10, 4)
    with pytest.raises(InputError, match=message):
        fit_svi(model, x, guide=guide, epochs=1, batch_size=10, progress=False)


def test_observed_site_without_event_dims_is_a_shape_problem(vae_batch):
    """x ~ Normal(loc of shape (N, D)) inside plate("data", N) without .to_event(1): D where N belongs."""
    vae, x = vae_batch

    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 4), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=vae.decoder(z)), obs=x)

    with pytest.raises(InputError, match=r"shape problem at model site 'x' inside plate 'data': expected size 50"):
        check_guide(model, vae.guide, x)


def test_lean_analytic_elbo_equals_pyro_trace_mean_field():
    """The fast path of AnalyticELBO gives Pyro's TraceMeanField_ELBO value and gradients exactly."""
    import pyro

    from ppl_dgm import VAE
    from ppl_dgm.inference.objectives import AnalyticELBO

    torch.manual_seed(0)
    vae = VAE(20, 3, [16])
    x = torch.rand(32, 20).bernoulli()
    grads = []
    values = []
    for loss in (AnalyticELBO(), pyro.infer.TraceMeanField_ELBO()):
        vae.zero_grad()
        torch.manual_seed(5)
        v = loss.differentiable_loss(vae.model, vae.guide, x)
        v.backward()
        values.append(float(v))
        grads.append(torch.cat([p.grad.flatten() for p in vae.parameters()]))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)

"""ArviZ export: named dims, groups, netcdf round trip; full-rank SVI vs NUTS vs the exact posterior."""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from torch import nn

from ppl_dgm.errors import InputError
from ppl_dgm.export import numpyro_to_inference_data, to_inference_data
from ppl_dgm.inference import fit_svi
from ppl_dgm.models.vae import VAE

SIGMA = 0.5


def regression_model(X, y):
    """Bayesian linear regression: w ~ N(0, I_D), y_n ~ N(x_n . w, SIGMA^2); X (N, D), y (N,)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1]), 1.0).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal((X * w.unsqueeze(-2)).sum(-1), SIGMA), obs=y)


class Fit(nn.Module):
    def __init__(self, model, guide):
        super().__init__()
        self.model, self.guide = model, guide


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + SIGMA * torch.randn(50, generator=g)
    cov = torch.linalg.inv(torch.eye(3) + X.T @ X / SIGMA**2)  # exact posterior N(mean, cov)
    return X, y, (cov @ X.T @ y / SIGMA**2).numpy(), cov.diag().sqrt().numpy()


@pytest.fixture(scope="module")
def fullrank(data):
    X, y, _, _ = data
    pyro.clear_param_store()
    torch.manual_seed(0)
    fit = Fit(regression_model, AutoMultivariateNormal(regression_model))
    fit_svi(fit, (X, y), epochs=400, batch_size=50, lr=0.05, lr_schedule="cosine",
            loss=Trace_ELBO(num_particles=8), progress=False, seed=0)
    return to_inference_data(fit, (X, y), num_samples=1000, config={"guide": "AutoMultivariateNormal"})


def test_groups_dims_and_netcdf_round_trip(fullrank, data, tmp_path):
    X, y, _, _ = data
    idata = fullrank
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "log_likelihood", "observed_data"}
    assert idata.posterior["w"].dims == ("chain", "draw", "w_dim")
    assert idata.posterior["w"].shape == (1, 1000, 3)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "obs")
    assert idata.log_likelihood["y"].shape == (1, 1000, 50)
    np.testing.assert_allclose(idata.observed_data["y"].values, y.numpy())
    # log-likelihood per observation = log N(y_n | x_n . w, sigma^2) at each draw
    w = torch.tensor(idata.posterior["w"].values[0, 7])
    expected = dist.Normal(X @ w, SIGMA).log_prob(y).numpy()
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0, 7], expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert json.loads(back.posterior.attrs["config"]) == {"guide": "AutoMultivariateNormal"}
    np.testing.assert_allclose(back.posterior["w"].values, idata.posterior["w"].values)
    loo = az.loo(back)
    assert np.isfinite(loo.elpd_loo) and -60 < loo.elpd_loo < -20  # ~ N log N(0, sigma^2) = -40.2 + penalty
    assert (loo.pareto_k.values < 0.7).all()


def test_fullrank_svi_matches_exact_and_nuts(fullrank, data):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import MCMC, NUTS

    X, y, mean, sd = data

    def nmodel(X, y):
        w = numpyro.sample("w", nd.Normal(jnp.zeros(X.shape[-1]), 1.0).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", nd.Normal(X @ w, SIGMA), obs=y)

    mcmc = MCMC(NUTS(nmodel), num_warmup=500, num_samples=1000, num_chains=2, chain_method="sequential",
                progress_bar=False)
    Xj, yj = jnp.asarray(X.numpy()), jnp.asarray(y.numpy())
    mcmc.run(jax.random.PRNGKey(0), Xj, yj)
    nuts = numpyro_to_inference_data(nmodel, Xj, yj, mcmc=mcmc)
    assert nuts.posterior["w"].dims == ("chain", "draw", "w_dim")
    assert nuts.log_likelihood["y"].dims == ("chain", "draw", "obs")

    s_nuts = az.summary(nuts, round_to="none")
    s_svi = az.summary(fullrank, kind="stats", round_to="none")
    # NUTS vs exact: within 4 Monte Carlo standard errors
    assert np.all(np.abs(s_nuts["mean"].values - mean) < 4 * s_nuts["mcse_mean"].values)
    assert np.all(np.abs(s_nuts["sd"].values / sd - 1) < 0.1)
    assert np.all(s_nuts["r_hat"].values < 1.02)
    # full-rank SVI vs exact: Monte Carlo error of 1000 iid draws (0.03 sd) plus optimisation noise
    assert np.all(np.abs(s_svi["mean"].values - mean) < 0.15 * sd)
    assert np.all(np.abs(s_svi["sd"].values / sd - 1) < 0.06)
    # and SVI vs NUTS
    assert np.all(np.abs(s_svi["mean"].values - s_nuts["mean"].values) < 0.2 * sd)


def test_numpyro_samples_dict_and_errors():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    def model(x):
        mu = numpyro.sample("mu", nd.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", nd.Normal(mu, 1.0), obs=x)

    x = jnp.array([0.5, 1.0, 1.5])
    idata = numpyro_to_inference_data(model, x, samples={"mu": jnp.linspace(-1, 1, 20)})
    assert idata.posterior["mu"].shape == (1, 20)
    ll = idata.log_likelihood["x"].values[0]
    assert ll.shape == (20, 3)
    mu = np.linspace(-1, 1, 20)[:, None]
    np.testing.assert_allclose(ll, -0.5 * np.log(2 * np.pi) - 0.5 * (np.asarray(x) - mu) ** 2, rtol=1e-5)
    with pytest.raises(InputError, match="exactly one of mcmc= or samples="):
        numpyro_to_inference_data(model, x)


def test_vae_posterior_dims_and_sites():
    torch.manual_seed(0)
    vae = VAE(12, latent_dim=3, hidden=(16,))
    x = torch.rand(20, 12).round()
    idata = to_inference_data(vae, x, num_samples=30, sites=["z"])
    assert idata.posterior["z"].dims == ("chain", "draw", "obs", "z_dim")
    assert idata.posterior["z"].shape == (1, 30, 20, 3)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "x_dim")
    assert idata.log_likelihood["x"].shape == (1, 30, 20)
    assert idata.observed_data["x"].dims == ("obs", "x_dim")
    # draws come from q(z|x): their mean over draws approaches the encoder mean
    loc, scale = vae.encode(x)
    err = np.abs(idata.posterior["z"].values[0].mean(0) - loc.detach().numpy())
    assert (err < 4 * scale.detach().numpy() / np.sqrt(30) + 1e-3).all()
    with pytest.raises(InputError, match="sites"):
        to_inference_data(vae, x, num_samples=2, sites=["w"])

"""NumPyro/JAX twin: EM agrees with the Pyro/torch EM; Bayesian GMM by NUTS -> ArviZ."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ppl_dgm import GaussianMixture
from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm_em import GMMFamily

pytest.importorskip("jax")


def blobs(n=450, seed=0):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(n // 3, 2)) * s + c
             for s, c in [(1.0, (0, 0)), (0.5, (4, 4)), (0.7, (-4, 3))]]
    return np.concatenate(parts) + 5.0


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_jax_em_agrees_with_torch_em(ct):
    from ppl_dgm.numpyro.inference.em import fit_em_gmm

    x = blobs()
    fam = GMMFamily(3, ct, init_params="random")
    xt = torch.tensor(x)
    init = fam.initialize(fam.prepare(xt), torch.Generator().manual_seed(1))
    ref = fit_em(fam, xt, init=init, max_iter=30, tol=0.0, warn=False)
    got = fit_em_gmm(x, init, covariance_type=ct, max_iter=30, tol=0.0, chunk_size=64, warn=False)
    np.testing.assert_allclose(got.history, ref.history, rtol=1e-6)
    np.testing.assert_allclose(got.params[1], ref.params.means.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.params[2], ref.params.covariances.numpy(), rtol=1e-6, atol=1e-6)


def test_facade_backends_agree():
    x = blobs(seed=1)
    a = GaussianMixture(3, random_state=0, backend="pyro").fit(x)
    b = GaussianMixture(3, random_state=0, backend="numpyro").fit(x)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-6)
    assert b.n_iter_ == a.n_iter_
    np.testing.assert_allclose(b.score(x), a.score(x), rtol=1e-6)


def test_import_ppl_dgm_does_not_import_jax():
    code = "import sys, ppl_dgm, ppl_dgm._facades, ppl_dgm.models.gmm; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_numpyro_model_enumerated_loglik_equals_marginal():
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    from ppl_dgm.numpyro.models.gmm import marginal_log_likelihood, model

    jax.config.update("jax_enable_x64", True)
    g = GaussianMixture(3, random_state=0).fit(blobs(n=90))
    x = jnp.asarray(blobs(n=90))
    w, m = jnp.asarray(g.weights_), jnp.asarray(g.means_)
    l = jnp.asarray(np.linalg.cholesky(g.covariances_))
    from numpyro.contrib.funsor import enum
    from numpyro.contrib.funsor import log_density as enum_log_density

    # c summed out by funsor's enumeration: the joint density is the marginal likelihood
    ll, _ = enum_log_density(enum(model, first_available_dim=-2), (x, w, m, l), {}, {})
    np.testing.assert_allclose(float(ll), g.score(np.asarray(x)) * 90, rtol=1e-10)
    np.testing.assert_allclose(float(marginal_log_likelihood(x, w, m, l).sum()), float(ll),
                               rtol=1e-10)
    # without enumeration the density conditions on a sampled c instead (differs)
    from numpyro.handlers import seed

    plain, _ = log_density(seed(model, 0), (x, w, m, l), {}, {})
    assert float(plain) != pytest.approx(float(ll), rel=1e-6)


@pytest.mark.slow
def test_bayesian_gmm_nuts_to_arviz():
    import arviz as az

    from ppl_dgm.numpyro.models.gmm import fit_bayesian_gmm

    x = blobs(n=90, seed=2)
    idata = fit_bayesian_gmm(x, 3, num_warmup=100, num_samples=100, seed=0)
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "observed_data"}
    assert idata.log_likelihood["x"].shape == (1, 100, 90)
    assert idata.posterior["means"].shape == (1, 100, 3, 2)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    # the posterior predictive density is close to the EM fit's (same data, weak priors)
    em = GaussianMixture(3, random_state=0).fit(x).score(x) * 90
    assert abs(float(idata.log_likelihood["x"].sum("obs").mean()) - em) < 0.05 * abs(em)

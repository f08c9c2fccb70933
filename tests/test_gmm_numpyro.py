"""JAX EM agrees with the torch EM (iterations, restarts, monotone check); NumPyro GMM; NUTS -> ArviZ."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from ppl_dgm import GaussianMixture
from ppl_dgm.errors import InputError
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
    assert got.params.means.dtype == torch.float64
    np.testing.assert_allclose(got.params.means.numpy(), ref.params.means.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.params.covariances.numpy(), ref.params.covariances.numpy(), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("strategy", ["direct", "features"])
def test_jax_direct_and_feature_forms_agree_with_torch(strategy):
    from ppl_dgm.numpyro.inference.em import fit_em_gmm

    g = torch.Generator().manual_seed(0)
    xt = (4 * torch.randn(3, 34, generator=g, dtype=torch.float64))[torch.randint(3, (600,), generator=g)]
    xt = xt + torch.randn(600, 34, generator=g, dtype=torch.float64) + 7.0  # D = 34: 4 uneven row blocks
    fam = GMMFamily(3, "full", init_params="random_from_data", strategy=strategy)
    assert fam.prepare(xt).direct == (strategy == "direct")
    init = fam.initialize(fam.prepare(xt), torch.Generator().manual_seed(1))
    ref = fit_em(GMMFamily(3, "full", strategy="features"), xt, init=init, max_iter=20, tol=0.0, warn=False)
    got = fit_em_gmm(xt.numpy(), init, strategy=strategy, chunk_size=128, max_iter=20, tol=0.0, warn=False)
    np.testing.assert_allclose(got.history, ref.history, rtol=1e-10)
    np.testing.assert_allclose(got.params.covariances.numpy(), ref.params.covariances.numpy(), rtol=1e-8,
                               atol=1e-10)


def test_estimator_backends_agree():
    x = blobs(seed=1)
    a = GaussianMixture(3, random_state=0, backend="torch").fit(x)
    b = GaussianMixture(3, random_state=0, backend="jax").fit(x)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-6)
    assert b.n_iter_ == a.n_iter_
    np.testing.assert_allclose(b.score(x), a.score(x), rtol=1e-6)


def test_jax_restarts_keep_the_best_like_torch():
    # K=4 on three blobs: the restarts end in different local maxima, and not the first is best
    x = blobs(seed=3)
    kw = dict(n_init=5, init_params="random_from_data", random_state=0, tol=1e-6, max_iter=300)
    a = GaussianMixture(4, backend="torch", **kw).fit(x)
    b = GaussianMixture(4, backend="jax", **kw).fit(x)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-6)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-5, atol=1e-6)
    one = GaussianMixture(4, backend="jax", **{**kw, "n_init": 1}).fit(x)
    assert b.lower_bound_ > one.lower_bound_ + 1e-3
    again = GaussianMixture(4, backend="jax", **kw).fit(x)  # same seeds -> the same fit, number for number
    assert again.lower_bounds_ == b.lower_bounds_ and np.array_equal(again.means_, b.means_)
    from ppl_dgm.numpyro.inference.em import fit_em_gmm

    res = fit_em_gmm(x, n_components=4, init_params="random_from_data", n_init=5, seed=0, tol=1e-6,
                     max_iter=300)
    finals = [h[-1] for h in res.histories]
    assert len(finals) == 5 and res.best_init == int(np.argmax(finals)) != 0
    assert res.lower_bound == max(finals) == pytest.approx(b.lower_bound_, rel=1e-12)


def test_chunk_blocks_cover_every_chunk_once():
    from ppl_dgm.numpyro.inference.em import chunk_blocks

    assert chunk_blocks(7, 2) == [(0, 3), (3, 7)]
    assert chunk_blocks(2, 4) == [(0, 1), (1, 2)]  # no empty block
    assert chunk_blocks(5, 1) == [(0, 5)]


@pytest.mark.parametrize("strategy", ["features", "direct"])
def test_workers_sum_the_same_statistics(strategy):
    """Blocks of chunks passed at once (threads) give the one-pass statistics: the same fit to rounding, and
    the same numbers again for the same number of workers."""
    from ppl_dgm.numpyro.inference.em import fit_em_gmm

    x = np.random.default_rng(3).normal(size=(2000, 6)) * [1, 2, 3, 1, 1, 0.5]
    kw = dict(n_components=3, init_params="random_from_data", strategy=strategy, chunk_size=128, max_iter=15,
              tol=0.0, warn=False)
    one = fit_em_gmm(x, workers=1, **kw)
    fits = [fit_em_gmm(x, workers=w, **kw) for w in (2, 3, 3)]
    for got in fits:
        np.testing.assert_allclose(got.history, one.history, rtol=1e-12)
        np.testing.assert_allclose(got.params.covariances.numpy(), one.params.covariances.numpy(), rtol=1e-9,
                                   atol=1e-12)
    assert fits[1].history == fits[2].history  # deterministic for a given number of workers
    assert np.array_equal(fits[1].params.means.numpy(), fits[2].params.means.numpy())


def test_workers_checked_and_blas_threads_restored():
    from threadpoolctl import threadpool_info

    from ppl_dgm.numpyro.inference.em import JaxGMMFamily, fit_em_gmm

    with pytest.raises(InputError, match="workers must be a positive integer; got 0"):
        JaxGMMFamily(GMMFamily(2), workers=0)
    threads = torch.get_num_threads()
    try:  # the default follows the package's thread setting (--threads): one thread, one block
        torch.set_num_threads(1)
        data = JaxGMMFamily(GMMFamily(2, chunk_size=64)).prepare(torch.tensor(blobs()))
        assert [b.tolist() for b in data.blocks] == [[0, 8]]
    finally:
        torch.set_num_threads(threads)
    assert len(JaxGMMFamily(GMMFamily(2, chunk_size=64), workers=3).prepare(torch.tensor(blobs())).blocks) == 3
    fit_em_gmm(blobs(), n_components=3, max_iter=3, tol=0.0, warn=False)  # loads the LAPACK XLA borrows
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    fit_em_gmm(blobs(), n_components=3, max_iter=3, tol=0.0, warn=False)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before  # the M-step's limit is undone


def test_jax_backend_checks_monotone_like_torch(monkeypatch):
    from ppl_dgm.numpyro.inference import em as jax_em

    real, calls = jax_em.JaxGMMFamily.e_step, []

    def drops_at_third(self, params, data):  # a log-likelihood that falls by 1 nat at iteration 3
        out = real(self, params, data)
        calls.append(1)
        return out._replace(log_likelihood=out.log_likelihood - (1.0 if len(calls) == 3 else 0.0))

    monkeypatch.setattr(jax_em.JaxGMMFamily, "e_step", drops_at_third)
    with pytest.raises(RuntimeError, match="EM log-likelihood decreased at iteration 3"):
        GaussianMixture(3, backend="jax", tol=0.0, max_iter=10).fit(blobs())


def test_import_ppl_dgm_does_not_import_jax():
    code = "import sys, ppl_dgm, ppl_dgm.estimators, ppl_dgm.models.gmm; print('jax' in sys.modules)"
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
def test_bayesian_gmm_nuts_finds_the_centres_and_mixes():
    import arviz as az
    import jax.numpy as jnp
    import xarray as xr

    from ppl_dgm.export import numpyro_to_inference_data
    from ppl_dgm.numpyro.models.gmm import bayesian_model, fit_bayesian_gmm

    rng = np.random.default_rng(2)
    centres = np.array([[-6.0, 5.0], [0.0, 0.0], [6.0, 6.0]])  # well separated, sorted by x-coordinate
    x = np.concatenate([rng.normal(size=(20, 2)) * 0.7 + c for c in centres])
    idata = fit_bayesian_gmm(x, 3, num_warmup=100, num_samples=100, num_chains=2, seed=0)
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "observed_data", "sample_stats"}
    assert idata.log_likelihood["x"].shape == (2, 100, 60)
    assert int(idata.sample_stats["diverging"].sum()) == 0
    # label switching: order the components of every draw by their x-coordinate, then compare
    m = idata.posterior["means"].values  # (chain, draw, K, D)
    m = np.take_along_axis(m, np.argsort(m[..., 0], -1)[..., None], axis=2)
    np.testing.assert_allclose(m.mean((0, 1)), centres, atol=0.5)  # posterior sd ~ 0.7 / sqrt(20)
    rhat = az.rhat(xr.Dataset({"means": (("chain", "draw", "component", "feature"), m)}))["means"].values
    assert np.all(rhat < 1.05)
    # the log_likelihood group is the marginal; the generic NumPyro export builds the same numbers
    draws = {k: idata.posterior[k].values for k in ("weights", "means", "scales", "corr_cholesky")}
    again = numpyro_to_inference_data(bayesian_model, jnp.asarray(x), 3, samples=draws, group_by_chain=True)
    np.testing.assert_allclose(again.log_likelihood["x"].values, idata.log_likelihood["x"].values, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings of a 200-draw posterior
        assert np.isfinite(az.loo(idata).elpd_loo)
    # posterior mean of log L sits p/2 below the maximum (EM) log-likelihood: log L_max - log L(theta)
    # ~ chi2_p / 2 under the posterior (Bernstein-von Mises), p = 2 + 6 + 9 free parameters
    em = GaussianMixture(3, random_state=0).fit(x)
    gap = em.score(x) * 60 - float(idata.log_likelihood["x"].sum("obs").mean())
    assert abs(gap - em.model_.n_parameters / 2) < 3.0

"""The enumerated mixture in NumPyro: TraceEnum_ELBO = marginal likelihood, infer_discrete = argmax
responsibility, MAP-SVI recovers the EM fit, the ArviZ log_likelihood is the marginal, backend='numpyro'."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ppl_dgm import GaussianMixture

pytest.importorskip("numpyro")
pytest.importorskip("funsor")

CENTERS = np.array([[0.0, 0.0], [6.0, 6.0], [-6.0, 5.0]])


def blobs(n_per=40, seed=0, scale=0.7):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n_per, 2)) * scale + c for c in CENTERS]) + 3.0


@pytest.fixture
def x64():
    """float64 JAX for one test (the conftest switches the process-wide flag back off after each)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def em_fit(x, k=3):
    return GaussianMixture(k, random_state=0, tol=1e-10, max_iter=500).fit(x)


def test_enumerated_elbo_is_the_marginal_loglik(x64):
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from numpyro.infer import Trace_ELBO, TraceEnum_ELBO
    from scipy.stats import multivariate_normal

    from ppl_dgm.numpyro.models.gmm import empty_guide, marginal_log_likelihood, model

    x = blobs(n_per=30, scale=1.5)  # overlapping enough that every component matters
    w = np.array([0.2, 0.5, 0.3])
    m = np.array([[0.0, 1.0], [8.0, 9.0], [-3.0, 7.0]])
    tril = np.array([[[1.5, 0.0], [0.3, 1.2]], [[2.0, 0.0], [-0.5, 1.0]], [[1.0, 0.0], [0.0, 2.5]]])
    args = tuple(jnp.asarray(a) for a in (x, w, m, tril))
    loss = float(TraceEnum_ELBO(max_plate_nesting=1).loss(jax.random.PRNGKey(0), {}, model, empty_guide, *args))
    # by hand: log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, L_k L_k^T)] with scipy's densities
    comp = np.stack([multivariate_normal(m[k], tril[k] @ tril[k].T).logpdf(x) for k in range(3)], 1)
    by_hand = float(logsumexp(jnp.asarray(comp + np.log(w)), axis=1).sum())
    np.testing.assert_allclose(-loss, by_hand, rtol=1e-6)
    np.testing.assert_allclose(float(marginal_log_likelihood(*args).sum()), by_hand, rtol=1e-12)
    # without enumeration the ELBO conditions on one sampled c per point: a different number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = float(Trace_ELBO().loss(jax.random.PRNGKey(0), {}, model, empty_guide, *args))
    assert abs(plain - loss) > 1.0


def test_infer_discrete_map_is_the_argmax_responsibility(x64):
    from ppl_dgm.numpyro.models.gmm import infer_assignments

    x = blobs(n_per=30, scale=3.5)  # overlapping: many points with two plausible components
    g = GaussianMixture(3, random_state=0, max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.fit(x)
    resp = g.predict_proba(x)
    assert (resp.max(1) < 0.9).sum() >= 20  # the argmax is not trivial
    tril = np.linalg.cholesky(g.covariances_)
    c_map = infer_assignments(x, g.weights_, g.means_, tril, temperature=0)
    np.testing.assert_array_equal(c_map, resp.argmax(1))
    # temperature 1 draws c_n ~ gamma(z_n.): over many seeds the frequencies are the responsibilities
    draws = np.stack([infer_assignments(x, g.weights_, g.means_, tril, temperature=1, seed=s)
                      for s in range(100)])
    freq = np.stack([(draws == k).mean(0) for k in range(3)], 1)
    assert np.abs(freq - resp).max() < 0.2  # 100 Bernoulli draws: sd <= 0.05
    assert not np.array_equal(draws[0], c_map)


def test_map_svi_recovers_the_em_fit(x64):
    import jax.numpy as jnp

    from ppl_dgm.numpyro.models.gmm import fit_gmm_map_svi, infer_assignments

    x = blobs()
    em = em_fit(x)
    start = (np.full(3, 1 / 3), em.means_ + 0.5, np.broadcast_to(np.eye(2), (3, 2, 2)))
    fit = fit_gmm_map_svi(x, start, steps=400)
    assert fit.losses.shape == (400,) and fit.losses[-1] < fit.losses[0]
    order = np.argsort(np.asarray(fit.means)[:, 0])
    em_order = np.argsort(em.means_[:, 0])
    # MAP with weak priors ~ ML: the means of the EM fit (and of the data-generating centres)
    np.testing.assert_allclose(np.asarray(fit.means)[order], em.means_[em_order], atol=0.02)
    np.testing.assert_allclose(np.asarray(fit.means)[order], CENTERS[np.argsort(CENTERS[:, 0])] + 3.0, atol=0.2)
    cov = np.asarray(fit.scale_tril @ jnp.swapaxes(fit.scale_tril, -1, -2))
    np.testing.assert_allclose(cov[order], em.covariances_[em_order], atol=0.02)
    c = infer_assignments(x, fit.weights, fit.means, fit.scale_tril)
    np.testing.assert_array_equal(np.argsort(order)[c], np.argsort(em_order)[em.predict(x)])
    again = fit_gmm_map_svi(x, start, steps=400)  # deterministic: no random draw anywhere
    np.testing.assert_array_equal(np.asarray(again.means), np.asarray(fit.means))


def test_numpyro_backend_keeps_the_best_restart_and_repeats():
    from ppl_dgm.models.gmm_em import GMMFamily
    from ppl_dgm.numpyro.models.gmm import fit_gmm_map_svi

    x = blobs(seed=3)
    kw = dict(init_params="random", random_state=0, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = GaussianMixture(3, backend="numpyro", n_init=4, **kw).fit(x)
        b = GaussianMixture(3, backend="numpyro", n_init=4, **kw).fit(x)  # same seeds -> same result
        one = GaussianMixture(3, backend="numpyro", n_init=1, **kw).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.lower_bounds_ == b.lower_bounds_
    # the restarts by hand: the same seeded initialisations as the torch backend, the best final objective
    fam = GMMFamily(3, "full", init_params="random")
    xt = torch.tensor(x)
    gen, data = torch.Generator().manual_seed(0), fam.prepare(xt)
    finals = []
    for _ in range(4):
        p = fam.initialize(data, gen)
        start = (p.weights.numpy(), p.means.numpy(), np.linalg.cholesky(p.covariances.numpy()))
        finals.append(-fit_gmm_map_svi(x, start, steps=300).losses[-1])
    assert a.lower_bound_ == pytest.approx(max(finals), rel=1e-12)
    assert one.lower_bound_ == pytest.approx(finals[0], rel=1e-12)
    assert int(np.argmax(finals)) != 0 and a.lower_bound_ > one.lower_bound_ + 1e-3
    assert a.model_.log_prob(xt).shape == (len(x),)
    with pytest.raises(ValueError, match="covariance_type='full' with backend='numpyro'"):
        GaussianMixture(3, backend="numpyro", covariance_type="diag").fit(x)


def test_numpyro_backend_climbs_the_pyro_svi_objective():
    x = blobs(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = GaussianMixture(3, backend="numpyro", random_state=0, max_iter=100).fit(x)
        ref = GaussianMixture(3, backend="svi", random_state=0, max_iter=100).fit(x)
    # the same MAP objective at the same start (Pyro's Cholesky diagonal carries +1e-6)
    assert a.lower_bounds_[0] == pytest.approx(ref.lower_bounds_[0], rel=1e-6)
    assert a.score(x) == pytest.approx(ref.score(x), abs=1e-4)
    np.testing.assert_allclose(a.means_, ref.means_, atol=1e-3)


def test_arviz_log_likelihood_is_the_marginal(x64):
    import arviz as az
    import jax
    import jax.numpy as jnp

    from ppl_dgm.export import numpyro_to_inference_data
    from ppl_dgm.numpyro.models.gmm import bayesian_model, marginal_log_likelihood

    x = jnp.asarray(blobs(n_per=20))
    em = em_fit(np.asarray(x))
    # draws near the EM fit (a stand-in for a posterior; NUTS is in test_gmm_numpyro.py)
    rng = np.random.default_rng(0)
    s = 60
    chol = np.linalg.cholesky(em.covariances_)
    sd = np.sqrt(np.diagonal(em.covariances_, axis1=1, axis2=2))
    draws = {"weights": rng.dirichlet(em.weights_ * 200, size=s),
             "means": em.means_ + 0.1 * rng.normal(size=(s, 3, 2)),
             "scales": sd * np.exp(0.05 * rng.normal(size=(s, 3, 2))),
             "corr_cholesky": np.broadcast_to(chol / sd[:, :, None], (s, 3, 2, 2))}
    idata = numpyro_to_inference_data(bayesian_model, x, 3, samples=draws, seed=0)
    ll = idata.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "obs") and ll.shape == (1, s, 60)
    # by hand: logsumexp over the components of log pi_k + log N(x_n | mu_k, Sigma_k)
    tril = draws["scales"][..., :, None] * draws["corr_cholesky"]
    by_hand = np.asarray(marginal_log_likelihood(x, jnp.asarray(draws["weights"]), jnp.asarray(draws["means"]),
                                                 jnp.asarray(tril)))
    np.testing.assert_allclose(ll.values[0], by_hand, rtol=1e-10)
    assert "c" not in idata.posterior
    # the marginal, not log p(x_n | one sampled c): a sampled c would put points in far components
    assert np.abs(ll.values[0].mean(0) - em.score_samples(np.asarray(x))).max() < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of draws that are not a real posterior
        loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    assert abs(loo.elpd_loo - em.score(np.asarray(x)) * 60) < 0.05 * abs(em.score(np.asarray(x)) * 60)
    pp = idata.posterior_predictive["x"]
    assert pp.shape == (1, s, 60, 2)
    _ = jax  # x64 on


def test_functions_refuse_bad_input_in_one_line():
    """The functional API checks its input like the estimators (before: NaN data ran, wrong shapes broadcast)."""
    from ppl_dgm.errors import InputError
    from ppl_dgm.numpyro.inference.em import fit_em_gmm
    from ppl_dgm.numpyro.models.gmm import fit_bayesian_gmm, fit_gmm_map_svi, infer_assignments

    x = blobs(10)
    xn = x.copy()
    xn[3, 1] = np.nan
    init = (np.ones(2) / 2, x[:2], np.stack([np.eye(2)] * 2))
    cases = [
        (lambda: fit_gmm_map_svi(xn, init), r"x: expected finite values; got 1 NaN and 0 inf \(first at index \(3, 1"),
        (lambda: fit_gmm_map_svi(x, (init[0], x[:3], init[2])), r"means \(K, 2\).*got shapes \(2,\), \(3, 2\)"),
        (lambda: fit_gmm_map_svi(x, None), "init: expected"),
        (lambda: fit_gmm_map_svi(x, init, steps=0), "expected steps as a positive integer"),
        (lambda: fit_gmm_map_svi(x, init, lr=-1.0), "expected lr as a finite number > 0"),
        (lambda: infer_assignments(x, init[0], x[:2, :1], init[2]), r"got shapes \(2,\), \(2, 1\)"),
        (lambda: infer_assignments(x, init[0], init[1] * np.inf, init[2]), "expected finite mixture parameters"),
        (lambda: infer_assignments(x, *init, temperature=0.5), "temperature must be one of 0, 1"),
        (lambda: fit_bayesian_gmm(x, 0), "expected n_components as a positive integer"),
        (lambda: fit_bayesian_gmm(x, 2, num_samples=0), "expected num_samples as a positive integer"),
        (lambda: fit_bayesian_gmm([[1.0, 2.0], [3.0]], 2), r"x: expected an array of shape \(N, D\)"),
        (lambda: fit_bayesian_gmm(x[:, 0], 2), r"with D >= 1; got shape \(30,\)"),
        (lambda: fit_em_gmm(x[:, 0], n_components=2), r"expected real data of shape \(N, D\)"),
        (lambda: fit_em_gmm(xn, n_components=2), "expected finite data; got NaN or inf in 1 row"),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match):
            call()

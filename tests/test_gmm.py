"""GMM: EM against scikit-learn, enumeration vs vectorized responsibilities, the estimator, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError

from ppl_dgm import PPCA, GaussianMixture
from ppl_dgm.errors import InputError
from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm import GMM
from ppl_dgm.models.gmm_em import GMMFamily

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n=600, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * d, [4.0] * d, [-3.0, 2.0, 5.0][:d] + [0.0] * max(0, d - 3)])
    scales = [1.0, 0.5, 0.8]
    parts = [rng.normal(size=(n // 3, d)) * s + c for s, c in zip(scales, centers, strict=True)]
    return np.concatenate(parts) + 10.0  # offset: the fast path centres the data


def sk_init(x, ct, k=3):
    g = SkGaussianMixture(k, covariance_type=ct, max_iter=1, random_state=3, init_params="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.fit(x)
    return g.weights_, g.means_, g.precisions_


@pytest.mark.parametrize("ct", COV_TYPES)
def test_per_iteration_loglik_matches_sklearn(ct):
    x = blobs()
    w, m, p = sk_init(x, ct)
    sk = SkGaussianMixture(3, covariance_type=ct, max_iter=25, tol=0.0, reg_covar=1e-6,
                           weights_init=w, means_init=m, precisions_init=p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x)
    fam = GMMFamily(3, ct, reg_covar=1e-6, chunk_size=97)  # odd chunk: exercises the loop
    init = fam.params_from_given(*(torch.tensor(a) for a in (w, m, p)))
    res = fit_em(fam, torch.tensor(x), init=init, max_iter=25, tol=0.0, warn=False)
    ours, ref = np.array(res.history), np.array(sk.lower_bounds_)
    assert ours.shape == ref.shape == (25,)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)
    np.testing.assert_allclose(res.params.means.numpy(), sk.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.params.covariances.numpy(), sk.covariances_, rtol=1e-7,
                               atol=1e-9)
    # the module's vectorized log-density agrees with sklearn's score_samples
    gmm = GMM.from_params(res.params, ct)
    np.testing.assert_allclose(gmm.log_prob(torch.tensor(x)).numpy(), sk.score_samples(x),
                               rtol=1e-9)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_estimator_matches_sklearn_given_init(ct):
    x = blobs(seed=1)
    w, m, p = sk_init(x, ct)
    kw = dict(covariance_type=ct, max_iter=500, tol=1e-6, weights_init=w, means_init=m,
              precisions_init=p)
    ours = GaussianMixture(3, **kw).fit(x)
    ref = SkGaussianMixture(3, **kw).fit(x)
    assert ours.converged_ and ref.converged_ and ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-9)
    np.testing.assert_allclose(ours.score(x), ref.score(x), rtol=1e-9)
    np.testing.assert_allclose(ours.bic(x), ref.bic(x), rtol=1e-9)
    np.testing.assert_allclose(ours.aic(x), ref.aic(x), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=1e-6)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_enumerated_responsibilities_equal_vectorized(ct):
    x = torch.tensor(blobs(n=90))
    gmm = GaussianMixture(3, covariance_type=ct, random_state=0).fit(x.numpy()).model_
    # exact posterior over the enumerated site "c" from the model's enumeration trace
    enum_model = poutine.enum(gmm.model, first_available_dim=-2)
    tr = poutine.trace(enum_model).get_trace(x)
    tr.compute_log_prob()
    joint = tr.nodes["c"]["log_prob"] + tr.nodes["x"]["log_prob"]  # (K, N)
    log_resp_enum = (joint - joint.logsumexp(0, keepdim=True)).T
    torch.testing.assert_close(log_resp_enum, gmm.log_resp(x), rtol=1e-10, atol=1e-10)
    # infer_discrete with temperature 1 samples from exactly these responsibilities
    torch.manual_seed(0)
    draws = torch.stack([
        poutine.trace(infer_discrete(gmm.model, first_available_dim=-2, temperature=1))
        .get_trace(x).nodes["c"]["value"] for _ in range(150)
    ])
    freq = torch.nn.functional.one_hot(draws, 3).double().mean(0)
    assert (freq - gmm.log_resp(x).exp()).abs().max() < 0.2  # ~5 sd of a frequency
    # MAP assignment (temperature 0) equals argmax of the responsibilities
    c_map = poutine.trace(infer_discrete(gmm.model, first_available_dim=-2, temperature=0)
                          ).get_trace(x).nodes["c"]["value"]
    torch.testing.assert_close(c_map, gmm.log_resp(x).argmax(1))


def test_elbo_with_exact_guide_equals_loglik_through_traces():
    x = torch.tensor(blobs(n=150))
    fam = GMMFamily(3, "full", init_params="k-means++")
    res = fit_em(fam, x, max_iter=8, tol=0.0, warn=False,
                 elbo_check=lambda p: fam.elbo_gap(p, x))
    assert len(res.elbo_gaps) == 8
    for gap, ll in zip(res.elbo_gaps, res.history, strict=True):
        assert abs(gap) <= 1e-12 * abs(ll) * 1e3  # round-off only (first iterate is sharp)
    gmm = GMM.from_params(res.params, "full")
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(gmm.model, gmm.guide, x)
    np.testing.assert_allclose(-loss, float(gmm.log_prob(x).sum()), rtol=1e-12)
    assert len(pyro.get_param_store()) == 0  # parameters live on the module


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random_from_data", "random"])
def test_inits_run_and_restarts_keep_best(init):
    x = blobs(n=300, seed=2)
    kw = dict(init_params=init, random_state=0, max_iter=100, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = GaussianMixture(3, n_init=1, **kw).fit(x)
        many = GaussianMixture(3, n_init=3, **kw).fit(x)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-12
    assert np.all(np.diff(many.lower_bounds_) >= -1e-9)
    if init != "random":  # uniform-ish random responsibilities can stall, as in sklearn
        ref = SkGaussianMixture(3, random_state=0, n_init=3).fit(x).score(x)
        assert many.score(x) == pytest.approx(ref, abs=1e-2)


def test_sample_predict_shapes_and_float32():
    x = blobs(n=300).astype(np.float32)
    g = GaussianMixture(3, dtype="float32", random_state=0).fit(x)
    assert g.means_.dtype == np.float32
    ref = SkGaussianMixture(3, random_state=0).fit(x.astype(np.float64)).score(x)
    assert g.score(x) == pytest.approx(ref, rel=1e-4)
    xs, cs = g.sample(50)
    assert xs.shape == (50, 3) and cs.shape == (50,)
    assert g.predict(x).shape == (300,) and g.predict_proba(x).shape == (300, 3)


def test_model_module_sample_roundtrip():
    x = torch.tensor(blobs(n=600))
    g = GaussianMixture(3, random_state=0).fit(x.numpy())
    xs, cs = g.model_.sample_joint(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xs.mean(0), x.mean(0), atol=0.1, rtol=0)
    freq = torch.bincount(cs, minlength=3).double() / 20000
    torch.testing.assert_close(freq, torch.tensor(g.weights_), atol=0.015, rtol=0)
    again, _ = g.sample(5)
    np.testing.assert_array_equal(again, g.sample(5)[0])  # seeded by random_state


@pytest.mark.parametrize(
    "kwargs, data, match",
    [
        ({"n_components": 5}, np.zeros((3, 2)), "expected n_components <= n_samples; got 5 > 3"),
        ({}, np.array([[0.0, np.nan], [1.0, 2.0]]), "expected finite values in X; got NaN or inf in 1 row"),
        ({}, np.array([[0.0, np.inf], [1.0, 2.0]]), "expected finite values in X"),
        ({}, np.zeros(5), "Expected 2D array, got 1D array instead"),
        ({}, np.zeros((1, 3)), "Found array with 1 sample.* a minimum of 2 is required"),
        ({"means_init": np.zeros((3, 3))}, None, r"expected means_init of shape \(2, 3\); got \(3, 3\)"),
        ({"backend": "svi", "covariance_type": "diag"}, None,
         "expected covariance_type='full' with backend='svi'; got 'diag'"),
    ],
)
def test_bad_data_raises_input_error_on_one_line(kwargs, data, match):
    x = blobs(n=30) if data is None else data
    with pytest.raises(InputError, match=match) as info:
        GaussianMixture(**{"n_components": 2, **kwargs}).fit(x)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"covariance_type": "blah"}, "'covariance_type' parameter of GaussianMixture must be a str among"),
        ({"init_params": "best"}, "'init_params' parameter .* Got 'best' instead"),
        ({"reg_covar": -1.0}, r"'reg_covar' parameter .* in the range \[0.0, inf\)\. Got -1.0 instead"),
        ({"n_components": 0}, "'n_components' parameter .* Got 0 instead"),
        ({"backend": "pyro"}, r"'backend' parameter .* among \{.*'jax'.*\}\. Got 'pyro' instead"),
    ],
)
def test_bad_arguments_raise_value_error_at_fit(kwargs, match):
    g = GaussianMixture(**{"n_components": 2, **kwargs})  # __init__ only stores
    with pytest.raises(InvalidParameterError, match=match) as info:
        g.fit(blobs(n=30))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_dimension_mismatch_and_unfitted():
    g = GaussianMixture(2, random_state=0)
    for method in (g.score, g.predict, g.predict_proba, g.bic):
        with pytest.raises(NotFittedError, match="expected a fitted GaussianMixture"):
            method(blobs(n=30))
    with pytest.raises(NotFittedError, match="call fit first"):
        g.sample(3)
    g.fit(blobs(n=30))
    with pytest.raises(InputError, match="X has 2 features, but GaussianMixture is expecting 3"):
        g.score(np.zeros((4, 2)))
    with pytest.raises(InputError, match="expected n_samples as a positive integer; got 0"):
        g.sample(0)


def test_collapsed_component_gives_clear_message():
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.raises(InputError, match="positive-definite covariance.*reg_covar=0"):
        GaussianMixture(3, reg_covar=0.0, init_params="kmeans", random_state=0).fit(x)
    g = GaussianMixture(3, reg_covar=1e-3, random_state=0).fit(x)  # reg_covar fixes it
    assert np.isfinite(g.score(x))


@pytest.mark.slow
def test_map_by_svi_with_enumeration_reaches_em_solution():
    from ppl_dgm.models.gmm_svi import fit_gmm_map_svi

    x = torch.tensor(blobs(n=300, seed=4))
    fam = GMMFamily(3, "full")
    init = fam.initialize(fam.prepare(x), torch.Generator().manual_seed(0))
    em = fit_em(fam, x, init=init, max_iter=200, tol=1e-10, warn=False)
    res = fit_gmm_map_svi(x, init, steps=300, lr=0.05)
    em_gmm, map_gmm = GMM.from_params(em.params, "full"), GMM.from_params(res.params, "full")
    assert float(map_gmm.log_prob(x).mean()) == pytest.approx(em.lower_bound, abs=2e-2)
    agree = (res.assignments == em_gmm.log_resp(x).argmax(1)).double().mean()
    assert agree > 0.97
    torch.testing.assert_close(res.assignments, map_gmm.log_resp(x).argmax(1))
    assert res.losses[-1] < res.losses[0]


def test_svi_backend_recovers_separated_clusters():
    # the MAP-SVI backend has to move every mean 2 units and grow the covariances from I
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0], [6.0, 6.0], [-6.0, 5.0]])
    labels = np.repeat(np.arange(3), 60)
    x = centers[labels] + rng.normal(size=(180, 2)) * np.array([1.0, 0.5, 0.7])[labels, None]
    start = dict(means_init=centers + [1.5, -1.5], precisions_init=np.stack([np.eye(2)] * 3))
    svi = GaussianMixture(3, backend="svi", max_iter=200, tol=1e-6, **start).fit(x)
    em = GaussianMixture(3, tol=1e-12, max_iter=1000, **start).fit(x)
    assert svi.converged_ and svi.n_iter_ == 200 and len(svi.lower_bounds_) == 200
    assert svi.lower_bounds_[-1] > svi.lower_bounds_[0] + 1.0  # the MAP objective per sample rose
    np.testing.assert_array_equal(svi.predict(centers), [0, 1, 2])
    np.testing.assert_array_equal(svi.predict(x), labels)
    np.testing.assert_allclose(svi.means_, em.means_, atol=1e-3)  # MAP with weak priors ~ ML
    assert svi.score(x) == pytest.approx(em.score(x), abs=1e-5)
    assert len(pyro.get_param_store()) == 0


def test_fitted_model_saved_as_run_and_evaluated(tmp_path):
    from ppl_dgm.runs import evaluate_run, load_run, save_run

    x = blobs(n=300)[:, :2]
    est = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    run = load_run(save_run(est.model_, tmp_path / "run"))
    xt = torch.tensor(x)
    np.testing.assert_allclose(run.model.log_prob(xt).numpy(), est.score_samples(x), rtol=1e-12)
    out = evaluate_run(run, xt)
    assert out["log_likelihood"] == pytest.approx(est.score(x), rel=1e-12)
    assert out["bic"] == pytest.approx(est.bic(x), rel=1e-12) and out["n"] == 300
    ppca = PPCA(1).fit(blobs(n=60))
    again = load_run(save_run(ppca.model_, tmp_path / "p"))
    np.testing.assert_allclose(again.model.log_prob(torch.tensor(blobs(n=60))).numpy(),
                               ppca.score_samples(blobs(n=60)), rtol=1e-12)

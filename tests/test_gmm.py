"""GMM: EM against scikit-learn, enumeration vs vectorized responsibilities, facade, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from ppl_dgm import GaussianMixture
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
def test_facade_matches_sklearn_given_init(ct):
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
    xs, _ = g.model_.sample(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xs.mean(0), x.mean(0), atol=0.1, rtol=0)


@pytest.mark.parametrize(
    "kwargs, data, match",
    [
        ({"n_components": 5}, np.zeros((3, 2)), "expected n_components <= n_samples; got 5 > 3"),
        ({"covariance_type": "blah"}, None, "covariance_type must be one of"),
        ({"init_params": "best"}, None, "init_params must be one of"),
        ({"reg_covar": -1.0}, None, "expected reg_covar as a finite number >= 0; got -1.0"),
        ({"n_components": 0}, None, "expected n_components as a positive integer; got 0"),
        ({}, np.array([[0.0, np.nan], [1.0, 2.0]]), "expected finite values in X; got NaN"),
        ({}, np.array([[0.0, np.inf], [1.0, 2.0]]), "expected finite values in X"),
        ({}, np.zeros(5), "expected X with 2 dimensions"),
        ({"backend": "tf"}, None, "backend must be one of"),
    ],
)
def test_bad_input_raises_input_error(kwargs, data, match):
    x = blobs(n=30) if data is None else data
    with pytest.raises(InputError, match=match):
        GaussianMixture(**{"n_components": 2, **kwargs}).fit(x)


def test_dimension_mismatch_and_unfitted():
    g = GaussianMixture(2, random_state=0)
    with pytest.raises(InputError, match="expected a fitted GaussianMixture"):
        g.score(blobs(n=30))
    g.fit(blobs(n=30))
    with pytest.raises(InputError, match="expected X with 3 features \\(as at fit\\); got 2"):
        g.score(np.zeros((4, 2)))


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


def test_save_load_evaluate_run_and_plots(tmp_path):
    from ppl_dgm.em_runs import evaluate_run, fit_estimator, load_run, save_run

    x = blobs(n=300)[:, :2]
    est = fit_estimator("gmm", x, n_components=3, covariance_type="diag", random_state=0)
    run = save_run(est, tmp_path / "run", {"seed": 0}, x=x)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["family"] == "gmm" and cfg["seed"] == 0 and cfg["n_features"] == 2
    assert (run / "loglik.png").stat().st_size > 1000 and (run / "ellipses.png").exists()
    assert isinstance(torch.load(run / "params.pt", weights_only=True)["means_"], torch.Tensor)
    again = load_run(run)
    np.testing.assert_allclose(again.score_samples(x), est.score_samples(x), rtol=1e-12)
    out = evaluate_run(run, x)
    assert out == {"log_likelihood": pytest.approx(est.score(x)), "bic": pytest.approx(est.bic(x)),
                   "n": 300}
    with pytest.raises(InputError, match="expected X with 2 features"):
        evaluate_run(run, np.zeros((4, 3)))
    ppca = fit_estimator("ppca", blobs(n=60), n_components=1)
    again = load_run(save_run(ppca, tmp_path / "p"))
    assert again.score(blobs(n=60)) == pytest.approx(ppca.score(blobs(n=60)), rel=1e-12)

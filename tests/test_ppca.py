"""PPCA: closed form, EM -> closed form, exact log-likelihood, ELBO with exact guide, linear VAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from ppl_dgm import PPCA
from ppl_dgm.errors import InputError
from ppl_dgm.inference.em import fit_em, pyro_elbo
from ppl_dgm.models.ppca import PPCA as PPCAModel
from ppl_dgm.models.ppca import LinearVAE, PPCAFamily, closed_form


def synthetic(n=2000, d=6, q=2, sigma=0.3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, q)) * np.array([3.0, 1.5][:q])
    return rng.normal(size=(n, q)) @ w.T + sigma * rng.normal(size=(n, d)) + 2.0


def test_closed_form_matches_sklearn_pca_model():
    x = synthetic()
    p = closed_form(torch.tensor(x), 2)
    pca = PCA(2).fit(x)
    n = x.shape[0]
    # sklearn uses the (N-1) covariance; rescale its eigenvalues to the ML (1/N) ones
    np.testing.assert_allclose(float(p.sigma2), pca.noise_variance_ * (n - 1) / n, rtol=1e-10)
    c_ours = p.W @ p.W.T
    c_sk = pca.get_covariance() * (n - 1) / n - pca.noise_variance_ * (n - 1) / n * np.eye(6)
    np.testing.assert_allclose(c_ours.numpy(), c_sk, atol=1e-9)


def test_exact_loglik_matches_gaussian_density():
    x = torch.tensor(synthetic(n=300))
    m = PPCAModel.from_params(closed_form(x, 2))
    c = m.W @ m.W.T + m.sigma2 * torch.eye(6, dtype=torch.float64)
    diff = x - m.mu
    ref = -0.5 * (6 * np.log(2 * np.pi) + torch.logdet(c)
                  + (diff @ torch.linalg.inv(c) * diff).sum(1))
    torch.testing.assert_close(m.log_prob(x), ref, rtol=1e-12, atol=1e-12)


def test_em_converges_to_closed_form_and_is_monotone():
    x = torch.tensor(synthetic())
    res = fit_em(PPCAFamily(2), x, tol=1e-12, max_iter=5000, seed=0)
    assert res.converged
    assert np.all(np.diff(res.history) >= -1e-12)
    cf = closed_form(x, 2)
    ll_cf = float(PPCAModel.from_params(cf).log_prob(x).mean())
    assert res.lower_bound == pytest.approx(ll_cf, abs=1e-9)
    assert float(res.params.sigma2) == pytest.approx(float(cf.sigma2), rel=1e-6)
    # W is identified up to a rotation: compare W W^T
    w = res.params.W
    torch.testing.assert_close(w @ w.T, cf.W @ cf.W.T, rtol=1e-4, atol=1e-3)


def test_elbo_with_exact_posterior_guide_is_the_loglik():
    x = torch.tensor(synthetic(n=200))
    m = PPCAModel.from_params(closed_form(x, 2))
    elbo = pyro_elbo(m.model, m.guide, x, enumerate_guide=False)
    assert elbo == pytest.approx(float(m.log_prob(x).sum()), rel=1e-10)


def test_estimator_closed_form_and_em_agree():
    x = synthetic()
    a = PPCA(2).fit(x)
    b = PPCA(2, method="em", tol=1e-9, max_iter=5000).fit(x)
    assert a.score(x) == pytest.approx(b.score(x), abs=1e-7)
    assert a.noise_variance_ == pytest.approx(b.noise_variance_, rel=1e-4)
    assert a.n_iter_ == len(a.lower_bounds_) == 1 and b.n_iter_ == len(b.lower_bounds_) > 10
    assert a.lower_bound_ == pytest.approx(a.score(x), rel=1e-12)  # the closed form's log-likelihood
    assert a.transform(x).shape == (2000, 2) and a.sample(5).shape == (5, 6)
    n_par = 6 * 2 - 1 + 6 + 1  # W up to rotation, mu, sigma^2
    assert a.bic(x) == pytest.approx(-2 * a.score(x) * 2000 + n_par * np.log(2000), rel=1e-12)
    assert a.aic(x) == pytest.approx(-2 * a.score(x) * 2000 + 2 * n_par, rel=1e-12)


def test_transform_is_the_posterior_mean_and_inverse_transform_decodes():
    x = synthetic(n=500)
    p = PPCA(2).fit(x)
    w, mu, s2 = p.components_, p.mean_, p.noise_variance_
    m = w.T @ w + s2 * np.eye(2)
    np.testing.assert_allclose(p.transform(x), np.linalg.solve(m, w.T @ (x - mu).T).T, rtol=1e-10)
    z = np.random.default_rng(1).normal(size=(7, 2))
    np.testing.assert_allclose(p.inverse_transform(z), z @ w.T + mu, rtol=1e-12)
    np.testing.assert_allclose(p.fit_transform(x), p.transform(x), rtol=1e-12)
    assert list(p.get_feature_names_out()) == ["ppca0", "ppca1"]
    with pytest.raises(InputError, match="expected Z with 2 columns \\(n_components\\); got 3"):
        p.inverse_transform(np.zeros((4, 3)))


@pytest.mark.parametrize(
    "kwargs, data, error, match",
    [
        ({"n_components": 6}, None, InputError, "expected n_components < n_features=6; got 6"),
        ({"method": "svd"}, None, InvalidParameterError, "'method' parameter of PPCA must be a str among"),
        ({"max_iter": 0}, None, InvalidParameterError, "'max_iter' parameter of PPCA .* Got 0 instead"),
        ({}, np.full((4, 3), np.nan), InputError, "expected finite values in X"),
    ],
)
def test_bad_input(kwargs, data, error, match):
    with pytest.raises(error, match=match):
        PPCA(**{"n_components": 2, **kwargs}).fit(synthetic(n=50) if data is None else data)


def test_unfitted_and_feature_mismatch():
    with pytest.raises(NotFittedError, match="expected a fitted PPCA"):
        PPCA(2).transform(synthetic(n=50))
    fitted = PPCA(2).fit(synthetic(n=50))
    with pytest.raises(InputError, match="X has 5 features, but PPCA is expecting 6 features"):
        fitted.score(np.zeros((3, 5)))


def test_linear_vae_analytic_elbo_at_ppca_solution_is_tight():
    x = torch.tensor(synthetic(n=500))
    cf = closed_form(x, 2)
    vae = LinearVAE(6, 2).double()
    post = PPCAModel.from_params(cf)
    q = 2
    m_mat = cf.W.T @ cf.W + cf.sigma2 * torch.eye(q, dtype=torch.float64)
    enc = torch.linalg.solve(m_mat, cf.W.T)  # (q, D): E[z|x] = M^{-1} W^T (x - mu)
    with torch.no_grad():
        vae.decoder.weight.copy_(cf.W)
        vae.decoder.bias.copy_(cf.mu)
        vae.encoder.weight.copy_(enc)
        vae.encoder.bias.copy_(-enc @ cf.mu)
        vae.log_sigma.copy_(0.5 * cf.sigma2.log())
        # W^T W is diagonal at the closed-form solution, so the exact posterior is diagonal
        vae.guide_log_scale.copy_(0.5 * (cf.sigma2 * torch.linalg.inv(m_mat)).diagonal().log())
    elbo = vae.analytic_elbo(x)
    torch.testing.assert_close(elbo, post.log_prob(x), rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_linear_vae_trained_by_fit_svi_reaches_ppca_loglik():
    from ppl_dgm.inference import fit_svi

    torch.manual_seed(0)
    x = torch.tensor(synthetic(n=4000), dtype=torch.float32)
    exact = float(PPCAModel.from_params(closed_form(x.double(), 2)).log_prob(x.double()).mean())
    vae = LinearVAE(6, 2)
    res = fit_svi(vae, x, epochs=300, batch_size=256, lr=1e-2, lr_schedule="cosine", seed=0,
                  progress=False)
    final = np.mean([h["train_elbo"] for h in res.history[-10:]])
    with torch.no_grad():
        analytic = float(vae.analytic_elbo(x).mean())
    assert abs(final - exact) <= 0.005 * abs(exact)
    assert abs(analytic - exact) <= 0.005 * abs(exact)

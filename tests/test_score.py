"""Score models: the DSM program, Gaussian and mixture known answers (score, Tweedie), the ODE log-likelihood."""

import math

import pyro.poutine as poutine
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.models.diffusion import DDPM
from ppl_dgm.models.flow_ode import ode_log_likelihood
from ppl_dgm.models.score import ScoreModel

from .gaussian_helpers import GaussianEps

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
# a 1-D mixture: weights, means, standard deviations
W, M, S = (torch.tensor(v, dtype=torch.float64) for v in ([0.25, 0.75], [-3.0, 2.0], [0.5, 0.7]))


def gaussian_score(mu, cov):
    """grad log N(x; mu, cov + sigma^2 I) = -(cov + sigma^2 I)^{-1} (x - mu)."""
    def score(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        C = cov.to(x) + sigma[..., None, None] ** 2 * torch.eye(len(mu), dtype=x.dtype)
        return -torch.linalg.solve(C, (x - mu.to(x))[..., None])[..., 0]
    return score


def mixture_log_density(x, sigma):
    """log sum_k w_k N(x; m_k, s_k^2 + sigma^2) for 1-D x of shape (..., 1)."""
    var = S.to(x) ** 2 + torch.as_tensor(sigma, dtype=x.dtype)[..., None] ** 2
    comp = torch.distributions.Normal(M.to(x), var.sqrt()).log_prob(x) + W.to(x).log()
    return torch.logsumexp(comp, -1)


def mixture_score(x, sigma):
    """grad_x log p_sigma(x) by autograd of :func:`mixture_log_density`."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        return torch.autograd.grad(mixture_log_density(xx, sigma).sum(), xx)[0]


def mixture_posterior_mean(y, sigma):
    """E[x | x + sigma eps = y] = sum_k r_k(y) (m_k + s_k^2 / (s_k^2 + sigma^2) (y - m_k)), y (..., 1)."""
    var = S**2 + sigma**2
    r = torch.softmax(torch.distributions.Normal(M, var.sqrt()).log_prob(y) + W.log(), -1)
    return (r * (M + S**2 / var * (y - M))).sum(-1, keepdim=True)


class ScoreAsNet(torch.nn.Module):
    """The net of a :class:`ScoreModel` that makes its score equal ``score(x, sigma)``: net = -sigma s."""

    def __init__(self, score):
        super().__init__()
        self.fn, self.dummy = score, torch.nn.Parameter(torch.zeros(()))

    def forward(self, h, c):
        sigma = (c / 100).exp()
        col = sigma[..., None]
        return -col * self.fn(h * (1 + col**2).sqrt(), sigma)


def exact_score_model(score, x_dim=2, **kw):
    m = ScoreModel(x_dim, **kw).double()
    m.net = ScoreAsNet(score).double()
    return m.eval()


def gaussian_ddpm(T=1000, schedule="linear"):
    m = DDPM(2, timesteps=T, schedule=schedule).double()
    m.net = GaussianEps(m.schedule, MU, SIGMA).double()
    return m.eval()


# -- the training program --------------------------------------------------------------------
def test_negative_elbo_is_the_dsm_loss():
    """-(log p - log q) of one trace pair equals sum_i sigma_i^2 ||s(x_tilde) + eps / sigma_i||^2 / 2 (eval: all L)."""
    torch.manual_seed(0)
    m = ScoreModel(2, levels=5, hidden=(16,)).eval()
    x = torch.randn(7, 2)
    guide = poutine.trace(m.guide).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, guide)).get_trace(x)
    elbo = model.log_prob_sum() - guide.log_prob_sum()
    xt = guide.nodes["x_tilde"]["value"]                                           # (L, N, D)
    sig = m.sigmas.float()[:, None, None]
    loss = (sig**2 * (m.score(xt, sig[..., 0]) + (xt - x) / sig**2) ** 2).sum() / 2
    assert xt.shape == (5, 7, 2) and set(model.nodes) >= {"x", "x_tilde", "data", "sigma"}
    assert float(-elbo) == pytest.approx(float(loss), rel=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(InputError, match="sigma_min < sigma_max"):
        ScoreModel(2, sigma_max=0.1, sigma_min=1.0)
    with pytest.raises(InputError, match="sigmas_per_step"):
        ScoreModel(2, levels=4, sigmas_per_step=0)
    with pytest.raises(InputError, match="sampler must be one of"):
        ScoreModel(2).sample(3, sampler="ddim")
    with pytest.raises(InputError, match="expected data of shape"):
        ode_log_likelihood(ScoreModel(2), torch.zeros(3, 4))


def test_learned_score_approaches_the_gaussian_closed_form():
    """After 30 short epochs on N(mu, Sigma), E||s_theta - s*||^2 / E||s*||^2 per noise level (L = 10)."""
    torch.manual_seed(0)
    p = torch.distributions.MultivariateNormal(MU.float(), SIGMA.float())
    m = ScoreModel(2, sigma_max=5.0, sigma_min=0.1, levels=10, sigmas_per_step=None, hidden=(64, 64))
    fit_svi(m, p.sample((4096,)), epochs=30, batch_size=256, lr=3e-3, lr_schedule="cosine", progress=False)
    m.eval()
    exact = gaussian_score(MU, SIGMA)
    errors = []
    for sigma in m.sigmas.tolist():
        x = p.sample((2000,)) + sigma * torch.randn(2000, 2)                     # x ~ p_sigma
        with torch.no_grad():
            s, s_star = m.score(x, sigma), exact(x.double(), sigma).float()
        errors.append(float(((s - s_star) ** 2).sum(-1).mean() / (s_star**2).sum(-1).mean()))
    assert max(errors) < 0.05, errors


def test_tweedie_with_the_exact_mixture_score_is_the_posterior_mean():
    y = torch.linspace(-6, 6, 101, dtype=torch.float64)[:, None]
    for sigma in (0.3, 1.0, 3.0):
        m = exact_score_model(mixture_score, x_dim=1)
        torch.testing.assert_close(m.denoise(y, sigma), mixture_posterior_mean(y, sigma), atol=1e-9, rtol=0)


def test_trained_denoiser_is_close_to_the_mixture_posterior_mean():
    """A briefly trained score model's Tweedie denoiser vs E[x | y], y ~ p_sigma: its mean error is a small
    fraction of the correction E|y - E[x | y]| it has to make."""
    torch.manual_seed(0)
    c = torch.distributions.Categorical(W).sample((8192,))
    x = (M[c] + S[c] * torch.randn(8192, dtype=torch.float64)).float()[:, None]
    m = ScoreModel(1, sigma_max=6.0, sigma_min=0.1, levels=12, sigmas_per_step=None, hidden=(64, 64))
    fit_svi(m, x, epochs=25, batch_size=256, lr=3e-3, lr_schedule="cosine", progress=False)
    m.eval()
    for sigma in m.sigmas[[3, 6, 9]].tolist():                          # 1.96, 0.64, 0.21: levels it was trained at
        y = x[:2000] + sigma * torch.randn(2000, 1)
        exact = mixture_posterior_mean(y.double(), sigma).float()
        with torch.no_grad():
            err = (m.denoise(y, sigma) - exact).abs().mean()
        assert float(err) < 0.1 * float((y - exact).abs().mean()), (sigma, float(err))


# -- exact log-likelihood by the probability-flow ODE -----------------------------------------
def test_ode_log_likelihood_of_the_exact_ve_flow_matches_the_gaussian():
    torch.manual_seed(0)
    m = exact_score_model(gaussian_score(MU, SIGMA), sigma_max=1e4, sigma_min=1e-3)
    x = torch.distributions.MultivariateNormal(MU, SIGMA).sample((64,))
    res = ode_log_likelihood(m, x, rtol=1e-7, atol=1e-7)
    exact = torch.distributions.MultivariateNormal(MU, SIGMA).log_prob(x)
    assert res.exact and float((res.log_prob - exact).abs().max()) < 0.01
    assert res.bits_per_dim == pytest.approx(-float(exact.mean()) / (2 * math.log(2)), abs=0.01)


def test_ode_log_likelihood_of_the_exact_vp_flow_matches_the_gaussian():
    """Cosine schedule: sigma_T = 2e4, per-example error < 0.01 (measured 6e-4).  Linear: sigma_T = 157, so the
    N(0, I) prior of x_T misses N(sqrt(abar_T) mu, ...) by O(|mu| / sigma_T) per example (measured up to 0.02),
    which averages out (mean error 0.002)."""
    torch.manual_seed(0)
    x = torch.distributions.MultivariateNormal(MU, SIGMA).sample((64,))
    exact = torch.distributions.MultivariateNormal(MU, SIGMA).log_prob(x)
    cosine = ode_log_likelihood(gaussian_ddpm(schedule="cosine"), x, rtol=1e-7, atol=1e-7)
    linear = ode_log_likelihood(gaussian_ddpm(), x, rtol=1e-7, atol=1e-7)
    assert float((cosine.log_prob - exact).abs().max()) < 0.01
    assert float((linear.log_prob - exact).abs().max()) < 0.05 and abs(float((linear.log_prob - exact).mean())) < 0.01


def test_hutchinson_log_likelihood_in_20_dims_is_unbiased_within_its_standard_error():
    torch.manual_seed(0)
    D = 20
    A = torch.randn(D, D, dtype=torch.float64) / D**0.5
    cov, mu = A @ A.T + 0.3 * torch.eye(D, dtype=torch.float64), torch.linspace(-1, 1, D, dtype=torch.float64)
    m = exact_score_model(gaussian_score(mu, cov), x_dim=D, sigma_max=100.0, sigma_min=1e-3)
    x = torch.distributions.MultivariateNormal(mu, cov).sample((16,))
    res = ode_log_likelihood(m, x, rtol=1e-6, atol=1e-6, probes=16, seed=0)
    exact = torch.distributions.MultivariateNormal(mu, cov).log_prob(x)
    z = (res.log_prob - exact) / res.std_error
    assert not res.exact and float(res.std_error.min()) > 0
    assert float(z.abs().max()) < 4 and abs(float(z.mean())) < 4 / len(z) ** 0.5, z

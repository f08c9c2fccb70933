"""Probabilistic PCA (Tipping & Bishop, 1999) and a linear VAE.

Generative program (sites ``"z"`` and ``"x"``)::

    z_n ~ N(0, I_q),    x_n | z_n ~ N(W z_n + mu, sigma^2 I_D)

so that ``x_n ~ N(mu, C)`` with ``C = W W^T + sigma^2 I`` (exact marginal
likelihood) and the exact posterior is ``z_n | x_n ~ N(M^{-1} W^T (x_n - mu),
sigma^2 M^{-1})`` with ``M = W^T W + sigma^2 I_q``.

Maximum likelihood in closed form (Tipping & Bishop, eqs. 7-8): with ``S`` the
(1/N) sample covariance and its eigenpairs ``(lambda_j, u_j)`` in decreasing
order, ``mu = mean(x)``, ``sigma^2 = mean(lambda_{q+1..D})``,
``W = U_q (Lambda_q - sigma^2 I)^{1/2}`` (up to a rotation).

EM (Tipping & Bishop, eqs. 27-28; the course notes' E/M steps with a Gaussian
latent): E-step ``E[z_n] = M^{-1} W^T (x_n - mu)``,
``E[z z^T] = sigma^2 M^{-1} + E[z] E[z]^T``; M-step
``W' = (sum (x-mu) E[z]^T)(sum E[z z^T])^{-1}``,
``sigma'^2 = 1/(N D) sum ||x-mu||^2 - 2 E[z]^T W'^T (x-mu) + tr(E[z z^T] W'^T W')``.
Summed over n these need only ``S``, so the data are read once (in chunks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from ..errors import InputError, check_positive_int
from .base import EStep, GenerativeModel
from .options import EMOptions, option


@dataclass
class PPCAConfig(EMOptions):
    """Fit options of ``ppca``: the parameters of :class:`ppl_dgm.PPCA`."""

    latent_dim: int = option(2, "q, the latent size.", role="train", min=1)
    method: Literal["closed_form", "em"] = option("closed_form", "Maximum likelihood in closed form, or by EM.",
                                                  role="train")

    def estimator_params(self) -> dict[str, Any]:
        params = self.values("train")
        params["n_components"] = params.pop("latent_dim")
        return params


class PPCAParams(NamedTuple):
    """``W`` (D, q), ``mu`` (D,), ``sigma2`` (scalar tensor)."""

    W: Tensor
    mu: Tensor
    sigma2: Tensor


def sample_moments(x: Tensor, chunk_size: int = 65536) -> tuple[Tensor, Tensor]:
    """Mean (D,) and (1/N) covariance ``S`` (D, D) in float64, accumulated over chunks."""
    mu = x.mean(0, dtype=torch.float64)
    s = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk_size):
        xc = x[i : i + chunk_size].double() - mu
        s += xc.T @ xc
    return mu, s / x.shape[0]


def closed_form(x: Tensor, n_components: int) -> PPCAParams:
    """Maximum-likelihood PPCA (Tipping & Bishop, eqs. 7-8). ``x``: (N, D)."""
    d = x.shape[1]
    if not 1 <= n_components < d:
        raise InputError(f"expected 1 <= n_components < n_features={d}; got {n_components}")
    mu, s = sample_moments(x)
    evals, evecs = torch.linalg.eigh(s)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[n_components:].mean()
    w = evecs[:, :n_components] * (evals[:n_components] - sigma2).clamp_min(0).sqrt()
    return PPCAParams(*(t.to(x.dtype) for t in (w, mu, sigma2)))


def log_likelihood_from_moments(params: PPCAParams, mu: Tensor, s: Tensor) -> Tensor:
    """Mean ``log N(x_n | mu_p, C)`` given the data mean and (1/N) covariance ``S``.

    ``-1/2 [D log 2 pi + log|C| + tr(C^{-1} (S + (m - mu_p)(m - mu_p)^T))]``.
    """
    w, sigma2 = params.W.double(), params.sigma2.double()
    d = w.shape[0]
    c = w @ w.T + sigma2 * torch.eye(d, dtype=w.dtype, device=w.device)
    chol = torch.linalg.cholesky(c)
    delta = (mu - params.mu.double()).unsqueeze(1)
    scatter = s + delta @ delta.T
    tr = torch.cholesky_solve(scatter, chol).diagonal().sum()
    logdet = 2 * chol.diagonal().log().sum()
    return -0.5 * (d * math.log(2 * math.pi) + logdet + tr)


@dataclass
class PPCAData:
    mu: Tensor
    s: Tensor
    dtype: torch.dtype


class PPCAFamily:
    """PPCA hooks for :func:`ppl_dgm.inference.em.fit_em` (EM of the module docstring)."""

    def __init__(self, n_components: int) -> None:
        self.q = int(n_components)

    def prepare(self, x: Tensor) -> PPCAData:
        if not 1 <= self.q < x.shape[1]:
            raise InputError(f"expected 1 <= n_components < n_features={x.shape[1]}; got {self.q}")
        mu, s = sample_moments(x)
        return PPCAData(mu, s, x.dtype)

    def initialize(self, data: PPCAData, generator: torch.Generator) -> PPCAParams:
        d = data.s.shape[0]
        scale = float(data.s.diagonal().mean())
        w = torch.randn(d, self.q, generator=generator, dtype=torch.float64) * math.sqrt(scale)
        return PPCAParams(w.to(data.s.device), data.mu, data.s.diagonal().mean())

    def e_step(self, params: PPCAParams, data: PPCAData) -> EStep:
        """Log-likelihood and ``(A, B) = (S W M^{-1}, sigma^2 M^{-1} + M^{-1} W^T S W M^{-1})``."""
        w, sigma2 = params.W.double(), params.sigma2.double()
        m = w.T @ w + sigma2 * torch.eye(self.q, dtype=w.dtype, device=w.device)
        m_inv = torch.linalg.inv(m)
        a = data.s @ w @ m_inv
        b = sigma2 * m_inv + m_inv @ w.T @ a
        ll = log_likelihood_from_moments(params, data.mu, data.s)
        return EStep(float(ll), (a, b))

    def m_step(self, estep: EStep, data: PPCAData) -> PPCAParams:
        a, b = estep.stats
        w = torch.linalg.solve(b, a.T).T
        d = data.s.shape[0]
        sigma2 = (data.s.trace() - 2 * (w * a).sum() + (b * (w.T @ w)).sum()) / d
        return PPCAParams(w, data.mu, sigma2)

    def monotone_slack(self, params: PPCAParams) -> float:
        return 1e4 * torch.finfo(torch.float64).eps * (1.0 + float(params.W.double().abs().max()))


class PPCA(GenerativeModel):
    """Probabilistic PCA: z ~ N(0, I), x | z ~ N(W z + mu, sigma^2 I); exact posterior guide.

    ``W``, ``mu``, ``sigma2`` are held as buffers.

    Parameters
    ----------
    W : Tensor, shape (D, q)
    mu : Tensor, shape (D,)
    sigma2 : Tensor, scalar
    """

    family = "ppca"

    def __init__(self, W: Tensor, mu: Tensor, sigma2: Tensor) -> None:
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("mu", mu)
        self.register_buffer("sigma2", torch.as_tensor(sigma2, dtype=W.dtype))
        self.config = {"n_features": int(W.shape[0]), "latent_dim": int(W.shape[1])}

    @classmethod
    def from_params(cls, p: PPCAParams) -> PPCA:
        return cls(p.W, p.mu, p.sigma2)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PPCA:
        """Placeholder parameters of the configured shapes (float64), to be filled by ``load_state_dict``."""
        try:
            d, q = (check_positive_int(k, config[k]) for k in ("n_features", "latent_dim"))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"expected a ppca config with n_features and latent_dim; got {e}") from None
        return cls(torch.zeros(d, q, dtype=torch.float64), torch.zeros(d, dtype=torch.float64),
                   torch.ones((), dtype=torch.float64))

    @property
    def n_parameters(self) -> int:
        """Free parameters of W (up to rotation), mu and sigma^2 (for BIC)."""
        d, q = self.W.shape
        return int(d * q - q * (q - 1) / 2 + d + 1)

    @property
    def params(self) -> PPCAParams:
        return PPCAParams(self.W, self.mu, self.sigma2)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Exact ``q(z|x)``: mean (N, q) and covariance ``sigma^2 M^{-1}`` (q, q)."""
        x, q = x.to(self.W), self.W.shape[1]
        m = self.W.T @ self.W + self.sigma2 * torch.eye(q, dtype=self.W.dtype, device=self.W.device)
        m_inv = torch.linalg.inv(m)
        return (x - self.mu) @ self.W @ m_inv, self.sigma2 * m_inv

    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        """``z ~ N(0, I)``, ``x ~ N(W z + mu, sigma^2 I)``; x shape (N, D)."""
        n, q = x.shape[0], self.W.shape[1]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(x.new_zeros(q), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma2.sqrt()).to_event(1),
                        obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        """The exact posterior, so ``ELBO = log p(x)`` for every draw of ``z``."""
        loc, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log N(x_n | mu, W W^T + sigma^2 I)``, shape (N,)."""
        d = self.W.shape[0]
        c = self.W @ self.W.T + self.sigma2 * torch.eye(d, dtype=self.W.dtype, device=self.W.device)
        return dist.MultivariateNormal(self.mu, covariance_matrix=c).log_prob(x.to(self.W))

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Posterior mean ``M^{-1} W^T (x - mu)``, shape (N, q)."""
        return self.posterior(x)[0]

    def decode_mean(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``W z + mu``, shape (N, D)."""
        return z.to(self.W) @ self.W.T + self.mu

    def sample(self, n: int, generator: torch.Generator | None = None, *, mean: bool = False) -> Tensor:
        """``n`` draws from the marginal, shape (n, D) (``W z + mu`` without the noise if ``mean``)."""
        d, q = self.W.shape
        z = torch.randn(n, q, generator=generator, dtype=self.W.dtype).to(self.W.device)
        eps = torch.randn(n, d, generator=generator, dtype=self.W.dtype).to(self.W.device)
        return self.decode_mean(z) + (0.0 if mean else self.sigma2.sqrt() * eps)


class LinearVAE(nn.Module):
    """A VAE with a linear decoder and an amortized diagonal-Gaussian guide.

    ``p(z) = N(0, I)``, ``p(x|z) = N(W z + b, sigma^2 I)``;
    ``q(z|x) = N(A x + c, diag(s^2))``.  Its optimum is the PPCA maximum
    likelihood with a tight ELBO (the exact posterior of PPCA is Gaussian with an
    input-independent covariance, diagonal for the ML solution with orthogonal
    columns of W), which is the notes' "VAE is a nonlinear generalization of PCA".
    Parameters live on the module (no ``pyro.param``).

    Parameters
    ----------
    data_dim, latent_dim : int
        ``D`` and ``q``.
    """

    def __init__(self, data_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.encoder = nn.Linear(data_dim, latent_dim)
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.guide_log_scale = nn.Parameter(torch.full((latent_dim,), -1.0))
        self.latent_dim = latent_dim

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), self.log_sigma.exp()).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, self.guide_log_scale.exp().expand_as(loc)).to_event(1))

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def sample(self, n: int) -> Tensor:
        z = torch.randn(n, self.latent_dim, dtype=self.decoder.weight.dtype)
        mean = self.decoder(z)
        return mean + self.log_sigma.exp() * torch.randn_like(mean)

    def analytic_elbo(self, x: Tensor) -> Tensor:
        """Exact ``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` per sample, shape (N,)."""
        m, s2 = self.encoder(x), (2 * self.guide_log_scale).exp()
        w, sigma2 = self.decoder.weight, (2 * self.log_sigma).exp()
        resid = (x - self.decoder(m)).pow(2).sum(1) + (w.pow(2) * s2).sum()
        rec = -0.5 * x.shape[1] * torch.log(2 * math.pi * sigma2) - 0.5 * resid / sigma2
        kl = 0.5 * (s2 + m.pow(2) - 1 - s2.log()).sum(1)
        return rec - kl

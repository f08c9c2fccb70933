"""Exact log-likelihood of a DDPM or a score model by the probability-flow ODE (Song et al. 2021, §4.3, App. D.2).

In the VE coordinates of :mod:`.samplers` (x_sigma = x_0 + sigma eps; x_t / sqrt(abar_t) for a DDPM) and
the time u = log sigma, the probability-flow ODE

.. math::  \\frac{dx}{du} = f(x, u) = -\\sigma^2\\, s_\\theta(x, \\sigma), \\qquad \\sigma = e^u,

carries p_{sigma_L} to p_{sigma_1} deterministically, and the instantaneous change of variables
(Chen et al. 2018) gives d log p_u(x(u)) / du = -div f, so

.. math::  \\log p_{\\sigma_L}(x) = \\log N\\big(x(u_1); 0, \\text{prior\\_std}^2 I\\big)
           + \\int_{\\log\\sigma_L}^{\\log\\sigma_1} \\nabla \\cdot f(x(u), u)\\, du .

The divergence is exact (one backward pass per dimension) for D <= 16 and otherwise Hutchinson's
estimator E_z[z^T (df/dx) z] with Rademacher probes z, each probe held fixed along its ODE path
(FFJORD); ``probes`` independent paths give the mean and its standard error per example.

What it is a density of: the model's law at the smallest level, x_0 + sigma_L eps (sigma_L = 0.01 by
default; sigma_1 of a DDPM's ladder, sqrt(beta_1 / (1 - beta_1)) = 0.01 for the linear schedule), on the
continuous data space the model sees.  For images that space is the [-1, 1]-scaled data (the 256-level grid
k / 255 mapped to 2 k / 255 - 1), evaluated at the grid points without dequantization, so it is a density,
not a probability of the discrete pixels.  Bits per dimension are quoted per unit of the 0..255 pixel
scale: bits/dim = (-log p / D + log 127.5) / ln 2 (the Jacobian of x -> 127.5 (x + 1)); for vectors
bits/dim = -log p / (D ln 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..utils import LN2
from .samplers import ScoreField, flow_drift, load_odeint

EXACT_MAX_DIM = 16
"""Dimensions up to which ``exact=None`` takes the exact divergence."""


@dataclass
class ODELikelihood:
    """What :func:`ode_log_likelihood` returns.

    Attributes
    ----------
    log_prob : Tensor, shape (N,)
        log p(x) per example (nats), the mean over probes for Hutchinson.
    std_error : Tensor, shape (N,)
        Its standard error over the probes (zeros when exact).
    bits_per_dim : float
        Mean over the examples (module docstring for the image conversion).
    bits_per_dim_se : float
        Standard error of ``bits_per_dim`` from the probes (0 when exact; not the spread over examples).
    exact : bool
        Whether the divergence was exact.
    nfe : int
        Drift evaluations of the solver.
    probes : int
        Hutchinson probes per example (1 when exact).
    """

    log_prob: torch.Tensor
    std_error: torch.Tensor
    bits_per_dim: float
    bits_per_dim_se: float
    exact: bool
    nfe: int
    probes: int = 1

    def as_dict(self) -> dict:
        return {"log_prob": float(self.log_prob.mean()), "bits_per_dim": self.bits_per_dim,
                "bits_per_dim_se": self.bits_per_dim_se, "exact": self.exact, "nfe": self.nfe,
                "probes": self.probes, "n": len(self.log_prob)}


def _divergence(f: torch.Tensor, x: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
    """div_x f, shape (N,): exact (D backward passes) if ``probe`` is None, else z^T (df/dx) z."""
    if probe is not None:
        return (torch.autograd.grad(f, x, probe)[0] * probe).sum(-1)
    cols = [torch.autograd.grad(f[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[-1])]
    return torch.stack(cols, -1).sum(-1)


def ode_log_likelihood(model, x: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-5, exact: bool | None = None,
                       probes: int = 4, method: str = "dopri5", seed: int | None = None) -> ODELikelihood:
    """log p(x) of a DDPM or a score model by the probability-flow ODE (module docstring).

    Parameters
    ----------
    model : DDPM or ScoreModel
        Anything with ``score_field()``, ``to_model_space`` and ``x_dim``.
    x : Tensor, shape (N, D)
        Data in data space (images in [0, 1]).
    rtol, atol : float
        Tolerances of ``torchdiffeq.odeint``.
    exact : bool, optional
        Exact divergence; default: D <= 16.
    probes : int
        Rademacher probes per example (Hutchinson only); at least 2 for a standard error.
    method : str
        torchdiffeq solver.
    seed : int, optional
        Seeds the probes (the global generator is restored afterwards).
    """
    if x.dim() != 2 or x.shape[1] != model.x_dim:
        raise InputError(f"expected data of shape (N, {model.x_dim}); got {tuple(x.shape)}")
    if not isinstance(probes, int) or probes < 1:
        raise InputError(f"probes must be a positive integer; got {probes!r}")
    if not (rtol > 0 and atol > 0):
        raise InputError(f"rtol and atol must be positive; got {rtol}, {atol}")
    field: ScoreField = model.score_field()
    D = model.x_dim
    exact = D <= EXACT_MAX_DIM if exact is None else exact
    k = 1 if exact else probes
    was = model.training
    model.eval()
    x0 = model.to_model_space(x.to(model.device, next(model.parameters()).dtype)).repeat(k, 1)   # (k N, D)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        probe = None if exact else torch.randint(0, 2, x0.shape, device=x0.device).to(x0) * 2 - 1
    nfe = 0

    def rhs(u, state):
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            xx = state[0].detach().requires_grad_(True)
            f = flow_drift(field, u, xx)
            return f.detach(), _divergence(f, xx, probe).detach()

    u = torch.tensor([math.log(field.sigmas[-1]), math.log(field.sigmas[0])], dtype=x0.dtype, device=x0.device)
    try:
        x_top, integral = (s[-1] for s in load_odeint()(rhs, (x0, x0.new_zeros(len(x0))), u, rtol=rtol, atol=atol,
                                                    method=method))
    finally:
        model.train(was)
    prior = torch.distributions.Normal(0.0, field.prior_std).log_prob(x_top).sum(-1)
    logp = (prior + integral).reshape(k, -1).double()
    se = logp.std(0) / math.sqrt(k) if k > 1 else torch.zeros_like(logp[0])
    shift = math.log(127.5) if model.is_image else 0.0
    bpd = (-float(logp.mean()) / D + shift) / LN2
    bpd_se = float(se.pow(2).sum().sqrt()) / len(se) / (D * LN2)
    return ODELikelihood(logp.mean(0).cpu(), se.cpu(), bpd, bpd_se, exact, nfe, k)

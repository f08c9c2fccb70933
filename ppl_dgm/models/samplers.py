"""Samplers shared by DDPM and score models: DDPM, DDIM, annealed Langevin, predictor-corrector, probability-flow ODE.

Course notes 000 ("Score Function, Langevin Dynamics, & Tweedie's Formula") and 002 §7 ("Score-based
model").  Every sampler returns a :class:`Trajectory` (samples + snapshots) for the trajectory picture.

**One view of both families.**  A score model perturbs data the variance-exploding (VE) way,
x_sigma = x_0 + sigma eps, and learns s_theta(x, sigma) ~ grad log p_sigma(x).  A DDPM perturbs it the
variance-preserving (VP) way, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho eq. 4); dividing by
sqrt(abar_t) turns it into the VE form

.. math::  \\bar x = x_t / \\sqrt{\\bar\\alpha_t} = x_0 + \\sigma_t \\epsilon, \\qquad
           \\sigma_t = \\sqrt{(1 - \\bar\\alpha_t) / \\bar\\alpha_t}, \\qquad \\bar\\alpha_t = 1 / (1 + \\sigma_t^2),

and the eps <-> score identity (Tweedie: E[eps | x_t] = -sqrt(1 - abar_t) grad log q(x_t)) gives

.. math::  \\nabla_{x_t} \\log q(x_t) = -\\frac{\\epsilon_\\theta(x_t, t)}{\\sqrt{1 - \\bar\\alpha_t}}, \\qquad
           \\nabla_{\\bar x} \\log p_{\\sigma_t}(\\bar x) = \\sqrt{\\bar\\alpha_t}\\,\\nabla_{x_t} \\log q(x_t)
           = -\\frac{\\epsilon_\\theta(x_t, t)}{\\sigma_t}.

So each family hands the samplers a :class:`ScoreField`: its score in the VE coordinates, its noise
ladder sigma_1 > ... > sigma_L and the law N(0, prior_std^2 I) at sigma_1 (sigma_max^2 for VE;
1 + sigma_T^2 = 1 / abar_T for VP, the image of x_T ~ N(0, I)).  Tweedie's formula (notes 000) is
:func:`denoise`: E[x_0 | x_sigma] = x_sigma + sigma^2 s(x_sigma, sigma).

Ancestral DDPM (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, eq. 12) keep their own
updates on the DDPM's chain (x-hat_0 clipped to [-1, 1] for images, sigma_t^2 = beta_t or beta-tilde_t):

.. math::  x_{\\tau_{i-1}} = \\sqrt{\\bar\\alpha_{\\tau_{i-1}}}\\, \\hat x_0
           + \\sqrt{1 - \\bar\\alpha_{\\tau_{i-1}} - \\sigma_i^2}\\, \\epsilon_\\theta(x_{\\tau_i}, \\tau_i)
           + \\sigma_i z,
           \\quad \\sigma_i = \\eta \\sqrt{\\frac{1-\\bar\\alpha_{\\tau_{i-1}}}{1-\\bar\\alpha_{\\tau_i}}}
           \\sqrt{1 - \\frac{\\bar\\alpha_{\\tau_i}}{\\bar\\alpha_{\\tau_{i-1}}}}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError, check_choice


@dataclass
class Trajectory:
    """Samples and snapshots of a sampler, in data space.

    Attributes
    ----------
    x : Tensor, shape (n, D)
        The samples.
    steps : list of int
        The step of each snapshot, first to last: t = T .. 0 for DDPM / DDIM; for the score samplers the
        number of noise levels still to go, L .. 0 (0: after the last level and Tweedie's denoising).
    xs : Tensor, shape (len(steps), n, D)
        The chain at those steps (images mapped back to [0, 1] for display).
    """

    x: torch.Tensor
    steps: list[int]
    xs: torch.Tensor


@dataclass(frozen=True)
class ScoreField:
    """A model in VE coordinates x_sigma = x_0 + sigma eps (module docstring): what the score samplers need.

    Attributes
    ----------
    model : GenerativeModel
        The family (gives ``x_dim``, ``is_image``, ``to_data_space``, ``device``).
    score : callable
        ``score(x, sigma)``: x (..., D), sigma a tensor broadcastable to x.shape[:-1]; returns (..., D).
    sigmas : Tensor, shape (L,)
        The noise ladder sigma_1 > ... > sigma_L (float64).
    prior_std : float
        x at sigma_1 is drawn from N(0, prior_std^2 I).
    """

    model: Any
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sigmas: torch.Tensor
    prior_std: float


def denoise(field: ScoreField, x: torch.Tensor, sigma) -> torch.Tensor:
    """Tweedie's formula (notes 000): E[x_0 | x_sigma = x] = x + sigma^2 s(x, sigma); x (..., D)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return x + sigma[..., None] ** 2 * field.score(x, sigma)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing), clamped to the ends."""
    i = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, len(xp) - 1)
    w = (x - xp[i - 1]) / (xp[i] - xp[i - 1])
    return fp[i - 1] + w.clamp(0, 1) * (fp[i] - fp[i - 1])


def vp_field(model) -> ScoreField:
    """A DDPM as a :class:`ScoreField`: sigma_t = sqrt((1 - abar_t) / abar_t), score -eps_theta(x_t, t) / sigma_t.

    Between the T steps, t is interpolated linearly in log sigma (the ODE asks for any sigma in
    [sigma_1, sigma_T]); the network gets a fractional t.
    """
    abar = model.schedule.alpha_bars[1:]
    log_sig = ((1 - abar) / abar).sqrt().log()                               # increasing in t = 1..T
    steps = torch.arange(1, model.timesteps + 1, dtype=log_sig.dtype, device=log_sig.device)

    def score(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        t = _interp(sigma.log().to(log_sig), log_sig, steps).to(x)
        x_t = x / (1 + sigma[..., None] ** 2).sqrt()                          # sqrt(abar) x-bar
        return -model.eps(x_t, t) / sigma[..., None]

    sigmas = log_sig.exp().flip(0)
    return ScoreField(model, score, sigmas, float((1 + sigmas[0] ** 2).sqrt()))


# -- the shared loop ------------------------------------------------------------------------
def _record_at(steps: list[int], record: int) -> set[int]:
    if record <= 1:
        return {steps[-1]}
    idx = torch.linspace(0, len(steps) - 1, min(record, len(steps))).round().long().tolist()
    return {steps[i] for i in idx}


def _batches(n: int, model) -> list[int]:
    size = 256 if model.is_image else 8192
    return [min(size, n - i) for i in range(0, n, size)]


def _run(model, n: int, taus: list[int], update, record: int, std: float = 1.0) -> Trajectory:
    """Start at x ~ N(0, std^2 I) and apply ``update(x, t, t_prev)`` along taus (descending, then 0)."""
    dev, dtype = model.device, next(model.parameters()).dtype
    chain = [taus[0]] + [p for _, p in zip(taus, taus[1:] + [0])]
    keep = _record_at(chain, record)
    outs, snaps = [], []
    for m in _batches(n, model):
        x = std * torch.randn(m, model.x_dim, device=dev, dtype=dtype)
        shots = [model.to_data_space(x)] if taus[0] in keep else []
        for t, t_prev in zip(taus, taus[1:] + [0]):
            x = update(x, t, t_prev)
            if t_prev in keep:
                shots.append(model.to_data_space(x))
        outs.append(model.to_data_space(x))
        snaps.append(torch.stack(shots))
    steps = [s for s in chain if s in keep]
    return Trajectory(torch.cat(outs), sorted(set(steps), reverse=True), torch.cat(snaps, 1))


def in_batches(model, n: int, draw_rows: Callable[[slice], Trajectory]) -> Trajectory:
    """``draw_rows(rows)`` for each batch of the n rows (rows carrying their own labels or measurements),
    concatenated into one :class:`Trajectory`."""
    parts, start = [], 0
    for m in _batches(n, model):
        parts.append(draw_rows(slice(start, start + m)))
        start += m
    return Trajectory(torch.cat([p.x for p in parts]), parts[0].steps, torch.cat([p.xs for p in parts], 1))


def _check_positive(name: str, value, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)) or not value > 0:
        raise InputError(f"{name} must be a positive {'integer' if integer else 'number'}; got {value!r}")


# -- DDPM's own chain ---------------------------------------------------------------------------
def _x0_hat(model, x, t, eps):
    x0 = model.schedule.predict_x0(x, t, eps)
    return x0.clamp(-1, 1) if model.is_image else x0


@torch.no_grad()
def ddpm_sample(model, n: int, *, record: int = 10) -> Trajectory:
    """Ancestral sampling through all T steps of a DDPM's p_theta (Algorithm 2); ``record`` snapshots kept."""
    s = model.schedule

    def update(x, t, t_prev):
        tt = torch.full(x.shape[:-1], t, device=x.device, dtype=torch.long)
        eps = model.eps(x, tt)
        mean, _ = s.q_posterior(x, _x0_hat(model, x, tt, eps), tt)
        if t == 1:
            return mean
        return mean + model.p_var(tt, x).sqrt() * torch.randn_like(x)

    return _run(model, n, list(range(model.timesteps, 0, -1)), update, record)


@torch.no_grad()
def ddim_sample(model, n: int, *, steps: int = 50, eta: float = 0.0, record: int = 10) -> Trajectory:
    """DDIM with ``steps`` evenly spaced steps and stochasticity ``eta`` (0: deterministic; 1: DDPM-like)."""
    T = model.timesteps
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise InputError(f"steps must be an integer in 1..{T} (the model's timesteps); got {steps!r}")
    if not 0.0 <= eta <= 1.0:
        raise InputError(f"eta must be in [0, 1]; got {eta}")
    taus = sorted(set(torch.linspace(1, T, steps).round().long().tolist()), reverse=True)
    s = model.schedule

    def update(x, t, t_prev):
        tt = torch.full(x.shape[:-1], t, device=x.device, dtype=torch.long)
        eps = model.eps(x, tt)
        x0 = _x0_hat(model, x, tt, eps)
        eps = s.eps_from_x0(x, tt, x0)                       # consistent with a clipped x0
        ab, ab_prev = s.at("alpha_bars", tt, x), s.at("alpha_bars", t_prev, x)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
        return x + sigma * torch.randn_like(x) if eta > 0 else x

    return _run(model, n, taus, update, record)


# -- score samplers (any ScoreField) ---------------------------------------------------------
def _langevin(field: ScoreField, x: torch.Tensor, sigma: torch.Tensor, alpha: torch.Tensor, steps: int):
    """``steps`` Langevin moves at level sigma: x <- x + alpha/2 s(x, sigma) + sqrt(alpha) z."""
    for _ in range(steps):
        x = x + alpha / 2 * field.score(x, sigma) + alpha.sqrt() * torch.randn_like(x)
    return x


def _level_loop(field: ScoreField, n: int, record: int, level_update) -> Trajectory:
    """Run ``level_update(x, i)`` for the levels i = 0..L-1 of the ladder; snapshot steps are levels to go."""
    L = len(field.sigmas)
    return _run(field.model, n, list(range(L, 0, -1)), lambda x, t, _: level_update(x, L - t), record,
                field.prior_std)


def _sigma(field: ScoreField, i: int, like: torch.Tensor) -> torch.Tensor:
    """sigma_{i+1} of the ladder (0 past its end), a 0-dim tensor in ``like``'s dtype/device."""
    s = field.sigmas[i] if i < len(field.sigmas) else 0.0
    return torch.as_tensor(s, dtype=like.dtype, device=like.device)


@torch.no_grad()
def langevin_sample(field: ScoreField, n: int, *, steps: int = 10, step_size: float | None = None,
                    denoise_last: bool = True, record: int = 10) -> Trajectory:
    """Annealed Langevin dynamics (notes 000, "Lagevin Dy for s steps using sigma_k^2"; Song & Ermon 2019, Alg. 1).

    For i = 1..L: alpha_i = eps sigma_i^2 / sigma_L^2 and ``steps`` (M) times
    x <- x + alpha_i / 2 s(x, sigma_i) + sqrt(alpha_i) z, z ~ N(0, I); starting from x ~ N(0, prior_std^2 I).

    Parameters
    ----------
    field : ScoreField
    n : int
    steps : int
        M, Langevin steps per noise level.
    step_size : float, optional
        eps; default 0.2 sigma_L^2 (Song & Ermon's 2e-5 for sigma_L = 0.01).
    denoise_last : bool
        End with Tweedie's E[x_0 | x] at sigma_L (the notes' De_theta), which removes the last level's noise.
    record : int
        Snapshots kept (after each of about ``record`` evenly spaced levels).
    """
    _check_positive("steps", steps, integer=True)
    sig_L = float(field.sigmas[-1])
    eps = 0.2 * sig_L**2 if step_size is None else step_size
    _check_positive("step_size", eps)
    L = len(field.sigmas)

    def level(x, i):
        sigma = _sigma(field, i, x)
        x = _langevin(field, x, sigma, eps * sigma**2 / sig_L**2, steps)
        return denoise(field, x, sigma) if denoise_last and i == L - 1 else x

    return _level_loop(field, n, record, level)


@torch.no_grad()
def pc_sample(field: ScoreField, n: int, *, steps: int = 1, step_size: float | None = None,
              record: int = 10) -> Trajectory:
    """Predictor-corrector sampling (Song et al. 2021, Alg. 2 with the ancestral predictor of their eq. 47).

    At each level sigma_i, ``steps`` Langevin corrector moves (alpha_i = eps sigma_i^2 / sigma_L^2, as in
    :func:`langevin_sample`), then the reverse-diffusion (ancestral) predictor to sigma_{i+1}:

    .. math::  x \\leftarrow x + (\\sigma_i^2 - \\sigma_{i+1}^2)\\, s(x, \\sigma_i)
               + \\sqrt{\\sigma_{i+1}^2 (\\sigma_i^2 - \\sigma_{i+1}^2) / \\sigma_i^2}\\; z,

    the mean and variance of p(x_{sigma_{i+1}} | x_{sigma_i}) for Gaussian steps.  With sigma_{L+1} = 0 the
    last predictor step is Tweedie's denoiser.  For a DDPM ladder this predictor is ancestral DDPM with
    sigma_t^2 = beta-tilde_t, written in x-bar = x_t / sqrt(abar_t).

    Parameters
    ----------
    steps : int
        Corrector steps per level (0: the predictor alone).
    step_size : float, optional
        eps of the corrector; default 0.05 sigma_L^2.
    """
    if not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a non-negative integer; got {steps!r}")
    sig_L = float(field.sigmas[-1])
    eps = 0.05 * sig_L**2 if step_size is None else step_size
    _check_positive("step_size", eps)

    def level(x, i):
        s_i, s_next = _sigma(field, i, x), _sigma(field, i + 1, x)
        x = _langevin(field, x, s_i, eps * s_i**2 / sig_L**2, steps)
        gap = s_i**2 - s_next**2
        return x + gap * field.score(x, s_i) + (s_next**2 * gap / s_i**2).sqrt() * torch.randn_like(x)

    return _level_loop(field, n, record, level)


def load_odeint():
    try:
        from torchdiffeq import odeint
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("the probability-flow ODE needs torchdiffeq: pip install torchdiffeq") from None
    return odeint


def flow_drift(field: ScoreField, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE in u = log sigma: dx/du = -sigma^2 s(x, sigma) (Song et al. 2021, eq. 13 for VE,
    dx/dsigma = -sigma s, times dsigma/du = sigma)."""
    sigma = u.exp().to(x)
    return -sigma**2 * field.score(x, sigma)


@torch.no_grad()
def ode_sample(field: ScoreField, n: int, *, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
               denoise_last: bool = True, record: int = 10) -> Trajectory:
    """Probability-flow ODE from x ~ N(0, prior_std^2 I) at sigma_1 to sigma_L, solved by ``torchdiffeq.odeint``.

    Deterministic given the start; ``rtol`` / ``atol`` are the adaptive solver's tolerances.  Ends with
    Tweedie's denoiser at sigma_L when ``denoise_last``.  Snapshots are taken at ``record`` points evenly
    spaced in log sigma, labelled with the levels to go (rounded).
    """
    _check_positive("rtol", rtol)
    _check_positive("atol", atol)
    model, L = field.model, len(field.sigmas)
    dtype = next(model.parameters()).dtype
    u = torch.linspace(math.log(field.sigmas[0]), math.log(field.sigmas[-1]), max(record, 2), dtype=dtype,
                       device=model.device)
    odeint = load_odeint()
    outs, snaps = [], []
    for m in _batches(n, model):
        x = field.prior_std * torch.randn(m, model.x_dim, device=model.device, dtype=dtype)
        path = odeint(lambda uu, xx: flow_drift(field, uu, xx), x, u, rtol=rtol, atol=atol, method=method)
        x = denoise(field, path[-1], u[-1].exp()) if denoise_last else path[-1]
        outs.append(model.to_data_space(x))
        snaps.append(torch.stack([model.to_data_space(p) for p in path[:-1]] + [outs[-1]]))
    steps = [round(L * (1 - k / (len(u) - 1))) for k in range(len(u))]
    xs = torch.cat(snaps, 1)
    if record <= 1:
        steps, xs = steps[-1:], xs[-1:]
    return Trajectory(torch.cat(outs), steps, xs)


SCORE_SAMPLERS = {"langevin": langevin_sample, "pc": pc_sample, "ode": ode_sample}
"""The samplers that take a :class:`ScoreField` (every model with ``score_field()``)."""


@torch.no_grad()
def draw(model, n: int, sampler: str, *, record: int = 10, y=None, guidance: float = 0.0, classifier=None,
         **kw) -> Trajectory:
    """Run ``sampler`` (one of ``model.samplers``) on ``model`` in eval mode; ``kw`` go to the sampler.

    "ddpm" and "ddim" run a DDPM's chain; "langevin", "pc" and "ode" its (or a score model's)
    :class:`ScoreField`.  ``y`` (an int, or (n,) labels) and ``guidance`` w: a conditional model's
    labels and classifier-free guidance weight (its ``conditioned(y, w)``), or with a ``classifier`` the weight
    of classifier guidance; the draws go in batches, each with its own rows of ``y``.
    """
    check_choice("sampler", sampler, model.samplers)
    _check_positive("n", n, integer=True)
    if y is None and guidance:
        raise InputError("guidance needs labels y (sample --label); got none")

    def run(m: int):
        if sampler in SCORE_SAMPLERS:
            return SCORE_SAMPLERS[sampler](model.score_field(), m, record=record, **kw)
        return {"ddpm": ddpm_sample, "ddim": ddim_sample}[sampler](model, m, record=record, **kw)

    was = model.training
    model.eval()
    try:
        if y is None:
            return run(n)
        labels = model.labels(y, n, classifier)
        if labels.shape != (n,):
            raise InputError(f"expected {n} labels (one per draw) or one; got shape {tuple(labels.shape)}")

        def rows(r: slice) -> Trajectory:
            with model.conditioned(labels[r], guidance, classifier):
                return run(r.stop - r.start)

        return in_batches(model, n, rows)
    finally:
        model.train(was)

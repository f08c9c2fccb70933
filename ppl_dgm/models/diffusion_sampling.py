"""Samplers for :class:`~ppl_dgm.models.diffusion.DDPM`: ancestral DDPM and DDIM, batched, on the model's device.

Ancestral sampling runs the model's chain (Ho et al. 2020, Algorithm 2):
x_T ~ N(0, I), x_{t-1} = mu_theta(x_t, t) + sigma_t z for t = T..2, and the noiseless mean
mu_theta(x_1, 1) at the end.  DDIM (Song et al. 2021, eq. 12) takes S < T steps tau_S > ... > tau_1:

.. math::  x_{\\tau_{i-1}} = \\sqrt{\\bar\\alpha_{\\tau_{i-1}}}\\,
           \\hat x_0
           + \\sqrt{1 - \\bar\\alpha_{\\tau_{i-1}} - \\sigma_i^2}\\,
           \\epsilon_\\theta(x_{\\tau_i}, \\tau_i) + \\sigma_i z,
           \\quad \\sigma_i = \\eta \\sqrt{\\frac{1-\\bar\\alpha_{\\tau_{i-1}}}{1-\\bar\\alpha_{\\tau_i}}}
           \\sqrt{1 - \\frac{\\bar\\alpha_{\\tau_i}}{\\bar\\alpha_{\\tau_{i-1}}}}

with x-hat_0 = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t) (eq. 4 solved for x_0) and abar_0 = 1.
For images x-hat_0 is clipped to [-1, 1] (the data range) and the mean is taken as
mu-tilde_t(x_t, x-hat_0), which equals eq. 11 when nothing is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass
class Trajectory:
    """Samples and snapshots of the reverse chain, in data space.

    Attributes
    ----------
    x : Tensor, shape (n, D)
        The samples.
    steps : list of int
        The step t of each snapshot (T first, 0 last).
    xs : Tensor, shape (len(steps), n, D)
        x_t at those steps (images mapped back to [0, 1] for display).
    """

    x: torch.Tensor
    steps: list[int]
    xs: torch.Tensor


def _record_at(steps: list[int], record: int) -> set[int]:
    if record <= 1:
        return {steps[-1]}
    idx = torch.linspace(0, len(steps) - 1, min(record, len(steps))).round().long().tolist()
    return {steps[i] for i in idx}


def _batches(n: int, model) -> list[int]:
    size = 256 if model.is_image else 8192
    return [min(size, n - i) for i in range(0, n, size)]


def _x0_hat(model, x, t, eps):
    x0 = model.schedule.predict_x0(x, t, eps)
    return x0.clamp(-1, 1) if model.is_image else x0


def _run(model, n, taus, update, record) -> Trajectory:
    """Shared loop: start at x_T ~ N(0, I) and apply ``update(x, t, t_prev)`` along taus (descending)."""
    dev, dtype = model.device, next(model.parameters()).dtype
    chain = [taus[0]] + [p for _, p in zip(taus, taus[1:] + [0])]
    keep = _record_at(chain, record)
    outs, snaps = [], []
    for m in _batches(n, model):
        x = torch.randn(m, model.x_dim, device=dev, dtype=dtype)
        shots = [model.to_data_space(x)] if taus[0] in keep else []
        for t, t_prev in zip(taus, taus[1:] + [0]):
            x = update(x, t, t_prev)
            if t_prev in keep:
                shots.append(model.to_data_space(x))
        outs.append(model.to_data_space(x))
        snaps.append(torch.stack(shots))
    steps = [s for s in chain if s in keep]
    return Trajectory(torch.cat(outs), sorted(set(steps), reverse=True), torch.cat(snaps, 1))


@torch.no_grad()
def ddpm_sample(model, n: int, *, record: int = 10) -> Trajectory:
    """Ancestral sampling through all T steps of p_theta (Algorithm 2); ``record`` snapshots kept."""
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

"""The noise schedule of a diffusion model: a table of numbers, no network inside.

Notation of the notes (004, "Forward diffusion process"; 002 §6): for t = 1..T

.. math::  q(x_t \\mid x_{t-1}) = \\mathcal N(\\sqrt{1-\\beta_t}\\, x_{t-1}, \\beta_t I), \\quad
           \\alpha_t = 1 - \\beta_t, \\quad \\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s

so that (notes 002 §6 "key!"; Ho et al. 2020 eq. 4)

.. math::  q(x_t \\mid x_0) = \\mathcal N(\\sqrt{\\bar\\alpha_t}\\, x_0, (1 - \\bar\\alpha_t) I)

and the posterior of one step back (notes 004, "Reverse diffusion process"; Ho eqs. 6-7)

.. math::  q(x_{t-1} \\mid x_t, x_0) = \\mathcal N(\\tilde\\mu_t, \\tilde\\beta_t I), \\quad
           \\tilde\\beta_t = \\frac{1-\\bar\\alpha_{t-1}}{1-\\bar\\alpha_t}\\beta_t, \\quad
           \\tilde\\mu_t = \\frac{\\sqrt{\\alpha_t}(1-\\bar\\alpha_{t-1})}{1-\\bar\\alpha_t} x_t
                        + \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\beta_t}{1-\\bar\\alpha_t} x_0 .

Tables are computed in float64 and indexed by t = 0..T with beta_0 = 0 and
alpha-bar_0 = 1 (so x_0 is the data).  They are buffers (they follow ``.to(device)``)
and every lookup is cast to the dtype and device of the tensor it is combined with.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..errors import InputError, check_choice
from .base import recording

SCHEDULES = ("linear", "cosine")


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_1..beta_T evenly spaced (Ho et al. 2020, §4), rescaled so T = 1000 gives the paper's values.

    Returns a float64 tensor of shape (T,).
    """
    scale = 1000.0 / timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha-bar_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17).

    Returns beta_t = 1 - alpha-bar_t / alpha-bar_{t-1}, clipped at ``max_beta``; float64, shape (T,).
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(min=0.0, max=max_beta)


class NoiseSchedule(nn.Module):
    """beta_t, alpha_t, alpha-bar_t and the closed forms built from them.

    Parameters
    ----------
    timesteps : int
        T, the length of the chain.
    kind : {"linear", "cosine"}
    beta_start, beta_end : float
        End points of the linear schedule (for T = 1000; rescaled by 1000/T).

    Notes
    -----
    Every method takes integer steps ``t`` (a tensor of values in 0..T, any shape
    broadcastable against the leading dimensions of ``x``) and returns tensors in
    ``x``'s dtype and device.  No method changes the tables.
    """

    def __init__(self, timesteps: int = 1000, kind: Literal["linear", "cosine"] = "linear",
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        check_choice("schedule", kind, SCHEDULES)
        if not isinstance(timesteps, int) or timesteps < 1:
            raise InputError(f"timesteps must be a positive integer; got {timesteps!r}")
        if not 0 < beta_start <= beta_end < 1:
            raise InputError(f"expected 0 < beta_start <= beta_end < 1; got {beta_start}, {beta_end}")
        self.timesteps, self.kind = timesteps, kind
        b = linear_betas(timesteps, beta_start, beta_end) if kind == "linear" else cosine_betas(timesteps)
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), b])          # index t = 0..T
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        beta_tilde = torch.zeros_like(betas)
        beta_tilde[1:] = (1 - abar_prev[1:]) / (1 - abar[1:]) * betas[1:]   # notes 004; zero at t = 1
        tables = {
            "betas": betas, "alphas": alphas, "alpha_bars": abar, "alpha_bars_prev": abar_prev,
            "beta_tildes": beta_tilde,
            # posterior mean coefficients of x_0 and x_t (notes 004, mu-tilde)
            "post_coef_x0": torch.cat([torch.ones(1, dtype=torch.float64),
                                       abar_prev[1:].sqrt() * betas[1:] / (1 - abar[1:])]),
            "post_coef_xt": torch.cat([torch.zeros(1, dtype=torch.float64),
                                       alphas[1:].sqrt() * (1 - abar_prev[1:]) / (1 - abar[1:])]),
        }
        for name, value in tables.items():
            self.register_buffer(name, value, persistent=False)
        self._checked: tuple[torch.Tensor, int] | None = None  # the last steps checked, with their version
        self._cast: dict[tuple, torch.Tensor] = {}                 # (name, dtype, device) -> table rounded once

    # -- lookup -------------------------------------------------------------------------
    def steps(self, t: torch.Tensor | int) -> torch.Tensor:
        """``t`` as a long tensor, checked to lie in 0..T (``InputError`` otherwise).

        Every lookup goes through here, so a caller's steps are checked wherever they enter.  Reading a tensor's
        range costs a host sync (a stall on a GPU), so the check is remembered for the last tensor checked while it
        is unchanged (same object, same version): the model's k steps are looked up ~15 times per training step
        and checked once.  A Python int is checked without a tensor op; while a step is recorded as a graph
        (:mod:`ppl_dgm.inference.compiled`) values cannot be read and the steps come from the model's plate.
        """
        if isinstance(t, int):
            if not 0 <= t <= self.timesteps:
                raise InputError(f"expected steps t in 0..{self.timesteps}; got {t}")
            return torch.tensor(int(t), device=self.betas.device)
        last = self._checked
        if last is not None and last[0] is t and last[1] == t._version:
            return t
        if not (isinstance(t, torch.Tensor) and t.dtype == torch.long):
            t = torch.as_tensor(t, device=self.betas.device, dtype=torch.long)
        if not t.numel() or recording():
            return t
        lo, hi = torch.aminmax(t)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi > self.timesteps:
            raise InputError(f"expected steps t in 0..{self.timesteps}; got values in {lo}..{hi}")
        if not t.is_inference():  # (inference tensors have no version counter: checked every time)
            self._checked = (t, t._version)
        return t

    def table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Table ``name``, shape (T + 1,), in ``like``'s dtype and device.

        Computed in float64 and rounded once per dtype and device, then kept (the tables never change): a lookup is
        then one gather, not a gather and a cast (a kernel launch each on a GPU, ~60 per DDPM step)."""
        if recording():  # from the buffer, an input of the graph
            return getattr(self, name).to(device=like.device, dtype=like.dtype)
        key = (name, like.dtype, like.device)
        cast = self._cast.get(key)
        if cast is None:
            cast = self._cast[key] = getattr(self, name).to(device=like.device, dtype=like.dtype)
        return cast

    def at(self, name: str, t: torch.Tensor | int, like: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """Table ``name`` at steps ``t``, shaped ``t.shape + (1,) * event_dims``, in ``like``'s dtype/device."""
        t = self.steps(t)
        table = self.table(name, like)
        v = torch.take(table, t if t.device == table.device else t.to(table.device))   # shaped like t
        return v.view(*t.shape, *(1,) * event_dims) if event_dims else v

    # -- closed forms ---------------------------------------------------------------------
    def q_mean_std(self, x0: torch.Tensor, t, event_dims: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean sqrt(abar_t) x_0 and std sqrt(1 - abar_t) of q(x_t | x_0) (Ho eq. 4).

        x0 : (..., D) with ``t`` broadcasting against the leading dims; returns (mean, std).
        """
        abar = self.at("alpha_bars", t, x0, event_dims)
        return abar.sqrt() * x0, (1 - abar).sqrt()

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (the reparameterised draw of q(x_t | x_0))."""
        mean, std = self.q_mean_std(x0, t, event_dims)
        return mean + std * eps

    def q_posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t, event_dims: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mu-tilde_t(x_t, x_0) and beta-tilde_t of q(x_{t-1} | x_t, x_0) (notes 004; Ho eqs. 6-7).

        Returns (mean of shape broadcast(x_t, x0), variance of shape t.shape + (1,) * event_dims).
        At t = 1 the variance is 0 (x_{t-1} = x_0 is known).
        """
        mean = self.at("post_coef_xt", t, x_t, event_dims) * x_t + self.at("post_coef_x0", t, x_t, event_dims) * x0
        return mean, self.at("beta_tildes", t, x_t, event_dims)

    def predict_x0(self, x_t: torch.Tensor, t, eps: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): Ho eq. 4 solved for x_0."""
        abar = self.at("alpha_bars", t, x_t, event_dims)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_x0(self, x_t: torch.Tensor, t, x0: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t) (the inverse of :meth:`predict_x0`)."""
        abar = self.at("alpha_bars", t, x_t, event_dims)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, kind={self.kind!r}"

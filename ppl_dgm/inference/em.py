"""One EM loop for every latent-variable family (course notes, EM section).

EM is coordinate ascent on the ELBO

    L(theta) = log p(x | theta) >= E_q[log p(x, c | theta)] - E_q[log q(c)],

with equality when ``q(c) = p(c | x, theta^(t))`` (the E-step).  The M-step
maximises ``Q(theta | theta^(t)) = E_q[log p(x, c | theta)]`` in closed form, so
the log-likelihood never decreases.

A family plugs in through small hooks (as scikit-learn's ``BaseMixture`` does):

``prepare(x) -> data``
    per-point statistics computed once (the data never change during a fit);
``initialize(data, generator) -> params``
    starting parameters for one restart;
``e_step(params, data) -> EStep``
    the mean log-likelihood per sample under ``params`` and the expected
    sufficient statistics under the exact posterior (accumulated over chunks);
``m_step(estep, data) -> params``
    the closed-form maximiser of ``Q``;
``monotone_slack(params) -> float``
    how much a per-sample decrease may come from round-off or regularisation.

The lower bound reported per iteration is the mean log-likelihood under the
parameters *before* that iteration's M-step, as in scikit-learn
(``lower_bounds_``), so a family checked against it matches number for number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyro
import torch
from torch import Tensor

from ..errors import InputError
from ..models.base import EStep

#: a later restart replaces the kept one only if its final log-likelihood is higher by more than this (relative;
#: at least 1000 eps of the data's dtype): restarts that reach the same optimum (often with permuted components)
#: differ by round-off only, which changes with the order of the sums (chunks, ranks), so the first is kept
TIE = 1e-11


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the change in log-likelihood fell below ``tol``."""


class EMFamily(Protocol):
    """The hooks a family provides to :func:`fit_em` (see the module docstring)."""

    def prepare(self, x: Tensor) -> Any: ...

    def initialize(self, data: Any, generator: torch.Generator) -> Any: ...

    def e_step(self, params: Any, data: Any) -> EStep: ...

    def m_step(self, estep: EStep, data: Any) -> Any: ...

    def monotone_slack(self, params: Any) -> float: ...


@dataclass
class EMResult:
    """What :func:`fit_em` returns.

    Attributes
    ----------
    params : Any
        Parameters after the last M-step of the best restart.
    lower_bound : float
        Final mean log-likelihood per sample of the best restart (last history entry).
    history : list of float
        Mean log-likelihood per sample at every iteration of the best restart.
    converged : bool
    n_iter : int
    best_init : int
        Index of the restart kept.
    histories : list of list of float
        One history per restart.
    elbo_gaps : list of float or None
        ``ELBO - log-likelihood`` (per sample) after each E-step, if requested.
    """

    params: Any
    lower_bound: float
    history: list[float]
    converged: bool
    n_iter: int
    best_init: int = 0
    histories: list[list[float]] = field(default_factory=list)
    elbo_gaps: list[float] | None = None


def fit_em(
    family: EMFamily,
    x: Tensor,
    *,
    n_init: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    init: Any | None = None,
    check_monotone: bool = True,
    elbo_check: Callable[[Any], float] | None = None,
    warn: bool = True,
) -> EMResult:
    """Fit ``family`` to ``x`` by EM with restarts.

    (Longer than 60 lines only through this docstring; one restart's iterations are in ``_em_restart``.)

    Parameters
    ----------
    family : EMFamily
        Provides the hooks (module docstring).  A sharded family (``GMMFamily(shards=...)``)
        sums its statistics over ranks inside ``prepare``/``initialize``/``e_step``, so every
        rank sees the same numbers and runs this loop unchanged, stopping at the same iteration.
    x : Tensor, shape (N, D)
        Data (this rank's rows when sharded); its device and dtype are used throughout.
    n_init : int
        Restarts; the one with the largest final log-likelihood is kept (the first of those
        within round-off of each other: ``TIE`` relative in float64, ``1000 eps`` in float32).
    tol : float
        Stop when ``|L_t - L_{t-1}| < tol`` (per-sample log-likelihood).
    max_iter : int
        Maximum EM iterations per restart.
    seed : int
        Seeds the generator passed to ``family.initialize``.
    init : optional
        Given initial parameters (then every restart would be identical, so one is run).
    check_monotone : bool
        Raise ``RuntimeError`` if ``L_t < L_{t-1} - slack`` (slack from the family:
        round-off plus the effect of ``reg_covar``).
    elbo_check : callable, optional
        ``params -> ELBO - log-likelihood`` evaluated right after each E-step
        (e.g. ``GMMFamily.elbo_gap``, built on :func:`pyro_elbo`); recorded in ``elbo_gaps``.
    warn : bool
        Emit :class:`ConvergenceWarning` if the kept restart did not converge.

    Returns
    -------
    EMResult
    """
    if not isinstance(n_init, int) or n_init < 1:
        raise InputError(f"expected n_init >= 1; got {n_init!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise InputError(f"expected max_iter >= 1; got {max_iter!r}")
    if not tol >= 0:
        raise InputError(f"expected tol >= 0; got {tol!r}")
    tie = max(TIE, 1000 * torch.finfo(x.dtype).eps) if x.dtype.is_floating_point else TIE
    data = family.prepare(x)
    generator = torch.Generator().manual_seed(int(seed))
    best: EMResult | None = None
    histories: list[list[float]] = []
    for restart in range(1 if init is not None else n_init):
        params = init if init is not None else family.initialize(data, generator)
        result = _em_restart(family, data, params, tol, max_iter, check_monotone, elbo_check)
        histories.append(result.history)
        if best is None or result.lower_bound > best.lower_bound + tie * abs(best.lower_bound):
            best = result
            best.best_init = restart
    assert best is not None  # n_init >= 1 checked above
    best.histories = histories
    if warn and not best.converged:
        warnings.warn(
            f"EM did not converge in max_iter={max_iter} iterations (last change "
            f"{best.history[-1] - best.history[-2] if len(best.history) > 1 else float('nan'):.3g}"
            f" >= tol={tol}); increase max_iter or tol, or try other init parameters",
            ConvergenceWarning,
            stacklevel=2,
        )
    return best


def _em_restart(family: EMFamily, data: Any, params: Any, tol: float, max_iter: int, check_monotone: bool,
                elbo_check: Callable[[Any], float] | None) -> EMResult:
    """EM iterations from ``params`` until the log-likelihood changes by less than ``tol`` (one restart)."""
    history: list[float] = []
    gaps: list[float] | None = [] if elbo_check is not None else None
    converged = False
    for it in range(1, max_iter + 1):
        estep = family.e_step(params, data)
        ll = float(estep.log_likelihood)
        if gaps is not None:
            gaps.append(float(elbo_check(params)))
        if check_monotone and history:
            slack = family.monotone_slack(params)
            if ll < history[-1] - slack:
                raise RuntimeError(
                    f"EM log-likelihood decreased at iteration {it}: {history[-1]!r} -> "
                    f"{ll!r} (allowed round-off {slack:.3g}); this is a bug, please report"
                )
        params = family.m_step(estep, data)
        change = ll - history[-1] if history else float("inf")
        history.append(ll)
        if abs(change) < tol:
            converged = True
            break
    return EMResult(params, history[-1], history, converged, len(history), elbo_gaps=gaps)


def pyro_elbo(model: Callable, guide: Callable, x: Tensor, *, enumerate_guide: bool = True,
              num_particles: int = 1) -> float:
    """The ELBO of ``(model, guide)`` on ``x`` computed from Pyro traces, summed over the data.

    With a discrete guide (``enumerate_guide=True``) ``TraceEnum_ELBO`` sums over
    every value of the guide's enumerated sites, so the ELBO is exact; otherwise
    ``Trace_ELBO`` is used (exact too when the guide is the exact posterior,
    since ``log p(x, z) - log q(z | x) = log p(x)`` for every draw of ``z``).
    After an E-step (guide = exact posterior) this equals ``sum_n log p(x_n)``
    (course notes, EM section: the bound is tight when ``q = p(c | x, theta)``).

    Parameters
    ----------
    model, guide : callable
        Pyro programs taking ``x``.
    x : Tensor, shape (N, D)

    Returns
    -------
    float
        ``E_q[log p(x, z) - log q(z)]`` summed over the N points.
    """
    if enumerate_guide:
        elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles)
    else:
        elbo = pyro.infer.Trace_ELBO(num_particles=num_particles)
    with torch.no_grad():
        return -float(elbo.loss(model, guide, x))

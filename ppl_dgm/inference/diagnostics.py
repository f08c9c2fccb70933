"""Diagnostics read from Pyro traces, for any model–guide pair.

:func:`elbo_terms` takes the ELBO apart site by site (notes 002, ELBO eq. (*)):

.. math::  \\mathrm{ELBO} = \\sum_{\\text{observed } s} E_q[\\log p(x_s \\mid \\cdot)]
           - \\sum_{\\text{latent } s} \\mathrm{KL}(q_s \\,\\|\\, p_s)

where each KL is analytic when torch/Pyro know it for the pair of
distributions and a Monte Carlo estimate E_q[log q - log p] otherwise; analytic
KLs between ``Independent`` distributions are also split per latent dimension
(:func:`site_kl_per_dim`).  Derived diagnostics (active units, collapse, the
ELBO–IWAE gap, gradient SNR, convergence) are in :mod:`.diagnostics_derived`.
:func:`find_nonfinite` names the sites (and parameters) where values or
log-densities stop being finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions.kl  # noqa: F401  (registers Pyro's KL pairs, e.g. Independent)
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import Independent, kl_divergence

from ..errors import check_positive_int
from .traces import plate_size, sample_sites, scaled_log_prob, trace_pair


@dataclass
class ElboTerms:
    """Per-example ELBO terms (nats), averaged over particles.

    Attributes
    ----------
    elbo : float
        ``reconstruction - kl``.
    reconstruction : float
        Sum over observed sites of E_q[log p(x_s | ...)].
    kl : float
        Sum over latent sites of KL(q_s || p_s).
    log_likelihood, kl_sites : dict[str, float]
        The same per site.
    analytic : dict[str, bool]
        Whether each site's KL was computed in closed form.
    n : int
        Number of examples (size of the ``"data"`` plate; 1 if there is none).
    kl_per_dim : dict[str, list[float]]
        For each latent site with an analytic KL between ``Independent`` distributions
        (e.g. ``Normal(loc, scale).to_event(1)`` with event shape (K,)): the KL of each
        latent dimension, per example, flattened over the event shape (length K).
        ``sum(kl_per_dim[s]) == kl_sites[s]``.
    """

    elbo: float
    reconstruction: float
    kl: float
    log_likelihood: dict[str, float] = field(default_factory=dict)
    kl_sites: dict[str, float] = field(default_factory=dict)
    analytic: dict[str, bool] = field(default_factory=dict)
    n: int = 1
    kl_per_dim: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"elbo": self.elbo, "reconstruction": self.reconstruction, "kl": self.kl,
                "log_likelihood_sites": self.log_likelihood, "kl_sites": self.kl_sites,
                "kl_analytic": self.analytic, "n": self.n, "kl_per_dim": self.kl_per_dim}


def site_kl(q_site, p_site) -> tuple[torch.Tensor, bool]:
    """KL(q || p) of one latent site, summed over its batch (and plate scale); analytic if possible.

    A guide site marked ``infer={"analytic_kl": False}`` gets the Monte Carlo term: needed when the
    model's parents of the site are the guide's descendants of it (e.g. a Markovian HVAE's z_l).
    """
    try:
        if (q_site.get("infer") or {}).get("analytic_kl") is False:
            raise NotImplementedError
        kl = kl_divergence(q_site["fn"], p_site["fn"])
        if kl.shape != q_site["fn"].batch_shape:
            raise NotImplementedError
        return scale_and_mask(kl, p_site["scale"], p_site["mask"]).sum(), True
    except NotImplementedError:
        value = q_site["value"]
        log_ratio = q_site["fn"].log_prob(value) - p_site["fn"].log_prob(value)
        return scale_and_mask(log_ratio, p_site["scale"], p_site["mask"]).sum(), False


def site_kl_per_dim(q_site, p_site) -> torch.Tensor | None:
    """KL(q || p) of one latent site per event element, summed over its batch: shape (prod(event_shape),).

    Only for pairs that are both ``Independent`` (``.to_event``) with an analytic KL between
    their base distributions; ``None`` otherwise.  Summing the result gives :func:`site_kl`.
    """
    q, p = q_site["fn"], p_site["fn"]
    event_shape = q.event_shape
    if not event_shape or q.event_shape != p.event_shape:
        return None
    while isinstance(q, Independent) and isinstance(p, Independent):
        if q.reinterpreted_batch_ndims != p.reinterpreted_batch_ndims:
            return None
        q, p = q.base_dist, p.base_dist
    try:
        kl = kl_divergence(q, p).expand(q_site["fn"].batch_shape + event_shape)
    except (NotImplementedError, RuntimeError):
        return None
    k = len(event_shape)
    kl = kl.reshape(kl.shape[: kl.dim() - k] + (-1,))
    scale, mask = p_site["scale"], p_site["mask"]
    if mask is not None and mask is not True and mask is not False:
        kl = kl * mask.unsqueeze(-1)
    kl = kl * (scale.unsqueeze(-1) if isinstance(scale, torch.Tensor) and scale.dim() else scale)
    return kl.reshape(-1, kl.shape[-1]).sum(0)


@torch.no_grad()
def elbo_terms(model, guide, *args, num_particles: int = 1, **kwargs) -> ElboTerms:
    """The ELBO of ``model``/``guide`` on ``args`` taken apart by site, per example.

    Parameters
    ----------
    model, guide : callables
        A model–guide pair with matching latent sites.
    *args, **kwargs
        Passed to both (e.g. ``x`` of shape (N, D)).
    num_particles : int
        Samples of z ~ q averaged over.

    Returns
    -------
    ElboTerms
        Per-example terms; ``elbo * n`` estimates Pyro's ``-TraceMeanField_ELBO().loss``
        (the same sum of scaled log-densities and KLs).
    """
    check_positive_int("num_particles", num_particles)
    rec: dict[str, float] = {}
    kls: dict[str, float] = {}
    analytic: dict[str, bool] = {}
    per_dim: dict[str, torch.Tensor] = {}
    n = 1
    for _ in range(num_particles):
        g_tr, m_tr = trace_pair(model, guide, *args, **kwargs)
        n = plate_size(m_tr)
        for name, site in sample_sites(m_tr):
            if site["is_observed"]:
                rec[name] = rec.get(name, 0.0) + float(scaled_log_prob(site).sum()) / num_particles
            elif name in g_tr.nodes:
                v, exact = site_kl(g_tr.nodes[name], site)
                kls[name] = kls.get(name, 0.0) + float(v) / num_particles
                analytic[name] = exact
                d = site_kl_per_dim(g_tr.nodes[name], site) if exact else None
                if d is not None:
                    per_dim[name] = per_dim.get(name, 0.0) + d.double().cpu() / num_particles
    rec = {k: v / n for k, v in rec.items()}
    kls = {k: v / n for k, v in kls.items()}
    dims = {k: (v / n).tolist() for k, v in per_dim.items()}
    r, k = sum(rec.values()), sum(kls.values())
    return ElboTerms(r - k, r, k, rec, kls, analytic, n, dims)


@torch.no_grad()
def find_nonfinite(model, guide, *args, module: torch.nn.Module | None = None, **kwargs) -> list[str]:
    """Names of sites whose value or log-density is not finite (and of non-finite parameters).

    Returns a list such as ``["param encoder.0.weight", "guide z (value)", "model x (log_prob)"]``.
    """
    found: list[str] = []
    if module is not None:
        found += [f"param {n}" for n, p in module.named_parameters() if not torch.isfinite(p).all()]
    try:
        with pyro.validation_enabled(False):
            traces = trace_pair(model, guide, *args, **kwargs)
    except Exception as e:  # a distribution refusing NaN parameters is itself the finding
        return found + [f"trace failed: {str(e).splitlines()[0][:200]}"]
    for where, tr in zip(traces._fields, traces):
        for name, site in sample_sites(tr):
            v = site["value"]
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all():
                found.append(f"{where} {name} (value)")
                continue
            lp = site["fn"].log_prob(v)
            if not torch.isfinite(lp).all():
                found.append(f"{where} {name} (log_prob)")
    return found

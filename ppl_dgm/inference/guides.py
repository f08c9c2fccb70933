"""The guide protocol: a guide must sample every latent site of the model, with the same shape.

``fit_svi`` calls :func:`check_guide` on the first minibatch, so a user's guide
that names a site differently, forgets one, adds one, or draws the wrong shape is
refused before training with an :class:`~ppl_dgm.errors.InputError` naming the site
(otherwise Pyro would silently sample the missing site from the prior).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from ..errors import InputError


def _latent_sites(trace) -> dict[str, dict]:
    return {n: s for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
            and not s["infer"].get("is_auxiliary")}


def _shape(site) -> tuple[int, ...]:
    return tuple(site["value"].shape) if isinstance(site["value"], torch.Tensor) else ()


def check_guide(model: Callable, guide: Callable, *args, **kwargs) -> None:
    """Refuse a guide whose latent sample sites or their shapes do not match the model's.

    Parameters
    ----------
    model, guide : callables taking ``(*args, **kwargs)``
    *args, **kwargs : one minibatch, e.g. ``x`` of shape (N, D)

    Raises
    ------
    InputError
        Naming the first site that is missing from the guide, unknown to the model, or
        of another shape (e.g. guide site 'z' of shape (N, 3) where the model's is (N, 8)).
    """
    with torch.no_grad(), poutine.block():
        m_tr = poutine.trace(model).get_trace(*args, **kwargs)
        g_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    m_sites, g_sites = _latent_sites(m_tr), _latent_sites(g_tr)
    for name, site in m_sites.items():
        if name not in g_sites and site["infer"].get("enumerate"):
            continue  # summed out by an enumerating ELBO, not sampled by the guide
        if name not in g_sites:
            raise InputError(f"guide does not sample the model's latent site {name!r} "
                             f"(guide sites: {sorted(g_sites) or 'none'}); expected a guide site named {name!r}")
        want, got = _shape(site), _shape(g_sites[name])
        if want != got:
            raise InputError(f"guide site {name!r} has shape {got}; expected the model's shape {want}")
        m_ev, g_ev = site["fn"].event_dim, g_sites[name]["fn"].event_dim
        if m_ev != g_ev:
            raise InputError(f"guide site {name!r} has event dim {g_ev}; expected the model's event dim {m_ev} "
                             f"(use .to_event(...) to match)")
    for name in g_sites:
        if name not in m_sites:
            obs = name in m_tr.nodes and m_tr.nodes[name]["type"] == "sample"
            what = "is observed in the model" if obs else "is not a site of the model"
            raise InputError(f"guide site {name!r} {what}; expected only the model's latent sites "
                             f"{sorted(m_sites)}")

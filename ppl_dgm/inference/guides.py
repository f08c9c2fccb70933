"""The guide protocol: a guide must sample every latent site of the model, with the same shape.

``fit_svi`` calls :func:`check_guide` on the first minibatch, so a user's guide
that names a site differently, forgets one, adds one, or draws the wrong shape is
refused before training with an :class:`~ppl_dgm.errors.InputError` naming the site
(otherwise Pyro would silently sample the missing site from the prior).  Shape
problems inside a plate (a draw of N+1 rows in ``pyro.plate("data", N)``, an
observed value that does not fit its distribution) are refused the same way,
instead of surfacing later as a non-finite loss or a broadcasting traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyro.poutine as poutine
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Independent

from ..errors import InputError
from .traces import sample_sites

# Pyro's BroadcastMessenger: "Shape mismatch inside plate('data') at site z dim -1, 10 vs 11"
_PLATE_MISMATCH = re.compile(r"Shape mismatch inside plate\('([^']*)'\) at site (\S+) dim (-?\d+), (\d+) vs (\d+)")


def _latent_sites(trace) -> dict[str, dict]:
    return {n: s for n, s in sample_sites(trace) if not s["is_observed"] and not s["infer"].get("is_auxiliary")}


def _shape(site) -> tuple[int, ...]:
    return tuple(site["value"].shape) if isinstance(site["value"], torch.Tensor) else ()


def _trace(where: str, fn: Callable, *args, **kwargs) -> poutine.Trace:
    """``poutine.trace(fn).get_trace(...)`` with Pyro's plate shape mismatch turned into an InputError."""
    try:
        return poutine.trace(fn).get_trace(*args, **kwargs)
    except ValueError as e:
        m = _PLATE_MISMATCH.search(str(e))
        if m is None:
            raise
        plate, site, dim, size, got = m.groups()
        raise InputError(f"shape problem at {where} site {site!r} inside plate {plate!r}: expected size {size} "
                         f"(the plate's size) or 1 at dim {dim}; got {got}") from None
    except RuntimeError as e:  # a network refusing the data: wrong width, dtype or device
        shapes = ", ".join(f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" for a in args
                           if isinstance(a, torch.Tensor))
        raise InputError(f"the {where} cannot run on the first minibatch ({shapes}): "
                         f"{str(e).strip().splitlines()[0][:200]}") from None


def _fits(shape: tuple, batch: tuple, event: tuple, in_plate: bool) -> bool:
    """A value of ``shape`` ends in ``event`` and broadcasts with ``batch`` (inside a plate: without
    enlarging it, which would silently score N x N pairs)."""
    k = len(shape) - len(event)
    if k < 0 or shape[k:] != event:
        return False
    try:
        joint = torch.broadcast_shapes(shape[:k], batch)
    except RuntimeError:
        return False
    return joint == batch or not in_plate


def _check_value_shape(where: str, name: str, site: dict) -> None:
    value, fn = site["value"], site["fn"]
    if not isinstance(value, torch.Tensor):
        return
    batch, event, shape = tuple(fn.batch_shape), tuple(fn.event_shape), tuple(value.shape)
    if not _fits(shape, batch, event, bool(site["cond_indep_stack"])):
        raise InputError(f"shape problem at {where} site {name!r}: expected a value of shape {batch + event} "
                         f"(batch shape {batch}, event shape {event}); got {shape}")


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
        of another shape (e.g. guide site 'z' of shape (N, 3) where the model's is (N, 8)),
        or whose value does not fit its plate or its distribution ("shape problem at ...").
    """
    with torch.no_grad(), poutine.block():
        m_tr = _trace("model", model, *args, **kwargs)
        g_tr = _trace("guide", guide, *args, **kwargs)
        _check_sites(m_tr, g_tr)
        replayed = _trace("model", poutine.replay(model, trace=g_tr), *args, **kwargs)
    for where, tr in (("guide", g_tr), ("model", replayed)):
        for name, site in sample_sites(tr):
            _check_value_shape(where, name, site)
            if site["is_observed"]:
                _check_unit_interval(name, site)


def _check_unit_interval(name: str, site: dict) -> None:
    """Observed values of a (continuous) Bernoulli likelihood must lie in [0, 1]: grey levels are allowed
    (cross-entropy), anything else would be silently wrong.  Other distributions validate themselves."""
    fn, value = site["fn"], site["value"]
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if isinstance(fn, (Bernoulli, ContinuousBernoulli)) and value.numel():
        lo, hi = float(value.min()), float(value.max())
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(f"observed site {name!r}: a Bernoulli likelihood expects values in [0, 1]; "
                             f"got values in [{lo:.4g}, {hi:.4g}]")


def _check_sites(m_tr, g_tr) -> None:
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

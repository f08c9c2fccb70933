"""The one walk every estimator and diagnostic shares: trace the guide, replay the model on its draws.

For a minibatch ``x`` (notes 002, the ELBO derivation),

.. math::  z \\sim q(z \\mid x), \\qquad \\log w = \\log p(x, z) - \\log q(z \\mid x)

is read from two Pyro traces: the guide's trace (the draws z and log q) and the
model's trace replayed on those draws (log p(x, z)).  :func:`trace_pair` makes
the two (:func:`site_pair` is its lean twin for the training objectives: the sample sites only, no Pyro
``Trace`` graph); :func:`sample_sites` walks their sample sites; :func:`data_frame` and
:func:`plate_size` find the ``"data"`` plate (one row per example);
:func:`per_row_log_prob` sums a trace's log-densities per example, and
:func:`importance_log_weights` gives log w for k draws per example (the IWAE
objective, the IWAE log-likelihood estimate and the ELBO-IWAE gap use it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..errors import InputError
from ..utils import DATA_PLATE


class TracePair(NamedTuple):
    """A guide trace and the model trace replayed on its draws (Pyro traces, or :class:`SampleSites`)."""

    guide: poutine.Trace | SampleSites
    model: poutine.Trace | SampleSites


def trace_pair(model: Callable, guide: Callable, *args, **kwargs) -> TracePair:
    """Run ``guide(*args, **kwargs)`` under a trace, then ``model`` replayed on the guide's draws.

    Returns
    -------
    TracePair
        ``(guide, model)`` traces; a latent site of the model holds the guide's value.
    """
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return TracePair(guide_tr, model_tr)


class SampleSites:
    """The sample sites of one run of a program, by name in program order (``.nodes``, as a Pyro ``Trace`` has them).

    What :func:`site_pair` returns: enough for :func:`sample_sites`, :func:`data_frame`, :func:`per_row_log_prob`
    and the ELBO estimators; no ``param`` sites, no graph.  Plates' subsample sites are kept (the model replays the
    guide's subsample) and left out by :func:`sample_sites`, as for a ``Trace``.
    """

    __slots__ = ("nodes",)

    def __init__(self):
        self.nodes: dict[str, dict] = {}


class _SiteRecorder(Messenger):
    """Records the sample sites of a run into :class:`SampleSites`, replaying the latent values of ``replay``
    if given: ``poutine.trace(poutine.replay(fn, trace=replay))`` without the ``Trace`` bookkeeping."""

    def __init__(self, replay: SampleSites | None = None):
        super().__init__()
        self.sites, self.replay = SampleSites(), None if replay is None else replay.nodes

    def _pyro_sample(self, msg) -> None:
        if self.replay is None or msg["is_observed"] or msg["name"] not in self.replay:
            return
        site = self.replay[msg["name"]]
        if site["is_observed"]:
            raise RuntimeError(f"site {msg['name']} must be sampled in trace")
        msg["done"], msg["value"], msg["infer"] = True, site["value"], site["infer"]

    def _pyro_post_sample(self, msg) -> None:
        if msg["infer"].get("_do_not_trace"):
            return
        if msg["name"] in self.sites.nodes:
            raise RuntimeError(f"Multiple sample sites named '{msg['name']}'")
        self.sites.nodes[msg["name"]] = msg.copy()


def site_pair(model: Callable, guide: Callable, *args, **kwargs) -> TracePair:
    """:func:`trace_pair` for the training objectives: the same draws and sites, recorded as :class:`SampleSites`.

    Cheaper than Pyro's tracer (no ``Trace`` graph, no input and return nodes, one handler for replay and
    record); a duplicate site name is still refused.  Sites are the messages Pyro hands to its handlers
    (``fn``, ``value``, ``scale``, ``mask``, ``cond_indep_stack``, ``infer``, ``is_observed``), as in a ``Trace``.
    """
    with _SiteRecorder() as g:
        guide(*args, **kwargs)
    with _SiteRecorder(g.sites) as m:
        model(*args, **kwargs)
    return TracePair(g.sites, m.sites)


def sample_sites(trace: poutine.Trace) -> Iterator[tuple[str, dict]]:
    """``(name, site)`` of every sample site of ``trace`` in program order, plates' subsample sites left out."""
    return ((name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site))


def data_frame(site: dict, *, required_by: str | None = None):
    """The ``"data"`` plate's frame of a site (``.dim`` counted from the right of the batch shape, ``.size``).

    None when the site is outside the plate, unless ``required_by`` names the estimator that
    needs it there: then :class:`~ppl_dgm.errors.InputError`.
    """
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    if required_by is None:
        return None
    raise InputError(f"{required_by} needs every sample site inside the {DATA_PLATE!r} plate; "
                     f"got site {site['name']!r} outside it")


def plate_size(trace: poutine.Trace) -> int:
    """N, the size of the ``"data"`` plate of ``trace`` (1 if no site is inside one)."""
    for _, site in sample_sites(trace):
        if (frame := data_frame(site)) is not None:
            return int(frame.size)
    return 1


def scaled_log_prob(site: dict) -> torch.Tensor:
    """log p(value) of one site with its plate scale and mask applied (Pyro's convention); batch shape."""
    return scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])


def per_row_log_prob(trace: poutine.Trace, n_rows: int, *, require_rsample: bool = True) -> torch.Tensor:
    """Scaled log-density of every sample site summed per row of the ``"data"`` plate: shape (n_rows,).

    ``require_rsample`` (training: gradients flow through the draws) refuses a
    non-reparameterized latent site.
    """
    total = 0.0
    for name, site in sample_sites(trace):
        if require_rsample and not site["is_observed"] and not site["fn"].has_rsample:
            raise InputError(f"IWAE needs reparameterized guide sites; got site {name!r} "
                             f"({type(site['fn']).__name__}) with no rsample")
        dim = data_frame(site, required_by="IWAE").dim
        lp = scaled_log_prob(site)
        if lp.dim() < -dim:
            lp = lp.reshape((1,) * (-dim - lp.dim()) + tuple(lp.shape))
        total = total + lp.movedim(dim, 0).reshape(n_rows, -1).sum(-1)
    return total


def log_weights(model: Callable, guide: Callable, args: tuple, k: int, *, require_rsample: bool = True,
                **kwargs) -> torch.Tensor:
    """log w[i, n] = log p(x_n, z_i) - log q(z_i | x_n), z_i ~ q(z | x_n), i = 1..k: shape (k, N).

    The k draws come from one pass: every per-example tensor argument of shape (N, ...)
    is repeated k times to (k N, ...), so the ``"data"`` plate has k N rows.
    """
    if not args or not isinstance(args[0], torch.Tensor):
        raise InputError("importance weights need per-example tensors as positional arguments; got none")
    n = args[0].shape[0]
    rep = tuple(a.repeat((k,) + (1,) * (a.dim() - 1)) if isinstance(a, torch.Tensor) else a for a in args)
    guide_tr, model_tr = site_pair(model, guide, *rep, **kwargs)
    log_p = per_row_log_prob(model_tr, k * n, require_rsample=False)
    log_q = per_row_log_prob(guide_tr, k * n, require_rsample=require_rsample)
    return (log_p - log_q).reshape(k, n)


@torch.no_grad()
def importance_log_weights(model: Callable, guide: Callable, x: torch.Tensor, *rest: torch.Tensor, k: int,
                           max_rows: int = 65_536) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, log_w)`` per chunk of examples: ``log_w`` of :func:`log_weights`, shape (k, m),
    float64 on the CPU, for examples ``start .. start + m``.

    Parameters
    ----------
    model, guide : callables taking ``(x, *rest)``
    x : Tensor, shape (N, ...); rest : further per-example tensors (e.g. labels, shape (N,))
    k : int
        Draws per example.
    max_rows : int
        Rows (examples x draws) of one vectorised pass; bounds memory.
    """
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k (importance samples) must be a positive integer; got {k!r}")
    n = x.shape[0]
    k_chunk = min(k, max(1, max_rows // max(1, min(n, 256))))
    n_chunk = max(1, min(n, max_rows // k_chunk))
    for i in range(0, n, n_chunk):
        xs = (x[i: i + n_chunk], *(r[i: i + n_chunk] for r in rest))
        parts = [log_weights(model, guide, xs, min(k_chunk, k - done), require_rsample=False).double().cpu()
                 for done in range(0, k, k_chunk)]
        yield i, torch.cat(parts, 0)

"""Posterior draws as ArviZ ``InferenceData``: from a guide, a Pyro MCMC run, or NumPyro.

Every latent site becomes a variable of the ``posterior`` group with named dims:
the ``"data"`` plate is ``obs``, other plates keep their names, and the remaining
(event) dims are ``<site>_dim`` (or ``<site>_dim_0``, ``<site>_dim_1``, ...).
Observed sites give ``posterior_predictive`` (a draw of x ~ p(x | z) for each
posterior draw), ``log_likelihood`` (log p(x_n | z), per observation, for
``az.loo``) and ``observed_data``.  The run's config is stored as a JSON string
in ``attrs["config"]``.  ArviZ (and xarray) are imported only when called.

Example
-------
>>> idata = to_inference_data(vae, x[:100], num_samples=200)   # doctest: +SKIP
>>> idata.to_netcdf("posterior.nc"); az.summary(az.from_netcdf("posterior.nc"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..inference.traces import trace_pair
from ..utils import DATA_PLATE


def _import_arviz():
    try:
        import arviz as az
        import xarray as xr
    except ImportError as e:  # pragma: no cover
        raise ImportError("the ArviZ export needs arviz: pip install arviz") from e
    return az, xr


def _site_dims(name: str, shape: Sequence[int], event_dim: int, frames) -> list[str]:
    """Names for the dims of a value of ``shape``: plates by name (``data`` -> ``obs``), the rest ``name_dim*``."""
    batch_nd = len(shape) - event_dim
    plates = {f.dim: f.name for f in frames if getattr(f, "dim", None) is not None
              and getattr(f, "vectorized", True)}
    dims: list[str | None] = []
    for j in range(batch_nd):
        p = plates.get(j - batch_nd)
        dims.append("obs" if p == DATA_PLATE else p)
    dims += [None] * event_dim
    free = [i for i, d in enumerate(dims) if d is None]
    for c, i in enumerate(free):
        dims[i] = f"{name}_dim" if len(free) == 1 else f"{name}_dim_{c}"
    return [str(d) for d in dims]


def _site_info(trace) -> dict[str, dict[str, Any]]:
    """Per sample site: observed?, value shape, event dim, log-prob shape, dim names (Pyro or NumPyro trace)."""
    info = {}
    for name, site in trace.nodes.items() if hasattr(trace, "nodes") else trace.items():
        if site["type"] != "sample" or (site.get("infer") or {}).get("_do_not_trace") \
                or (site.get("infer") or {}).get("is_auxiliary"):
            continue
        if name.endswith("_subsample") or type(site["fn"]).__name__ == "_Subsample":
            continue
        shape = tuple(np.shape(site["value"]))
        ev = int(site["fn"].event_dim)
        dims = _site_dims(name, shape, ev, site["cond_indep_stack"])
        info[name] = {"observed": bool(site["is_observed"]), "shape": shape, "event_dim": ev,
                      "dims": dims, "ll_dims": dims[: len(dims) - ev], "value": site["value"]}
    return info


def _dataset(xr, arrays: dict[str, np.ndarray], dims: dict[str, list[str]], chains: bool, attrs: dict):
    data = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        lead = ["chain", "draw"] if chains else []
        data[k] = (lead + dims[k], v)
    coords = {}
    if chains and arrays:
        c, s = np.asarray(next(iter(arrays.values()))).shape[:2]
        coords = {"chain": np.arange(c), "draw": np.arange(s)}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _build(posterior, predictive, loglik, info, attrs, sites):
    az, xr = _import_arviz()
    latents = [n for n in posterior if sites is None or n in sites]
    if sites is not None and (missing := [s for s in sites if s not in posterior]):
        raise InputError(f"sites: expected latent sites of the model ({', '.join(posterior)}); got {missing}")
    observed = {n: np.asarray(i["value"]) for n, i in info.items() if i["observed"]}
    groups = {"posterior": _dataset(xr, {n: posterior[n] for n in latents}, {n: info[n]["dims"] for n in latents},
                                    True, attrs)}
    if predictive:
        groups["posterior_predictive"] = _dataset(xr, predictive, {n: info[n]["dims"] for n in predictive}, True,
                                                  attrs)
    if loglik:
        groups["log_likelihood"] = _dataset(xr, loglik, {n: info[n]["ll_dims"] for n in loglik}, True, attrs)
    if observed:
        groups["observed_data"] = _dataset(xr, observed, {n: info[n]["dims"] for n in observed}, False, attrs)
    return az.InferenceData(**groups)


def _attrs(config, inference: str) -> dict[str, str]:
    from .._version import __version__

    try:
        cfg = json.dumps(config or {}, default=str)
    except (TypeError, ValueError) as e:
        raise InputError(f"config: expected a JSON-able dict; got {e}") from None
    return {"config": cfg, "inference": inference, "created_by": f"ppl_dgm {__version__}"}


def _guide_draws(model_fn, guide, num_samples, args, parallel):
    """Draws of the model's latent sites from the guide via ``pyro.infer.Predictive``: {site: (1, S, ...)}."""
    from pyro.infer import Predictive

    if not callable(guide):
        raise InputError("expected a guide (or a module with .guide, or mcmc=); got none")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"num_samples must be a positive integer; got {num_samples!r}")
    info = _site_info(trace_pair(model_fn, guide, *args).model)
    latent = [n for n, i in info.items() if not i["observed"]]
    out = None
    if parallel is not False:
        try:
            out = Predictive(model_fn, guide=guide, num_samples=num_samples, return_sites=latent,
                             parallel=True)(*args)
            if any(out[n].shape[0] != num_samples for n in latent):
                out = None
        except (RuntimeError, ValueError, IndexError):
            if parallel:
                raise
    if out is None:
        out = Predictive(model_fn, guide=guide, num_samples=num_samples, return_sites=latent)(*args)
    return {n: out[n].reshape((1, num_samples) + info[n]["shape"]) for n in latent}


def _replay_draws(model_fn, draws, args, posterior_predictive: bool, log_likelihood: bool):
    """Condition the model on each draw: site info, x ~ p(x | z) and log p(x_n | z) per observed site.

    Returns ``(info, predictive, loglik)``; the last two map site -> array (chain, draw, ...).
    """
    import pyro.poutine as poutine

    c, s = next(iter(draws.values())).shape[:2]
    flat = {k: v.reshape((c * s,) + v.shape[2:]) for k, v in draws.items()}
    pp: dict[str, list] = {}
    ll: dict[str, list] = {}
    info = None
    for i in range(c * s):
        tr = poutine.trace(poutine.condition(model_fn, data={k: v[i] for k, v in flat.items()})).get_trace(*args)
        if info is None:
            info = _site_info(tr)
            for name in draws:  # conditioning marks the latents observed; they are not data
                if name in info:
                    info[name]["observed"] = False
        for name, site in tr.nodes.items():
            if name in info and info[name]["observed"]:
                if posterior_predictive:
                    pp.setdefault(name, []).append(site["fn"].sample().cpu().numpy())
                if log_likelihood:
                    ll.setdefault(name, []).append(site["fn"].log_prob(site["value"]).cpu().numpy())
    pp = {k: np.stack(v).reshape((c, s) + v[0].shape) for k, v in pp.items()}
    ll = {k: np.stack(v).reshape((c, s) + v[0].shape) for k, v in ll.items()}
    return info, pp, ll


def to_inference_data(model, x, *, num_samples: int = 100, guide=None, sites: Sequence[str] | None = None,
                      config: dict | None = None, mcmc=None, posterior_predictive: bool = True,
                      log_likelihood: bool = True, parallel: bool | None = None, seed: int = 0):
    """Posterior draws of a Pyro model as ``arviz.InferenceData``.

    Parameters
    ----------
    model : module with ``.model`` (and ``.guide``), or a model callable
    x : Tensor (N, ...) or tuple of tensors
        The model's arguments (e.g. ``x`` of shape (N, D), or ``(X, y)``).
    num_samples : int
        S, draws from the guide (ignored with ``mcmc``).
    guide : callable, optional
        Default ``model.guide``.  Draws come from ``pyro.infer.Predictive(model, guide=guide)``.
    sites : list of str, optional
        Latent sites to put in ``posterior`` (default all).
    config : dict, optional
        Stored as JSON in ``attrs["config"]``.
    mcmc : pyro.infer.MCMC, optional
        Take the draws from this (run) MCMC object instead: shape (chains, draws, ...).
    posterior_predictive, log_likelihood : bool
        Whether to compute these groups (one conditioned model pass per draw).
    parallel : bool, optional
        Draw from the guide in one vectorized pass (``Predictive(parallel=True)``); the default
        ``None`` tries that and falls back to one pass per draw if the program does not vectorize.

    Returns
    -------
    arviz.InferenceData
        ``posterior[site]`` of shape (chain, draw, *site dims), e.g. ``z`` (1, S, N, K) with dims
        (chain, draw, obs, z_dim); ``log_likelihood[x]`` (chain, draw, obs).
    """
    import pyro
    import torch

    model_fn = getattr(model, "model", model)
    args = (x,) if isinstance(x, torch.Tensor) else tuple(x)
    if not callable(model_fn):
        raise InputError(f"expected a model callable or a module with .model; got {type(model).__name__}")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        pyro.set_rng_seed(seed)
        if mcmc is not None:
            draws = {k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()}
            inference = f"mcmc {type(getattr(mcmc, 'kernel', mcmc)).__name__}"
        else:
            guide = guide if guide is not None else getattr(model, "guide", None)
            draws = _guide_draws(model_fn, guide, num_samples, args, parallel)
            inference = f"svi guide {getattr(guide, '__qualname__', type(guide).__name__)}"
        info, pp, ll = _replay_draws(model_fn, draws, args, posterior_predictive, log_likelihood)
    post = {k: v.cpu().numpy() for k, v in draws.items() if k in info}
    return _build(post, pp, ll, info, _attrs(config, inference), sites)


def _enumerated_loglik(model, args, kwargs, trace, summed, obs, info):
    """``(rng, draw) -> {obs site: log p(x_n | draw)}`` with the enumerated sites ``summed`` out.

    The model runs under NumPyro's ``enum`` handler (each enumerated site gets its own
    dim left of the plates), the log-densities of the enumerated sites and of the observed
    site are added, and ``logsumexp`` over the enumeration dims leaves the plate dims.
    """
    import jax
    from numpyro import handlers
    from numpyro.contrib.funsor import enum

    nesting = max((len(s["cond_indep_stack"]) for s in trace.values() if s["type"] == "sample"), default=0)

    def loglik(rng, draw):
        fn = enum(handlers.substitute(handlers.seed(model, rng), data=draw), first_available_dim=-nesting - 1)
        tr = handlers.trace(fn).get_trace(*args, **kwargs)
        prior = sum(tr[n]["fn"].log_prob(tr[n]["value"]) for n in summed)
        out = {}
        for n in obs:
            lp = tr[n]["fn"].log_prob(tr[n]["value"]) + prior
            keep = len(info[n]["ll_dims"])
            out[n] = jax.scipy.special.logsumexp(lp, axis=tuple(range(lp.ndim - keep))) if lp.ndim > keep else lp
        return out

    return loglik


def numpyro_to_inference_data(model, *args, mcmc=None, samples: dict | None = None, group_by_chain: bool = False,
                              sites: Sequence[str] | None = None, config: dict | None = None,
                              posterior_predictive: bool = True, log_likelihood: bool = True, seed: int = 0,
                              **kwargs):
    """The NumPyro backend of :func:`to_inference_data`: same groups, same dim names.

    Parameters
    ----------
    model : NumPyro model callable ``model(*args, **kwargs)``
    mcmc : numpyro.infer.MCMC, optional
        A run MCMC object; its draws are taken grouped by chain.
    samples : dict of arrays, optional
        Instead of ``mcmc``: latent draws of shape (S, ...) (e.g. from ``guide.sample_posterior``),
        or (chains, S, ...) with ``group_by_chain=True``.

    Notes
    -----
    Sites marked ``infer={"enumerate": "parallel"}`` and absent from the draws (a mixture's
    assignment ``c``: NUTS and ``TraceEnum_ELBO`` sum it out) are summed out of the
    ``log_likelihood`` group too: for each observed site, per observation,
    ``log p(x_n | theta) = logsumexp_c [log p(c | theta) + log p(x_n | c, theta)]`` (by
    NumPyro's ``enum`` handler), not the density given one sampled ``c``.
    ``posterior_predictive`` draws ``c`` and then ``x`` (ancestral sampling of the marginal).
    """
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    if (mcmc is None) == (samples is None):
        raise InputError("expected exactly one of mcmc= or samples=; got "
                         f"{'both' if mcmc is not None else 'neither'}")
    if mcmc is not None:
        draws = mcmc.get_samples(group_by_chain=True)
        inference = f"numpyro mcmc {type(mcmc.sampler).__name__}"
    else:
        draws = {k: jnp.asarray(v) if group_by_chain else jnp.asarray(v)[None] for k, v in samples.items()}
        inference = "numpyro samples"
    if not draws:
        raise InputError("expected at least one latent site in the draws; got none")
    c, s = next(iter(draws.values())).shape[:2]
    flat = {k: v.reshape((c * s,) + v.shape[2:]) for k, v in draws.items()}
    key = jax.random.PRNGKey(seed)

    def trace_at(rng, draw):
        return handlers.trace(handlers.substitute(handlers.seed(model, rng), data=draw)).get_trace(*args, **kwargs)

    first = trace_at(key, {k: v[0] for k, v in flat.items()})
    info = _site_info(first)
    obs = [n for n, i in info.items() if i["observed"]]
    summed = [n for n, i in info.items() if not i["observed"] and n not in flat
              and (first[n].get("infer") or {}).get("enumerate") == "parallel"]
    loglik_of = _enumerated_loglik(model, args, kwargs, first, summed, obs, info) if summed else None

    def one(rng, draw):
        tr = trace_at(rng, draw)
        keys = jax.random.split(jax.random.fold_in(rng, 1), max(len(obs), 1))
        ll = loglik_of(rng, draw) if loglik_of else {n: tr[n]["fn"].log_prob(tr[n]["value"]) for n in obs}
        return {n: tr[n]["fn"].sample(keys[j]) for j, n in enumerate(obs)}, ll

    pp, ll = jax.jit(jax.vmap(one))(jax.random.split(key, c * s), flat)  # one compilation, not one per op
    post = {k: np.asarray(v) for k, v in draws.items() if k in info and not info[k]["observed"]}
    pp = {k: np.asarray(v).reshape((c, s) + v.shape[1:]) for k, v in pp.items()} if posterior_predictive else {}
    ll = {k: np.asarray(v).reshape((c, s) + v.shape[1:]) for k, v in ll.items()} if log_likelihood else {}
    return _build(post, pp, ll, info, _attrs(config, inference), sites)

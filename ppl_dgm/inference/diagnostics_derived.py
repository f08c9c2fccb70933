"""Diagnostics derived from the ELBO terms: active units, collapse, ELBO–IWAE gap, gradient SNR, convergence.

- **Active units** (Burda et al. 2016, IWAE paper §5.2): a latent dimension d is
  active when :math:`A_d = \\mathrm{Cov}_x\\big(E_{q(z\\mid x)}[z_d]\\big) > 0.01`.
- **Posterior collapse**: no active unit (or a KL of ~0 nats) in a latent site; the
  guide ignores x and q(z | x) = p(z).  Reported with :class:`PosteriorCollapseWarning`.
- **ELBO–IWAE gap**: :math:`\\log p(x) - \\mathrm{ELBO} = \\mathrm{KL}(q(z\\mid x)\\,\\|\\,p(z\\mid x))`
  (notes 002, the ELBO derivation); with the k-sample bound IWAE_k in place of
  log p(x) the gap is a lower bound on that KL that tightens as k grows.
- **Gradient signal-to-noise** (Rainforth et al. 2018): :math:`\\|E[g]\\| / \\sqrt{E\\|g - E g\\|^2}`
  per parameter group, over minibatch and z draws.
- **Convergence**: least-squares slope of the smoothed held-out ELBO over the last epochs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.infer import TraceMeanField_ELBO

from ..errors import InputError
from .traces import data_frame, importance_log_weights, sample_sites

AU_THRESHOLD = 0.01


class PosteriorCollapseWarning(UserWarning):
    """A latent site has no active unit: q(z | x) no longer depends on x."""


@dataclass
class ActiveUnits:
    """Burda's activity statistic of one latent site.

    Attributes
    ----------
    site : str
    variance : list of float, length K
        Cov_x(E_q[z_d]) for each (flattened) latent dimension d.
    active : int
        Number of dimensions with variance > ``threshold``.
    dim : int
        K.
    threshold : float
    """

    site: str
    variance: list[float]
    active: int
    dim: int
    threshold: float = AU_THRESHOLD

    def as_dict(self) -> dict:
        return asdict(self)


def _per_row(t: torch.Tensor, dim: int, event_dim: int) -> torch.Tensor:
    """Move the data-plate dim (counted from the right of the batch shape) first; flatten the rest."""
    dim = dim - event_dim
    return t.movedim(dim, 0).reshape(t.shape[dim], -1)


@torch.no_grad()
def active_units(guide, x: torch.Tensor, *rest: torch.Tensor, sites: list[str] | None = None,
                 threshold: float = AU_THRESHOLD, num_samples: int = 16,
                 batch_size: int = 1000) -> dict[str, ActiveUnits]:
    """Active units of every latent site of ``guide`` inside the ``"data"`` plate.

    Parameters
    ----------
    guide : callable ``guide(x, *rest)``
    x : Tensor, shape (N, ...)
    sites : list of str, optional
        Latent sites to inspect (default: all sample sites in the ``"data"`` plate).
    threshold : float
        A dimension is active when Cov_x(E_q[z_d]) exceeds it (Burda et al.: 0.01).
    num_samples : int
        Samples per example used when the guide's distribution has no closed-form mean.

    Returns
    -------
    dict mapping site name -> :class:`ActiveUnits`
    """
    if x.shape[0] < 2:
        raise InputError(f"active units need at least 2 examples (a covariance over x); got {x.shape[0]}")
    means: dict[str, list[torch.Tensor]] = {}
    for i in range(0, x.shape[0], batch_size):
        b = (x[i: i + batch_size], *(r[i: i + batch_size] for r in rest))
        tr = poutine.trace(guide).get_trace(*b)
        for name, site in sample_sites(tr):
            frame = data_frame(site)
            if site["is_observed"] or frame is None or (sites is not None and name not in sites):
                continue
            fn = site["fn"]
            try:
                mean = fn.mean
                if not torch.isfinite(mean).all() or mean.shape != site["value"].shape:
                    raise NotImplementedError
            except NotImplementedError:
                mean = fn.sample((num_samples,)).mean(0)
            means.setdefault(name, []).append(_per_row(mean, frame.dim, fn.event_dim).double().cpu())
    if sites is not None and (missing := [s for s in sites if s not in means]):
        raise InputError(f"expected latent sites of the guide inside the 'data' plate; got {missing}")
    out = {}
    for name, parts in means.items():
        m = torch.cat(parts, 0)
        var = m.var(0, unbiased=False)
        out[name] = ActiveUnits(name, var.tolist(), int((var > threshold).sum()), int(var.numel()), threshold)
    return out


def collapse_warnings(active: dict[str, ActiveUnits], kl_sites: dict[str, float] | None = None, *,
                      min_kl: float = 0.01, warn: bool = True) -> list[str]:
    """Messages (and :class:`PosteriorCollapseWarning`) for collapsed latent sites.

    A site has collapsed when none of its dimensions is active or its KL per example is below
    ``min_kl`` nats.  (Some inactive dimensions alone are common and not warned about.)
    """
    messages: list[str] = []
    for name, au in active.items():
        kl = (kl_sites or {}).get(name)
        if au.active == 0 or (kl is not None and kl < min_kl):
            msg = (f"posterior collapse in site {name!r}: {au.active} of {au.dim} units active "
                   f"(Cov_x E_q[z_d] > {au.threshold})" + (f", KL {kl:.4f} nats/example" if kl is not None else ""))
            messages.append(msg)
            if warn:
                warnings.warn(msg, PosteriorCollapseWarning, stacklevel=2)
    return messages


@dataclass
class GapEstimate:
    """ELBO and IWAE_k per example from the same k draws of z ~ q(z | x); nats.

    ``gap = iwae - elbo`` >= 0 estimates (from below) KL(q(z|x) || p(z|x)).
    ``per_example_elbo`` and ``per_example_iwae`` have shape (N,).
    """

    elbo: float
    iwae: float
    gap: float
    gap_se: float
    k: int
    n: int
    per_example_elbo: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    per_example_iwae: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict:
        return {"elbo": self.elbo, "iwae": self.iwae, "gap": self.gap, "gap_se": self.gap_se,
                "k": self.k, "n": self.n}


@torch.no_grad()
def elbo_iwae_gap(model, guide, x: torch.Tensor, *rest: torch.Tensor, k: int = 100,
                  max_rows: int = 32_768) -> GapEstimate:
    """log w_i = log p(x, z_i) - log q(z_i | x), z_i ~ q, i = 1..k: ELBO = mean_i log w_i,
    IWAE_k = log mean_i w_i; per example, for x of shape (N, ...).

    Every site must sit in the ``"data"`` plate (as for the IWAE estimate).
    """
    n = x.shape[0]
    elbo, iwae = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    for i, lw in importance_log_weights(model, guide, x, *rest, k=k, max_rows=max_rows):
        elbo[i: i + lw.shape[1]] = lw.mean(0)
        iwae[i: i + lw.shape[1]] = torch.logsumexp(lw, 0) - math.log(k)
    gap = iwae - elbo
    se = float(gap.std() / math.sqrt(n)) if n > 1 else float("nan")
    return GapEstimate(float(elbo.mean()), float(iwae.mean()), float(gap.mean()), se, k, n,
                       elbo.numpy(), iwae.numpy())


def _param_groups(module: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, child in module.named_children():
        ps = [p for p in child.parameters() if p.requires_grad]
        if ps:
            groups[name] = ps
    own = [p for p in module.parameters(recurse=False) if p.requires_grad]
    if own:
        groups["(own)"] = own
    return groups


def gradient_snr(module: torch.nn.Module, x: torch.Tensor, *rest: torch.Tensor, loss=None,
                 num_draws: int = 10, batch_size: int = 128, seed: int = 0) -> dict[str, dict[str, float]]:
    """Gradient signal-to-noise per parameter group (each top-level submodule of ``module``).

    Gradients of the per-example loss (default ``TraceMeanField_ELBO``) are taken at the current
    parameters for ``num_draws`` minibatches of ``batch_size`` random examples (and fresh z), then

    - ``snr`` = ||mean g|| / sqrt(sum_j var g_j)  (the group's signal against its noise; inf for a nonzero
      gradient without noise, nan for a group the loss gives no gradient),
    - ``snr_elementwise`` = mean over coordinates of |mean g_j| / std g_j,
    - ``grad_norm`` = ||mean g||, ``n_params``.

    Parameters are not changed (gradients are cleared afterwards).
    """
    if num_draws < 2:
        raise InputError(f"num_draws must be >= 2 (a standard deviation); got {num_draws}")
    if not (callable(getattr(module, "model", None)) and callable(getattr(module, "guide", None))):
        raise InputError(f"expected a module with .model and .guide methods; got {type(module).__name__}")
    groups = _param_groups(module)
    if not groups:
        raise InputError(f"expected a module with trainable parameters; {type(module).__name__} has none")
    objective = (loss or TraceMeanField_ELBO()).differentiable_loss
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    draws: dict[str, list[torch.Tensor]] = {g: [] for g in groups}
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(num_draws):
                idx = torch.randperm(n, generator=gen)[:batch_size].to(x.device)
                batch = (x[idx], *(r[idx] for r in rest))
                module.zero_grad(set_to_none=True)
                (objective(module.model, module.guide, *batch) / len(idx)).backward()
                for g, ps in groups.items():
                    draws[g].append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                               for p in ps]).double().cpu())
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was_training)
    out = {}
    for g, ds in draws.items():
        G = torch.stack(ds)
        mean, var = G.mean(0), G.var(0)
        ok = var > 0
        elem = float((mean[ok].abs() / var[ok].sqrt()).mean()) if ok.any() else float("nan")
        noise = float(var.sum().sqrt())
        signal = float(mean.norm())  # no gradient at all (e.g. a VQ-VAE's codebook under the ELBO): no SNR
        out[g] = {"snr": signal / noise if noise > 0 else float("inf") if signal > 0 else float("nan"),
                  "snr_elementwise": elem, "grad_norm": float(mean.norm()), "n_params": int(G.shape[1])}
    return out


@dataclass
class Convergence:
    """The trend of the ELBO over the last epochs, with its standard error.

    Attributes
    ----------
    metric : str
        History key used (``test_elbo`` if recorded, else ``train_elbo``).
    slope, slope_se : float
        Least-squares slope of the raw per-epoch values over the last ``epochs_used`` epochs (nats per
        example per epoch) and its standard error from the residuals.
    epochs_used : int
    last : float
        Mean of the values used (a level that does not jitter with the last epoch).
    relative_change : float
        ``slope * epochs_used / max(|last|, 1)``: the fraction the ELBO moved over that span.
    status : str
        ``"improving"`` or ``"worsening"`` when the slope is at least ``z`` standard errors from 0 *and*
        moved the ELBO by more than ``rel_tol``; ``"converged"`` otherwise; ``"too short"`` under 4 epochs.
    """

    metric: str
    slope: float
    slope_se: float
    epochs_used: int
    last: float
    relative_change: float
    status: str

    def as_dict(self) -> dict:
        return asdict(self)


def convergence(history: list[dict], *, key: str | None = None, last: int = 20, z: float = 2.0,
                rel_tol: float = 2e-3) -> Convergence:
    """Convergence of a fit from its history (``FitResult.history`` or ``history.json``).

    A straight line is fitted to the last ``last`` per-epoch values; the verdict needs the slope to
    stand out of its own noise (|slope| >= z SE), so the epoch-to-epoch jitter of a held-out ELBO
    (+-0.2 nats) does not read as a trend, and to matter (relative change > ``rel_tol``).
    """
    if key is None:
        key = "test_elbo" if any("test_elbo" in h for h in history) else "train_elbo"
    pts = np.array([(h["epoch"], h[key]) for h in history if key in h and math.isfinite(h[key])], float)
    if len(pts) < 4:
        level = float(pts[:, 1].mean()) if len(pts) else float("nan")
        return Convergence(key, float("nan"), float("nan"), len(pts), level, float("nan"), "too short")
    ep, y = pts[-last:, 0], pts[-last:, 1]
    (slope, icpt), resid = np.polyfit(ep, y, 1), None
    resid = y - (slope * ep + icpt)
    se = float(np.sqrt(resid @ resid / (len(y) - 2) / ((ep - ep.mean()) @ (ep - ep.mean()))))
    rel = float(slope) * len(y) / max(abs(float(y.mean())), 1.0)
    trend = abs(slope) >= z * se and abs(rel) > rel_tol
    status = ("improving" if slope > 0 else "worsening") if trend else "converged"
    return Convergence(key, float(slope), se, len(y), float(y.mean()), rel, status)

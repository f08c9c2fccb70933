"""Training objectives for any model–guide pair: ELBO variants chosen by name.

Notes 002 derive, from Jensen's inequality, the evidence lower bound

.. math::  \\log p(x) \\ge \\mathrm{ELBO} = E_{q(z|x)}[\\log p(x \\mid z)] - \\mathrm{KL}(q(z \\mid x) \\,\\|\\, p(z))
           \\qquad \\text{(notes 002, eq. (*))}

and the notes 000 ("Beta-VAE") weight its KL term:
L_beta = E_q[log p(x|z)] - beta KL(q || p).  Each class below returns the
*loss* -L summed over the minibatch (Pyro's convention), differentiable:

- :class:`MonteCarloELBO`: one or more reparameterized samples of log p(x, z) - log q(z | x)
  (Pyro's ``Trace_ELBO``, score-function terms for non-reparameterized sites).
- :class:`AnalyticELBO`: the same with KL(q || p) in closed form where torch knows it
  (notes 002: KL = 1/2 (tr Sigma + mu^T mu - D_z - log det Sigma)), Pyro's ``TraceMeanField_ELBO``.
- :class:`IWAE`: log (1/k) sum_i p(x, z_i) / q(z_i | x) with k reparameterized samples
  (Burda et al. 2016), vectorised by repeating each example k times in the ``"data"`` plate.
- :class:`FreeBitsELBO`: the analytic ELBO with each latent dimension's KL, averaged over the
  minibatch, floored at lambda nats (Kingma et al. 2016, "free bits").

The ELBOs are summed straight from the guide's sample sites and the replayed model's
(:func:`~.traces.site_pair`), one reduction per site, when every guide site is reparameterized;
Pyro's estimators (same values and gradients) take the other cases.

beta is applied as an effect handler, not a flag: :func:`scale_sites` multiplies the
log-density of the chosen latent sites by beta in *both* the model (log p(z)) and the
guide (log q(z | x)), so every estimator above sees beta (log p(z) - log q(z|x)) = -beta KL.
:class:`KLWarmup` is a schedule object (beta ramps 0 -> 1 over N epochs); ``fit_svi`` calls
``objective.set_epoch(epoch, epochs)`` at each epoch start, so resume is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro.distributions as dist
import pyro.distributions.kl  # noqa: F401  (registers Pyro's KL pairs, e.g. Independent)
import torch
import torch.nn.functional as F
from pyro.distributions import Independent
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch.distributions import kl_divergence

from ..errors import InputError
from .diagnostics import site_kl
from .traces import data_frame, log_weights, sample_sites, scaled_log_prob, site_pair

OBJECTIVES = ("elbo", "analytic", "iwae")


class SiteScaleMessenger(Messenger):
    """``poutine.scale`` restricted to the named sites (and allowing scale 0, the AE limit of beta)."""

    def __init__(self, scale: float, sites: Sequence[str]):
        super().__init__()
        self.scale = float(scale)
        self.sites = frozenset(sites)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites:
            msg["scale"] = self.scale * msg["scale"]


def scale_sites(fn: Callable, scale: float, sites: Sequence[str]) -> Callable:
    """``fn`` with the log-density of ``sites`` multiplied by ``scale`` (use on model *and* guide)."""
    return SiteScaleMessenger(scale, sites)(fn)


class KLWarmup:
    """KL warm-up: weight(epoch) = min(1, epoch / N) for the 0-based epoch (0 at the start, 1 from epoch N).

    Computed in float64 from the epoch alone (no state), so a resumed run uses the same weights.
    """

    def __init__(self, epochs: int):
        if not isinstance(epochs, int) or epochs < 0:
            raise InputError(f"warm-up epochs must be an integer >= 0; got {epochs!r}")
        self.epochs = epochs

    def __call__(self, epoch: int) -> float:
        if self.epochs == 0:
            return 1.0
        return float(min(1.0, epoch / float(self.epochs)))

    def __repr__(self) -> str:
        return f"KLWarmup(epochs={self.epochs})"


class Objective:
    """Base class: beta and warm-up on the KL of ``sites``; subclasses define :meth:`_loss`.

    Parameters
    ----------
    num_particles : int
        Samples of z per example (k for :class:`IWAE`).
    beta : float
        Weight of the KL of ``sites`` (beta >= 0; 1 is the ELBO, 0 a deterministic-autoencoder loss).
    sites : sequence of str
        The latent sites the weight applies to (default ``("z",)``).
    warmup_epochs : int
        Ramp the weight from 0 to ``beta`` over this many epochs (:class:`KLWarmup`); 0 = off.
    """

    name = ""
    #: the loss is a sum of per-row terms, so shares of a minibatch add up to it (a data-parallel fit relies on it)
    rows_additive = True

    def __init__(self, num_particles: int = 1, *, beta: float = 1.0, sites: Sequence[str] = ("z",),
                 warmup_epochs: int = 0):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise InputError(f"particles must be a positive integer; got {num_particles!r}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise InputError(f"beta must be a finite number >= 0; got {beta!r}")
        if isinstance(sites, str) or not all(isinstance(s, str) for s in sites):
            raise InputError(f"sites must be a sequence of site names; got {sites!r}")
        self.num_particles, self.beta, self.sites = num_particles, float(beta), tuple(sites)
        self.warmup = KLWarmup(warmup_epochs)
        self.epoch = self.warmup.epochs  # outside fit_svi: the full weight

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called by ``fit_svi`` at the start of each (0-based) epoch."""
        self.epoch = epoch

    @property
    def kl_weight(self) -> float:
        """beta times the warm-up factor of the current epoch."""
        return self.kl_weight_at(self.epoch)

    def kl_weight_at(self, epoch: int) -> float:
        """beta times the warm-up factor of (0-based) ``epoch``."""
        return self.beta * self.warmup(epoch)

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """-L_beta summed over the minibatch (a scalar tensor with gradients)."""
        w = self.kl_weight
        if w != 1.0:
            model, guide = scale_sites(model, w, self.sites), scale_sites(guide, w, self.sites)
        return self._loss(model, guide, *args, **kwargs)

    __call__ = differentiable_loss

    @torch.no_grad()
    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The same, as a float."""
        return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def _loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_particles={self.num_particles}, beta={self.beta}, "
                f"sites={self.sites}, warmup_epochs={self.warmup.epochs})")


class MonteCarloELBO(Objective):
    """-ELBO by Monte Carlo: mean over particles of -(log p(x, z) - log q(z | x)), z ~ q reparameterized.

    When every guide site is reparameterized and every model latent has a guide site, the loss is summed straight
    from the guide's sites and the replayed model's (:func:`~.traces.site_pair`); otherwise (score-function terms,
    enumeration) Pyro's ``Trace_ELBO`` does the work.  Both give the same value and gradients.
    """

    name = "elbo"

    def __init__(self, num_particles: int = 1, **kw):
        super().__init__(num_particles, **kw)
        self._elbo = Trace_ELBO(num_particles=self.num_particles)

    def _loss(self, model, guide, *args, **kwargs):
        losses = []
        for _ in range(self.num_particles):
            g_tr, m_tr = site_pair(model, guide, *args, **kwargs)
            latents = [name for name, site in sample_sites(m_tr) if not site["is_observed"]]
            if not _reparameterized(g_tr) or any(name not in g_tr.nodes for name in latents):
                return self._elbo.differentiable_loss(model, guide, *args, **kwargs)
            log_q = _total(_site_log_prob_sum(site) for _, site in sample_sites(g_tr))
            log_p = _total(_site_log_prob_sum(site) for _, site in sample_sites(m_tr))
            losses.append(log_q - log_p)
        return _mean(losses)


class AnalyticELBO(Objective):
    """-ELBO with KL(q || p) in closed form where torch knows the pair (Monte Carlo otherwise).

    When every guide site is reparameterized and matches a model site (the common case: a
    Gaussian amortized guide), the loss is computed straight from the guide's sites and the
    replayed model's (:func:`~.traces.site_pair`), -sum_obs log p(x | .) + sum_latent KL(q || p),
    each site's term summed in one reduction (:func:`_site_log_prob_sum`, :func:`_site_kl_sum`);
    this skips Pyro's generic bookkeeping (trace graphs, score-function terms, enumeration checks).
    Otherwise Pyro's ``TraceMeanField_ELBO`` does the work; both give the same value.
    """

    name = "analytic"

    def __init__(self, num_particles: int = 1, **kw):
        super().__init__(num_particles, **kw)
        self._elbo = TraceMeanField_ELBO(num_particles=self.num_particles)

    def _loss(self, model, guide, *args, **kwargs):
        losses = []
        for _ in range(self.num_particles):
            g_tr, m_tr = site_pair(model, guide, *args, **kwargs)
            if not _reparameterized(g_tr):
                return self._elbo.differentiable_loss(model, guide, *args, **kwargs)
            loss = _negative_elbo(g_tr, m_tr, _site_kl_sum)
            if loss is None:  # sites of one program missing from the other: Pyro's estimator handles it
                return self._elbo.differentiable_loss(model, guide, *args, **kwargs)
            losses.append(loss)
        return _mean(losses)


class IWAE(Objective):
    """-log (1/k) sum_{i=1}^k w_i, w_i = p(x, z_i) / q(z_i | x), z_i ~ q(z | x), summed over examples.

    The k samples are drawn in one vectorised pass: each per-example argument of shape
    (N, ...) is repeated k times to (k N, ...), so the ``"data"`` plate has k N rows.
    k = 1 is the Monte Carlo ELBO; the bound tightens as k grows (Burda et al. 2016).
    With beta != 1 the weights are p(x | z) (p(z) / q(z | x))^beta.
    """

    name = "iwae"

    def _loss(self, model, guide, *args, **kwargs):
        log_w = log_weights(model, guide, args, self.num_particles, **kwargs)
        return -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()


def _per_dim_kl(q, p, name: str) -> tuple[torch.Tensor, int]:
    """KL(q || p) per latent dimension (batch + event shape of the base distributions) and the event rank."""
    event = 0
    while isinstance(q, Independent):
        event += q.reinterpreted_batch_ndims
        q = q.base_dist
    while isinstance(p, Independent):
        p = p.base_dist
    try:
        return kl_divergence(q, p), event
    except NotImplementedError:
        raise InputError(f"free bits needs a closed-form per-dimension KL at site {name!r}; got q "
                         f"{type(q).__name__} and p {type(p).__name__}") from None


def _negative_elbo(g_tr, m_tr, kl_of) -> torch.Tensor | None:
    """-ELBO of one particle from a guide trace and the replayed model trace.

    -sum_observed log p(x | .) + sum_latent kl_of(name, q_site, p_site), plus the log-factor of every
    ``pyro.factor`` of the guide (it enters log q, as in Pyro's ``Trace_ELBO``); None when a latent guide
    site has no model counterpart or a model latent no guide counterpart.  A model site masked out entirely
    (``poutine.mask(mask=False)``) adds nothing: its KL, like its log-density, is masked by the model's mask.
    """
    guide_only = [site for name, site in sample_sites(g_tr) if name not in m_tr.nodes]
    if any(not site["is_observed"] for site in guide_only):
        return None
    loss = _total(_site_log_prob_sum(site) for site in guide_only)
    for name, site in sample_sites(m_tr):
        if site["mask"] is False:  # masked out (its term is 0 whatever the guide's site): nothing to compute
            continue
        if name in g_tr.nodes:
            loss = _plus(loss, kl_of(name, g_tr.nodes[name], site))
        elif site["is_observed"]:
            loss = _plus(loss, _site_log_prob_sum(site), -1)
        else:
            return None
    return loss


def _reparameterized(guide_sites) -> bool:
    """Every guide sample site draws by reparameterization and none is enumerated: the ELBO can be summed straight
    from the sites (else Pyro's estimators add score-function terms or enumerate)."""
    return all(s["fn"].has_rsample and not s["infer"].get("enumerate") for _, s in sample_sites(guide_sites))


def _plus(total, term, sign: int = 1):
    """total + sign * term, where a total of 0.0 (nothing summed yet) is not an operation."""
    if isinstance(total, float) and total == 0.0:
        return term if sign > 0 else -term
    return total + term if sign > 0 else total - term


def _total(terms) -> torch.Tensor | float:
    """The sum of the terms, left to right (0.0 for none)."""
    total = 0.0
    for term in terms:
        total = _plus(total, term)
    return total


def _mean(losses: list) -> torch.Tensor:
    """The mean over particles (the loss itself for one particle)."""
    return losses[0] if len(losses) == 1 else _total(losses) / len(losses)


_BERNOULLI = (dist.Bernoulli, torch.distributions.Bernoulli)
_NORMAL = (dist.Normal, torch.distributions.Normal)


def _unscaled(site) -> bool:
    """No mask and one number as the scale: a site's summed term is the sum of its elementwise terms times it."""
    return site["mask"] is None and isinstance(site["scale"], (int, float))


def _base(fn):
    """(base distribution, event rank) of ``fn`` through ``.to_event`` wrappers."""
    event = 0
    while type(fn) is Independent:
        event, fn = event + fn.reinterpreted_batch_ndims, fn.base_dist
    return fn, event


def _site_log_prob_sum(site) -> torch.Tensor:
    """sum of a site's scaled log-density (Pyro's convention: plate scale and mask applied).

    A Bernoulli(logits) likelihood (any ``.to_event``) without a mask is one fused binary cross-entropy summed in
    the same kernel, -sum_i BCE(logits_i, x_i) (the log-density's value, summed once instead of per event and then
    over the batch); every other site is ``scaled_log_prob(site).sum()``.
    """
    base, _ = _base(site["fn"])
    if (type(base) in _BERNOULLI and _unscaled(site) and not base._validate_args and "logits" in vars(base)
            and base.logits.shape == site["value"].shape):
        total = -F.binary_cross_entropy_with_logits(base.logits, site["value"], reduction="sum")
        return total if site["scale"] == 1 else total * site["scale"]
    return scaled_log_prob(site).sum()


def _site_kl_sum(name: str, q_site, p_site) -> torch.Tensor:
    """KL(q || p) of one latent site summed over its batch (:func:`~.diagnostics.site_kl`).

    Between two Normal(...).to_event(k) of the same shape without a mask: the elementwise closed form summed
    in one reduction (the same value as summing per event, then over the batch).
    """
    (q, q_event), (p, p_event) = _base(q_site["fn"]), _base(p_site["fn"])
    if (type(q) in _NORMAL and type(p) in _NORMAL and q_event == p_event and _unscaled(p_site)
            and q_site["fn"].shape() == p_site["fn"].shape() == q.loc.shape == p.loc.shape
            and q_site["infer"].get("analytic_kl") is not False):
        total = kl_divergence(q, p).sum()
        return total if p_site["scale"] == 1 else total * p_site["scale"]
    return site_kl(q_site, p_site)[0]


class FreeBitsELBO(Objective):
    """The analytic ELBO with free bits on ``sites`` (Kingma et al. 2016, eq. of the IAF paper, App. C).

    For a latent site with per-dimension KL_{n,j} (example n, dimension j) the KL term becomes

    .. math::  N \\sum_j \\max\\big(\\lambda, \\tfrac1N \\sum_n \\mathrm{KL}_{n,j}\\big)

    so a dimension whose average KL is below lambda nats gets no gradient pulling it to the prior.

    Parameters
    ----------
    free_bits : float
        lambda, nats per latent dimension (> 0).
    """

    name = "free-bits"
    rows_additive = False  # max(lambda, batch mean of the KL) per dimension: not a sum of per-row terms

    def __init__(self, num_particles: int = 1, *, free_bits: float, **kw):
        super().__init__(num_particles, **kw)
        if not (isinstance(free_bits, (int, float)) and math.isfinite(free_bits) and free_bits > 0):
            raise InputError(f"free bits must be a finite number > 0; got {free_bits!r}")
        self.free_bits = float(free_bits)

    def _kl(self, name, q_site, p_site) -> torch.Tensor:
        if name not in self.sites:
            return _site_kl_sum(name, q_site, p_site)
        frame = data_frame(p_site, required_by="free bits")
        kl, event = _per_dim_kl(q_site["fn"], p_site["fn"], name)
        per_dim = kl.mean(frame.dim - event).clamp(min=self.free_bits)
        return per_dim.sum() * kl.shape[frame.dim - event] * p_site["scale"]

    def _loss(self, model, guide, *args, **kwargs):
        losses = []
        for _ in range(self.num_particles):
            g_tr, m_tr = site_pair(model, guide, *args, **kwargs)
            loss = _negative_elbo(g_tr, m_tr, self._kl)
            if loss is None:
                raise InputError("free bits needs the model's latent sites and the guide's sample sites to match")
            losses.append(loss)
        return _mean(losses)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", free_bits={self.free_bits})"


def make_objective(name: str = "analytic", particles: int = 1, beta: float = 1.0, warmup_epochs: int = 0,
                   free_bits: float = 0.0, sites: Sequence[str] = ("z",)) -> Objective:
    """An objective by name, as ``ppl-dgm fit ... --objective NAME`` builds it.

    Parameters
    ----------
    name : {"elbo", "analytic", "iwae"}
        Monte Carlo ELBO, analytic-KL ELBO, or the importance-weighted bound with k = ``particles``.
    particles : int
        Samples of z per example (k for IWAE).
    beta, warmup_epochs, sites : see :class:`Objective`.
    free_bits : float
        lambda >= 0 nats per latent dimension; > 0 selects :class:`FreeBitsELBO` (ELBO objectives only).
    """
    if name not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}; got {name!r}")
    if not (isinstance(free_bits, (int, float)) and free_bits >= 0):
        raise InputError(f"free bits must be a number >= 0; got {free_bits!r}")
    kw = dict(beta=beta, sites=tuple(sites), warmup_epochs=warmup_epochs)
    if free_bits > 0:
        if name == "iwae":
            raise InputError("free bits applies to the ELBO objectives ('elbo', 'analytic'); got objective 'iwae'")
        return FreeBitsELBO(particles, free_bits=free_bits, **kw)
    cls = {"elbo": MonteCarloELBO, "analytic": AnalyticELBO, "iwae": IWAE}[name]
    return cls(particles, **kw)

"""Gaussian-mixture EM with every iteration one jit-compiled JAX call (plain JAX, no NumPyro).

The JAX twin of :class:`ppl_dgm.models.gmm_em.GMMFamily` (course notes, EM
section): feature rows ``phi(x)`` prepared once, E-step ``log p = Phi W`` and
M-step statistics ``S = gamma^T Phi`` accumulated over chunks with ``lax.scan``,
closed-form M-step with ``reg_covar``, all fused into one compiled call.

:class:`JaxGMMFamily` plugs that call into the one EM loop,
:func:`ppl_dgm.inference.em.fit_em`, so restarts (``n_init``, from the same
seeded initialisations as the torch backend), the monotone log-likelihood check,
convergence and warnings are the torch backend's own.  Parameters cross the
boundary as :class:`~ppl_dgm.models.gmm.GMMParams` of torch tensors (K x D x D
numbers per iteration); only the passes over the data run in JAX.

Float64 data call ``jax.config.update("jax_enable_x64", True)``: a process-wide
JAX switch, turned on only when float64 is asked for.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...errors import InputError
from ...inference.em import EMResult, fit_em
from ...models.base import EStep
from ...models.gmm import COLLAPSE_MESSAGE, GMMParams
from ...models.gmm_em import GMMData, GMMFamily


class JaxGMMData(NamedTuple):
    """Prepared data: centred feature rows in chunks and what the initialisations need.

    Attributes
    ----------
    features : jax.Array, shape (n_chunks, chunk, F)
        ``phi(x - shift)``, zero rows padding the last chunk.
    mask : jax.Array, shape (n_chunks, chunk)
        1 for real rows, 0 for padding.
    shift : jax.Array, shape (D,)
        The data mean (centring for numerical safety).
    init_data : GMMData
        The torch data the seeded initialisations are drawn from.
    """

    features: Any
    mask: Any
    shift: Any
    init_data: GMMData


def _features(jnp, xc, covariance_type):
    n, d = xc.shape
    if covariance_type in ("full", "tied"):
        iu = np.triu_indices(d)
        quad = xc[:, iu[0]] * xc[:, iu[1]]
    elif covariance_type == "diag":
        quad = xc * xc
    else:
        quad = (xc * xc).sum(1, keepdims=True)
    return jnp.concatenate([quad, xc, jnp.ones((n, 1), xc.dtype)], axis=1)


def _weight_matrix(jnp, weights, means_c, prec_chol, covariance_type):
    """``W`` (F, K): ``phi(x) W = log pi_k + log N(x | mu_k, Sigma_k)`` (centred means)."""
    k, d = means_c.shape
    ct = covariance_type
    if ct in ("full", "tied"):
        prec = prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
        prec = jnp.broadcast_to(prec, (k, d, d))
        iu = np.triu_indices(d)
        factor = np.where(iu[0] == iu[1], -0.5, -1.0)
        quad = prec[:, iu[0], iu[1]] * factor
        lin = jnp.einsum("kde,ke->kd", prec, means_c)
        const = (lin * means_c).sum(1)
        log_det = jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)).sum(-1)
    elif ct == "diag":
        p = prec_chol**2
        quad, lin = -0.5 * p, p * means_c
        const = (lin * means_c).sum(1)
        log_det = jnp.log(prec_chol).sum(-1)
    else:
        p = prec_chol**2
        quad, lin = (-0.5 * p)[:, None], p[:, None] * means_c
        const = p * (means_c * means_c).sum(1)
        log_det = d * jnp.log(prec_chol)
    c0 = jnp.log(weights) - 0.5 * d * math.log(2 * math.pi) + log_det - 0.5 * const
    return jnp.concatenate([quad, lin, c0[:, None]], axis=1).T


def _m_step(jax, jnp, stats, n_dim, covariance_type, reg_covar, eps):
    """Closed-form parameters from ``stats`` (F, K) (course notes, M-step); centred means."""
    d, ct = n_dim, covariance_type
    nq = stats.shape[0] - d - 1
    nk = stats[-1] + 10 * eps
    mu = stats[nq:-1].T / nk[:, None]
    k = nk.shape[0]
    if ct in ("full", "tied"):
        iu = np.triu_indices(d)
        sxx = jnp.zeros((k, d, d), stats.dtype).at[:, iu[0], iu[1]].set(stats[:nq].T)
        sxx = sxx.at[:, iu[1], iu[0]].set(stats[:nq].T)
        eye = jnp.eye(d, dtype=stats.dtype)
        if ct == "full":
            cov = sxx / nk[:, None, None] - mu[:, :, None] * mu[:, None, :] + reg_covar * eye
        else:
            cov = (sxx.sum(0) - (nk[:, None] * mu).T @ mu) / nk.sum() + reg_covar * eye
        chol = jnp.linalg.cholesky(cov)
        eye_b = jnp.broadcast_to(eye, chol.shape)
        prec_chol = jnp.swapaxes(jax.scipy.linalg.solve_triangular(chol, eye_b, lower=True), -1, -2)
    elif ct == "diag":
        cov = stats[:nq].T / nk[:, None] - mu * mu + reg_covar
        prec_chol = jnp.where(cov > 0, 1.0 / jnp.sqrt(jnp.abs(cov)), jnp.nan)
    else:
        cov = (stats[0] / nk - (mu * mu).sum(1)) / d + reg_covar
        prec_chol = jnp.where(cov > 0, 1.0 / jnp.sqrt(jnp.abs(cov)), jnp.nan)
    return nk / nk.sum(), mu, cov, prec_chol


@functools.lru_cache(maxsize=32)
def _make_step(covariance_type: str, reg_covar: float, n_dim: int, n: int, eps: float):
    """The compiled EM iteration ``(params, shift, features, mask) -> (new params, mean log-lik)``."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(params, shift, feats_chunks, mask_chunks):
        weights, means, _, prec_chol = params
        w = _weight_matrix(jnp, weights, means - shift, prec_chol, covariance_type)

        def body(carry, inp):
            stats, total = carry
            rows, mask = inp
            logp = rows @ w
            lse = jax.scipy.special.logsumexp(logp, axis=1, keepdims=True)
            resp = jnp.exp(logp - lse) * mask[:, None]
            return (stats + resp.T @ rows, total + (lse[:, 0] * mask).sum()), None

        init = (jnp.zeros(w.shape[::-1], w.dtype), jnp.zeros((), w.dtype))
        (stats, total), _ = jax.lax.scan(body, init, (feats_chunks, mask_chunks))
        weights, mu, cov, prec_chol = _m_step(jax, jnp, stats.T, n_dim, covariance_type, reg_covar, eps)
        return (weights, mu + shift, cov, prec_chol), total / n

    return step


class JaxGMMFamily:
    """Gaussian-mixture hooks for :func:`~ppl_dgm.inference.em.fit_em`, iterations run in JAX.

    Parameters
    ----------
    family : GMMFamily
        Supplies ``covariance_type``, ``reg_covar``, the seeded initialisations
        (``init_params``) and the monotone-check slack; copied, never changed.
    chunk_size : int, optional
        Rows per ``lax.scan`` step (memory O(chunk x F)); 4096 by default.
    """

    def __init__(self, family: GMMFamily, chunk_size: int | None = None) -> None:
        self.family = copy.copy(family)
        self.family.precompute_bytes = 0  # the torch features are only read once, to initialise
        self.chunk_size = int(chunk_size or 4096)

    def prepare(self, x: Tensor) -> JaxGMMData:
        """Feature rows of ``x`` (N, D) in chunks; float64 turns on ``jax_enable_x64``."""
        import jax

        if x.dtype == torch.float64:
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        x_np = x.detach().cpu().numpy()
        n, d = x_np.shape
        shift = x_np.mean(0, dtype=np.float64).astype(x_np.dtype)
        chunk = min(self.chunk_size, n)
        n_chunks = -(-n // chunk)
        xc = np.concatenate([x_np - shift, np.zeros((n_chunks * chunk - n, d), x_np.dtype)])
        feats = _features(jnp, jnp.asarray(xc), self.family.covariance_type).reshape(n_chunks, chunk, -1)
        mask = jnp.asarray(np.arange(n_chunks * chunk) < n, dtype=x_np.dtype).reshape(n_chunks, chunk)
        return JaxGMMData(feats, mask, jnp.asarray(shift), self.family.prepare(x))

    def initialize(self, data: JaxGMMData, generator: torch.Generator) -> GMMParams:
        """The torch backend's initialisation (same generator, same draws)."""
        return self.family.initialize(data.init_data, generator)

    def e_step(self, params: GMMParams, data: JaxGMMData) -> EStep:
        """One compiled iteration: the mean log-likelihood under ``params``; the M-step's
        closed-form parameters (computed in the same call) are the statistics."""
        import jax.numpy as jnp

        n, d = data.init_data.x.shape
        eps = float(np.finfo(data.features.dtype).eps)
        step = _make_step(self.family.covariance_type, self.family.reg_covar, d, n, eps)
        jparams = tuple(jnp.asarray(p.detach().cpu().numpy()) for p in params)
        new, ll = step(jparams, data.shift, data.features, data.mask)
        if not bool(jnp.isfinite(new[3]).all()):
            raise InputError(COLLAPSE_MESSAGE.format(reg=self.family.reg_covar))
        return EStep(float(ll), new)

    def m_step(self, estep: EStep, data: JaxGMMData) -> GMMParams:
        """The parameters computed by :meth:`e_step`, as torch tensors on the data's device."""
        x = data.init_data.x
        return GMMParams(*(torch.as_tensor(np.array(p), dtype=x.dtype, device=x.device)
                           for p in estep.stats))

    def monotone_slack(self, params: GMMParams) -> float:
        return self.family.monotone_slack(params)


def fit_em_gmm(x: Any, init: Any = None, *, n_components: int | None = None,
               covariance_type: str = "full", reg_covar: float = 1e-6, init_params: str = "kmeans",
               chunk_size: int | None = None, **loop: Any) -> EMResult:
    """EM for a Gaussian mixture in JAX: :func:`fit_em` with :class:`JaxGMMFamily`.

    Parameters
    ----------
    x : array-like, shape (N, D)
        NumPy, torch or JAX; float32 runs in float32, anything else in float64.
    init : GMMParams, optional
        Given initial parameters in scikit-learn's shapes (then one run); otherwise
        ``n_init`` seeded initialisations of kind ``init_params``.
    n_components : int, optional
        K; taken from ``init`` if omitted.
    covariance_type, reg_covar, init_params
        As in :class:`ppl_dgm.GaussianMixture`.
    chunk_size : int, optional
        Rows per ``lax.scan`` step.
    **loop
        ``n_init``, ``tol``, ``max_iter``, ``seed``, ``warn``, ... of :func:`fit_em`.

    Returns
    -------
    EMResult
        ``params`` a :class:`GMMParams` of torch tensors of ``x``'s dtype.
    """
    if n_components is None and init is None:
        raise InputError("expected n_components or init; got neither")
    xt = torch.as_tensor(np.asarray(x))
    if xt.dtype != torch.float32:
        xt = xt.double()
    k = n_components if n_components is not None else len(init[0])
    family = GMMFamily(k, covariance_type, reg_covar, init_params, chunk_size=chunk_size)
    return fit_em(JaxGMMFamily(family, chunk_size), xt, init=init, **loop)

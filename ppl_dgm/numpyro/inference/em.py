"""JAX twin of the Gaussian-mixture EM (:mod:`ppl_dgm.models.gmm_em`), jit-compiled.

Same maths as the torch version (course notes, EM section): feature rows
``phi(x)`` prepared once, E-step ``log p = Phi W`` and M-step statistics
``S = gamma^T Phi`` accumulated over chunks with ``lax.scan``, closed-form
M-step with ``reg_covar``.  The per-iteration mean log-likelihood is the one of
the parameters *before* the M-step, as in scikit-learn and :func:`fit_em`.

Float64 runs call ``jax.config.update("jax_enable_x64", True)``: a process-wide
JAX switch, turned on only when float64 is asked for.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np

from ...errors import InputError
from ...inference.em import ConvergenceWarning
from ...models.gmm import COLLAPSE_MESSAGE


class JaxEMResult(NamedTuple):
    """``params`` = (weights, means, covariances, precisions_cholesky) as NumPy arrays."""

    params: tuple
    lower_bound: float
    history: list
    converged: bool
    n_iter: int


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
    """Closed-form parameters from ``stats`` (F, K) (course notes, M-step)."""
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


def _make_step(covariance_type: str, reg_covar: float, n_dim: int, n: int, eps: float):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(params, feats_chunks, mask_chunks):
        weights, means_c, _, prec_chol = params
        w = _weight_matrix(jnp, weights, means_c, prec_chol, covariance_type)

        def body(carry, inp):
            stats, total = carry
            rows, mask = inp
            logp = rows @ w
            lse = jax.scipy.special.logsumexp(logp, axis=1, keepdims=True)
            resp = jnp.exp(logp - lse) * mask[:, None]
            return (stats + resp.T @ rows, total + (lse[:, 0] * mask).sum()), None

        init = (jnp.zeros(w.shape[::-1], w.dtype), jnp.zeros((), w.dtype))
        (stats, total), _ = jax.lax.scan(body, init, (feats_chunks, mask_chunks))
        new = _m_step(jax, jnp, stats.T, n_dim, covariance_type, reg_covar, eps)
        return new, total / n

    return step


def fit_em_gmm(x: Any, init: Any, *, covariance_type: str = "full", tol: float = 1e-3,
               reg_covar: float = 1e-6, max_iter: int = 100, chunk_size: int = 4096,
               warn: bool = True) -> JaxEMResult:
    """EM for a Gaussian mixture in JAX from given initial parameters.

    Parameters
    ----------
    x : array, shape (N, D)
        float64 data turn on ``jax_enable_x64``; float32 data run in float32.
    init : sequence
        ``(weights (K,), means (K, D), covariances, precisions_cholesky)`` in
        scikit-learn's shapes (a :class:`~ppl_dgm.models.gmm.GMMParams` works).
    covariance_type, tol, reg_covar, max_iter
        As in :class:`ppl_dgm.GaussianMixture`.
    chunk_size : int
        Rows per ``lax.scan`` step (memory O(chunk x F)).

    Returns
    -------
    JaxEMResult
    """
    import jax
    import jax.numpy as jnp

    x_np = np.asarray(x)
    if x_np.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = x_np.dtype if x_np.dtype in (np.float32, np.float64) else np.float64
    x_np = x_np.astype(dtype)
    n, d = x_np.shape
    shift = x_np.mean(0, dtype=np.float64).astype(dtype)
    chunk = int(min(chunk_size, n))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xc = jnp.asarray(np.concatenate([x_np - shift, np.zeros((pad, d), dtype)]))
    feats = _features(jnp, xc, covariance_type).reshape(n_chunks, chunk, -1)
    mask = jnp.asarray(np.arange(n_chunks * chunk) < n, dtype=dtype).reshape(n_chunks, chunk)
    as_np = [np.asarray(p.detach().cpu() if hasattr(p, "detach") else p, dtype=dtype) for p in init]
    params = (as_np[0], as_np[1] - shift, as_np[2], as_np[3])
    params = tuple(jnp.asarray(p) for p in params)
    step = _make_step(covariance_type, float(reg_covar), d, n, float(np.finfo(dtype).eps))
    history: list[float] = []
    converged = False
    for _ in range(max_iter):
        params, ll = step(params, feats, mask)
        ll = float(ll)
        change = ll - history[-1] if history else math.inf
        history.append(ll)
        if not bool(jnp.isfinite(params[3]).all()):
            raise InputError(COLLAPSE_MESSAGE.format(reg=reg_covar))
        if abs(change) < tol:
            converged = True
            break
    if warn and not converged:
        warnings.warn(f"EM (numpyro backend) did not converge in max_iter={max_iter} iterations",
                      ConvergenceWarning, stacklevel=2)
    w, m, c, u = (np.asarray(p) for p in params)
    return JaxEMResult((w, m + shift, c, u), history[-1], history, converged, len(history))


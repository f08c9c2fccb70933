"""Gaussian-mixture EM with every pass over the data jit-compiled JAX (plain JAX, no NumPyro).

The JAX twin of :class:`ppl_dgm.models.gmm_em.GMMFamily` (course notes, EM
section), in the same two forms: the *feature* form (``phi(x)`` built per chunk,
E-step ``log p = W phi``, M-step statistics ``S = gamma phi^T``) and, for full
covariances with ``2.5 K <= D``, the *direct* form (``y = [U_1 .. U_K]^T x``, second
moments as one ``(gamma x) x^T`` product).  A compiled pass visits a block of
chunks of columns in a loop and returns their statistics; the blocks' passes run
at once, one thread each (``workers``: XLA runs concurrent calls on separate
cores, while one call's loop of small products keeps about one core busy), and
the closed-form M-step with ``reg_covar`` is compiled on their sum.  Data sit as
centred columns (n_chunks, D, chunk), indexed in place, so memory is the data
plus O(chunk x (F + K)) per worker whatever N is, and XLA's matrix products
(which use the CPU's widest vector units) see ``(K x F)(F x c)`` and
``(K x c)(c x F)``.

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
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...errors import InputError
from ...inference.em import EMResult, fit_em
from ...models.base import EStep
from ...models.gmm import COLLAPSE_MESSAGE, GMMParams
from ...models.gmm_em import GMMData, GMMFamily, check_rows, triangle_blocks, upper_factor


class JaxGMMData(NamedTuple):
    """Prepared data: centred columns in chunks and what the initialisations need.

    Attributes
    ----------
    columns : jax.Array, shape (n_chunks, D, chunk)
        ``(x - shift)^T`` chunk by chunk, zero columns padding the last chunk.
    mask : jax.Array, shape (n_chunks, chunk)
        1 for real rows, 0 for padding.
    shift : jax.Array, shape (D,)
        The data mean (centring for numerical safety).
    init_data : GMMData
        The torch data the seeded initialisations are drawn from (and the E-step's form).
    blocks : tuple of np.ndarray
        ``[start, stop)`` (int32) of the blocks of chunks whose passes run at once, one per worker.
    """

    columns: Any
    mask: Any
    shift: Any
    init_data: GMMData
    blocks: tuple


def _features_t(jnp, xt, covariance_type):
    """``phi^T`` (F, c) of centred columns ``xt`` (D, c); rows ``x_i x_j`` (i <= j) as static slices."""
    d, c = xt.shape
    if covariance_type in ("full", "tied"):
        quad = [xt[i : i + 1] * xt[i:] for i in range(d)]
    elif covariance_type == "diag":
        quad = [xt * xt]
    else:
        quad = [(xt * xt).sum(0, keepdims=True)]
    return jnp.concatenate([*quad, xt, jnp.ones((1, c), xt.dtype)], axis=0)


@functools.lru_cache(maxsize=1)
def _block_setter():
    """``(cols, start, block) -> cols`` with ``cols[start : start + len(block)] = block``, ``cols`` donated
    (updated in place)."""
    import jax

    return jax.jit(lambda c, i, b: jax.lax.dynamic_update_slice_in_dim(c, b, i, 0), donate_argnums=0)


def _softmax_columns(jnp, logp, mask):
    """Responsibilities of ``logp`` (K, c), padding masked, and ``sum_n log sum_k exp``: one ``exp`` per
    entry (``logsumexp`` followed by ``exp(logp - lse)`` takes two; the softmax is about a fifth of a small-K
    E-step)."""
    top = logp.max(0, keepdims=True)
    e = jnp.exp(logp - top)
    s = e.sum(0, keepdims=True)
    return e * (mask / s), ((top + jnp.log(s))[0] * mask).sum()


def _sum_middle(jnp, y):
    """``y.sum(1)`` of ``y`` (K, m, c) by pairwise halving: elementwise adds XLA fuses into one loop (its
    reduction over a middle axis is several times slower on the CPU: benchmarks/gmm_pass_pieces.py)."""
    while y.shape[1] > 1:
        h = y.shape[1] // 2
        pairs = y[:, :h] + y[:, h : 2 * h]
        y = pairs if y.shape[1] % 2 == 0 else jnp.concatenate([pairs, y[:, 2 * h :]], axis=1)  # odd: last one kept
    return y[:, 0]


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


def _fold_chunks(jax, body, init, cols, mask, bounds):
    """``body(carry, (columns, mask))`` folded over chunks ``bounds[0] <= i < bounds[1]`` (indexed in place: a
    block of chunks is never copied out of the data)."""
    return jax.lax.fori_loop(bounds[0], bounds[1], lambda i, carry: body(carry, (cols[i], mask[i])), init)


def _feature_pass(jax, jnp, params, shift, cols, mask, bounds, covariance_type):
    """Statistics ``S`` (F, K) and the summed log-likelihood of chunks ``bounds``, in the feature form."""
    weights, means, _, prec_chol = params
    w = _weight_matrix(jnp, weights, means - shift, prec_chol, covariance_type).T  # (K, F)

    def body(carry, inp):
        stats, total = carry
        xt, m = inp
        f = _features_t(jnp, xt, covariance_type)  # (F, c)
        resp, ll = _softmax_columns(jnp, w @ f, m)
        return stats + resp @ f.T, total + ll

    init = (jnp.zeros(w.shape, w.dtype), jnp.zeros((), w.dtype))
    stats, total = _fold_chunks(jax, body, init, cols, mask, bounds)
    return stats.T, total


def _direct_pass(jax, jnp, params, shift, cols, mask, bounds):
    """The same statistics in the direct form (full covariances), by row blocks of the triangles."""
    weights, means, _, u = params
    k, d = means.shape
    blocks = triangle_blocks(d)
    ut = jnp.swapaxes(u, 1, 2)  # U_k^T, lower triangular
    rows = [ut[:, a:b, :b].reshape(k * (b - a), b) for a, b in blocks]
    offset = jnp.einsum("kde,kd->ke", u, means - shift)  # U_k^T mu_k
    offsets = [offset[:, a:b].reshape(-1, 1) for a, b in blocks]
    c0 = (jnp.log(weights) - 0.5 * d * math.log(2 * math.pi)
          + jnp.log(jnp.diagonal(u, axis1=-2, axis2=-1)).sum(-1))[:, None]

    def body(carry, inp):
        s2, s1, s0, total = carry
        xt, m = inp
        maha = sum(_sum_middle(jnp, ((r @ xt[:b] - off) ** 2).reshape(k, b - a, -1))
                   for (a, b), r, off in zip(blocks, rows, offsets, strict=True))
        resp, ll = _softmax_columns(jnp, c0 - 0.5 * maha, m)
        s2 = [acc + (resp[:, None, :] * xt[None, a:b]).reshape(k * (b - a), -1) @ xt[a:].T
              for acc, (a, b) in zip(s2, blocks, strict=True)]
        return s2, s1 + resp @ xt.T, s0 + resp.sum(1), total + ll

    dt = means.dtype
    init = ([jnp.zeros((k * (b - a), d - a), dt) for a, b in blocks], jnp.zeros((k, d), dt),
            jnp.zeros(k, dt), jnp.zeros((), dt))
    s2, s1, s0, total = _fold_chunks(jax, body, init, cols, mask, bounds)
    upper = jnp.concatenate([jnp.pad(m.reshape(k, b - a, d - a), ((0, 0), (0, 0), (a, 0)))
                             for m, (a, b) in zip(s2, blocks, strict=True)], axis=1)
    iu = np.triu_indices(d)
    return jnp.concatenate([upper[:, iu[0], iu[1]].T, s1.T, s0[None]]), total


@functools.lru_cache(maxsize=32)
def _make_pass(covariance_type: str, direct: bool):
    """The compiled pass ``(params, shift, columns, mask, bounds) -> (statistics, summed log-lik)`` over the
    chunks ``bounds = [start, stop)`` (one compilation serves every block of the same data)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(params, shift, cols, mask, bounds):
        if direct:
            return _direct_pass(jax, jnp, params, shift, cols, mask, bounds)
        return _feature_pass(jax, jnp, params, shift, cols, mask, bounds, covariance_type)

    return run


@functools.lru_cache(maxsize=32)
def _make_m_step(covariance_type: str, reg_covar: float, n_dim: int, n: int, eps: float):
    """The compiled M-step ``(statistics, summed log-lik, shift) -> (new params, mean log-lik)``."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def m_step(stats, total, shift):
        weights, mu, cov, prec_chol = _m_step(jax, jnp, stats, n_dim, covariance_type, reg_covar, eps)
        return (weights, mu + shift, cov, prec_chol), total / n

    return m_step


@functools.lru_cache(maxsize=4)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The threads the blocks' passes are called from (kept for the process: idle threads cost nothing)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="ppl_dgm-em")


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """The BLAS libraries of this process (threadpoolctl), looked up once XLA's CPU Cholesky has loaded the
    OpenBLAS it borrows from SciPy (on first use)."""
    import jax.numpy as jnp
    from threadpoolctl import ThreadpoolController

    jnp.linalg.cholesky(jnp.eye(1)).block_until_ready()
    return ThreadpoolController()


def default_workers() -> int:
    """Concurrent passes by default: the package's CPU threads (torch's, as ``--threads`` sets them:
    :func:`ppl_dgm.utils.set_threads`), at most the cores this process may use; 1 off the CPU (an accelerator
    runs one call at a time)."""
    import jax

    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores))


def chunk_blocks(n_chunks: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``min(workers, n_chunks)`` consecutive blocks of chunks, as equal as can be."""
    parts = max(1, min(workers, n_chunks))
    edges = [n_chunks * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class JaxGMMFamily:
    """Gaussian-mixture hooks for :func:`~ppl_dgm.inference.em.fit_em`, iterations run in JAX.

    Parameters
    ----------
    family : GMMFamily
        Supplies ``covariance_type``, ``reg_covar``, the seeded initialisations
        (``init_params``) and the monotone-check slack; copied, never changed.
    chunk_size : int, optional
        Rows per step of a pass (memory O(chunk x (F + K)) per worker); by default
        about 512 KB of temporaries for the direct form, and for the feature form a
        feature block ``phi`` (F x c) of about 512 KB, 256 to 1,024 rows (each worker
        runs its passes on one core, whose cache should hold the block both products
        read; fewer rows than 1,024 only add loop steps: docs/gmm.md, benchmarks/gmm_grid.py).
    workers : int, optional
        Passes run at once, each over its block of consecutive chunks, from a pool of
        threads (XLA runs concurrent calls on separate cores; one call's chunk loop
        keeps about one core busy); their statistics are summed in block order, so a
        fit is deterministic for a given ``workers``.  Default: the package's CPU
        threads (``--threads``, torch's count), at most the cores this process may
        use (1 on an accelerator): :func:`default_workers`.
    """

    def __init__(self, family: GMMFamily, chunk_size: int | None = None, workers: int | None = None) -> None:
        if family.strategy == "pruned":
            raise InputError("strategy='pruned' runs on the torch backend only; the JAX backend takes 'auto', "
                             "'features' or 'direct'")
        self.family = copy.copy(family)
        # measured on one core: XLA's products favour the direct form more than MKL's
        self.family.direct_ratio = 2.5
        self.family.prune_min_dim = math.inf  # XLA wants static shapes: no pruned form
        if chunk_size is not None:
            self.family.chunk_size = int(chunk_size)
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be a positive integer; got {workers!r}")
        self.workers = workers

    def _chunked(self, x: Tensor) -> GMMFamily:
        """The family with this backend's chunk size for ``x`` (the class docstring)."""
        family = copy.copy(self.family)
        d = x.shape[1]
        if family.chunk_size is None and family.use_direct(d):
            family.chunk_bytes = 1 << 19
        elif family.chunk_size is None:
            family.chunk_size = min(1024, max(256, (1 << 19) // (x.element_size() * family.n_features_phi(d))))
        return family

    def prepare(self, x: Tensor) -> JaxGMMData:
        """Centred columns of ``x`` (N, D) in chunks; float64 turns on ``jax_enable_x64``."""
        import jax

        if x.dtype == torch.float64:
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        check_rows(x)
        init_data = self._chunked(x).prepare(x)
        x_np, shift = x.detach().cpu().numpy(), init_data.shift.cpu().numpy()
        n, d = x_np.shape
        chunk = init_data.chunk_size
        n_chunks = -(-n // chunk)
        # filled in place, a block of chunks at a time: the only data-sized array is the result
        # (jnp.asarray of a transposed NumPy array would hold three copies at once)
        cols = jnp.zeros((n_chunks, d, chunk), x_np.dtype)
        per = max(1, (1 << 16) // chunk)
        for b in range(0, n_chunks, per):
            rows = x_np[b * chunk : (b + per) * chunk] - shift
            block = np.zeros((min(per, n_chunks - b) * chunk, d), x_np.dtype)
            block[: len(rows)] = rows
            cols = _block_setter()(cols, b, block.reshape(-1, chunk, d).transpose(0, 2, 1))
        mask = jnp.asarray(np.arange(n_chunks * chunk) < n, dtype=x_np.dtype).reshape(n_chunks, chunk)
        blocks = tuple(np.asarray(b, np.int32) for b in chunk_blocks(n_chunks, self.workers or default_workers()))
        return JaxGMMData(cols, mask, jnp.asarray(shift), init_data, blocks)

    def initialize(self, data: JaxGMMData, generator: torch.Generator) -> GMMParams:
        """The torch backend's initialisation (same generator, same draws)."""
        return self.family.initialize(data.init_data, generator)

    def e_step(self, params: GMMParams, data: JaxGMMData) -> EStep:
        """One iteration: the mean log-likelihood under ``params``; the M-step's closed-form
        parameters (computed from the same pass's statistics) are the statistics."""
        import jax
        import jax.numpy as jnp

        n, d = data.init_data.x.shape
        family = self.family
        if data.init_data.direct:  # the direct form's blocks need upper-triangular factors
            params = params._replace(precisions_cholesky=upper_factor(params.precisions_cholesky))
        jparams = tuple(jnp.asarray(p.detach().cpu().numpy()) for p in params)
        run = _make_pass(family.covariance_type, data.init_data.direct)

        def one(bounds):  # waited for in its thread, so the blocks' passes overlap
            return jax.block_until_ready(run(jparams, data.shift, data.columns, data.mask, bounds))

        blocks = data.blocks
        parts = [one(blocks[0])] if len(blocks) == 1 else list(_thread_pool(len(blocks)).map(one, blocks))
        stats, total = functools.reduce(lambda a, b: (a[0] + b[0], a[1] + b[1]), parts)
        eps = float(np.finfo(data.columns.dtype).eps)
        m_step = _make_m_step(family.covariance_type, family.reg_covar, d, n, eps)
        # The M-step's K small factorizations run in SciPy's OpenBLAS: on one thread, as its idle threads would
        # spin for ~0.1 s after the call, taking a core from the next pass (benchmarks/gmm_pass_pieces.py).
        with _blas_controller().limit(limits=1, user_api="blas"):
            new, ll = m_step(stats, total, data.shift)
            finite = bool(jnp.isfinite(new[3]).all())  # waits for the call inside the limit
        if not finite:
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
               chunk_size: int | None = None, strategy: str = "auto", workers: int | None = None,
               **loop: Any) -> EMResult:
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
        Rows per step of a pass.
    workers : int, optional
        Passes run at once (:class:`JaxGMMFamily`; default: :func:`default_workers`).
    strategy : {'auto', 'features', 'direct'}
        The E-step's form (:class:`~ppl_dgm.models.gmm_em.GMMFamily`; ``'pruned'`` is the torch backend's only).
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
    family = GMMFamily(k, covariance_type, reg_covar, init_params, chunk_size=chunk_size, strategy=strategy)
    return fit_em(JaxGMMFamily(family, chunk_size, workers), xt, init=init, **loop)

"""The pruned E-step of the Gaussian mixture (full covariances): skip the pairs a bound rules out.

Most points of a fitted mixture belong to one or a few components; the responsibilities of the rest
are far below float64 round-off (``exp(-500)`` is common).  The dense E-step still forms all K
quadratic forms of every point (D^2 multiply-adds each) and the M-step all K weighted second moments.
This form computes only the pairs ``(n, k)`` a cheap upper bound cannot rule out.

The bound (course notes, EM section: the E-step's ``log pi_k + log N(x | mu_k, Sigma_k)``).  With
the precision ``P_k = U_k U_k^T`` diagonalised, ``P_k = sum_i lambda_i v_i v_i^T``
(``lambda_1 <= ... <= lambda_D``), and ``a_i = v_i^T (x - mu_k)``, for any ``r < D``::

    ||U_k^T (x - mu_k)||^2 = sum_i lambda_i a_i^2
                          >= lambda_{r+1} ||x - mu_k||^2 - sum_{i <= r} (lambda_{r+1} - lambda_i) a_i^2,

so ``log pi_k N(x | mu_k, Sigma_k) <= c_k - 1/2 (that bound)`` with ``c_k = log pi_k - D/2 log 2 pi +
log det U_k``.  It costs ``(r + 1) D`` multiply-adds per point and component (all components in one
product) instead of ``D^2``.  ``r`` (at most 4) is the number of precision eigenvalues below a quarter
of the median in any component: the few long axes of an elongated component, where the plain
``lambda_1 ||x - mu_k||^2`` would be loose.

Per chunk of rows:

1. the bounds ``b_nk`` (c x K); each row's *candidate* ``argmax_k b_nk`` and its exact log-density
   ``l_n`` (rows grouped by candidate: one (c_k x D)(D x D) product per component);
2. a pair is *kept* when ``b_nk >= l_n - margin``; a pair left out has
   ``gamma_nk < exp(-margin) = 9e-27`` (margin 60) times the row's largest responsibility, below float64
   round-off of every sum it would enter, and is taken as 0;
3. rows whose only kept pair is the candidate have ``gamma = 1`` exactly: their statistics are plain
   sums per component (``X_k^T X_k``); the other rows get the exact log-densities of all their kept
   pairs, a softmax over them, and weighted sums.

Steps 1 and 2 (:func:`screen`) cost about ``(r + 1) K D + D^2`` multiply-adds per row, a fraction
``(r + 1) / D + 1 / K`` of the dense ``K D^2`` (0.1 to 0.5 for ``D >= 16``, ``K >= 4``): under
``strategy="auto"`` every E-step screens its first 2,048 rows only and, if they keep too many pairs, runs
the dense form for the whole step (components that overlap, as early in a fit from a broad start or in
data without clusters).

Cost per row, in multiply-adds: ``(r + 1) K D`` for the bounds plus ``2 D^2`` per kept pair (both
steps, full products), against ``K D^2`` for the feature form (both steps, symmetric halves); its
products are per component and smaller, so it pays only with at most about ``K / 4`` pairs per row
(``GMMFamily.prune_pays``; docs/gmm.md has the measured figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: a pair is left out when its bound is this many nats below the row's candidate: ``exp(-60) = 9e-27``
MARGIN = 60.0
#: at most this many of a precision's smallest eigen-directions enter the bound exactly
MAX_DIRECTIONS = 4


@dataclass
class PrunePlan:
    """One E-step's constants, from the parameters, for rows augmented by a 1, ``[x - shift | 1]`` (D + 1).

    ``ua`` (K, D + 1, D) ``[U_k ; -mu_k^T U_k]``, so ``[x | 1] ua_k = (x - mu_k)^T U_k``; ``c0`` (K,) ``c_k``;
    ``dist`` (D + 1, K) ``[-2 mu_k ; ||mu_k||^2]``, so ``||x||^2 + [x | 1] dist = ||x - mu_k||^2``; ``lam`` (K,)
    ``lambda_{r+1}``, ``coef`` (K, r) ``lambda_{r+1} - lambda_i``; ``va`` (D + 1, K r) the ``r`` smallest
    eigenvectors of each component side by side over ``-v_i^T mu_k``, so ``[x | 1] va = a``; ``slack`` the
    relative round-off allowance of the bound."""

    ua: Tensor
    c0: Tensor
    dist: Tensor
    lam: Tensor
    coef: Tensor
    va: Tensor
    slack: float
    margin: float = MARGIN


def make_plan(u: Tensor, mu: Tensor, c0: Tensor, margin: float = MARGIN) -> PrunePlan:
    """The plan for factors ``u`` (K, D, D) (``P_k = U_k U_k^T``), centred means ``mu`` (K, D), ``c0`` (K,).

    Eigen-decompositions in float64; ``lambda_{r+1}`` lowered and the ``lambda_i`` raised by
    ``1e-12 lambda_D`` so that round-off in ``eigh`` cannot make the bound too small."""
    k, d = mu.shape
    ev, vec = torch.linalg.eigh((u @ u.transpose(1, 2)).double())  # ascending
    lowest = ev[:, : min(MAX_DIRECTIONS, d - 1)]
    r = int((lowest < ev[:, d // 2 : d // 2 + 1] / 4).sum(1).max())
    eig_slack = 1e-12 * ev[:, -1:]
    lam = (ev[:, r : r + 1] - eig_slack).clamp_min(0)
    coef = (lam - ev[:, :r] + eig_slack).clamp_min(0)
    v = vec[:, :, :r].to(mu.dtype)  # (K, D, r)
    va = torch.cat([v, -torch.einsum("kdr,kd->kr", v, mu).unsqueeze(1)], 1)  # (K, D + 1, r)
    ua = torch.cat([u, -torch.einsum("kde,kd->ke", u, mu).unsqueeze(1)], 1)
    dist = torch.cat([-2 * mu.T, (mu * mu).sum(1).unsqueeze(0)])
    return PrunePlan(ua=ua, c0=c0.to(mu.dtype), dist=dist, lam=lam.squeeze(1).to(mu.dtype),
                     coef=coef.to(mu.dtype), va=va.permute(1, 0, 2).reshape(d + 1, k * r).contiguous(),
                     slack=10.0 * (d + 10) * torch.finfo(mu.dtype).eps, margin=float(margin))


def upper_bounds(xa: Tensor, plan: PrunePlan) -> Tensor:
    """``b_nk >= log pi_k N(x_n | mu_k, Sigma_k)`` (module docstring), ``xa`` (c, D + 1) -> (c, K)."""
    c, k = xa.shape[0], plan.c0.numel()
    x2 = (xa * xa).sum(1, keepdim=True).sub_(1)
    m = torch.addmm(x2, xa, plan.dist).mul_(plan.lam)  # lambda_{r+1} ||x - mu_k||^2
    r = plan.coef.shape[1]
    if r:
        m -= (torch.mm(xa, plan.va).square_().view(c, k, r) * plan.coef).sum(2)
    slack = (x2 + plan.dist[-1]).mul_(plan.lam * plan.slack)  # the round-off of the sums
    return m.sub_(slack).clamp_(min=0).mul_(-0.5).add_(plan.c0)


def log_densities(xs: Tensor, counts: list[int], plan: PrunePlan) -> Tensor:
    """``log pi_k N(x | mu_k, Sigma_k)`` of augmented rows ``xs`` (n, D + 1) grouped by component: the first
    ``counts[0]`` rows with component 0, and so on -> (n,)."""
    out = xs.new_empty(xs.shape[0])
    a = 0
    for j, nj in enumerate(counts):
        if nj:
            y = torch.mm(xs[a : a + nj], plan.ua[j])
            torch.sum(y.square_(), 1, out=out[a : a + nj])
            out[a : a + nj].mul_(-0.5).add_(plan.c0[j])
        a += nj
    return out


def add_moments(xs: Tensor, counts: list[int], weights: Tensor | None, stats: Tensor) -> None:
    """Add ``sum gamma [x | 1]^T [x | 1]`` (the weighted second and first moments and the count) of augmented
    rows ``xs`` (n, D + 1) grouped by component (``counts``) to ``stats`` (K, D + 1, D + 1), float64;
    ``weights`` (n,) the responsibilities, ``None`` for all ones."""
    wx = xs if weights is None else xs * weights.unsqueeze(1)
    a = 0
    for j, nj in enumerate(counts):
        if nj:
            stats[j] += torch.mm(xs[a : a + nj].T, wx[a : a + nj]).double()
        a += nj


@dataclass
class Screen:
    """A chunk's first stage: bounds (c, K), each row's candidate (c,), the rows sorted by candidate (``order``,
    ``counts``, ``xs``), the candidates' exact log-densities ``lc`` (c,), and the other kept pairs ``keep`` (c, K)."""

    bound: Tensor
    cand: Tensor
    order: Tensor
    counts: list[int]
    xs: Tensor
    lc: Tensor
    keep: Tensor

    @property
    def pairs(self) -> int:
        """Pairs the chunk computes exactly: a candidate per row and the other kept pairs."""
        return len(self.cand) + int(self.keep.sum())


def screen(xa: Tensor, plan: PrunePlan) -> Screen:
    """Bounds, candidates and kept pairs of a chunk of augmented rows ``xa`` (c, D + 1): about
    ``(r + 1) K D + D^2`` multiply-adds per row (steps 1 and 2 of the module docstring)."""
    c, k = xa.shape[0], plan.c0.numel()
    bound = upper_bounds(xa, plan)
    cand = bound.argmax(1)
    order = torch.argsort(cand, stable=True)
    counts = torch.bincount(cand, minlength=k).tolist()
    xs = xa[order]
    lc = torch.empty_like(bound[:, 0])
    lc[order] = log_densities(xs, counts, plan)
    keep = bound >= (lc - plan.margin).unsqueeze(1)
    keep[torch.arange(c, device=xa.device), cand] = False  # the other kept pairs
    return Screen(bound, cand, order, counts, xs, lc, keep)


def chunk_sums(xa: Tensor, plan: PrunePlan, stats: Tensor, scr: Screen | None = None) -> Tensor:
    """One chunk of augmented rows ``xa`` (c, D + 1), screened (``scr``, by :func:`screen` if not given): add
    its statistics to ``stats`` (K, D + 1, D + 1, see :func:`add_moments`); return ``sum_n log p(x_n)``
    (float64)."""
    k = plan.c0.numel()
    scr = screen(xa, plan) if scr is None else scr
    cand, order, xs = scr.cand, scr.order, scr.xs
    multi = scr.keep.any(1)
    rows = multi.nonzero().squeeze(1)
    if len(rows) == 0:  # every row has gamma = 1 for its candidate
        add_moments(xs, scr.counts, None, stats)
        return scr.lc.sum(dtype=torch.float64)
    single = ~multi[order]
    add_moments(xs[single], torch.bincount(cand[order][single], minlength=k).tolist(), None, stats)
    kept = scr.keep[rows]
    kept[torch.arange(len(rows), device=xa.device), cand[rows]] = True
    pk, pi = kept.T.nonzero(as_tuple=True)  # pairs sorted by component
    xp = xa[rows[pi]]
    pcounts = torch.bincount(pk, minlength=k).tolist()
    lp = log_densities(xp, pcounts, plan)
    logp = torch.full(kept.shape, -math.inf, dtype=xa.dtype, device=xa.device)
    logp[pi, pk] = lp
    lse = torch.logsumexp(logp, 1)
    add_moments(xp, pcounts, (lp - lse[pi]).exp_(), stats)
    return scr.lc[~multi].sum(dtype=torch.float64) + lse.sum(dtype=torch.float64)

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

The same diagonalisation bounds the quadratic form from above, ``sum_i lambda_i a_i^2 <= lambda_D ||x -
mu_k||^2``: a *lower* bound ``c_k - 1/2 lambda_D ||x - mu_k||^2`` on the log-density, close for round
components.  Both bounds of all K components come from one product of the rows ``[x | 1 | ||x||^2]``
(:func:`augment`) with a (D + 2) x 2K matrix (:class:`PrunePlan`).

Per chunk of rows:

1. the bounds; each row's *candidate* ``argmax_k b_nk``.  A row is *sure* when its candidate's lower
   bound lies ``margin`` (60 nats) above every other pair's upper bound: every other pair has
   ``gamma_nk < exp(-60) = 9e-27`` times the candidate's, below float64 round-off of every sum it would
   enter, and is taken as 0, so ``gamma = 1`` for the candidate.  Sure rows need no per-row product at all:
   their moments ``M_k = X_k^T X_k`` (one product per component) give the statistics, and their
   log-likelihood is ``N_k c_k - 1/2 tr(ua_k^T M_k ua_k)`` (:func:`sure_log_lik`, once per E-step).  The
   moments depend on the rows only, so a chunk's ``M_k`` is kept for the next E-step and reused while the same
   rows stay sure for component k (:func:`add_sure_moments`);
2. the other (*unsure*) rows get their candidate's exact log-density ``l_n`` (grouped by candidate: one
   (c_k x D)(D x D) product per component); a pair is *kept* when ``b_nk >= l_n - margin``;
3. unsure rows whose only kept pair is the candidate have ``gamma = 1`` too (plain sums); the others get
   the exact log-densities of all their kept pairs, a softmax over them, and weighted sums.

Cost per row, in multiply-adds: ``(D + 2) 2 K + r K (D + 1)`` for the bounds, ``(D + 1)^2`` for the moments,
``D^2`` more per unsure row and per other kept pair; against ``K D^2`` for the feature form (both steps,
symmetric halves).  But its products are per component and smaller, and its element-wise passes over
(rows x K) cost as much as many multiply-adds, so it pays only with few pairs per row, the fewer the smaller D
(``GMMFamily.prune_pays``, a cost model fitted to timings: at D = 20 and K = 64 up to ~1.9 pairs a row, at D =
16 not at all past ~1.1; at D = 64 and K = 10 up to ~3): under ``strategy="auto"`` every E-step screens its
first 2,048 rows and, if they keep more, runs the dense form for the whole step (components that overlap, as
early in a fit from a broad start or in data without clusters).  docs/gmm.md has the measured figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn.functional import pad

#: a pair is left out when its bound is this many nats below the row's candidate: ``exp(-60) = 9e-27``
MARGIN = 60.0
#: at most this many of a precision's smallest eigen-directions enter the bound exactly
MAX_DIRECTIONS = 4
#: on CPU the augmented rows (from 12 columns on) and the bounds' matrices get zero columns up to a multiple of
#: this many: MKL's float64 product (AVX2) forms an output of a multiple of 12 columns at full speed and the rest
#: at about half.  Moments of 30,000 rows: 65 columns 10.9 ms, 72 columns 4.6-6.2 ms; 21 columns 1.9 ms, 24
#: columns 0.6-0.8 ms; bounds of 32,768 rows at D = 20: 128 columns 10.2 ms, 132 columns 6.4 ms.
WIDTH_STEP = 12
#: the sure rows' moments kept from one E-step to the next (:func:`add_sure_moments`) take at most this many bytes
#: (K (D + 1)^2 float64 numbers a chunk: at D = 64, K = 4, 135 kB; K = 64, 2.2 MB)
SURE_CACHE_BYTES = 1 << 26


@dataclass
class PrunePlan:
    """One E-step's constants, from the parameters, for rows ``[x - shift | 1 | ||x - shift||^2 | 0 ...]`` (P,
    :func:`augment`); the first D + 1 columns, ``[x | 1]``, carry the exact products and the moments.

    ``ua`` (K, D + 1, D) ``[U_k ; -mu_k^T U_k]``, so ``[x | 1] ua_k = (x - mu_k)^T U_k``; ``c0`` (K,) ``c_k``;
    ``w`` (D + 2, 2 K, then zero columns up to :func:`padded`): ``[x | 1 | ||x||^2] w`` is ``c_k - 1/2
    lambda_{r+1} ||x - mu_k||^2`` (the upper bound before its ``r`` directions) and ``c_k - 1/2 lambda_D ||x -
    mu_k||^2`` (the lower bound) side by side, round-off allowances included; ``va`` (D + 1, r K, then zero
    columns) the ``i``-th smallest eigenvector of every component (``i <= r``, one block of K columns each),
    scaled by ``(lambda_{r+1} - lambda_i)^{1/2}``, over ``-v_i^T mu_k``: half the sum over the blocks of the
    squares of ``[x | 1] va`` is the directions' term."""

    ua: Tensor
    c0: Tensor
    w: Tensor
    va: Tensor
    r: int
    margin: float = MARGIN
    #: the bounds' and the sorted rows' buffers, reused by the chunks of an E-step and, when the caller passes the
    #: same dict, by the next E-steps (a fresh tensor of tens of MB is a fresh mapping: its page faults cost as
    #: much as the product that fills it; at 60,000 x 64, 4-5 ms of a 51 ms E-step)
    work: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        """The number of features D."""
        return self.ua.shape[2]

    def buffer(self, name: str, rows: int, cols: int, like: Tensor) -> Tensor:
        """A (rows, cols) buffer of ``like``'s dtype and device, reused across chunks."""
        b = self.work.get(name)
        if b is None or b.shape[0] < rows or b.shape[1] != cols or b.dtype != like.dtype or b.device != like.device:
            b = self.work[name] = like.new_empty(rows, cols)
        return b[:rows]


def make_plan(u: Tensor, mu: Tensor, c0: Tensor, margin: float = MARGIN, work: dict | None = None) -> PrunePlan:
    """The plan for factors ``u`` (K, D, D) (``P_k = U_k U_k^T``), centred means ``mu`` (K, D), ``c0`` (K,);
    ``work``: the buffers to reuse (:attr:`PrunePlan.work`; by default none).

    Eigen-decompositions in float64; ``lambda_{r+1}`` lowered and the ``lambda_i`` and ``lambda_D`` raised
    by ``1e-12 lambda_D`` so that round-off in ``eigh`` cannot make the bounds too tight; the sums of a
    row's product are allowed ``10 (D + 10)`` ulps of their terms' magnitudes."""
    k, d = mu.shape
    ev, vec = torch.linalg.eigh((u @ u.transpose(1, 2)).double())  # ascending
    lowest = ev[:, : min(MAX_DIRECTIONS, d - 1)]
    r = int((lowest < ev[:, d // 2 : d // 2 + 1] / 4).sum(1).max())
    eig_slack = 1e-12 * ev[:, -1:]
    lam = (ev[:, r] - eig_slack[:, 0]).clamp_min(0)
    top = ev[:, -1] + eig_slack[:, 0]
    coef = (lam.unsqueeze(1) - ev[:, :r] + eig_slack).clamp_min(0)
    m64, c64 = mu.double(), c0.double()
    slack = 10.0 * (d + 10) * torch.finfo(mu.dtype).eps
    mu2 = (m64 * m64).sum(1)
    cols = []
    for scale, sign in ((lam * (1 - slack), 1), (top * (1 + slack), -1)):  # c_k - 1/2 scale ||x - mu_k||^2
        cols.append(torch.cat([scale * m64.T, (c64 - 0.5 * scale * mu2 + sign * slack * c64.abs()).unsqueeze(0),
                               -0.5 * scale.unsqueeze(0)]))
    v = vec[:, :, :r] * coef.sqrt().unsqueeze(1)  # (K, D, r)
    va = torch.cat([v, -torch.einsum("kdr,kd->kr", v, m64).unsqueeze(1)], 1)  # (K, D + 1, r)
    ua = torch.cat([u, -torch.einsum("kde,kd->ke", u, mu).unsqueeze(1)], 1)
    w, va = torch.cat(cols, 1), va.permute(1, 2, 0).reshape(d + 1, r * k)
    w, va = (pad(m, (0, padded(m.shape[1], mu.device) - m.shape[1])).to(mu.dtype) for m in (w, va))
    return PrunePlan(ua=ua, c0=c0.to(mu.dtype), w=w, va=va, r=r, margin=float(margin),
                     work={} if work is None else work)


def padded(n: int, device: torch.device | str) -> int:
    """``n`` columns rounded up to a multiple of :data:`WIDTH_STEP` on CPU; ``n`` on other devices."""
    return -(-n // WIDTH_STEP) * WIDTH_STEP if torch.device(device).type == "cpu" else n


def row_width(d: int, device: torch.device | str) -> int:
    """The width of the augmented rows of D features (:func:`augment`): ``D + 2``, :func:`padded` from ``D + 2 >=
    WIDTH_STEP`` on (their moments :func:`_gram` take half the time or less, padding included)."""
    return d + 2 if d + 2 < WIDTH_STEP else padded(d + 2, device)


def exp_(t: Tensor) -> Tensor:
    """In place: ``t -> exp(t)`` for log-ratios ``t <= 0``, each first raised to ``log`` of the dtype's smallest
    normal number (-708 in float64, -87 in float32).  The CPU's vector exp takes 5-20x longer on arguments whose
    exp is subnormal or 0 (64 x 1,183 log-ratios near -1,000: 0.53 ms, raised first: 0.11 ms), and the dense
    E-step's are mostly there for clustered data.  ``exp(-708) = 3e-308`` instead of 0 changes no sum that holds
    the row's largest term, 1, and adds at most ``N * 3e-308`` to a component's count."""
    return t.clamp_(min=math.ceil(math.log(torch.finfo(t.dtype).tiny))).exp_()


def augment(rows: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """``[x - shift | 1 | ||x - shift||^2 | 0 ...]`` of rows (c, D) -> (c, P), ``P =`` :func:`row_width`, into
    ``out`` (at least c rows of P columns) if given."""
    c, d = rows.shape
    out = rows.new_empty(c, row_width(d, rows.device)) if out is None else out[:c]
    torch.sub(rows, shift, out=out[:, :d])
    out[:, d] = 1
    torch.square(torch.linalg.vector_norm(out[:, :d], dim=1), out=out[:, d + 1])
    out[:, d + 2 :] = 0
    return out


def bounds(xb: Tensor, plan: PrunePlan) -> tuple[Tensor, Tensor]:
    """Upper and lower bounds ``b_nk >= log pi_k N(x_n | mu_k, Sigma_k) >= a_nk`` (module docstring) of rows
    ``xb`` (c, P, :func:`augment`) -> two (c, K); the lower one is ``c_k - 1/2 lambda_D ||x - mu_k||^2``.
    One product, ``(D + 2) 2 K`` multiply-adds per row, and ``(D + 1) K r`` for the directions.  Views of the
    plan's buffers: valid until its next call."""
    c, k, d = xb.shape[0], plan.c0.numel(), plan.d
    both = torch.mm(xb[:, : d + 2], plan.w, out=plan.buffer("both", c, plan.w.shape[1], xb))
    upper = both[:, :k]
    if plan.r:  # (element-wise over (c, K) blocks: a reduction over a short last axis is slow on CPU)
        y = torch.mm(xb[:, : d + 1], plan.va, out=plan.buffer("dirs", c, plan.va.shape[1], xb))
        for i in range(plan.r):
            upper.addcmul_(y[:, i * k : (i + 1) * k], y[:, i * k : (i + 1) * k], value=0.5)
    return upper, both[:, k : 2 * k]


def log_densities(xs: Tensor, counts: list[int], plan: PrunePlan) -> Tensor:
    """``log pi_k N(x | mu_k, Sigma_k)`` of augmented rows ``xs`` (n, D + 1 or more: :func:`augment`) grouped by
    component: the first ``counts[0]`` rows with component 0, and so on -> (n,)."""
    out = xs.new_empty(xs.shape[0])
    a = 0
    for j, nj in enumerate(counts):
        if nj:
            y = torch.mm(xs[a : a + nj, : plan.d + 1], plan.ua[j])
            torch.sum(y.square_(), 1, out=out[a : a + nj])
        a += nj
    c0 = torch.repeat_interleave(plan.c0, torch.tensor(counts, device=out.device), output_size=len(out))
    return out.mul_(-0.5).add_(c0)


def _gram(a: Tensor, b: Tensor) -> Tensor:
    """``a^T b`` of contiguous rows ``a``, ``b`` (n, F) -> (F, F), for ``a^T b`` symmetric (``b`` is ``a`` with
    its rows weighted).  On CPU the rows go in one block per thread through a batched product: MKL runs a single
    product with so small an output on about one thread (measured at F = 21: 4.7 ms for 32,767 rows in one
    product, 2.3 ms in two blocks, 2 threads).  From F = 48 the lower-left block is the upper-right one
    transposed: three quarters of the multiply-adds (F = 65, 30,000 rows: 11.2 -> 9.7 ms), split at a multiple
    of :data:`WIDTH_STEP` columns (F = 72: 36, 4.6 ms; F = 84: 36, 6.0 ms, not 42, 10.3 ms)."""
    t = torch.get_num_threads() if a.device.type == "cpu" else 1
    n, f = a.shape
    h = n // t
    if t < 2 or h < 512:
        return torch.mm(a.T, b)
    va, vb = a[: t * h].view(t, h, f), b[: t * h].view(t, h, f)
    if f < 48:
        m = torch.bmm(va.transpose(1, 2), vb).sum(0)
    else:
        s = f // 2 // WIDTH_STEP * WIDTH_STEP
        m = a.new_empty(f, f)
        torch.sum(torch.bmm(va[:, :, :s].transpose(1, 2), vb), 0, out=m[:s])
        torch.sum(torch.bmm(va[:, :, s:].transpose(1, 2), vb[:, :, s:]), 0, out=m[s:, s:])
        m[s:, :s] = m[:s, s:].T
    return m.addmm_(a[t * h :].T, b[t * h :]) if n > t * h else m


def _grams(xs: Tensor, counts: list[int], weights: Tensor | None, f: int, which=None) -> tuple[list[int], Tensor]:
    """The components ``js`` with rows (of ``which``, by default all) and their moments ``sum gamma [x | 1]^T [x |
    1]`` (len(js), f, f), float64, of augmented rows ``xs`` grouped by component (:func:`add_moments`)."""
    wx = xs if weights is None else xs * weights.unsqueeze(1)
    js, grams, a = [], [], 0
    for j, nj in enumerate(counts):
        if nj and (which is None or j in which):
            js.append(j)
            grams.append(_gram(xs[a : a + nj], wx[a : a + nj]))
        a += nj
    return js, torch.stack(grams)[:, :f, :f].double() if grams else xs.new_zeros(0, f, f, dtype=torch.float64)


def add_moments(xs: Tensor, counts: list[int], weights: Tensor | None, stats: Tensor) -> None:
    """Add ``sum gamma [x | 1]^T [x | 1]`` (the weighted second and first moments and the count) of augmented
    rows ``xs`` (n, P: the whole rows, whose width suits :func:`_gram`) grouped by component (``counts``: the
    first ``counts[0]`` rows with component 0, and so on) to ``stats`` (K, D + 1, D + 1), float64; ``weights``
    (n,) the responsibilities, ``None`` for all ones."""
    js, grams = _grams(xs, counts, weights, stats.shape[-1])
    if js:  # (one addition for all components: per-component ones cost more than the products at K = 64)
        stats.index_add_(0, torch.tensor(js, device=stats.device), grams)


def add_sure_moments(scr: Screen, plan: PrunePlan, sure: Tensor, key=None) -> None:
    """Add the moments of a chunk's sure rows (``scr``, :func:`screen`) to ``sure`` (K, D + 1, D + 1), float64.

    With ``key`` (the chunk's place in the data), the moments of each component's sure rows are kept in
    ``plan.work`` (up to :data:`SURE_CACHE_BYTES` over all chunks) with the row labels they came from, and the
    next E-step computes only those of components whose set of sure rows in the chunk changed: the others are the
    same rows, so the same sums (in a clustered fit most rows stay sure for the same component from one E-step to
    the next; the moments are a third of the E-step at D = 64, K = 4)."""
    k, f, c = plan.c0.numel(), sure.shape[-1], len(scr.cand)
    n_sure, counts = scr.n_sure, scr.counts[:k]
    cache = None if key is None else plan.work.setdefault("sure_moments", {})
    lab = torch.full((c,), k, dtype=torch.int16 if k < 32767 else torch.int32, device=sure.device)
    lab[scr.order[:n_sure]] = scr.cand[scr.order[:n_sure]].to(lab.dtype)  # sure rows' component, K if unsure
    old = None if cache is None else cache.get(key)
    if old is not None and old[0].shape == lab.shape and old[1].shape == (k, f, f) and old[1].device == sure.device:
        changed = old[0] != lab
        full, redo = old[1], set(torch.cat([old[0][changed], lab[changed]]).unique().tolist()) - {k}
    else:  # (no moments kept for this chunk, or kept for another number of components)
        full, redo = sure.new_zeros(k, f, f), set(range(k))
        if cache is not None and sum(m.numel() for _, m in cache.values()) + k * f * f > SURE_CACHE_BYTES // 8:
            cache = None  # over the budget: this chunk's moments are computed afresh every E-step
    if redo:  # (else the kept entry stands: the same labels, the same moments)
        js, grams = _grams(scr.xs[:n_sure], counts, None, f, redo)
        full[sorted(redo)] = 0  # (components left with no sure rows)
        full.index_copy_(0, torch.tensor(js, device=sure.device, dtype=torch.long), grams)
        if cache is not None:
            cache[key] = (lab, full)
    js = [j for j in range(k) if counts[j]]
    if js:
        sure.index_add_(0, torch.tensor(js, device=sure.device), full[js])


def forget_sure_moments(plan: PrunePlan) -> None:
    """Drop the moments :func:`add_sure_moments` keeps in ``plan.work`` (up to :data:`SURE_CACHE_BYTES`): stale once
    an E-step takes the dense form, so not held through the rest of the fit; a later pruned E-step computes them
    afresh."""
    plan.work.pop("sure_moments", None)


def sure_log_lik(sure: Tensor, plan: PrunePlan) -> Tensor:
    """``sum_n log p(x_n)`` (float64) of the *sure* rows (responsibility 1 for their component) from their
    moments ``sure`` (K, D + 1, D + 1, the ``M_k = [x | 1]^T [x | 1]`` of each component's sure rows, summed
    over chunks): ``sum_k N_k c_k - 1/2 tr(ua_k^T M_k ua_k)``, with ``N_k`` the moments' corner; the quadratic
    forms without per-row products."""
    ua = plan.ua.to(sure.dtype)
    quad = torch.einsum("kij,kid,kjd->k", sure, ua, ua)
    return (sure[:, -1, -1] * plan.c0.to(sure.dtype) - 0.5 * quad).sum()


@dataclass
class Screen:
    """A chunk's first stage: upper bounds (c, K; ``-inf`` at the candidates), each row's candidate (c,), the
    rows sorted by (unsure, candidate) (``order``, ``counts`` (2 K): the sure rows of each component, then the
    unsure ones; ``xs``, their augmented rows);
    of the unsure rows (in that order) the candidates' exact log-densities ``lc`` and the other kept pairs
    ``keep`` (c_u, K)."""

    bound: Tensor
    cand: Tensor
    order: Tensor
    counts: list[int]
    xs: Tensor
    lc: Tensor
    keep: Tensor

    @property
    def n_sure(self) -> int:
        """Rows whose candidate's lower bound lies ``margin`` above every other pair's upper bound."""
        return sum(self.counts[: len(self.counts) // 2])

    @property
    def pairs(self) -> int:
        """Pairs the chunk computes exactly: a candidate per row and the other kept pairs."""
        return len(self.cand) + int(self.keep.sum())


def screen(xb: Tensor, plan: PrunePlan) -> Screen:
    """Bounds, candidates, sure rows and kept pairs of a chunk of rows ``xb`` (c, P, :func:`augment`): about
    ``(r + 2) K D`` multiply-adds per row, and ``D^2`` more per unsure row (steps 1 and 2 of the module
    docstring)."""
    k = plan.c0.numel()
    upper, lower = bounds(xb, plan)
    cand = upper.max(1).indices  # (max, index_put, amax: faster than argmax, scatter, topk on CPU)
    upper[torch.arange(len(cand), device=xb.device), cand] = -math.inf  # not needed further
    unsure = upper.amax(1) >= lower.gather(1, cand.unsqueeze(1)).squeeze(1) - plan.margin
    key = (cand + k * unsure).to(torch.uint8 if 2 * k <= 256 else torch.int32)  # (a byte key sorts 5x faster)
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=2 * k).tolist()
    xs = torch.index_select(xb, 0, order, out=plan.buffer("sorted", len(order), xb.shape[1], xb))
    n_sure = sum(counts[:k])
    lc = log_densities(xs[n_sure:], counts[k:], plan)
    rows = order[n_sure:]
    keep = torch.index_select(upper, 0, rows) >= (lc - plan.margin).unsqueeze(1)
    keep[torch.arange(len(rows), device=xb.device), cand[rows]] = False  # the other kept pairs
    return Screen(upper, cand, order, counts, xs, lc, keep)


def chunk_sums(xb: Tensor, plan: PrunePlan, stats: Tensor, sure: Tensor, scr: Screen | None = None,
               key=None) -> Tensor:
    """One chunk of rows ``xb`` (c, P, :func:`augment`), screened (``scr``, by :func:`screen` if not given): add
    the statistics of its sure rows to ``sure`` (:func:`add_sure_moments`, ``key`` the chunk's place in the data
    to reuse its moments across E-steps) and of the others to ``stats`` (both (K, D + 1, D + 1), see
    :func:`add_moments`); return ``sum_n log p(x_n)`` of the others (float64; the sure rows':
    :func:`sure_log_lik`)."""
    k = plan.c0.numel()
    scr = screen(xb, plan) if scr is None else scr
    n_sure = scr.n_sure
    add_sure_moments(scr, plan, sure, key)
    rows, xu = scr.order[n_sure:], scr.xs[n_sure:]  # the unsure rows, by candidate
    total = torch.zeros((), dtype=torch.float64, device=xb.device)
    if len(rows) == 0:
        return total
    multi = scr.keep.any(1)
    one = (~multi).nonzero().squeeze(1)  # unsure rows whose candidate is their only kept pair: gamma = 1
    add_moments(torch.index_select(xu, 0, one), torch.bincount(scr.cand[rows[one]], minlength=k).tolist(), None,
                stats)  # (index_select: 2-3x faster than indexing with [])
    total += scr.lc[one].sum(dtype=torch.float64)
    if len(one) == len(rows):
        return total
    many = multi.nonzero().squeeze(1)
    rows = rows[many]
    kept = torch.index_select(scr.keep, 0, many)
    kept[torch.arange(len(rows), device=xb.device), scr.cand[rows]] = True
    pk, pi = kept.T.nonzero(as_tuple=True)  # pairs sorted by component
    xp = torch.index_select(xb, 0, rows[pi])
    pcounts = torch.bincount(pk, minlength=k).tolist()
    lp = log_densities(xp, pcounts, plan)
    top = lp.new_full((len(rows),), -math.inf).scatter_reduce_(0, pi, lp, "amax")  # each row's largest
    e = exp_(lp - top[pi])
    s = torch.zeros_like(top).index_add_(0, pi, e)  # log-sum-exp over each row's pairs, not over all K
    add_moments(xp, pcounts, e.div_(s[pi]), stats)
    return total + (top + s.log_()).sum(dtype=torch.float64)

"""EM hooks for the Gaussian mixture, written as big matrix products.

The data never change during a fit, so (after centring, for numerical safety)
each point gets a feature row prepared once (course notes, EM section; the
expansion of the quadratic form)::

    phi(x) = [ x_i x_j (i <= j) | x | 1 ]      full / tied, F = D(D+1)/2 + D + 1
    phi(x) = [ x_d^2            | x | 1 ]      diag,        F = 2 D + 1
    phi(x) = [ ||x||^2          | x | 1 ]      spherical,   F = D + 2

Then both steps are one matrix product each over the same rows:

* E-step: ``log pi_k + log N(x_n | mu_k, Sigma_k) = phi(x_n) . w_k`` with
  ``w_k = [-1/2 vech(P_k) (off-diagonals doubled) | P_k mu_k |
  log pi_k - D/2 log 2 pi + log det U_k - 1/2 mu_k^T P_k mu_k]``, so
  ``log p = Phi W`` (N x F times F x K), then ``gamma = softmax`` per row;
* M-step statistics: ``S = Phi^T gamma`` (F x K) holds, per component, the
  weighted second moments ``sum_n gamma_nk x_n x_n^T``, first moments
  ``sum_n gamma_nk x_n`` and counts ``N_k = sum_n gamma_nk``; the closed forms
  ``mu_k = sum gamma x / N_k``, ``Sigma_k = sum gamma x x^T / N_k - mu_k mu_k^T + reg I``,
  ``pi_k = N_k / N`` follow (course notes, M-step).

Rows are processed in chunks, each chunk's features rebuilt from the data on the
fly (in cache: reading N x D numbers per iteration instead of N x F), so the
temporaries are O(chunk x (F + K)) and memory is bounded by the chunk size
whatever N is.  Statistics are accumulated in float64.  Inside a chunk the rows
are columns (``phi(x)^T`` is F x chunk), so the products run as
``(K x F)(F x c)`` and ``(K x c)(c x F)``, the layouts MKL runs fastest.

With full covariances and few components (``4 K <= D``, ``strategy="auto"``) the
feature products are skinny (each feature number is used for only K multiply-adds)
and a second form is faster, the *direct* one (scikit-learn's, with all
components in one product): ``y = [U_1 | ... | U_K]^T x`` (KD x D times D x c),
``log N(x | mu_k, Sigma_k) = log det U_k - D/2 log 2 pi - 1/2 ||y_k - U_k^T mu_k||^2``,
and the second moments ``sum_n gamma_nk x_n x_n^T`` as one product
``(gamma_k x_n)_{kd, n} x^T`` (KD x c times c x D).  Done in B row blocks
(:func:`triangle_blocks`), the products skip most of the zero half of the
triangular ``U_k^T`` and of the symmetric moments: (B + 1) / (2 B) of the full
products, 5/4 of the feature form's multiply-adds (B = 4), in well-shaped products.

With full covariances and components on separate clusters, a third form, the
*pruned* one (:mod:`~ppl_dgm.models.gmm_prune`), computes only the pairs whose
responsibility a cheap bound cannot put below ``exp(-60)`` of the row's largest;
``strategy="auto"`` screens the first rows of each E-step to choose it (``D >= 16``,
``K >= 4``, ``N >= 16,384``; the class docstring).

Sharded (``shards=``, :class:`~ppl_dgm.models.shards.Shards`): each rank holds a
block of rows; its E-step statistics ``S_r`` (F x K) and log-likelihood sum are
packed in one float64 vector of F K + 1 numbers and summed over ranks once per
iteration, so every rank takes the same M-step from ``S = sum_r S_r``.  The
centring shift, N, and every initialisation are global (the same parameters as a
single process on the concatenated rows, rank order = row order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import torch
from torch import Tensor

from ..errors import InputError, check_choice, check_positive_int
from .base import EStep
from .gmm import (
    COVARIANCE_TYPES,
    GMMParams,
    covariances_from_precision_cholesky,
    log_det_cholesky,
    precision_cholesky,
)
from .gmm_prune import augment, chunk_sums, exp_, forget_sure_moments, make_plan, row_width, screen, sure_log_lik
from .kmeans import kmeans, kmeans_plusplus, take_rows
from .shards import Shards

INIT_METHODS = ("kmeans", "k-means++", "random_from_data", "random")
STRATEGIES = ("auto", "features", "direct", "pruned")


def check_rows(x: Tensor, empty: bool = False) -> None:
    """Refuse anything but a floating tensor of shape (N, D), N, D >= 1 (N = 0 too if ``empty``: a rank's share of
    a sharded fit may hold no rows), in one line (values: see ``prepare``)."""
    if x.ndim != 2 or x.shape[1] == 0 or (x.shape[0] == 0 and not empty) or not x.is_floating_point():
        raise InputError(f"expected real data of shape (N, D) with N, D >= 1; got {x.dtype} of shape "
                         f"{tuple(x.shape)}")


@dataclass
class GMMData:
    """Prepared data: raw rows (N_r, D), the mean of all rows (D,), rows per chunk, the E-step's dense form
    (``direct``, else features), the ranks' layout when sharded (``None``: one process), and whether the
    E-step may take the pruned form (:mod:`~ppl_dgm.models.gmm_prune`, with ``prune_chunk`` rows per chunk;
    under ``strategy="auto"`` each E-step's screen may still choose the dense form).  ``work`` keeps the
    pruned form's per-chunk buffers and its chunks' sure-row moments from one E-step to the next
    (:attr:`~.gmm_prune.PrunePlan.work`, :func:`~.gmm_prune.add_sure_moments`)."""

    x: Tensor
    shift: Tensor
    chunk_size: int
    direct: bool = False
    shards: Shards | None = None
    pruned: bool = False
    prune_chunk: int = 0
    work: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        """This process's rows."""
        return self.x.shape[0]

    @property
    def n_total(self) -> int:
        """Rows over all ranks."""
        return self.n if self.shards is None else int(self.shards.n_total)


@dataclass(frozen=True)
class PruneCost:
    """The E-step's cost per row under each form, in multiply-adds of the dense form's products (1 = ~0.05 ns on
    the 2-core CPU it was fitted on), for :meth:`GMMFamily.prune_pays`:

    * pruned: ``base + per_k K + (pairs - 1) (per_pair + per_pair_d2 D^2)``; per component the bounds and the
      element-wise passes over (rows x K), per exact pair beyond a row's first the gathers and the small
      per-component products;
    * features: ``K D^2 + per_feature F`` (both steps' products, symmetric halves, and building ``phi``);
    * direct: ``5/4 K D^2 + direct_per_dim D`` (its triangular blocks, and per row the transposes and softmax).

    Fitted to paired E-step timings of 60,000 rows, D = 16 - 64, K = 8 - 64, 1 - 59 pairs a row (docs/gmm.md,
    "Which form"): it picks the faster form on 21 of 23 shapes, the other two near the balance (within 1.4x)."""

    base: float = 3000.0
    per_k: float = 300.0
    per_pair: float = 10000.0
    per_pair_d2: float = 5.0
    per_feature: float = 30.0
    direct_per_dim: float = 250.0


class GMMFamily:
    """Gaussian-mixture hooks for :func:`ppl_dgm.inference.em.fit_em`.

    Parameters
    ----------
    n_components : int
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    reg_covar : float
        Added to the covariance diagonals in the M-step.
    init_params : {'kmeans', 'k-means++', 'random_from_data', 'random'}
    chunk_size : int, optional
        Rows per chunk; by default about ``chunk_bytes`` of temporaries.
    chunk_bytes : int, optional
        Target size of one chunk's temporaries when ``chunk_size`` is not given; by default 2 MB per
        thread of torch (``torch.get_num_threads()``): one thread runs best on ~2 MB chunks and two threads,
        which split each product, on ~4 MB (benchmarks/gmm_chunks.py).
    strategy : {'auto', 'features', 'direct', 'pruned'}
        The E-step's form (module docstring); ``direct`` and ``pruned`` (:mod:`~ppl_dgm.models.gmm_prune`:
        pairs whose responsibility a bound puts below ``exp(-60)`` are skipped) need full covariances.
        ``auto``, for full covariances with ``D >= 16``, ``K >= 4`` and ``N >= 16,384`` (never on the JAX
        backend), screens the first 2,048 rows of every E-step and takes ``pruned`` if, with the pairs per row
        they keep, it costs less than the dense form by a measured cost model (:meth:`prune_pays`: at D = 20 and
        K = 64 up to ~1.9 pairs a row, at D = 64 and K = 10 up to ~3), else the dense form: ``direct`` when
        ``direct_ratio * K <= D`` (4 here, 2.5 for the JAX backend), else ``features``.
        ``last_pairs_per_row`` holds the pairs per row (1 to K) of the last screen, ``last_form`` the form the
        last E-step took (``'pruned'``, ``'direct'`` or ``'features'``).
    shards : Shards, optional
        Sharded EM: ``x`` given to :meth:`prepare` is this rank's block of rows and the
        statistics are summed over ranks (:class:`~ppl_dgm.models.shards.Shards`); ``None``
        (default): one process, no communication.
    """

    #: ``auto`` takes the direct form when ``direct_ratio * K <= D`` (measured crossover, one core, float64)
    direct_ratio = 4.0
    #: ``auto`` may take the pruned form for full covariances with at least this many dimensions, components, rows
    prune_min_dim: float = 16
    prune_min_k = 4
    prune_min_n = 16384
    #: the pruned form's chunks hold at least this many rows per component, and this many rows in all
    prune_rows = 256
    prune_min_rows = 32768  # measured: 32,768 rows beat 16,384 by 0 - 15 % (D = 20, 64; K = 4 - 64)
    #: and more rows while a chunk's rows (D + 2 numbers each) and its bounds (K or more each) stay below this
    #: many numbers: fewer chunks where D and K are small (measured at D = 20: 98,304 rows 12 - 20 % faster)
    prune_numbers = 1 << 21
    #: under ``auto``, the first chunk of rows screened (at least 32 per component) decides an E-step's form
    prune_probe_rows = 2048
    #: :meth:`prune_pays`'s cost model (:class:`PruneCost`)
    prune_cost: PruneCost = PruneCost()

    def __init__(self, n_components: int, covariance_type: str = "full", reg_covar: float = 1e-6,
                 init_params: str = "kmeans", chunk_size: int | None = None,
                 chunk_bytes: int | None = None, strategy: str = "auto", shards: Shards | None = None) -> None:
        self.k = check_positive_int("n_components", n_components)
        self.covariance_type = check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
        self.init_params = check_choice("init_params", init_params, INIT_METHODS)
        self.reg_covar = float(reg_covar)
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.strategy = check_choice("strategy", strategy, STRATEGIES)
        self.shards = shards
        self.last_pairs_per_row: float | None = None  # set by each E-step (class docstring, ``strategy``)
        self.last_form: str | None = None
        if self.strategy in ("direct", "pruned") and self.covariance_type != "full":
            raise InputError(f"expected covariance_type='full' with strategy={self.strategy!r}; got "
                             f"{covariance_type!r}")

    # --- features --------------------------------------------------------------------------
    def n_features_phi(self, d: int) -> int:
        ct = self.covariance_type
        return {"full": d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": d, "spherical": 1}[ct] + d + 1

    def phi_t(self, xt: Tensor, out: Tensor | None = None) -> Tensor:
        """Feature columns of centred data given as columns, ``xt`` (D, c) -> ``phi^T`` (F, c)."""
        d, c = xt.shape
        out = xt.new_empty(self.n_features_phi(d), c) if out is None else out
        if self.covariance_type in ("full", "tied"):
            off = 0  # row-major upper triangle, the order of torch.triu_indices
            for i in range(d):
                torch.mul(xt[i : i + 1], xt[i:], out=out[off : off + d - i])
                off += d - i
        elif self.covariance_type == "diag":
            torch.mul(xt, xt, out=out[:d])
        else:
            torch.sum(xt * xt, 0, keepdim=True, out=out[:1])
        out[-d - 1 : -1] = xt
        out[-1] = 1
        return out

    def use_direct(self, d: int) -> bool:
        """Whether the E-step takes the direct form (full covariances, ``direct_ratio * K <= D`` under ``auto``)."""
        if self.strategy == "auto":
            return self.covariance_type == "full" and self.direct_ratio * self.k <= d
        return self.strategy == "direct"

    def use_pruned(self, d: int, n: int) -> bool:
        """Whether the E-steps of ``n`` rows in ``d`` dimensions may take the pruned form (under ``auto``: full
        covariances, ``D >= prune_min_dim``, ``K >= prune_min_k``, ``N >= prune_min_n``)."""
        if self.strategy == "auto":
            return (self.covariance_type == "full" and self.k >= self.prune_min_k and d >= self.prune_min_dim
                    and n >= self.prune_min_n)
        return self.strategy == "pruned"

    def prune_pays(self, pairs_per_row: float, d: int) -> bool:
        """Whether the pruned form costs less than the dense one with this many exact pairs per row (of K) in
        ``d`` dimensions, by the cost model :attr:`prune_cost` (:class:`PruneCost`)."""
        c, kd2 = self.prune_cost, self.k * d * d
        pruned = c.base + c.per_k * self.k + max(pairs_per_row - 1, 0.0) * (c.per_pair + c.per_pair_d2 * d * d)
        if self.use_direct(d):
            dense = 1.25 * kd2 + c.direct_per_dim * d
        else:
            dense = kd2 + c.per_feature * self.n_features_phi(d)
        return pruned < dense

    def numbers_per_row(self, d: int) -> int:
        """Temporaries per row of a dense form's chunk: ``y`` (K x the largest block) or ``phi`` (F), the
        centred row (D), three (K) rows."""
        block = max(b - a for a, b in triangle_blocks(d))
        return (self.k * block if self.use_direct(d) else self.n_features_phi(d)) + d + 3 * self.k

    def prepare(self, x: Tensor) -> GMMData:
        """Rows ``x`` (N_r, D) with their (global) mean as the centring shift and the chunk size."""
        check_rows(x, empty=self.shards is not None)
        n, d = x.shape
        direct = self.use_direct(d)
        budget = self.chunk_bytes or (1 << 21) * torch.get_num_threads()
        chunk = self.chunk_size or max(256, budget // (x.element_size() * self.numbers_per_row(d)))
        # the pruned form's products per component need rows, its per-chunk steps many
        prune_chunk = self.chunk_size or max(self.prune_rows * self.k, self.prune_min_rows,
                                             self.prune_numbers // max(d + 2, self.k))
        shards = None if self.shards is None else self.shards.locate(n, d, x.device)
        if shards is None:
            mean = x.mean(0, dtype=torch.float64)
        else:  # every rank centres by the same (global) mean
            mean = shards.sum(x.sum(0, dtype=torch.float64)) / shards.n_total
        if not bool(torch.isfinite(mean).all()):  # a finite mean: every value finite (checked in one pass)
            bad = int((~torch.isfinite(x)).any(1).sum())
            if bad:
                raise InputError(f"expected finite data; got NaN or inf in {bad} row(s)")
            if shards is not None:  # (a rank's NaN reaches every rank through the sum)
                raise InputError("expected finite data; got NaN or inf in another rank's rows")
            raise InputError("expected data whose column means are finite; got values so large that a column's "
                             "sum overflows")
        # rounded to float32: a centring needs no more digits, and rounded it is the same number whatever the
        # order of the sums (one process or many), so are the initial parameters (see docs/scaling.md)
        shift = mean.float().to(x.dtype)
        n_total = n if shards is None else int(shards.n_total)
        return GMMData(x, shift, max(1, min(int(chunk), n)), direct, shards, self.use_pruned(d, n_total),
                       max(1, min(int(prune_chunk), n)))

    def _columns(self, data: GMMData, i: int) -> Tensor:
        """Centred rows ``i .. i + chunk`` as columns (D, c), contiguous."""
        return (data.x[i : i + data.chunk_size] - data.shift).T.contiguous()

    # --- E-step ----------------------------------------------------------------------------
    def weight_matrix(self, params: GMMParams, shift: Tensor) -> Tensor:
        """``W`` (F, K) such that ``phi(x - shift) W = log pi_k + log N(x | mu_k, Sigma_k)``."""
        ct = self.covariance_type
        u = params.precisions_cholesky.double()
        mu = params.means.double() - shift.double()
        k, d = mu.shape
        if ct in ("full", "tied"):
            prec = u @ u.transpose(-1, -2)
            prec = prec.expand(k, d, d) if ct == "tied" else prec
            iu = torch.triu_indices(d, d, device=mu.device)
            factor = torch.where(iu[0] == iu[1], -0.5, -1.0).to(prec)
            quad = prec[:, iu[0], iu[1]] * factor  # (K, D(D+1)/2)
            lin = (prec @ mu.unsqueeze(-1)).squeeze(-1)  # (K, D)
            const = (lin * mu).sum(1)
        elif ct == "diag":
            p = u * u
            quad, lin = -0.5 * p, p * mu
            const = (lin * mu).sum(1)
        else:
            p = u * u
            quad, lin = (-0.5 * p).unsqueeze(1), p.unsqueeze(1) * mu
            const = p * (mu * mu).sum(1)
        log_det = log_det_cholesky(u, ct, d).expand(k)
        c0 = params.weights.double().log() - 0.5 * d * math.log(2 * math.pi) + log_det - 0.5 * const
        w = torch.cat([quad, lin, c0.unsqueeze(1)], dim=1).T
        return w.to(params.means.dtype).contiguous()

    def e_step(self, params: GMMParams, data: GMMData) -> EStep:
        """Mean log-likelihood and ``S = Phi^T gamma`` (F, K) in float64, one pass over chunks.

        Sharded: ``[S_r | sum_n log p(x_n)]`` (F K + 1 numbers; the pruned form: two more, its pairs and
        screened rows) summed over ranks, once."""
        total, stats, screened = self._sums_pruned(params, data) if data.pruned else (None, None, None)
        self.last_form = "pruned"
        if stats is None:
            self.last_form = "direct" if data.direct else "features"
            total, stats = (self._sums_direct if data.direct else self._sums_features)(params, data)
        if data.shards is not None:
            packed = [stats.reshape(-1), total.reshape(1)] + ([screened] if data.pruned else [])
            both = data.shards.sum(torch.cat(packed))
            total, stats, screened = both[stats.numel()], both[: stats.numel()].view(stats.shape), both[-2:]
        if data.pruned:
            self.last_pairs_per_row = float(screened[0] / screened[1]) if screened[1] else math.nan
        return EStep(float(total) / data.n_total, stats)

    def _sums_features(self, params: GMMParams, data: GMMData) -> tuple[Tensor, Tensor]:
        """The feature form: ``(sum_n log p(x_n), S)`` over this process's rows."""
        w = self.weight_matrix(params, data.shift).T.contiguous()  # (K, F)
        stats = torch.zeros(w.shape, dtype=torch.float64, device=w.device)
        total = torch.zeros((), dtype=torch.float64, device=w.device)
        buf = w.new_empty(w.shape[1], data.chunk_size)
        for i in range(0, data.n, data.chunk_size):
            xt = self._columns(data, i)
            f = self.phi_t(xt, buf[:, : xt.shape[1]])  # (F, c)
            resp, lse = _softmax_columns(w @ f)  # (K, c)
            total += lse
            stats += torch.mm(resp, f.T).double()  # (K, F); the fastest of the layouts for MKL
        return total, stats.T

    def _sums_direct(self, params: GMMParams, data: GMMData) -> tuple[Tensor, Tensor]:
        """The direct form (module docstring), by column blocks; the same sums as :meth:`_sums_features`."""
        u, mu, c0 = self._centred_factors(params, data)
        k, d = mu.shape
        c0 = c0.unsqueeze(1)
        blocks = triangle_blocks(d)
        ut = u.transpose(1, 2)  # U_k^T, lower triangular: block i of y_k needs x[:b] only
        rows = [ut[:, a:b, :b].reshape(k * (b - a), b).contiguous() for a, b in blocks]
        offset = torch.einsum("kde,kd->ke", u, mu)  # U_k^T mu_k, (K, D)
        offsets = [offset[:, a:b].reshape(-1, 1) for a, b in blocks]
        s2 = [torch.zeros(k * (b - a), d - a, dtype=torch.float64, device=u.device) for a, b in blocks]
        s1 = torch.zeros(k, d, dtype=torch.float64, device=u.device)
        s0 = torch.zeros(k, dtype=torch.float64, device=u.device)
        total = torch.zeros((), dtype=torch.float64, device=u.device)
        for i in range(0, data.n, data.chunk_size):
            xt = self._columns(data, i)  # (D, c)
            maha = xt.new_zeros(k, xt.shape[1])
            for (a, b), r, off in zip(blocks, rows, offsets, strict=True):
                y = torch.mm(r, xt[:b]).sub_(off).square_()  # (K (b - a), c)
                maha += y.view(k, b - a, -1).sum(1)
                del y  # one block's y at a time
            resp, lse = _softmax_columns(maha.mul_(-0.5).add_(c0))
            total += lse
            for j, (a, b) in enumerate(blocks):  # rows a..b of sum_n gamma_nk x_n x_n^T, columns a..D
                z = (resp.unsqueeze(1) * xt[a:b].unsqueeze(0)).view(k * (b - a), -1)
                s2[j] += torch.mm(z, xt[a:].T).double()
                del z
            s1 += torch.mm(resp, xt.T).double()
            s0 += resp.sum(1, dtype=torch.float64)
        upper = torch.cat([torch.nn.functional.pad(m.view(k, b - a, d - a), (a, 0))
                           for m, (a, b) in zip(s2, blocks, strict=True)], dim=1)  # (K, D, D), upper part
        return total, _stats_columns(upper, s1, s0)

    def _sums_pruned(self, params: GMMParams, data: GMMData) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """The pruned form (:mod:`~ppl_dgm.models.gmm_prune`): the same sums up to terms below round-off, and
        ``[pairs kept, rows screened]`` (float64).  Under ``auto``, no sums (``None``) when the first chunk's
        screen keeps too many pairs (:meth:`prune_pays`): the caller runs the dense form."""
        u, mu, c0 = self._centred_factors(params, data)
        k, d = mu.shape
        plan = make_plan(u, mu, c0, work=data.work)
        stats = torch.zeros(k, d + 1, d + 1, dtype=torch.float64, device=u.device)
        sure = torch.zeros_like(stats)  # the sure rows' moments (gmm_prune.chunk_sums)
        total = torch.zeros((), dtype=torch.float64, device=u.device)
        buf = plan.buffer("augmented", data.prune_chunk, row_width(d, data.x.device), data.x)
        pairs = 0
        probe = min(data.prune_chunk, max(self.prune_probe_rows, 32 * k))  # a small first chunk: the probe
        for i in [0, *range(probe, data.n, data.prune_chunk)]:
            xb = augment(data.x[i : probe if i == 0 else i + data.prune_chunk], data.shift, buf)
            scr = screen(xb, plan)
            pairs += scr.pairs
            if i == 0 and self.strategy == "auto" and not self.prune_pays(pairs / len(xb), d):
                forget_sure_moments(plan)  # the dense form runs this E-step
                return None, None, torch.tensor([float(pairs), len(xb)], dtype=torch.float64, device=u.device)
            total += chunk_sums(xb, plan, stats, sure, scr, key=i)
        total += sure_log_lik(sure, plan)
        stats += sure
        return (total, _stats_columns(stats[:, :d, :d], stats[:, :d, d], stats[:, d, d]),
                torch.tensor([float(pairs), data.n], dtype=torch.float64, device=u.device))

    def _centred_factors(self, params: GMMParams, data: GMMData) -> tuple[Tensor, Tensor, Tensor]:
        """Upper-triangular ``U_k`` (K, D, D), the means less the shift (K, D), and
        ``c_k = log pi_k - D/2 log 2 pi + log det U_k`` (K,), in the data's dtype: what the direct and
        pruned forms start from."""
        u = upper_factor(params.precisions_cholesky)
        mu = (params.means.double() - data.shift.double()).to(u.dtype)
        d = mu.shape[1]
        return u, mu, params.weights.log() - 0.5 * d * math.log(2 * math.pi) + log_det_cholesky(u, "full", d)

    # --- M-step ----------------------------------------------------------------------------
    def m_step(self, estep: EStep, data: GMMData) -> GMMParams:
        """Closed-form ``pi, mu, Sigma`` from the statistics (course notes, M-step)."""
        return self.params_from_stats(estep.stats, data)

    def params_from_stats(self, stats: Tensor, data: GMMData) -> GMMParams:
        ct, dtype = self.covariance_type, data.x.dtype
        d = data.x.shape[1]
        nq = stats.shape[0] - d - 1
        nk = stats[-1] + 10 * torch.finfo(dtype).eps
        sx = stats[nq:-1].T  # (K, D)
        mu = sx / nk.unsqueeze(1)
        if ct in ("full", "tied"):
            iu = torch.triu_indices(d, d, device=stats.device)
            sxx = stats.new_zeros(self.k, d, d)
            sxx[:, iu[0], iu[1]] = stats[:nq].T
            sxx[:, iu[1], iu[0]] = stats[:nq].T
            eye = torch.eye(d, dtype=stats.dtype, device=stats.device)
            if ct == "full":
                cov = sxx / nk[:, None, None] - mu.unsqueeze(2) * mu.unsqueeze(1)
            else:
                cov = (sxx.sum(0) - (nk[:, None] * mu).T @ mu) / nk.sum()
            cov = cov + self.reg_covar * eye
        elif ct == "diag":
            cov = stats[:nq].T / nk.unsqueeze(1) - mu * mu + self.reg_covar
        else:
            cov = (stats[0] / nk - (mu * mu).sum(1)) / d + self.reg_covar
        weights = nk / nk.sum()
        prec_chol = precision_cholesky(cov, ct, self.reg_covar)
        means = mu + data.shift.double()
        return GMMParams(*(t.to(dtype) for t in (weights, means, cov, prec_chol)))

    def monotone_slack(self, params: GMMParams) -> float:
        """Allowed per-sample decrease: round-off plus ``reg_covar * max_k tr(P_k)``."""
        u = params.precisions_cholesky.double()
        if self.covariance_type in ("full", "tied"):
            tr = u.pow(2).sum((-1, -2)).max()
        elif self.covariance_type == "diag":
            tr = u.pow(2).sum(-1).max()
        else:
            tr = u.pow(2).max() * params.means.shape[1]
        eps = torch.finfo(params.means.dtype).eps
        return float(self.reg_covar * tr) + 1e4 * eps * (1.0 + float(tr))

    def elbo_gap(self, params: GMMParams, x: Tensor) -> float:
        """``ELBO/N - log-likelihood/N`` with the exact-posterior guide, via Pyro traces.

        ``TraceEnum_ELBO`` sums over every value of the enumerated ``c``, so the ELBO is
        exact; it is zero up to round-off right after an E-step (course notes, EM section).
        """
        from .gmm import GMM

        gmm = GMM.from_params(params, self.covariance_type)
        with torch.no_grad():
            elbo = -float(pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(gmm.model, gmm.guide, x))
        return (elbo - float(gmm.log_prob(x).double().sum())) / x.shape[0]

    # --- initialisation --------------------------------------------------------------------
    def initialize(self, data: GMMData, generator: torch.Generator) -> GMMParams:
        """Parameters from initial responsibilities, as scikit-learn's ``init_params``.

        Sharded, every rank draws what a single process draws on all the rows (the same
        generator calls, global indices), so every rank gets the single-process parameters."""
        n, shards = data.n_total, data.shards
        if self.k > n:
            raise InputError(f"expected n_components <= n_samples; got {self.k} > {n}")
        method = self.init_params
        if method in ("random_from_data", "k-means++"):
            if method == "random_from_data":
                idx = torch.randperm(n, generator=generator)[: self.k]
            else:
                idx = kmeans_plusplus(data.x, self.k, generator, shards)
            rows = take_rows(data.x, idx.to(data.x.device), shards)
            cols = self.phi_t((rows - data.shift).T.contiguous()).double()
            return self.params_from_stats(cols, data)
        stats = torch.zeros(self.n_features_phi(data.x.shape[1]), self.k, dtype=torch.float64,
                            device=data.x.device)
        labels = kmeans(data.x, self.k, generator, shards=shards) if method == "kmeans" else None
        if labels is None and shards is not None:  # the draws of the rows before this rank's
            self._skip_draws(shards.offset, data.chunk_size, generator)
        for i in range(0, data.n, data.chunk_size):
            cols = self.phi_t(self._columns(data, i))
            if labels is None:
                resp = torch.rand(cols.shape[1], self.k, generator=generator, dtype=torch.float64)
                resp = (resp / resp.sum(1, keepdim=True)).to(cols)
            else:
                resp = torch.nn.functional.one_hot(labels[i : i + cols.shape[1]], self.k).to(cols)
            stats += (cols @ resp.to(cols.device)).double()
        if shards is not None:
            if labels is None:  # ... and after, so the generator ends where a single process's does
                self._skip_draws(n - shards.offset - data.n, data.chunk_size, generator)
            stats = shards.sum(stats)
        return self.params_from_stats(stats, data)

    def _skip_draws(self, rows: int, chunk: int, generator: torch.Generator) -> None:
        """Advance ``generator`` past the random responsibilities of ``rows`` rows (CPU draws are serial,
        so draws in any chunks continue one stream)."""
        for i in range(0, rows, chunk):
            torch.rand(min(chunk, rows - i), self.k, generator=generator, dtype=torch.float64)

    def params_from_given(self, weights: Tensor, means: Tensor, precisions: Tensor) -> GMMParams:
        """Initial parameters from given weights, means and precisions (sklearn ``*_init``)."""
        from .gmm import precision_cholesky_from_precisions

        prec_chol = precision_cholesky_from_precisions(precisions, self.covariance_type)
        cov = covariances_from_precision_cholesky(prec_chol, self.covariance_type)
        return GMMParams(weights / weights.sum(), means, cov, prec_chol)


def upper_factor(u: Tensor) -> Tensor:
    """``u`` (K, D, D) if upper triangular, else the upper-triangular ``R`` with ``R R^T = u u^T``.

    The M-step's factors are upper (``U = L^{-T}``); given ``precisions_init`` come as a lower
    Cholesky factor (scikit-learn's convention), which the direct form's blocks cannot use."""
    if not bool(torch.tril(u, -1).any()):
        return u
    flip = u.flip(-1, -2)  # R = J chol(J P J) J, J the reversal: upper, R R^T = P
    return torch.linalg.cholesky(flip @ flip.transpose(-1, -2)).flip(-1, -2)


def triangle_blocks(d: int) -> list[tuple[int, int]]:
    """Row blocks ``[(a, b), ...]`` of a D x D triangle for the direct form: 4 (D >= 32), 2 (D >= 16) or 1.

    With B blocks the triangular products cost (B + 1) / (2 B) of the full ones (5/8 for B = 4)."""
    nb = 4 if d >= 32 else 2 if d >= 16 else 1
    edges = [round(d * i / nb) for i in range(nb + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _stats_columns(s2: Tensor, s1: Tensor, s0: Tensor) -> Tensor:
    """The feature layout ``S`` (F, K) from second moments ``s2`` (K, D, D; upper triangle used), first
    moments ``s1`` (K, D) and counts ``s0`` (K,)."""
    d = s1.shape[1]
    iu = torch.triu_indices(d, d, device=s1.device)
    return torch.cat([s2[:, iu[0], iu[1]].T, s1.T, s0.unsqueeze(0)])


def _softmax_columns(logp: Tensor) -> tuple[Tensor, Tensor]:
    """In place: ``logp`` (K, c) -> responsibilities (columns sum to 1), and ``sum_n log sum_k exp``."""
    m = logp.amax(0, keepdim=True)
    resp = exp_(logp.sub_(m))  # (raised to -708 first: gmm_prune.exp_)
    s = resp.sum(0, keepdim=True)
    resp.div_(s)
    return resp, (m + s.log()).sum(dtype=torch.float64)

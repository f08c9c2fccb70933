"""Rows split over processes: each rank holds one contiguous block, a sum over ranks combines them.

Sharded EM (:class:`~ppl_dgm.models.gmm_em.GMMFamily` with ``shards=``) needs one
collective only, a **sum over ranks** that returns the same numbers on every
rank (``torch.distributed.all_reduce``; gloo on CPU, NCCL on GPUs).  Everything
that must be global is built from it:

* sums of statistics: reduced as they are;
* a global vector of per-row numbers (:meth:`Shards.gather`): each rank writes
  its block at its offset into zeros, and the sum assembles the vector
  exactly (``x + 0 = x``);
* chosen rows (:meth:`Shards.take`): the owner writes the row, the others zeros.

Rank order is row order: rank r holds global rows ``offset_r .. offset_r + N_r``
(:func:`shard_rows` splits an array so), so the sharded fit sees the same
global rows as a single process on the concatenated data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError


def shard_rows(x: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous block of the rows of ``x`` (N, ...) among ``world_size`` ranks.

    The first ``N % world_size`` ranks get one row more (as ``numpy.array_split``);
    concatenating the blocks in rank order gives ``x`` back.

    Parameters
    ----------
    x : array or Tensor, shape (N, ...)
    rank : int
        ``0 <= rank < world_size``.
    world_size : int

    Returns
    -------
    array or Tensor, shape (N_r, ...)
        A view of rows ``start .. stop`` of ``x``.
    """
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise InputError(f"expected 0 <= rank < world_size (integers); got rank={rank!r}, world_size={world_size!r}")
    n = len(x)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return x[start : start + base + (rank < extra)]


def _all_reduce_sum(group: Any) -> Callable[[Tensor], Tensor]:
    import torch.distributed as dist

    def reduce(t: Tensor) -> Tensor:
        out = t.detach().clone().contiguous()  # all_reduce works in place
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    return reduce


@dataclass(frozen=True)
class Shards:
    """This rank's block of rows and the sum over ranks.

    Parameters
    ----------
    reduce : callable
        ``Tensor -> Tensor``, the element-wise sum of the argument over all ranks,
        the same numbers on every rank; called collectively (every rank at the same point).
    rank, world_size : int
    offset : int
        Global index of this rank's first row (set by :meth:`locate`).
    n_total : int, optional
        Rows over all ranks (set by :meth:`locate`).
    """

    reduce: Callable[[Tensor], Tensor]
    rank: int = 0
    world_size: int = 1
    offset: int = 0
    n_total: int | None = None

    @classmethod
    def from_process_group(cls, group: Any = None) -> Shards:
        """The ranks of an initialized ``torch.distributed`` process group (the default one if ``group`` is None).

        Raises :class:`~ppl_dgm.errors.InputError` when no process group is initialized.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("expected an initialized torch.distributed process group for sharded EM "
                             "(launch with torchrun and call torch.distributed.init_process_group); got none")
        return cls(_all_reduce_sum(group), dist.get_rank(group), dist.get_world_size(group))

    def locate(self, n: int, d: int, device: Any = None) -> Shards:
        """This shard's place among all (one sum of every rank's ``(N_r, D_r)``); checks that every D is the same.

        Returns a copy with ``offset`` and ``n_total`` set."""
        sizes = torch.zeros(2, self.world_size, dtype=torch.float64, device=device)
        sizes[0, self.rank], sizes[1, self.rank] = n, d
        counts, dims = (v.long().tolist() for v in self.reduce(sizes).cpu())
        if len(set(dims)) > 1:
            raise InputError(f"expected the same number of columns D on every rank; got D = {dims} on ranks "
                             f"0..{self.world_size - 1}")
        return replace(self, offset=sum(counts[: self.rank]), n_total=sum(counts))

    def sum(self, t: Tensor) -> Tensor:
        """``t`` summed over ranks."""
        return self.reduce(t)

    def gather(self, v: Tensor) -> Tensor:
        """This rank's per-row numbers ``v`` (N_r,) -> every rank's, in row order, (N,); exact."""
        out = v.new_zeros(self.n_total)
        out[self.offset : self.offset + v.shape[0]] = v
        return self.reduce(out)

    def take(self, x: Tensor, idx: Tensor) -> Tensor:
        """Global rows ``idx`` (m,) of the sharded data, on every rank: shape (m, D); exact."""
        idx = idx.to(x.device)
        local = idx - self.offset
        mine = (local >= 0) & (local < x.shape[0])
        out = x.new_zeros(idx.shape[0], x.shape[1])
        out[mine] = x[local[mine]]
        return self.reduce(out)

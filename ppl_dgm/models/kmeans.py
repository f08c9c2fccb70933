"""k-means++ seeding and Lloyd's k-means, the Gaussian mixture's default initialisation.

Both run on one process's rows or, given ``shards`` (:class:`~ppl_dgm.models.shards.Shards`),
on rows split over ranks with the same result as on the concatenated rows: the
D^2 weights of k-means++ are gathered into one global vector, so
``torch.multinomial`` with the shared generator draws the same global index on
every rank (and as a single process); the chosen row is sent by its owner; Lloyd's
per-cluster sums and counts are summed over ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .shards import Shards


def _sq_dists(x: Tensor, centers: Tensor) -> Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centers.T + centers.pow(2).sum(1)).clamp_min_(0)


def take_rows(x: Tensor, idx: list[int] | Tensor, shards: Shards | None = None) -> Tensor:
    """Rows ``idx`` (global indices) of ``x`` (N_r, D), shape (m, D); on every rank when sharded."""
    if shards is None:
        return x[idx]
    return shards.take(x, torch.as_tensor(idx, dtype=torch.long))


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator, shards: Shards | None = None) -> Tensor:
    """Global indices of ``k`` seeds chosen by k-means++ (D^2 weighting), shape (k,)."""
    n = x.shape[0] if shards is None else shards.n_total
    idx = [int(torch.randint(n, (1,), generator=generator))]
    closest = _sq_dists(x, take_rows(x, idx, shards)).squeeze(1)
    for _ in range(1, k):
        p = (closest.double() if shards is None else shards.gather(closest.double())).cpu()
        p = p / p.sum() if float(p.sum()) > 0 else torch.full_like(p, 1.0 / n)
        j = int(torch.multinomial(p, 1, generator=generator))
        idx.append(j)
        closest = torch.minimum(closest, _sq_dists(x, take_rows(x, [j], shards)).squeeze(1))
    return torch.tensor(idx)


def _mean_variance(x: Tensor, shards: Shards | None, chunk_size: int) -> float:
    """Mean over columns of the per-column variance of all ranks' rows (a scale for the stopping rule)."""
    if shards is None:
        return float(x.var(0).mean())
    n = shards.n_total
    mean = shards.sum(x.sum(0, dtype=torch.float64)) / n
    ss = torch.zeros_like(mean)
    for i in range(0, x.shape[0], chunk_size):
        ss += (x[i : i + chunk_size].double() - mean).pow(2).sum(0)
    return float((shards.sum(ss) / max(n - 1, 1)).mean())


def kmeans(x: Tensor, k: int, generator: torch.Generator, max_iter: int = 100, tol: float = 1e-4,
           chunk_size: int = 16384, shards: Shards | None = None) -> Tensor:
    """Lloyd's k-means from k-means++ seeds; returns this rank's labels, shape (N_r,)."""
    centers = take_rows(x, kmeans_plusplus(x, k, generator, shards).to(x.device), shards).clone()
    scale = _mean_variance(x, shards, chunk_size) or 1.0
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        for i in range(0, x.shape[0], chunk_size):
            labels[i : i + chunk_size] = _sq_dists(x[i : i + chunk_size], centers).argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype).unsqueeze(1)
        if shards is not None:  # one sum over ranks of [sums | counts], (k, D + 1)
            both = shards.sum(torch.cat([sums, counts], 1))
            sums, counts = both[:, :-1], both[:, -1:]
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centers)
        shift = float((new - centers).pow(2).sum())
        centers = new
        if shift <= tol * scale:
            break
    for i in range(0, x.shape[0], chunk_size):
        labels[i : i + chunk_size] = _sq_dists(x[i : i + chunk_size], centers).argmin(1)
    return labels

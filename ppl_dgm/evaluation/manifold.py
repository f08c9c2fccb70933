"""Improved precision and recall of a generative model (Kynkäänniemi et al. 2019), in any feature space.

Each set's manifold is the union of balls around its points whose radius is the distance to the point's k-th
nearest neighbour within the set.  **Precision** is the fraction of generated features inside the real manifold
(sample fidelity); **recall** the fraction of real features inside the generated manifold (coverage, diversity).
Both are in [0, 1]; compare them at the same k and the same numbers of points (the radii shrink as N grows).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError


def _as_features(x, what: str) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(x, np.float64))
    if a.ndim != 2 or len(a) < 2:
        raise InputError(f"expected {what} features shaped (N, F) with N >= 2; got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise InputError(f"expected finite {what} features; got NaN or inf")
    return a


def _chunked_distances(a: torch.Tensor, b: torch.Tensor, chunk: int):
    for i in range(0, len(a), chunk):
        yield torch.cdist(a[i:i + chunk], b)


def knn_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row of ``x`` (N, F) to its k-th nearest other row, (N,)."""
    # the point itself is at distance 0, so the k-th neighbour is the (k+1)-th smallest
    return torch.cat([d.kthvalue(k + 1, dim=1).values for d in _chunked_distances(x, x, chunk)])


def coverage_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    """Fraction of ``points`` within radius_j of some centre_j."""
    inside = [(d <= radii[None]).any(dim=1) for d in _chunked_distances(points, centres, chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real, fake, k: int = 3) -> dict:
    """Precision and recall of features ``fake`` (M, F) against ``real`` (N, F) with k-NN manifolds.

    Returns ``{"precision", "recall", "k", "n_real", "n_fake"}``; k must be smaller than both set sizes.
    """
    r, f = _as_features(real, "real"), _as_features(fake, "generated")
    if r.shape[1] != f.shape[1]:
        raise InputError(f"expected real and generated features of one width; got {r.shape[1]} and {f.shape[1]}")
    if not (isinstance(k, int) and 1 <= k < min(len(r), len(f))):
        raise InputError(f"expected an integer k with 1 <= k < min(N, M) = {min(len(r), len(f))}; got {k!r}")
    return {"precision": coverage_fraction(f, r, knn_radii(r, k)),
            "recall": coverage_fraction(r, f, knn_radii(f, k)),
            "k": k, "n_real": len(r), "n_fake": len(f)}

"""Kernel maximum mean discrepancy between two samples (Gretton et al. 2012), for sample quality on 2-D toys.

.. math::  \\mathrm{MMD}^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y),
           \\quad k(x, y) = \\frac1{|B|}\\sum_{h \\in B} \\exp(-\\|x - y\\|^2 / (2 h^2))

estimated without bias (diagonal terms dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError


def mmd2(x, y, bandwidths: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0), max_n: int = 4000, seed: int = 0) -> float:
    """Unbiased MMD^2 between samples x (N, D) and y (M, D) with a sum of RBF kernels.

    At most ``max_n`` rows of each are used (a seeded subsample), keeping memory O(max_n^2).
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise InputError(f"expected two samples (N, D), (M, D) with N, M >= 2; got {tuple(x.shape)}, {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_n:
        x = x[torch.randperm(len(x), generator=g)[:max_n]]
    if len(y) > max_n:
        y = y[torch.randperm(len(y), generator=g)[:max_n]]

    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths) / len(bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())

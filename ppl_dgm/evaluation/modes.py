"""Mode coverage of samples from a model of a mixture with known modes (the 2-D grid and ring benchmarks of
mode collapse; course notes 004 "Instability of GAN" and notes 002 §4 "Optimization challenges": a collapsed
generator "may produce only a few types of outputs instead of diverse samples").

The data are an equal-weight mixture of K isotropic Gaussians N(mu_k, sigma^2 I).  Each sample x is assigned to
its nearest centre k(x) = argmin_k ||x - mu_k||, and is **high quality** when it lies within n_sigma standard
deviations of it, ||x - mu_k(x)|| <= n_sigma sigma (Srivastava et al. 2017, VEEGAN, with n_sigma = 3).  For D = 2
the radius of a true draw is sigma times a chi(2) variable, so a perfect model puts

.. math::  P(\\|x - \\mu\\| \\le 3\\sigma) = 1 - e^{-3^2 / 2} = 1 - e^{-4.5} = 0.98889

of its samples within 3 sigma (on well-separated modes).  A mode is **covered** when at least ``min_count``
high-quality samples fall on it; by default a fifth of its fair share, ceil(0.2 N / K): 20 of N = 2,500 samples
on the 25-mode grid (the count usual on that benchmark), 63 of 2,500 on the 8 Gaussians.  The **KL** is that of
the histogram p_k = n_k / sum_j n_j of the high-quality samples over the modes from the uniform one:

.. math::  \\mathrm{KL}(p \\| U) = \\sum_k p_k \\log(K p_k) = \\log K - H(p),

0 for a model that fills every mode equally, log(K / m) for one that fills m modes equally and misses the rest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, check_number


@dataclass(frozen=True)
class ModeCoverage:
    """The result of :func:`mode_coverage`.

    Attributes
    ----------
    modes_covered : int
        Modes with at least ``min_count`` high-quality samples.
    n_modes : int
        K.
    high_quality : float
        Fraction of all samples within ``n_sigma`` std of their nearest centre.
    kl_uniform : float
        KL(p || U) in nats of the per-mode histogram of the high-quality samples from the uniform one; NaN when
        no sample is high quality.
    counts : list of int, length K
        High-quality samples per mode, in the order of ``centres``.
    min_count : int
        The count a mode needed to be covered.
    n_samples : int
        N.
    n_sigma : float
    """

    modes_covered: int
    n_modes: int
    high_quality: float
    kl_uniform: float
    counts: list[int]
    min_count: int
    n_samples: int
    n_sigma: float

    def as_dict(self) -> dict:
        return asdict(self)


def _check_inputs(samples, centres, std: float, n_sigma: float):
    x = np.asarray(samples, dtype=np.float64) if _numeric(samples) else None
    c = np.asarray(centres, dtype=np.float64) if _numeric(centres) else None
    if c is None or c.ndim != 2 or len(c) == 0 or c.shape[1] == 0:
        raise InputError(f"mode_coverage: expected centres of shape (K, D) with K, D >= 1; "
                         f"got {_describe(centres)}")
    if x is None or x.ndim != 2 or len(x) == 0 or x.shape[1] != c.shape[1]:
        raise InputError(f"mode_coverage: expected samples of shape (N, {c.shape[1]}) with N >= 1, the width of "
                         f"the centres; got {_describe(samples)}")
    for a, what in ((x, "samples"), (c, "centres")):
        if not np.isfinite(a).all():
            raise InputError(f"mode_coverage: expected finite {what}; got {int(np.isnan(a).sum())} NaN and "
                             f"{int(np.isinf(a).sum())} inf")
    check_number("std", std, min=0, min_open=True)
    check_number("n_sigma", n_sigma, min=0, min_open=True)
    return x, c


def _numeric(a) -> bool:
    try:
        arr = np.asarray(a)
    except ValueError:  # ragged nested lists
        return False
    return (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) and not np.iscomplexobj(arr)


def _describe(a) -> str:
    try:
        arr = np.asarray(a)
    except ValueError:
        return f"a ragged {type(a).__name__}"
    return f"shape {arr.shape}, dtype {arr.dtype}"


def nearest_centre(samples: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre of each sample and the distance to it.

    Parameters
    ----------
    samples : ndarray, shape (N, D)
    centres : ndarray, shape (K, D)

    Returns
    -------
    index : ndarray of int, shape (N,)
    distance : ndarray, shape (N,)
    """
    d2 = np.stack([((samples - mu) ** 2).sum(1) for mu in centres], 1)  # (N, K), memory O(N K)
    index = d2.argmin(1)
    return index, np.sqrt(d2[np.arange(len(samples)), index])


def mode_coverage(samples, centres, std: float, n_sigma: float = 3.0, min_count: int | None = None) -> ModeCoverage:
    """Modes covered, fraction of high-quality samples, and the KL of their histogram from the uniform one.

    Parameters
    ----------
    samples : array, shape (N, D)
        Draws from the model.
    centres : array, shape (K, D)
        The means mu_k of the data's (equal-weight, isotropic) mixture, e.g. ``TOY_MIXTURES[name].centres``.
    std : float
        sigma of every component.
    n_sigma : float
        A sample is high quality within ``n_sigma * std`` of its nearest centre.
    min_count : int, optional
        High-quality samples a mode needs to count as covered; default ceil(0.2 N / K), a fifth of the N / K a
        perfect model puts on each mode (20 for N = 2,500 and K = 25).

    Returns
    -------
    ModeCoverage
    """
    x, c = _check_inputs(samples, centres, std, n_sigma)
    n, k = len(x), len(c)
    if min_count is None:
        min_count = max(1, math.ceil(0.2 * n / k))
    min_count = int(check_number("min_count", min_count, integer=True, min=1))
    index, distance = nearest_centre(x, c)
    good = distance <= n_sigma * std
    counts = np.bincount(index[good], minlength=k)
    n_good = int(counts.sum())
    if n_good:
        p = counts[counts > 0] / n_good
        kl = float(np.sum(p * np.log(k * p)))
    else:
        kl = math.nan
    return ModeCoverage(modes_covered=int((counts >= min_count).sum()), n_modes=k, high_quality=n_good / n,
                        kl_uniform=kl, counts=[int(v) for v in counts], min_count=min_count, n_samples=n,
                        n_sigma=float(n_sigma))

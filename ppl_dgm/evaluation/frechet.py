"""Fréchet distance between two sets of features (Heusel et al. 2017's FID, in any feature space).

.. math::  d^2 = \\|\\mu_a - \\mu_b\\|^2 + \\mathrm{tr}\\big(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}\\big),

the squared 2-Wasserstein distance between Gaussians fitted to the two sets.  The package computes it in the
penultimate features of a classifier trained on the real data (``ppl_dgm.models.Classifier.features``), not in
Inception features (which would need a download): numbers compare samples of one dataset, not across papers.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def frechet_distance(feats_a, feats_b) -> float:
    """d^2 between feature sets (N_a, F) and (N_b, F), N >= 2; the square roots by symmetric eigendecompositions
    (S_a and S_a^1/2 S_b S_a^1/2 are PSD, so no complex round-off as with ``sqrtm`` of the non-symmetric S_a S_b)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise InputError(f"expected two feature sets (N, F), (M, F) with N, M >= 2; got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("expected finite features; got NaN or inf")
    s_a, s_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    va, ua = np.linalg.eigh(s_a)
    half = (ua * np.sqrt(np.clip(va, 0, None))) @ ua.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(half @ s_b @ half), 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)

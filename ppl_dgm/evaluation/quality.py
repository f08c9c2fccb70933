"""Sample quality in a classifier's feature space: Fréchet distance, KID, precision and recall, class confidence;
PSNR and SSIM of reconstructions.

Course notes 002 §4 "Evaluation" (FID, KID; PSNR and SSIM where the ground truth is known) and "High
likelihood = good sample quality?" (not always, hence figures of the samples themselves): a sample set is
compared with held-out real examples through the features phi(x) of a network trained on the real data.  The
package's network is a classifier it trains itself on the dataset's training split (``ppl_dgm.runs.scorer_for``),
not Inception-v3: the figures rank models of one dataset and are not comparable with the Inception-based FID and
KID of papers.

- **FD** (:func:`~ppl_dgm.evaluation.frechet_distance`): the squared 2-Wasserstein distance between Gaussians
  fitted to the two feature sets (biased: it grows as N shrinks, so compare figures at equal N).
- **KID** (:func:`kernel_inception_distance`, Bińkowski et al. 2018): the unbiased estimate of the squared MMD
  with the cubic polynomial kernel k(a, b) = (a.b / F + 1)^3, averaged over random subsets, with its standard
  error.  Unbiased: its expectation is 0 when the two sets come from one distribution, at any N.
- **precision / recall** (:func:`~ppl_dgm.evaluation.precision_recall`): the fraction of samples inside the
  real k-NN manifold (fidelity) and of real examples inside the samples' (coverage).
- **confidence**: the mean over samples of max_y p_phi(y | x): high when samples look like one class.

The **floor** is the same figures for held-out real examples against as many training examples: what a model
that samples the data distribution itself would score at this N.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .frechet import frechet_distance
from .manifold import _as_features, precision_recall


def _poly_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of (m, F) and (m, F) under k(a, b) = (a.b / F + 1)^3 (the diagonals of K_xx, K_yy left out)."""
    m, d = len(x), x.shape[1]
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    return float(off(k_xx) + off(k_yy) - 2 * k_xy.mean())


def kernel_inception_distance(real_feats, fake_feats, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> dict:
    """KID: the unbiased squared MMD between feature sets with the cubic polynomial kernel, over random subsets.

    .. math::  \\widehat{\\mathrm{MMD}}^2 = \\frac{1}{m(m-1)} \\sum_{i \\ne j} [k(x_i, x_j) + k(y_i, y_j)]
               - \\frac{2}{m^2} \\sum_{i, j} k(x_i, y_j), \\qquad k(a, b) = (a^\\top b / F + 1)^3

    Each subset is m rows of each set; the expectation of the estimate is the squared MMD for every m, so the
    mean over subsets is unbiased too.  The subsets come in passes: each pass shuffles both sets and cuts them
    into B = min(N, M) // m disjoint blocks (m is capped at min(N, M) / 2, so B >= 2), whose estimates are
    independent.

    Parameters
    ----------
    real_feats, fake_feats : array, shapes (N, F) and (M, F), N, M >= 4
    subsets : int
        Number of subsets (blocks, over as many passes as needed), >= 2.
    subset_size : int
        m, capped at min(N, M) // 2.
    seed : int
        Seeds the shuffles.

    Returns
    -------
    dict
        ``kid`` (the mean over subsets), ``kid_se`` (its standard error: the standard deviation over subsets
        / sqrt(B), that of the mean of one pass's independent blocks; the mean over several passes varies less,
        so this errs on the large side), ``subsets``, ``subset_size`` (m), ``blocks_per_pass`` (B).
    """
    x, y = _as_features(real_feats, "real"), _as_features(fake_feats, "generated")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"expected real and generated features of one width; got {x.shape[1]} and {y.shape[1]}")
    if min(len(x), len(y)) < 4:
        raise InputError(f"expected at least 4 rows in each feature set; got {len(x)} and {len(y)}")
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 2:
        raise InputError(f"expected subsets as an integer >= 2 (for a standard error); got {subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 2:
        raise InputError(f"expected subset_size as an integer >= 2; got {subset_size!r}")
    m = min(subset_size, min(len(x), len(y)) // 2)
    blocks = min(len(x), len(y)) // m
    rng, vals = np.random.default_rng(seed), []
    while len(vals) < subsets:
        px, py = rng.permutation(len(x)), rng.permutation(len(y))
        vals += [_poly_mmd2(x[px[b * m:(b + 1) * m]], y[py[b * m:(b + 1) * m]])
                 for b in range(min(blocks, subsets - len(vals)))]
    vals = np.array(vals)
    return {"kid": float(vals.mean()), "kid_se": float(vals.std(ddof=1) / np.sqrt(blocks)), "subsets": subsets,
            "subset_size": m, "blocks_per_pass": blocks}


def _figures(real: np.ndarray, fake: np.ndarray, k: int, kid_subsets: int, kid_subset_size: int,
             seed: int) -> dict:
    kid = kernel_inception_distance(real, fake, kid_subsets, kid_subset_size, seed)
    pr = precision_recall(real, fake, k=k)
    return {"fd": frechet_distance(real, fake), "kid": kid["kid"], "kid_se": kid["kid_se"],
            "precision": pr["precision"], "recall": pr["recall"]}


def sample_quality(scorer, real: torch.Tensor, fake: torch.Tensor, train: torch.Tensor | None = None, *,
                   k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict:
    """FD, KID (with its standard error), precision, recall and class confidence of samples against real examples,
    in the features of ``scorer``; with ``train``, the floor.

    Parameters
    ----------
    scorer : Classifier or None
        A fitted :class:`~ppl_dgm.models.classifier.Classifier` (``features``, ``probabilities``), e.g. the model
        of ``ppl_dgm.runs.scorer_for(...)``; None: the raw coordinates are the features (vector data), and no
        confidence is reported.
    real, fake : Tensor, shape (N, D)
        Held-out real examples and as many samples, in data space (images in [0, 1]).
    train : Tensor, shape (N_train, D), optional
        Training examples: N of them (a seeded random subset) give the floor, the figures of ``real`` against
        them.
    k : int
        Neighbours of the precision/recall manifolds.
    kid_subsets, kid_subset_size : int
        See :func:`kernel_inception_distance`.
    seed : int
        Seeds the KID subsets and the training subset of the floor.

    Returns
    -------
    dict
        ``fd``, ``kid``, ``kid_se``, ``precision``, ``recall``, ``n``, ``k``, ``features`` (what the figures are
        computed on); with a scorer ``confidence`` (mean max_y p(y | x) of the samples) and ``confidence_real``
        (of ``real``); with ``train`` a ``floor`` dict of the same figures for ``real`` against training examples.
    """
    real, fake = torch.as_tensor(real).float(), torch.as_tensor(fake).float()
    if real.ndim != 2 or real.shape != fake.shape:
        raise InputError(f"expected real examples and as many samples, both (N, D); got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    feats = (lambda v: v.double().numpy()) if scorer is None else (lambda v: scorer.features(v).double().cpu().numpy())
    f_real = feats(real)
    out = {**_figures(f_real, feats(fake), k, kid_subsets, kid_subset_size, seed), "n": len(real), "k": k,
           "features": "raw coordinates" if scorer is None else f"classifier ({scorer.arch}) penultimate layer, "
                                                                f"width {f_real.shape[1]}"}
    if scorer is not None:
        out["confidence"] = float(scorer.probabilities(fake).max(-1).values.double().mean())
        out["confidence_real"] = float(scorer.probabilities(real).max(-1).values.double().mean())
    if train is not None:
        train = torch.as_tensor(train).float()
        if len(train) < len(real) or train.shape[1:] != real.shape[1:]:
            raise InputError(f"expected at least {len(real)} training examples of {real.shape[1]} values for the "
                             f"floor; got {tuple(train.shape)}")
        pick = np.random.default_rng(seed + 1).choice(len(train), len(real), replace=False)
        out["floor"] = {**_figures(f_real, feats(train[pick]), k, kid_subsets, kid_subset_size, seed),
                        "n": len(real)}
    return out


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per row, 10 log10(1 / MSE) dB for data in [0, 1]; x, ref (N, D) -> (N,)."""
    mse = (x.double() - ref.double()).pow(2).mean(-1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-20))


def ssim(x: torch.Tensor, ref: torch.Tensor, image_shape: tuple[int, ...], win: int = 7) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004), data range 1, K1 = 0.01, K2 = 0.03.

    Local means, variances and covariance over a ``win`` x ``win`` uniform window (sample covariances,
    normalised by n - 1), averaged over the windows inside the image and over channels: scikit-image's
    ``structural_similarity`` defaults.  x, ref (N, D) with D = prod(image_shape) -> (N,).
    """
    shape = (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)
    if min(shape[-2:]) < win:
        raise InputError(f"SSIM needs images with sides >= {win}; got {tuple(image_shape)}")
    a, b = (z.double().reshape(-1, *shape) for z in (x, ref))
    mean = lambda z: F.avg_pool2d(z, win, stride=1)  # noqa: E731
    n = win * win
    mu_a, mu_b = mean(a), mean(b)
    var_a = (mean(a * a) - mu_a**2) * n / (n - 1)
    var_b = (mean(b * b) - mu_b**2) * n / (n - 1)
    cov = (mean(a * b) - mu_a * mu_b) * n / (n - 1)
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(-1)


def reconstruction_quality(x: torch.Tensor, x_hat: torch.Tensor, image_shape: tuple[int, ...]) -> dict:
    """Mean PSNR (dB) and, for images with sides >= 7, SSIM of reconstructions ``x_hat`` of ``x`` (N, D) in [0, 1],
    with the standard error of the PSNR over examples."""
    p = psnr(x_hat, x)
    out = {"psnr": float(p.mean()), "psnr_se": float(p.std() / len(p) ** 0.5) if len(p) > 1 else float("nan"),
           "mse": float((x_hat.double() - x.double()).pow(2).mean()), "n": len(x)}
    if len(image_shape) >= 2 and min(image_shape[-2:]) >= 7:
        out["ssim"] = float(ssim(x_hat, x, image_shape).mean())
    return out

"""Figures for EM fits: log-likelihood per iteration, fitted ellipses over 2-D data."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .core import curve, label_xy, plt, save


def plot_loglik(history: Sequence[float], path: str | os.PathLike, *,
                title: str = "EM: log-likelihood per iteration"):
    """Mean log-likelihood per sample against the EM iteration; writes a PNG and returns the Figure.

    The title gets the number of iterations and the last value; the y axis has no offset (a fit that
    converged in one or two iterations reads as one flat point or segment, see :func:`.core.curve`).

    Parameters
    ----------
    history : sequence of float, length T
        ``lower_bounds_`` of a fit (never decreasing).
    path : path of the PNG.
    """
    fig, ax = plt().subplots(figsize=(5, 3.5), dpi=110)
    curve(ax, np.arange(1, len(history) + 1), history)
    n = len(history)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean log-likelihood per sample (nats)")
    last = f", last {history[-1]:.4f} nats" if n else ""
    ax.set_title(f"{title}\n{n} iteration{'s' if n != 1 else ''}{last}", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return fig


def full_covariances(covariances: np.ndarray, covariance_type: str, n_components: int,
                     n_features: int) -> np.ndarray:
    """Covariances in any scikit-learn shape -> (K, D, D)."""
    c = np.asarray(covariances, dtype=float)
    if covariance_type == "full":
        return c
    if covariance_type == "tied":
        return np.broadcast_to(c, (n_components, n_features, n_features))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([np.eye(n_features) * v for v in c])


def plot_ellipses(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
                  covariance_type: str, path: str | os.PathLike, *, labels: np.ndarray | None = None,
                  title: str = "GMM fit"):
    """Scatter of 2-D data with each component's 1 and 2 standard-deviation ellipses.

    Parameters
    ----------
    x : ndarray, shape (N, 2)
    weights : (K,), means : (K, 2), covariances : scikit-learn shape for ``covariance_type``
    labels : ndarray, shape (N,), optional
        Colours the points by their most probable component.
    """
    from matplotlib.patches import Ellipse

    k = len(weights)
    covs = full_covariances(covariances, covariance_type, k, 2)
    fig, ax = plt().subplots(figsize=(5, 5), dpi=110)
    colors = plt().get_cmap("tab10")
    point_colors = "0.5" if labels is None else [colors(int(j) % 10) for j in labels]
    ax.scatter(x[:, 0], x[:, 1], s=4, c=point_colors, alpha=0.25, linewidths=0)
    for j in range(k):
        evals, evecs = np.linalg.eigh(covs[j])
        angle = np.degrees(np.arctan2(evecs[1, -1], evecs[0, -1]))
        for n_std in (1, 2):
            w, h = 2 * n_std * np.sqrt(np.maximum(evals[::-1], 0))
            ax.add_patch(Ellipse(means[j], w, h, angle=angle, fill=False, lw=1.5, zorder=3,
                                 color="k", ls="-" if n_std == 1 else "--", alpha=0.9))
        ax.plot(*means[j], "x", color="k", ms=6, zorder=3)
        top = means[j] + [0, 2 * np.sqrt(covs[j][1, 1])]                     # above the 2-sigma ellipse
        ax.annotate(f"w={weights[j]:.2f}", top, textcoords="offset points", xytext=(0, 3), ha="center",
                    va="bottom", fontsize=7, zorder=4, bbox=dict(boxstyle="round,pad=0.15", fc="w", ec="none",
                                                                   alpha=0.8))
    label_xy(ax, f"{title}: K={k} ({covariance_type} covariances)\n"
                 "1-sigma (solid) and 2-sigma (dashed) ellipses, mixing weights w")
    ax.title.set_fontsize(10)
    fig.tight_layout()
    save(fig, path)
    return fig

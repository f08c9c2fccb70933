"""Figures of any run: ELBO curves, sample grids or scatters, reconstructions, latent-space grids."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .core import as_images, image_grid, plt, save


def plot_history(history: list[dict], path: str | os.PathLike, title: str = "ELBO per epoch") -> None:
    """Train and held-out ELBO (nats per example) against the epoch."""
    fig, ax = plt().subplots(figsize=(6, 4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_elbo"] for h in history], label="train (objective)")
    if history and "test_elbo" in history[0]:
        ax.plot(ep, [h["test_elbo"] for h in history], label="held-out ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def plot_samples(x: np.ndarray, shape: Sequence[int], path: str | os.PathLike, title: str,
                 reference: np.ndarray | None = None) -> None:
    """A grid of images, or a scatter of 2-D points (over ``reference`` data if given)."""
    x = np.asarray(x)
    if len(shape) >= 2:
        fig, ax = plt().subplots(figsize=(6, 6))
        ax.imshow(image_grid(as_images(x, shape)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        fig, ax = plt().subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, c="tab:blue", label="samples")
        ax.set_aspect("equal")
        ax.legend(markerscale=4)
    ax.set_title(title)
    save(fig, path)


def plot_reconstructions(x: np.ndarray, x_rec: np.ndarray, shape: Sequence[int],
                         path: str | os.PathLike, n: int = 16) -> None:
    """Originals (top row of each pair) above their reconstructions."""
    n = min(n, len(x))
    if len(shape) >= 2:
        orig, rec = as_images(x[:n], shape), as_images(x_rec[:n], shape)
        cols = 8
        rows = []
        for i in range(0, n, cols):
            rows += [orig[i: i + cols], rec[i: i + cols]]
        tiles = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0)), constant_values=1) for r in rows])
        fig, ax = plt().subplots(figsize=(8, 2.2 * len(rows) / 2))
        ax.imshow(image_grid(tiles, nrow=cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        fig, ax = plt().subplots(figsize=(5, 5))
        ax.scatter(x[:, 0], x[:, 1], s=4, label="data")
        ax.scatter(x_rec[:, 0], x_rec[:, 1], s=4, label="reconstruction")
        ax.legend()
    ax.set_title("reconstructions: data (odd rows) and E[x | z = mean of q(z|x)] (even rows)")
    save(fig, path)


def plot_rows(rows: np.ndarray, shape: Sequence[int], path: str | os.PathLike, title: str,
              row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None) -> None:
    """A PNG grid of images (latent interpolations, traversals, arithmetic): ``rows`` of shape (R, C, D)."""
    rows = np.asarray(rows, dtype=np.float32)
    r, c = rows.shape[:2]
    imgs = as_images(rows.reshape(r * c, -1), shape)
    fig, ax = plt().subplots(figsize=(max(3.0, 0.75 * c + 1), max(2.0, 0.75 * r + 0.6)))
    ax.imshow(image_grid(imgs, nrow=c), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    h, w = imgs.shape[1:3]
    ax.set_xticks([1 + j * (w + 1) + w / 2 for j in range(c)] if col_labels else [], list(col_labels or []),
                  fontsize=7)
    ax.set_yticks([1 + i * (h + 1) + h / 2 for i in range(r)] if row_labels else [], list(row_labels or []),
                  fontsize=7)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    save(fig, path)

"""Matplotlib figures written as PNG files: ELBO curves, sample grids, reconstructions."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from .utils import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images of shape (N, H, W) into one (rows*(H+pad), cols*(W+pad)) array."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape
    ncol = nrow or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncol))
    grid = np.ones((nrows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i]
    return grid


def _as_images(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    x = np.asarray(x).reshape(len(x), *shape)
    if x.ndim == 4:  # (N, C, H, W): show the first channel, or RGB later
        x = x[:, 0]
    return x


def plot_history(history: list[dict], path: str | os.PathLike, title: str = "ELBO per epoch") -> None:
    """Train and held-out ELBO (nats per example) against the epoch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_elbo"] for h in history], label="train (objective)")
    if history and "test_elbo" in history[0]:
        ax.plot(ep, [h["test_elbo"] for h in history], label="held-out ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_samples(x: np.ndarray, shape: Sequence[int], path: str | os.PathLike, title: str,
                 reference: np.ndarray | None = None) -> None:
    """A grid of images, or a scatter of 2-D points (over ``reference`` data if given)."""
    plt = _plt()
    x = np.asarray(x)
    if len(shape) >= 2:
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(image_grid(_as_images(x, shape)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, c="tab:blue", label="samples")
        ax.set_aspect("equal")
        ax.legend(markerscale=4)
    ax.set_title(title)
    _save(fig, path)


def plot_reconstructions(x: np.ndarray, x_rec: np.ndarray, shape: Sequence[int],
                         path: str | os.PathLike, n: int = 16) -> None:
    """Originals (top row of each pair) above their reconstructions."""
    plt = _plt()
    n = min(n, len(x))
    if len(shape) >= 2:
        orig, rec = _as_images(x[:n], shape), _as_images(x_rec[:n], shape)
        cols = 8
        rows = []
        for i in range(0, n, cols):
            rows += [orig[i: i + cols], rec[i: i + cols]]
        tiles = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0)), constant_values=1) for r in rows])
        fig, ax = plt.subplots(figsize=(8, 2.2 * len(rows) / 2))
        ax.imshow(image_grid(tiles, nrow=cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(x[:, 0], x[:, 1], s=4, label="data")
        ax.scatter(x_rec[:, 0], x_rec[:, 1], s=4, label="reconstruction")
        ax.legend()
    ax.set_title("reconstructions: data (odd rows) and E[x | z = mean of q(z|x)] (even rows)")
    _save(fig, path)

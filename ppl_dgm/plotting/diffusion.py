"""Figures of a diffusion run: the denoising trajectory and the per-step terms L_t against t."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .core import as_images, image_grid, plt, save


def plot_trajectory(xs: np.ndarray, steps: Sequence[int], shape: Sequence[int], path: str | os.PathLike,
                    title: str = "reverse chain", reference: np.ndarray | None = None, n_images: int = 8) -> None:
    """Snapshots x_t of the reverse chain: scatter panels for 2-D data, rows of images otherwise.

    xs : (S, n, D) snapshots at ``steps`` (T first, 0 last).
    """
    xs = np.asarray(xs)
    if len(shape) >= 2:
        k = min(n_images, xs.shape[1])
        tiles = np.concatenate([as_images(xs[:, i], shape) for i in range(k)])   # rows: examples; cols: steps
        fig, ax = plt().subplots(figsize=(1.0 * len(steps), 1.0 * k + 0.6))
        ax.imshow(image_grid(tiles, nrow=len(steps)), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([(i + 0.5) * (shape[-1] + 1) for i in range(len(steps))], [f"t={s}" for s in steps],
                      fontsize=7)
        ax.set_yticks([])
    else:
        cols = len(steps)
        fig, axes = plt().subplots(1, cols, figsize=(2.0 * cols, 2.2), sharex=True, sharey=True)
        lim = np.abs(xs[-1]).max() * 1.3 + 1e-9
        for ax, s, x in zip(np.atleast_1d(axes), steps, xs):
            if reference is not None:
                ax.scatter(reference[:, 0], reference[:, 1], s=1, c="tab:gray", alpha=0.2)
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:blue", alpha=0.5)
            ax.set_title(f"t = {s}", fontsize=8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def plot_loss_per_t(L: np.ndarray, path: str | os.PathLike, title: str = "chain ELBO terms per step",
                    L_T: float | None = None) -> None:
    """L_{t-1} (nats per example) against t = 1..T on a symlog axis; L_0 is the decoder term."""
    L = np.asarray(L)
    fig, ax = plt().subplots(figsize=(6, 4))
    t = np.arange(1, len(L) + 1)
    ax.plot(t[1:], L[1:], lw=1, label="L_{t-1} = E KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))")
    ax.scatter([1], [L[0]], c="tab:red", s=12, zorder=3, label=f"L_0 = -E log p(x_0|x_1) = {L[0]:.2f}")
    if L_T is not None:
        ax.axhline(L_T, ls=":", c="k", lw=0.8, label=f"L_T = {L_T:.2g}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("t")
    ax.set_ylabel("nats per example")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)

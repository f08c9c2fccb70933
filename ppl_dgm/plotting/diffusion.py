"""Figures of a diffusion run: the denoising trajectory and the per-step terms L_t against t."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .core import as_images, label_xy, plt, points, save, show_images


def plot_trajectory(xs: np.ndarray, steps: Sequence[int], shape: Sequence[int], path: str | os.PathLike,
                    title: str = "reverse chain", reference: np.ndarray | None = None, n_images: int = 8,
                    step_name: str = "t"):
    """Snapshots x_t of the reverse chain: scatter panels for 2-D data, rows of images otherwise.

    xs : (S, n, D) snapshots at ``steps`` (T first, 0 last); ``step_name`` labels them ("t", or "levels left").
    """
    xs = np.asarray(xs)
    if len(shape) >= 2:
        k = min(n_images, xs.shape[1])
        tiles = np.concatenate([as_images(xs[:, i], shape) for i in range(k)])   # rows: examples; cols: steps
        fig, ax = plt().subplots(figsize=(1.0 * len(steps), 1.0 * k + 0.6))
        show_images(ax, tiles, len(steps), col_labels=[f"{step_name}={s}" for s in steps])
        ax.set_title(title, fontsize=9)
    else:
        cols = len(steps)
        fig, axes = plt().subplots(1, cols, figsize=(2.0 * cols, 2.2), sharex=True, sharey=True)
        lim = np.abs(xs[-1]).max() * 1.3 + 1e-9
        for ax, s, x in zip(np.atleast_1d(axes), steps, xs):
            if reference is not None:
                points(ax, reference, "tab:gray", s=1, alpha=0.2)
            points(ax, x, "tab:blue", s=1)
            label_xy(ax, f"{step_name} = {s}", xs.shape[-1], adjustable="box")
            ax.set_xlim(-lim, lim)
            if xs.shape[-1] >= 2:
                ax.set_ylim(-lim, lim)
            ax.tick_params(labelsize=6)
            for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
                text.set_fontsize(8)
            if ax is not np.atleast_1d(axes)[0]:
                ax.set_ylabel("")
        fig.suptitle(title + (" (grey: data)" if reference is not None else ""), fontsize=9)
        fig.tight_layout()
    save(fig, path)
    return fig


def plot_loss_per_t(L: np.ndarray, path: str | os.PathLike, title: str = "chain ELBO terms per step",
                    L_T: float | None = None):
    """L_{t-1} (nats per example) against t = 1..T on a symlog axis; L_0 is the decoder term."""
    L = np.asarray(L)
    fig, ax = plt().subplots(figsize=(6, 4))
    t = np.arange(1, len(L) + 1)
    ax.plot(t[1:], L[1:], lw=1, label="L_{t-1} = E KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))")
    ax.scatter([1], [L[0]], c="tab:red", s=12, zorder=3, label=f"L_0 = -E log p(x_0|x_1) = {L[0]:.2f}")
    if L_T is not None:
        ax.axhline(L_T, ls=":", c="k", lw=0.8, label=f"L_T = {L_T:.2g}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.margins(y=0.08)                                         # L_0 (often the extreme) stays inside
    ax.set_xlabel("t")
    ax.set_ylabel("nats per example")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
    return fig


def plot_loss_per_sigma(J: np.ndarray, sigmas: np.ndarray, dim: int, path: str | os.PathLike,
                        title: str = "score-matching loss per noise level"):
    """J_i = lambda(sigma_i) E||s_theta + eps / sigma_i||^2 / 2 against sigma_i (log axis), with D / 2 (a network
    that predicts nothing, s = 0) for scale."""
    fig, ax = plt().subplots(figsize=(6, 4))
    ax.plot(sigmas, J, "o-", ms=3, lw=1, label="J_i (held-out)")
    ax.axhline(dim / 2, ls=":", c="k", lw=0.8, label=f"D / 2 = {dim / 2:g} (s = 0)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sigma_i")
    ax.set_ylabel("loss per example")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
    return fig

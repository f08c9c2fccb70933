"""Figures of any run: training curves, sample grids or scatters, reconstructions, latent-space grids.

Every function saves its PNG (:func:`.core.save`) and returns the (closed) ``Figure``, whose axes
can still be inspected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .core import as_images, clip_note, curve, label_xy, plt, points, save, show_images


def _with_notes(title: str, *notes: str) -> str:
    return "\n".join([title, *(n for n in notes if n)])


def plot_history(history: list[dict], path: str | os.PathLike, title: str = "ELBO per epoch",
                 held_out: str = "held-out ELBO"):
    """The training objective (left) and the held-out ELBO (right), nats per example, against the epoch.

    Separate axes: the training objective may be a reweighted bound (DDPM's "simple" loss, a warmed-up or
    beta-weighted KL) on another scale than the held-out ELBO.

    Parameters
    ----------
    history : list of dict, length E
        ``epoch`` and ``train_elbo`` per epoch, ``test_elbo`` where measured.
    path : path of the PNG.
    held_out : str
        What ``test_elbo`` is (a score model's is minus its score-matching loss).
    """
    held = [h for h in history if "test_elbo" in h]
    fig, axes = plt().subplots(1, 2 if held else 1, figsize=(10 if held else 5.5, 3.8), squeeze=False)
    a = axes[0, 0]
    curve(a, [h["epoch"] for h in history], [h["train_elbo"] for h in history], color="tab:gray")
    a.set(title="training objective (-loss)", xlabel="epoch", ylabel="nats per example")
    if held:
        b = axes[0, 1]
        curve(b, [h["epoch"] for h in held], [h["test_elbo"] for h in held], color="tab:blue")
        b.set(title=f"{held_out} (last: {held[-1]['test_elbo']:.3f})", xlabel="epoch",
              ylabel="nats per example" if "ELBO" in held_out else "per example")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return fig


def _label_columns(labels: np.ndarray) -> int | None:
    """C if the labels are C distinct values in turn (labels[i] == labels[i % C]), else None."""
    c = len(np.unique(labels))
    return c if c > 1 and np.array_equal(labels, np.resize(labels[:c], len(labels))) else None


def plot_samples(x: np.ndarray, shape: Sequence[int], path: str | os.PathLike, title: str,
                 reference: np.ndarray | None = None, labels: Sequence[int] | None = None):
    """A grid of images, or a scatter of 2-D points (over ``reference`` data if given).

    Parameters
    ----------
    x : ndarray, shape (n, D)
        Samples in data space; for images, grey levels outside [0, 1] are clipped (the title says how many).
    shape : shape of one example: (H, W) or (C, H, W) gives a grid, (D,) a scatter of coordinates 1 and 2.
    path : path of the PNG.
    title : str
    reference : ndarray, shape (m, D), optional
        Data drawn in grey under a scatter.
    labels : sequence of int, length n, optional
        The label each sample was drawn with (conditional families): labels 0..C-1 in turn give one label per
        column (named below it), a single label goes in the title, others are written on each tile; points of
        a scatter are coloured by label.
    """
    x = np.asarray(x).reshape(len(x), -1)
    labels = None if labels is None else np.asarray(labels).ravel()
    if len(shape) >= 2:
        imgs = as_images(x, shape)
        by_col = _label_columns(labels) if labels is not None else None
        fig, ax = plt().subplots(figsize=(6, 6.3))
        show_images(ax, imgs, by_col, col_labels=[f"y={v}" for v in labels[:by_col]] if by_col else ())
        note = "" if labels is None else f"label y = {labels[0]}" if len(np.unique(labels)) == 1 else \
            "label y of each column below" if by_col else "label y on each tile"
        if labels is not None and not by_col and len(np.unique(labels)) > 1:
            ncol, (h, w) = int(np.ceil(np.sqrt(len(x)))), imgs.shape[1:3]
            for i, v in enumerate(labels):
                r, c = divmod(i, ncol)
                ax.text(1 + c * (w + 1), 1 + r * (h + 1), str(v), fontsize=7, va="top", color="k",
                        bbox=dict(boxstyle="square,pad=0.1", fc="yellow", ec="none"))
        ax.set_title(_with_notes(title, note, clip_note(x)), fontsize=10)
    else:
        fig, ax = plt().subplots(figsize=(5, 5))
        if reference is not None:
            points(ax, np.asarray(reference).reshape(len(reference), -1), "tab:gray", "data", alpha=0.3)
        groups = [(None, np.ones(len(x), bool))] if labels is None else [(v, labels == v) for v in np.unique(labels)]
        for i, (v, rows) in enumerate(groups):
            points(ax, x[rows], "tab:blue" if v is None else f"C{i}", "samples" if v is None else f"samples, y = {v}")
        ax.legend(markerscale=4, fontsize=8)
        label_xy(ax, _with_notes(title, f"coordinates 1 and 2 of {x.shape[1]}" if x.shape[1] > 2 else ""), x.shape[1])
    save(fig, path)
    return fig


def plot_reconstructions(x: np.ndarray, x_rec: np.ndarray, shape: Sequence[int],
                         path: str | os.PathLike, n: int = 16, title: str = "reconstructions",
                         what: str = "E[x | z = mean of q(z|x)]"):
    """Images: each row of data above the row of its reconstructions.  2-D data: each point joined to its
    reconstruction.  x, x_rec : (N, D); the reconstruction is ``what``: by default E[x | z] at z = the mean of
    q(z | x)."""
    n = min(n, len(x))
    if n == 0:
        fig, ax = plt().subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no held-out examples to reconstruct", ha="center", va="center")
        ax.axis("off")
    elif len(shape) >= 2:
        orig, rec = as_images(x[:n], shape), as_images(x_rec[:n], shape)
        cols = min(8, n)
        rows, names = [], []
        for i in range(0, n, cols):
            rows += [orig[i: i + cols], rec[i: i + cols]]
            names += ["data", "E[x|z]"]
        tiles = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0)), constant_values=1) for r in rows])
        fig, ax = plt().subplots(figsize=(1.0 * cols + 1, 1.0 * len(rows) + 0.9))
        show_images(ax, tiles, cols, row_labels=names)
        ax.set_title(_with_notes(f"{title}: data rows and their {what}", clip_note(x_rec[:n])), fontsize=10)
    else:
        from matplotlib.collections import LineCollection

        fig, ax = plt().subplots(figsize=(5, 5))
        d = x.shape[1]
        if d >= 2:
            ax.add_collection(LineCollection(np.stack([x[:n, :2], x_rec[:n, :2]], 1), colors="0.6", lw=0.5))
        points(ax, x[:n], "tab:gray", "data x", s=5, alpha=1)
        points(ax, x_rec[:n], "tab:orange", what, s=5, alpha=1)
        ax.legend(fontsize=8)
        label_xy(ax, f"{title}: {n} held-out points" + (", each joined to its reconstruction" if d >= 2 else ""), d)
    save(fig, path)
    return fig


def plot_rows(rows: np.ndarray, shape: Sequence[int], path: str | os.PathLike, title: str,
              row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None):
    """A PNG grid of images (latent interpolations, traversals, arithmetic): ``rows`` of shape (R, C, D)."""
    rows = np.asarray(rows, dtype=np.float32)
    r, c = rows.shape[:2]
    fig, ax = plt().subplots(figsize=(max(3.0, 0.75 * c + 1), max(2.0, 0.75 * r + 0.6)))
    show_images(ax, as_images(rows.reshape(r * c, -1), shape), c, col_labels or (), row_labels or ())
    ax.set_title(_with_notes(title, clip_note(rows)), fontsize=9)
    save(fig, path)
    return fig


def plot_game(history: list[dict], path: str | os.PathLike, title: str = "GAN game per epoch"):
    """The adversarial trainer's history: the value V(D, G) (train, and held-out where measured) beside its
    equilibrium 2 JSD - log 4 = -log 4 (q = p, D = 1/2) on the left; D's mean output on real and generated
    examples (both 1/2 at equilibrium) on the right.

    Parameters
    ----------
    history : list of dict, length E
        ``epoch``, ``train_elbo`` (= V), ``d_real``, ``d_fake``, and ``test_value`` where measured.
    path : path of the PNG.
    """
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt().subplots(1, 2, figsize=(10, 3.8))
    curve(a, epochs, [h["train_elbo"] for h in history], color="tab:gray", label="V (training minibatches)")
    held = [h for h in history if "test_value" in h]
    if held:
        curve(a, [h["epoch"] for h in held], [h["test_value"] for h in held], color="tab:blue",
              label="V (held-out vs fresh samples)")
    a.axhline(-np.log(4), color="k", lw=0.8, ls=":", label="-log 4 (equilibrium)")
    a.set(title="value V(D, G) = E log D(x) + E log(1 - D(G(z)))", xlabel="epoch", ylabel="nats")
    a.legend(fontsize=8)
    curve(b, epochs, [h["d_real"] for h in history], color="tab:green", label="D(x), real")
    curve(b, epochs, [h["d_fake"] for h in history], color="tab:red", label="D(G(z)), generated")
    b.axhline(0.5, color="k", lw=0.8, ls=":")
    b.set(title="discriminator's mean output", xlabel="epoch", ylim=(0, 1))
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return fig

"""What every figure shares: the Agg backend, one atomic PNG save, image tiling on a [0, 1] grey scale."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from ..utils import atomic_write_bytes


def plt():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG through a temporary file and a rename, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt().close(fig)
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


def as_images(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Flattened examples (N, D) -> (N, H, W) for display (the first channel of (C, H, W) images)."""
    x = np.asarray(x).reshape(len(x), *shape)
    return x[:, 0] if x.ndim == 4 else x


def clip_note(x: np.ndarray) -> str:
    """How a grid shows values outside [0, 1] ("" if there are none): they are clipped to black / white.

    x : (N, D) values in data space (grey levels in [0, 1] for image data; Gaussian families step outside).
    """
    x = np.asarray(x, dtype=np.float64)
    out = (x < 0) | (x > 1)
    if not out.any():
        return ""
    return f"values clipped to [0, 1]: {out.mean():.1%} of pixels were outside (range {x.min():.2f} .. {x.max():.2f})"


def show_images(ax, tiles: np.ndarray, ncol: int | None = None, col_labels: Sequence[str] = (),
                row_labels: Sequence[str] = (), fontsize: float = 7) -> None:
    """Draw images (N, H, W) as one grid of ``ncol`` columns on ``ax``, grey levels clipped to [0, 1] (0 black,
    1 white), with ``col_labels`` / ``row_labels`` as tick labels at the tiles' centres and no frame."""
    h, w = tiles.shape[1:3]
    ax.imshow(image_grid(np.clip(tiles, 0, 1), ncol), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([1 + j * (w + 1) + (w - 1) / 2 for j in range(len(col_labels))], list(col_labels),
                  fontsize=fontsize)
    ax.set_yticks([1 + i * (h + 1) + (h - 1) / 2 for i in range(len(row_labels))], list(row_labels),
                  fontsize=fontsize)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)


def curve(ax, x: Sequence[float], y: Sequence[float], **kw) -> None:
    """A curve per epoch or iteration: markers (up to 50 points), integer x ticks, a plain y axis.

    No offset or scientific notation on y: a range narrower than 1% of max(1, |y|) is widened to it, so
    a flat curve (an EM fit that converged at once) reads as flat and one point as one point.
    """
    from matplotlib.ticker import MaxNLocator

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ax.plot(x, y, marker="o", ms=4 if len(x) <= 50 else 0, **kw)
    if len(x) <= 10:
        ax.set_xticks(x, [f"{v:g}" for v in x])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(x) == 1:
        ax.set_xlim(x[0] - 0.5, x[0] + 0.5)
    ok = y[np.isfinite(y)]
    if len(ok):
        mid, need = (ok.max() + ok.min()) / 2, 0.01 * max(1.0, float(np.abs(ok).max()))
        if ok.max() - ok.min() < need:
            ax.set_ylim(mid - need / 2, mid + need / 2)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.grid(alpha=0.3)


def points(ax, x: np.ndarray, color, label: str | None = None, s: float = 2, alpha: float = 0.5) -> None:
    """Vectors (N, D) on ``ax``: x_1 against x_2, or a histogram (density) of x_1 if D = 1."""
    if x.shape[1] >= 2:
        ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, c=color, label=label)
    else:
        ax.hist(x[:, 0], bins=40, density=True, histtype="step", color=color, label=label)


def label_xy(ax, title: str, dim: int = 2, adjustable: str = "datalim") -> None:
    """Title and axis names of :func:`points`: x_1, x_2 (equal scales) or x_1, density (D = 1)."""
    ax.set(xlabel="x_1", ylabel="x_2" if dim >= 2 else "density", title=title)
    if dim >= 2:
        ax.set_aspect("equal", adjustable=adjustable)

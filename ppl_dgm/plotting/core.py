"""What every figure shares: the Agg backend, one atomic PNG save, image tiling."""

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

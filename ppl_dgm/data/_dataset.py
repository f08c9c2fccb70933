"""The :class:`Dataset` container and its checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from ..errors import InputError, check_choice

Binarize = Literal["none", "static", "dynamic"]
BINARIZE = ("none", "static", "dynamic")


@dataclass(frozen=True)
class Dataset:
    """A train/test split ready for a model.

    Attributes
    ----------
    name : str
        Dataset name (``"digits"``, ``"fashion-mnist"``, a file path, ...).
    x_train, x_test : torch.Tensor, shape (N, D), float32
        Flattened examples.  Images are scaled to [0, 1].
    y_train, y_test : torch.Tensor of int64, shape (N,), or None
        Labels where the dataset has them.
    shape : tuple of int
        The shape of one example before flattening, e.g. ``(8, 8)`` or ``(2,)``.
    kind : {"image", "vector"}
        Images are plotted as grids, vectors as scatter plots.
    binarize : {"none", "static", "dynamic"}
        ``static``: both splits were binarized once by a seeded Bernoulli draw.
        ``dynamic``: ``x_train`` holds grey levels and :meth:`batch_transform`
        draws a new binarization for every minibatch; ``x_test`` was binarized
        once (seeded) so that held-out numbers are deterministic.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_test: torch.Tensor | None
    shape: tuple[int, ...]
    kind: Literal["image", "vector"]
    binarize: str = "none"

    @property
    def dim(self) -> int:
        """Number of dimensions D of a flattened example."""
        return int(self.x_train.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.shape if self.kind == "image" else None

    def batch_transform(self):
        """The per-minibatch transform for ``fit_svi`` (dynamic binarization), or None."""
        return dynamic_binarize if self.binarize == "dynamic" else None

    def summary(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"example shape {self.shape}, binarize={self.binarize}")


def dynamic_binarize(x: torch.Tensor) -> torch.Tensor:
    """Draw x_bin ~ Bernoulli(x) elementwise (uses torch's global RNG)."""
    return torch.bernoulli(x)


def check_array(x: np.ndarray, what: str, *, min_rank: int = 2) -> np.ndarray:
    """Check that ``x`` is a non-empty, finite numeric array of shape (N, ...)."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InputError(f"{what}: expected a numeric array; got dtype {x.dtype}")
    if x.ndim < min_rank:
        raise InputError(f"{what}: expected an array of shape (N, ...) with rank >= {min_rank}; "
                         f"got shape {x.shape}")
    if x.shape[0] == 0 or x.size == 0:
        raise InputError(f"{what}: expected at least one example; got an empty array of shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            raise InputError(f"{what}: expected finite values; got {n_nan} NaN and {n_inf} inf "
                             f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    return x


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    """Raise unless every value of ``x`` lies in [0, 1] (needed by a Bernoulli likelihood)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{what}: a Bernoulli likelihood expects values in [0, 1]; "
                         f"got values in [{lo:g}, {hi:g}] (use --likelihood gaussian, or rescale)")


def apply_binarize(ds: Dataset, binarize: str, seed: int) -> Dataset:
    """Return ``ds`` binarized as asked (``none | static | dynamic``), seeded."""
    check_choice("binarize", binarize, BINARIZE)
    if binarize == "none":
        return replace(ds, binarize="none")
    check_unit_interval(ds.x_train, f"{ds.name} (binarize={binarize})")
    x_test = apply_binarize_to(ds.x_test, binarize, seed, ds.name)
    if binarize == "static":
        x_train = torch.bernoulli(ds.x_train, generator=torch.Generator().manual_seed(seed + 7919))
    else:
        x_train = ds.x_train
    return replace(ds, x_train=x_train, x_test=x_test, binarize=binarize)


def apply_binarize_to(x: torch.Tensor, binarize: str, seed: int, what: str) -> torch.Tensor:
    """Binarize held-out data as a run was trained (``static`` and ``dynamic``: one seeded draw)."""
    check_choice("binarize", binarize, BINARIZE)
    if binarize == "none":
        return x
    check_unit_interval(x, f"{what} (binarize={binarize})")
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed + 104_729))


def seeded_split(x: np.ndarray, y: np.ndarray | None, test_fraction: float, seed: int):
    """Shuffle with ``seed`` and hold out ``test_fraction`` of the examples (at least one)."""
    n = len(x)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n))) if n > 1 else 0
    te, tr = perm[:n_test], perm[n_test:]
    if len(tr) == 0:
        tr = te
    ysel = (lambda idx: None if y is None else y[idx])
    return x[tr], ysel(tr), x[te], ysel(te)


def to_tensor_x(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x.reshape(len(x), -1)), dtype=torch.float32)


def to_tensor_y(y: np.ndarray | None) -> torch.Tensor | None:
    return None if y is None else torch.as_tensor(np.asarray(y).astype(np.int64))

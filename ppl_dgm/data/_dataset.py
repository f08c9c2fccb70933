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
    held_out : str
        Where the rows of ``x_test`` come from, e.g. ``"the official test split"``
        or ``"0.2 of the rows, seed 0"``.  ``x_test`` may have 0 rows.
    levels : int or None
        Discrete data: every entry is one of the values 0, 1, ..., levels - 1 (stored as float32): 2 once
        binarized, K for the code maps of a VQ-VAE.  None: continuous (or grey-level) data.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_test: torch.Tensor | None
    shape: tuple[int, ...]
    kind: Literal["image", "vector"]
    binarize: str = "none"
    held_out: str = ""
    levels: int | None = None

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
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test "
                f"({self.held_out or 'held-out rows of unknown origin'}), "
                f"example shape {self.shape}, binarize={self.binarize}")


def dynamic_binarize(x: torch.Tensor) -> torch.Tensor:
    """Draw x_bin ~ Bernoulli(x) elementwise (uses torch's global RNG)."""
    return torch.bernoulli(x)


RANKS = "(N, D), (N, H, W) or (N, C, H, W)"


def _check_real(x: np.ndarray, what: str) -> None:
    """Refuse object, text and other non-numeric dtypes, and complex numbers."""
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InputError(f"{what}: expected a numeric array; got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise InputError(f"{what}: expected real numbers; got complex values (dtype {x.dtype})")


def check_array(x: np.ndarray, what: str) -> np.ndarray:
    """Check that ``x`` is a non-empty, finite, real array of shape (N, D), (N, H, W) or (N, C, H, W)."""
    x = np.asarray(x)
    _check_real(x, what)
    if not 2 <= x.ndim <= 4:
        bound = ">= 2" if x.ndim < 2 else "<= 4"
        raise InputError(f"{what}: expected an array of shape {RANKS} with rank {bound}; got shape {x.shape}")
    if x.shape[0] == 0 or x.size == 0:
        raise InputError(f"{what}: expected at least one example; got an empty array of shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            raise InputError(f"{what}: expected finite values; got {n_nan} NaN and {n_inf} inf "
                             f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    return x


def check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    """Check that ``y`` holds ``n`` finite integer labels, shape (n,); float labels must be integral.

    Negative labels pass (a conditional model refuses them).  Returns ``y`` as int64.
    """
    y = np.asarray(y)
    _check_real(y, what)
    if y.shape != (n,):
        raise InputError(f"{what}: expected {n} labels of shape ({n},), one per example; got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise InputError(f"{what}: expected finite integer labels (e.g. 0, 1 or 1.0, 2.0); got "
                             f"{y[bad[0]]:g} at index {bad[0]} ({len(bad)} such values)")
    return y.astype(np.int64)


def check_label_range(y, n_classes: int, source: str | None = None) -> None:
    """Refuse integer labels ``y`` (a tensor or array) outside 0..C-1 in one line naming their range (and
    ``source``, the data they came from, if given)."""
    if len(y) == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        got = f"{source} has labels in {lo}..{hi}" if source else f"got {lo}..{hi}"
        raise InputError(f"expected labels in 0..{n_classes - 1}; {got}")


def check_class_labels(y, n_classes: int) -> None:
    """Refuse labels ``y`` (a tensor or array) that are not integers in 0..C-1 (float labels must be integral), in
    one line."""
    y = torch.as_tensor(y)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise InputError(f"expected integer class labels; got non-integer values such as "
                         f"{float(y[y != y.round()].flatten()[0]):g}")
    check_label_range(y.long().reshape(-1), n_classes)


def check_split(x, y, x_test, y_test, what: str, shape: tuple[int, ...] | None = None):
    """Check a training part (and a test part, if ``x_test`` is not None) of one source.

    Parameters
    ----------
    x, x_test : array, shape (N, ...) and (M, ...) or None
    y, y_test : array, shape (N,) and (M,), or None
    what : str
        Names the source in messages.
    shape : tuple of int, optional
        The example shape ``x`` must have (that of the training data, when checking test data).

    Returns
    -------
    x, y, x_test, y_test : float32 examples, int64 labels (or None)
    """
    x = check_array(x, what).astype(np.float32, copy=False)
    shape = x.shape[1:] if shape is None else tuple(shape)
    if x_test is not None:
        x_test = check_array(x_test, f"{what} (x_test)").astype(np.float32, copy=False)
    for part, where in ((x, what), (x_test, f"{what} (x_test)")):
        if part is not None and part.shape[1:] != shape:
            raise InputError(f"{where}: expected examples of shape {shape} as in the training data; "
                             f"got {part.shape[1:]}")
    y = None if y is None else check_labels(y, len(x), f"{what} (y)")
    if y_test is not None and x_test is None:
        raise InputError(f"{what}: expected 'x_test' with the labels 'y_test'; got 'y_test' alone")
    y_test = None if y_test is None else check_labels(y_test, len(x_test), f"{what} (y_test)")
    return x, y, x_test, y_test


def check_unit_interval(x: torch.Tensor, what: str) -> None:
    """Raise unless every value of ``x`` lies in [0, 1] (needed by a Bernoulli likelihood); empty ``x`` passes."""
    if x.numel() == 0:
        return
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
    return replace(ds, x_train=x_train, x_test=x_test, binarize=binarize, levels=2)


def apply_binarize_to(x: torch.Tensor, binarize: str, seed: int, what: str) -> torch.Tensor:
    """Binarize held-out data as a run was trained (``static`` and ``dynamic``: one seeded draw)."""
    check_choice("binarize", binarize, BINARIZE)
    if binarize == "none":
        return x
    check_unit_interval(x, f"{what} (binarize={binarize})")
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed + 104_729))


def seeded_split(x: np.ndarray, y: np.ndarray | None, val_fraction: float, seed: int):
    """Shuffle with ``seed`` and hold out ``val_fraction`` of the examples.

    With ``val_fraction > 0`` at least one example is held out (if there are two or
    more); with ``val_fraction == 0`` every example trains, in order, and the held-out
    part has 0 rows.  Returns ``(x_train, y_train, x_test, y_test)``.
    """
    n = len(x)
    n_test = min(n - 1, max(1, int(round(val_fraction * n)))) if n > 1 and val_fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(n) if n_test else np.arange(n)
    te, tr = perm[:n_test], perm[n_test:]
    ysel = (lambda idx: None if y is None else y[idx])
    return x[tr], ysel(tr), x[te], ysel(te)


def to_tensor_x(x: np.ndarray) -> torch.Tensor:
    """Examples (N, ...) flattened to a float32 tensor (N, D); N may be 0."""
    return torch.as_tensor(np.ascontiguousarray(x.reshape(len(x), int(np.prod(x.shape[1:])))),
                           dtype=torch.float32)


def to_tensor_y(y: np.ndarray | None) -> torch.Tensor | None:
    return None if y is None else torch.as_tensor(np.asarray(y).astype(np.int64))

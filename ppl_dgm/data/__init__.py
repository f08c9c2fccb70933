"""Datasets and loaders.

``load_dataset`` is the one entry point: a named dataset (``digits`` is the
default), an MNIST-style IDX folder, a ``.npy``/``.npz`` file, or a 2-D toy.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, check_choice
from ._dataset import (
    BINARIZE,
    Dataset,
    apply_binarize,
    apply_binarize_to,
    check_array,
    check_class_labels,
    check_label_range,
    check_labels,
    check_split,
    check_unit_interval,
    dynamic_binarize,
    seeded_split,
    to_tensor_x,
    to_tensor_y,
)
from .images import (
    FASHION_DEFAULT_DIR,
    file_arrays,
    fingerprint,
    idx_candidates,
    load_digits_arrays,
    load_idx_folder,
)
from .toys import TOY_MIXTURES, TOYS, sample_toy

IMAGE_DATASETS = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits (1797 images; seeded 80/20 split)",
    "fashion-mnist": "Fashion-MNIST 28x28 IDX files (official 60k/10k split); "
                     "apt-get install dataset-fashion-mnist, or --data-dir / $PPL_DGM_DATA",
    "mnist": "your folder of MNIST IDX files via --data-dir or $PPL_DGM_DATA (official split)",
}
DATASETS = {**IMAGE_DATASETS, **{k: f"2-D toy '{k}', drawn from the seed" for k in TOYS}}

__all__ = ["Dataset", "DATASETS", "BINARIZE", "load_dataset", "fingerprint", "check_array", "check_labels",
           "check_class_labels", "check_label_range", "check_unit_interval", "dynamic_binarize", "sample_toy",
           "apply_binarize_to", "TOY_MIXTURES"]


def _named(name: str, data_dir, seed: int, n_toy: int):
    """``(x, y, x_test, y_test)`` of a named dataset; ``x_test`` is None where it has no official split."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} "
                         f"(or --data FILE.npy/.npz)")
    if name == "digits":
        return (*load_digits_arrays(), None, None)
    if name in ("fashion-mnist", "mnist"):
        default = FASHION_DEFAULT_DIR if name == "fashion-mnist" else None
        hint = ("Install it with `apt-get install dataset-fashion-mnist`, or point --data-dir / "
                "$PPL_DGM_DATA at a folder holding the files." if name == "fashion-mnist" else
                "Point --data-dir or $PPL_DGM_DATA at a folder holding the MNIST IDX files.")
        x_tr, y_tr, x_te, y_te, _ = load_idx_folder(name, idx_candidates(
            None if data_dir is None else str(data_dir), default), hint)
        return x_tr, y_tr, x_te, y_te
    return sample_toy(name, n_toy, seed), None, None, None


def load_dataset(
    name: str | None = None,
    *,
    path: str | os.PathLike | None = None,
    test_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    binarize: str = "none",
    seed: int = 0,
    val_fraction: float = 0.2,
    n_toy: int = 20_000,
) -> Dataset:
    """Load a dataset as a :class:`Dataset` (flattened float32 tensors, train/test split).

    Which rows train: if the data have their own test split (an ``.npz`` with
    ``x_test``, a ``test_path``, or a named dataset with an official split) every
    training row trains and ``val_fraction`` is ignored; otherwise ``val_fraction`` of
    the rows are held out (seeded), and with ``val_fraction=0`` nothing is: ``x_test``
    then has shape (0, D).

    Parameters
    ----------
    name : str, optional
        One of :data:`DATASETS`; ignored when ``path`` is given.  Default ``"digits"``.
    path : path, optional
        A ``.npy`` array of shape (N, D), (N, H, W) or (N, C, H, W), or a ``.npz``
        with ``x`` and optional ``y`` (N,), ``x_test``, ``y_test``.  Rank-3 and
        rank-4 arrays are images.  Labels must be finite integers (1.0, 2.0 pass).
    test_path : path, optional
        (``--test-data``) A second ``.npy``/``.npz`` whose rows are the held-out split (its ``x_test``,
        ``y_test`` if it has them, else its ``x``, ``y``); examples must have the
        training data's shape.  Refused for data that have their own test split.
    data_dir : path, optional
        Folder of IDX files for ``fashion-mnist`` and ``mnist`` (searched before
        ``$PPL_DGM_DATA`` and ``/usr/share/datasets/fashion-mnist``).
    binarize : {"none", "static", "dynamic"}
        See :class:`Dataset`.
    seed : int
        Seeds the held-out rows, the toys and binarization.
    val_fraction : float in [0, 1)
        Fraction of the rows held out where the data have no test split of their own.
    n_toy : int
        Number of points drawn for a 2-D toy.
    """
    check_choice("binarize", binarize, BINARIZE)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction: expected a number in [0, 1); got {val_fraction}")
    if path is not None:
        ds_name = str(Path(path))
        x, y, x_te, y_te = file_arrays(path)
        held_out = f"the x_test of {ds_name}"
    else:
        ds_name = name or "digits"
        x, y, x_te, y_te = check_split(*_named(ds_name, data_dir, seed, n_toy), ds_name)
        held_out = "the official test split"
    if test_path is not None:
        if x_te is not None:
            raise InputError(f"--test-data: expected data without a test split of their own; "
                             f"{ds_name} already has {held_out}")
        t_x, t_y, t_xte, t_yte = file_arrays(test_path, "--test-data", shape=x.shape[1:])
        x_te, y_te = (t_x, t_y) if t_xte is None else (t_xte, t_yte)
        held_out = f"the rows of {test_path}" if t_xte is None else f"the x_test of {test_path}"
    elif x_te is None:
        x, y, x_te, y_te = seeded_split(x, y, val_fraction, seed)
        held_out = f"{val_fraction:g} of the rows, seed {seed}" if val_fraction else "none: val_fraction=0"
    shape = tuple(int(s) for s in x.shape[1:])
    ds = Dataset(ds_name, to_tensor_x(x), to_tensor_x(x_te), to_tensor_y(y), to_tensor_y(y_te),
                 shape, "image" if len(shape) in (2, 3) else "vector", held_out=held_out)
    return apply_binarize(ds, binarize, seed)

"""Datasets and loaders.

``load_dataset`` is the one entry point: a named dataset (``digits`` is the
default), an MNIST-style IDX folder, a ``.npy``/``.npz`` file, or a 2-D toy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, check_choice
from ._dataset import (
    BINARIZE,
    Dataset,
    apply_binarize,
    apply_binarize_to,
    check_array,
    check_unit_interval,
    dynamic_binarize,
    to_tensor_x,
    to_tensor_y,
)
from .images import FASHION_DEFAULT_DIR, idx_candidates, load_array_file, load_digits_arrays, load_idx_folder
from .toys import TOYS, sample_toy

IMAGE_DATASETS = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits (1797 images; seeded 80/20 split)",
    "fashion-mnist": "Fashion-MNIST 28x28 IDX files (official 60k/10k split); "
                     "apt-get install dataset-fashion-mnist, or --data-dir / $PPL_DGM_DATA",
    "mnist": "your folder of MNIST IDX files via --data-dir or $PPL_DGM_DATA (official split)",
}
DATASETS = {**IMAGE_DATASETS, **{k: f"2-D toy '{k}', drawn from the seed" for k in TOYS}}

__all__ = ["Dataset", "DATASETS", "BINARIZE", "load_dataset", "check_array", "check_unit_interval",
           "dynamic_binarize", "sample_toy", "apply_binarize_to"]


def load_dataset(
    name: str | None = None,
    *,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    binarize: str = "none",
    seed: int = 0,
    test_fraction: float = 0.2,
    n_toy: int = 20_000,
) -> Dataset:
    """Load a dataset as a :class:`Dataset` (flattened float32 tensors, train/test split).

    Parameters
    ----------
    name : str, optional
        One of :data:`DATASETS`; ignored when ``path`` is given.  Default ``"digits"``.
    path : path, optional
        A ``.npy`` array of shape (N, ...) or a ``.npz`` with ``x`` and optional
        ``y``, ``x_test``, ``y_test``.  Rank-3 and rank-4 arrays are treated as images.
    data_dir : path, optional
        Folder of IDX files for ``fashion-mnist`` and ``mnist`` (searched before
        ``$PPL_DGM_DATA`` and ``/usr/share/datasets/fashion-mnist``).
    binarize : {"none", "static", "dynamic"}
        See :class:`Dataset`.
    seed : int
        Seeds the split of datasets without an official one, the toys and binarization.
    test_fraction : float
        Held-out fraction where no official split exists.
    n_toy : int
        Number of points drawn for a 2-D toy.
    """
    check_choice("binarize", binarize, BINARIZE)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1); got {test_fraction}")
    if path is not None:
        x_tr, y_tr, x_te, y_te, shape = load_array_file(path, seed, test_fraction)
        kind = "image" if len(shape) in (2, 3) else "vector"
        ds_name = str(Path(path))
    else:
        ds_name = name or "digits"
        if ds_name not in DATASETS:
            raise InputError(f"unknown dataset {ds_name!r}; expected one of {', '.join(DATASETS)} "
                             f"(or --data FILE.npy/.npz)")
        if ds_name == "digits":
            x_tr, y_tr, x_te, y_te, shape = load_digits_arrays(seed, test_fraction)
            kind = "image"
        elif ds_name in ("fashion-mnist", "mnist"):
            default = FASHION_DEFAULT_DIR if ds_name == "fashion-mnist" else None
            hint = ("Install it with `apt-get install dataset-fashion-mnist`, or point --data-dir / "
                    "$PPL_DGM_DATA at a folder holding the files." if ds_name == "fashion-mnist" else
                    "Point --data-dir or $PPL_DGM_DATA at a folder holding the MNIST IDX files.")
            x_tr, y_tr, x_te, y_te, shape = load_idx_folder(ds_name, idx_candidates(
                None if data_dir is None else str(data_dir), default), hint)
            kind = "image"
        else:
            x = sample_toy(ds_name, n_toy, seed)
            from ._dataset import seeded_split

            x_tr, y_tr, x_te, y_te = seeded_split(x, None, test_fraction, seed)
            shape, kind = (2,), "vector"
    x_tr = check_array(np.asarray(x_tr), f"{ds_name} (train)")
    x_te = check_array(np.asarray(x_te), f"{ds_name} (test)")
    ds = Dataset(ds_name, to_tensor_x(x_tr), to_tensor_x(x_te), to_tensor_y(y_tr), to_tensor_y(y_te),
                 tuple(int(s) for s in shape), kind)
    return apply_binarize(ds, binarize, seed)

"""Image datasets: scikit-learn's digits, MNIST-style IDX folders, .npy/.npz files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._dataset import check_array, seeded_split

FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "PPL_DGM_DATA"
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits_arrays(seed: int, test_fraction: float = 0.2):
    """scikit-learn's bundled 8x8 digits (1797 images, grey levels 0..16 scaled to [0, 1]).

    There is no official split: ``test_fraction`` of the images is held out by a
    seeded shuffle.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return (*seeded_split(x, d.target, test_fraction, seed), (8, 8))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: expected a readable IDX file; got {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: expected an IDX file (magic 0x0000TTNN); got {raw[:4].hex() or 'an empty file'}")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    count = int(np.prod(dims)) if dims else 0
    if len(body) != count * dtype.itemsize:
        raise InputError(f"{path}: expected {count * dtype.itemsize} data bytes for shape {dims}; "
                         f"got {len(body)} (truncated or corrupt file)")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def idx_candidates(data_dir: str | None, default: str | None) -> list[Path]:
    """Folders searched in order: ``--data-dir``, ``$PPL_DGM_DATA`` (and its subfolder), the default."""
    out: list[Path] = []
    if data_dir:
        out.append(Path(data_dir))
    env = os.environ.get(ENV_VAR)
    if env:
        out += [Path(env), Path(env) / "fashion-mnist", Path(env) / "mnist"]
    if default:
        out.append(Path(default))
    return out


def load_idx_folder(name: str, folders: list[Path], how_to_get: str):
    """Load the four MNIST-style IDX files from the first folder that has them."""
    for folder in folders:
        files = {k: _find_idx(folder, v) for k, v in IDX_FILES.items()}
        if all(files.values()):
            x_tr, y_tr = read_idx(files["train_x"]), read_idx(files["train_y"])
            x_te, y_te = read_idx(files["test_x"]), read_idx(files["test_y"])
            for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
                if x.ndim != 3 or len(x) != len(y):
                    raise InputError(f"{folder}: expected {split} images (N, H, W) and N labels; "
                                     f"got images {x.shape} and labels {y.shape}")
            scale = 255.0 if x_tr.dtype == np.uint8 else 1.0
            return (x_tr / scale).astype(np.float32), y_tr, (x_te / scale).astype(np.float32), y_te, \
                tuple(x_tr.shape[1:])
    looked = ", ".join(str(f) for f in folders) or "(nowhere: no folder given)"
    raise InputError(f"dataset {name!r}: expected the IDX files {', '.join(IDX_FILES.values())} "
                     f"(optionally .gz); looked in {looked}. {how_to_get}")


def load_array_file(path: str | os.PathLike, seed: int, test_fraction: float = 0.2, *,
                    evaluation: bool = False):
    """A ``.npy`` array (N, ...) or a ``.npz`` with ``x`` [``y``, ``x_test``, ``y_test``].

    Returns ``(x_train, y_train, x_test, y_test, shape)``.  With ``evaluation=True``
    nothing is held out: the examples to score (``x_test`` if present, else all of
    ``x``) come back as the test part, and the train part is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--data: expected a .npy or .npz file; got {str(path)!r}, which does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: expected a NumPy .npy/.npz file without pickled objects; got {e}") from None
    y = x_te = y_te = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "x" not in loaded.files:
                raise InputError(f"{path}: expected a .npz with an array 'x' (and optional 'y', 'x_test', "
                                 f"'y_test'); got arrays {sorted(loaded.files)}")
            x = loaded["x"]
            y = loaded["y"] if "y" in loaded.files else None
            x_te = loaded["x_test"] if "x_test" in loaded.files else None
            y_te = loaded["y_test"] if "y_test" in loaded.files else None
    else:
        x = loaded
    x = check_array(x, str(path)).astype(np.float32)
    if y is not None and len(y) != len(x):
        raise InputError(f"{path}: expected {len(x)} labels in 'y' (one per example); got {len(y)}")
    if evaluation:
        if x_te is None:
            x_te, y_te = x, y
        x_te = check_array(x_te, f"{path}['x_test']").astype(np.float32)
        return x[:0], None, x_te, y_te, tuple(x.shape[1:])
    if x_te is not None:
        x_te = check_array(x_te, f"{path}['x_test']").astype(np.float32)
        if x_te.shape[1:] != x.shape[1:]:
            raise InputError(f"{path}: expected 'x_test' examples of shape {x.shape[1:]}; got {x_te.shape[1:]}")
        return x, y, x_te, y_te, tuple(x.shape[1:])
    return (*seeded_split(x, y, test_fraction, seed), tuple(x.shape[1:]))

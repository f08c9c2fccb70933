"""Image datasets: scikit-learn's digits, MNIST-style IDX folders, .npy/.npz files."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._dataset import check_split, seeded_split

FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "PPL_DGM_DATA"
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_digits_arrays():
    """scikit-learn's bundled 8x8 digits: images (1797, 8, 8), grey levels 0..16 scaled to [0, 1], labels (1797,).

    There is no official split; :func:`ppl_dgm.data.load_dataset` holds out a seeded fraction.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target


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


ARRAY_KEYS = ("x", "y", "x_test", "y_test")
_READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error)


def _describe(head: bytes) -> str:
    """What the first bytes of a file that is neither .npy nor .npz look like."""
    if head[:1] == b"\x80":
        return "a Python pickle (never loaded; save arrays with numpy.save or numpy.savez)"
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        text = None
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"a text file starting {text[:24]!r} (save arrays with numpy.save or numpy.savez)"
    return f"unrecognised bytes starting 0x{head[:8].hex()}"


def read_array_file(path: str | os.PathLike, what: str = "--data") -> dict[str, np.ndarray]:
    """The raw arrays of a ``.npy`` (as ``{"x": array}``) or a ``.npz`` (its ``x``, ``y``, ``x_test``, ``y_test``).

    Nothing pickled is ever loaded.  A missing, empty, truncated, foreign or object-array
    file raises :class:`InputError` in one line; the arrays' values are not checked here.
    """
    path = Path(path)
    if not path.is_file():
        why = "which is not a file" if path.exists() else "which does not exist"
        raise InputError(f"{what}: expected a .npy or .npz file; got {str(path)!r}, {why}")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise InputError(f"{path}: expected a NumPy .npy or .npz file; got an empty file (0 bytes)")
    if not head.startswith((b"\x93NUMPY", b"PK")):
        raise InputError(f"{path}: expected a NumPy .npy or .npz file; got {_describe(head)}")
    key, arrays = None, {}
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return {"x": loaded}
        with loaded:
            files = loaded.files
            for key in (k for k in ARRAY_KEYS if k in files):
                arrays[key] = loaded[key]
    except _READ_ERRORS as e:
        where = path if key is None else f"{path} ({key})"
        if "Object arrays" in str(e):
            raise InputError(f"{where}: expected a numeric array; got an object array "
                             f"(pickled Python objects are never loaded)") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{where}: expected a readable NumPy .npy/.npz file; got a truncated or corrupt "
                         f"file ({reason})") from None
    if "x" not in arrays:
        raise InputError(f"{path}: expected a .npz with an array 'x' (and optional 'y', 'x_test', "
                         f"'y_test'); got arrays {sorted(files)}")
    return arrays


def file_arrays(path: str | os.PathLike, what: str = "--data", shape: tuple[int, ...] | None = None):
    """``(x, y, x_test, y_test)`` of a ``.npy``/``.npz``, checked (see :func:`check_split`).

    ``x_test`` and ``y_test`` are None where the file has none; with ``shape``, every
    example must have that shape.
    """
    a = read_array_file(path, what)
    return check_split(a["x"], a.get("y"), a.get("x_test"), a.get("y_test"), str(path), shape)


def load_array_file(path: str | os.PathLike, seed: int = 0, val_fraction: float = 0.2, *,
                    evaluation: bool = False):
    """A ``.npy`` array (N, ...) or a ``.npz`` with ``x`` [``y``, ``x_test``, ``y_test``].

    Returns ``(x_train, y_train, x_test, y_test, shape)``: the file's own ``x_test`` if it
    has one, else ``val_fraction`` of ``x`` held out (seeded).  With ``evaluation=True``
    nothing is held out: the examples to score (``x_test`` if present, else all of ``x``)
    come back as the test part, and the train part is empty.
    """
    x, y, x_te, y_te = file_arrays(path)
    shape = tuple(x.shape[1:])
    if x_te is None:
        return (x[:0], None, x, y, shape) if evaluation else (*seeded_split(x, y, val_fraction, seed), shape)
    return (x[:0], None, x_te, y_te, shape) if evaluation else (x, y, x_te, y_te, shape)


def fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> dict[str, str | int]:
    """``{"path": absolute path, "size": bytes, "sha256": hex digest}`` of a data file, hashed in chunks."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError(f"expected a data file to fingerprint; got {str(path)!r}, which is not a file")
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
            size += len(block)
    return {"path": str(path), "size": size, "sha256": digest.hexdigest()}

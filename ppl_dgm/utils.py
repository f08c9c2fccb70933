"""Small shared utilities: seeding, devices, atomic files."""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import InputError, check_choice

Device = Literal["cpu", "cuda", "auto"]
DATA_PLATE = "data"
"""The name of the plate over examples in every model and guide (DESIGN: one plate name)."""
LN2 = math.log(2.0)
"""ln 2: nats per bit (bits/dim = -log p / (D ln 2))."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro from one integer.

    On the CPU the same seed gives the same numbers.  JAX code takes its key as
    ``jax.random.PRNGKey(seed)`` with the same seed.
    """
    import pyro

    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn ``'cpu' | 'cuda' | 'auto'`` (or a torch device) into a ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str) and device.startswith("cuda:"):
        base = "cuda"
    else:
        base = check_choice("device", str(device), ("cpu", "cuda", "auto"))
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(device)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"output directory {str(path)!r} must be writable; got {e.strerror or e}") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

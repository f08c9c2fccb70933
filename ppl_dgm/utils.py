"""Small shared utilities: seeding, devices, threads, atomic files, lazy re-exports.

torch and NumPy are imported inside the functions that need them, so that importing this
module (which every layer does, the CLI included) stays cheap.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError, check_choice

if TYPE_CHECKING:
    import torch

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
    import numpy as np
    import pyro
    import torch

    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Turn ``'cpu' | 'cuda' | 'auto'`` (or a torch device) into a ``torch.device``."""
    import torch

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


SMALL_MODEL_PARAMS = 15_000
"""``set_threads("auto")``: models with fewer parameters than this run on one CPU thread (see :func:`set_threads`)."""
_DEFAULT_THREADS: list[int] = []  # torch's thread count before set_threads first changed it


def set_threads(threads: int | Literal["auto"] = "auto", n_params: int | None = None,
                device: str | torch.device = "cpu") -> int:
    """Set torch's intra-op CPU thread count; returns the count in use.

    Parameters
    ----------
    threads : int >= 1 or "auto"
        A count, or ``"auto"``: one thread for a small model (``n_params`` below
        :data:`SMALL_MODEL_PARAMS`) on the CPU, else torch's default (the count the process had
        before ``set_threads`` first changed it).
    n_params : int, optional
        The model's parameter count; unknown (None) counts as large.
    device : {"cpu", "cuda", "auto"} or torch.device
        On a GPU ``"auto"`` keeps torch's default (the CPU only feeds the device).

    Notes
    -----
    The threshold is measured by ``benchmarks/threads.py`` (``benchmarks/results/threads.json``):
    one SVI step (``fit_svi``, batch 128, Adam, analytic ELBO) with 2 threads against 1 on a
    2-core machine, best of 7.  Time with 2 threads / time with 1:

    ==========================================  ==========  =========
    model                                       parameters  2 / 1
    ==========================================  ==========  =========
    VAE MLP 64-16-2, 64-64-4                    2k, 9k      1.03, 1.00
    VAE MLP 64-128-8                            20k         0.93
    VAE MLP 64-256-8 (digits)                   40k         0.88
    DDPM, default net, 2-D toys / digits        125k, 140k  0.76, 0.71
    VAE MLP 784-400-20, conv VAE 28x28          650k, 1.7M  0.68, 0.63
    ==========================================  ==========  =========

    Below about 10k parameters the second thread buys nothing, so the threshold sits between
    the last model without a gain and the first with one.  On a machine that is busy with
    other work a second thread costs far more (2 threads took 2.5 to 50 times as long as 1, for
    every model above, while other processes held the cores): pass ``threads=1`` there.
    """
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    if threads == "auto":
        small = n_params is not None and n_params < SMALL_MODEL_PARAMS
        threads = 1 if small and resolve_device(device).type == "cpu" else _DEFAULT_THREADS[0]
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads: expected a positive integer or 'auto'; got {threads!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


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
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The file gets the mode a plain ``open(path, "wb")`` would give it: ``0o666`` less the
    process's umask (``0644`` under the usual umask ``022``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give (0644 under umask 022)
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
    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")  # o can be theirs only if they are loaded
    if np is not None and isinstance(o, np.integer):
        return int(o)
    if np is not None and isinstance(o, np.floating):
        return float(o)
    if np is not None and isinstance(o, np.ndarray):
        return o.tolist()
    if torch is not None and isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _umask() -> int:
    """The process's file-mode creation mask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore
    os.umask(mask)
    return mask


def lazy_exports(package: str, names: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` of a package whose re-exports are imported on first use (PEP 562).

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : dict of str to str
        Public name -> the module (relative to ``package``) it comes from.
    namespace : dict
        The package's ``globals()``: a name, once imported, is stored there.

    Returns
    -------
    (__getattr__, __dir__) : the two module-level functions, to assign in the package.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__

"""Checkpoints of NumPyro fits: one ``.npz`` of arrays (no pickle), written atomically.

``checkpoint.npz`` holds

- ``format``, ``family``, ``epoch``, ``history`` (JSON text): plain string and integer arrays;
- ``model/<name>``: the parameters under the torch ``state_dict`` names of the Pyro family
  (:meth:`~ppl_dgm.numpyro.models.twin.Twin.torch_state`), so :func:`ppl_dgm.runs.load_run` rebuilds the Pyro model
  from it with NumPy alone;
- ``state/<i>``: the leaves of NumPyro's ``SVIState`` (optimizer step, Adam moments, parameters, PRNG key) in
  ``jax.tree_util`` order, so a resumed fit ends where an uninterrupted one would.

``best.npz`` holds ``format``, ``family``, ``epoch`` and ``model/<name>`` of the epoch with the best held-out ELBO.
Reading needs ``np.load(allow_pickle=False)`` only.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CheckpointError
from ...utils import atomic_write_bytes

FORMAT = "ppl_dgm.checkpoint.npz/1"
CHECKPOINT_NPZ = "checkpoint.npz"
BEST_NPZ = "best.npz"


def _write(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _header(twin, epoch: int) -> dict[str, np.ndarray]:
    return {"format": np.array(FORMAT), "family": np.array(twin.family), "epoch": np.array(epoch, dtype=np.int64)}


def save(path: str | os.PathLike, twin, state, params: dict[str, Any], history: list[dict]) -> None:
    """Write the SVI ``state``, its parameters ``params`` (under torch names) and ``history`` to ``path``."""
    import jax

    arrays = {**_header(twin, len(history)), "history": np.array(json.dumps(history))}
    arrays.update({f"state/{i:05d}": np.asarray(v) for i, v in enumerate(jax.tree_util.tree_leaves(state))})
    _write(path, arrays | {f"model/{k}": v for k, v in twin.torch_state(params).items()})


def save_best(path: str | os.PathLike, twin, params: dict[str, Any], epoch: int) -> None:
    """Write the parameters ``params`` of epoch ``epoch`` (torch names) to ``path``."""
    _write(path, _header(twin, epoch) | {f"model/{k}": v for k, v in twin.torch_state(params).items()})


def read(path: str | os.PathLike, family: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of a NumPyro checkpoint, checked to be one (of ``family``); one-line error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"expected a checkpoint at {path}; found no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile / numpy raise many types for corrupt files
        raise CheckpointError(f"{path}: expected a ppl_dgm .npz checkpoint; could not read it ({str(e)[:120]})") \
            from None
    if str(arrays.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path}: expected checkpoint format {FORMAT!r}; got {str(arrays.get('format'))!r}")
    if family is not None and str(arrays.get("family")) != family:
        raise CheckpointError(f"{path}: expected a checkpoint of family {family!r}; got {str(arrays.get('family'))!r}")
    return arrays


def model_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Pyro family's ``state_dict`` (NumPy arrays) held in a checkpoint's arrays."""
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}


def restore(path: str | os.PathLike, state, twin) -> tuple[Any, list[dict]]:
    """``(state, history)`` from ``path``: the leaves of a fresh ``state`` (its tree structure) replaced."""
    import jax
    import jax.numpy as jnp

    arrays = read(path, twin.family)
    leaves, tree = jax.tree_util.tree_flatten(state)
    stored = sorted(k for k in arrays if k.startswith("state/"))
    if len(stored) != len(leaves) or any(arrays[k].shape != np.shape(v) for k, v in zip(stored, leaves)):
        raise CheckpointError(f"{path}: the stored optimizer state does not fit this model and objective "
                              f"({len(stored)} arrays; expected {len(leaves)})")
    new = [jnp.asarray(arrays[k], dtype=jnp.asarray(v).dtype) for k, v in zip(stored, leaves)]
    return jax.tree_util.tree_unflatten(tree, new), json.loads(str(arrays["history"]))

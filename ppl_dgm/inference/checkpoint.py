"""Checkpoints: tensors and plain values only, loaded with ``torch.load(weights_only=True)``.

A checkpoint is one file (``checkpoint.pt``) holding a dict with a format tag,
the family name, the model's ``state_dict``, the optimizer state, the values
of any Pyro ``param`` sites, the torch RNG state, the epoch and the history
(as a JSON string).  It is written through a temporary file and a rename, so a
crash never leaves half a checkpoint behind.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..utils import atomic_write_bytes

FORMAT = "ppl_dgm.checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
"""The parameters of the epoch with the best held-out ELBO (model state only)."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format tag) atomically to ``path``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, family: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a loadable tensors-only checkpoint, is not
        one of ours, or belongs to another family.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"expected a checkpoint at {path}; found no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or pickled files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: expected a ppl_dgm checkpoint (tensors only); "
                              f"could not read it ({msg[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: expected checkpoint format {FORMAT!r}; got {got!r} "
                              f"(not a ppl_dgm checkpoint)")
    if family is not None and state.get("family") != family:
        raise CheckpointError(f"{path}: expected a checkpoint of family {family!r}; "
                              f"got one of family {state.get('family')!r}")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict`` with a one-line error when names or shapes differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: checkpoint does not fit the model: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}")
    for k, v in own.items():
        got = state_dict[k]
        if not isinstance(got, torch.Tensor) or tuple(v.shape) != tuple(got.shape):
            raise CheckpointError(f"{where}: parameter {k!r} expected shape {tuple(v.shape)}; "
                                  f"checkpoint has {tuple(got.shape) if isinstance(got, torch.Tensor) else got!r:.40}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CheckpointError(f"{where}: expected finite parameters; {k!r} holds NaN or inf")
    model.load_state_dict(state_dict)

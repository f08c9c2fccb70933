"""Where ``fit_svi``'s tensors live and in which precision the networks run: ``--precision``, pinned host memory.

Precision.  ``precision="bf16"`` or ``"fp16"`` runs the objective under ``torch.autocast``: matrix products and
convolutions inside the networks compute in the low precision, while every output of a network (a direct child
module of the model or guide module) is cast back to float32 by a forward hook before the program builds its
distributions.  So the log-densities, the KL terms and their sums over sites and rows, i.e. the ELBO, are computed
and accumulated in float32 (elementwise operations follow their float32 inputs under autocast), and the loss is
float32.  fp16 has a narrow exponent range: its gradients go through a ``torch.amp.GradScaler`` (``SVIState.step``
unscales them before clipping; skipped steps on overflow are the scaler's, by design).  bf16 needs no scaler.  The
held-out ELBO after each epoch is computed in float32 (the same numbers as a float32 fit would report for these
weights).  On the CPU bf16 autocast works (slowly on CPUs without AVX-512 BF16); it is meant for GPUs.

Data placement on CUDA.  The training set is moved to the GPU once when it takes at most half of the free device
memory (Fashion-MNIST is 188 MB as float32): a minibatch is then a gather on the device, with no host-to-device copy
per step, which beats any loader.  A larger training set stays in page-locked (pinned) host memory, and each
minibatch is gathered on the host into pinned memory and copied with ``non_blocking=True`` (torch's caching host
allocator keeps the pinned buffers alive until their copy is done).  On the CPU nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from ..errors import check_choice

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
__all__ = ["PRECISIONS", "Precision", "place_training"]

Stage = Callable[[tuple[torch.Tensor, ...], Any], tuple[torch.Tensor, ...]]


class Precision:
    """The objective under autocast with float32 network outputs (see the module docstring).

    Parameters
    ----------
    precision : {"fp32", "bf16", "fp16"}
    device : torch.device
        Where the fit runs (autocast's device type).
    modules : dict[str, nn.Module]
        The modules holding the parameters; their direct children are the networks whose outputs are cast.

    Attributes
    ----------
    scaler : torch.amp.GradScaler or None
        For fp16 (hand it to the :class:`~.svi.SVIState`).
    """

    def __init__(self, precision: Literal["fp32", "bf16", "fp16"], device: torch.device,
                 modules: dict[str, nn.Module]):
        self.precision = check_choice("precision", precision, PRECISIONS)
        self.device, self.modules, self.handles = device, modules, []
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    @property
    def active(self) -> bool:
        return self.precision != "fp32"

    def loss(self, loss: Callable) -> Callable:
        """``loss(model, guide, *batch)`` under autocast, returning float32 (the same ``loss`` for fp32)."""
        if not self.active:
            return loss
        dtype = _DTYPES[self.precision]

        def autocast_loss(model, guide, *batch):
            with torch.autocast(self.device.type, dtype=dtype):
                value = loss(model, guide, *batch)
            return value.float()

        return autocast_loss

    def __enter__(self) -> Precision:
        if self.active:
            self.handles = [child.register_forward_hook(_float32_outputs)
                            for m in self.modules.values() for child in m.children()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _float32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, (tuple, list)):
        return type(out)(_float32(o) for o in out) if not hasattr(out, "_fields") else type(out)(*map(_float32, out))
    if isinstance(out, dict):
        return {k: _float32(v) for k, v in out.items()}
    return out


def _float32_outputs(module: nn.Module, args, out):
    return _float32(out)


def place_training(data: tuple[torch.Tensor, ...], device: torch.device,
                   budget: float = 0.5) -> tuple[tuple[torch.Tensor, ...], Stage | None]:
    """``(tensors, stage)``: the training tensors on ``device`` (``stage`` None), or, on CUDA when they exceed
    ``budget`` of the free device memory, in pinned host memory with ``stage(data, rows)`` giving a minibatch on
    the device (copied with ``non_blocking=True``)."""
    if device.type != "cuda" or all(t.device == device for t in data):
        return tuple(t.to(device) for t in data), None
    need = sum(t.numel() * t.element_size() for t in data)
    free, _ = torch.cuda.mem_get_info(device)
    if need <= budget * free:
        return tuple(t.to(device) for t in data), None
    pinned = tuple(t.cpu().pin_memory() for t in data)

    def stage(tensors: tuple[torch.Tensor, ...], rows) -> tuple[torch.Tensor, ...]:
        rows = rows.cpu() if isinstance(rows, torch.Tensor) else rows
        return tuple(t[rows].pin_memory().to(device, non_blocking=True) for t in tensors)

    return pinned, stage

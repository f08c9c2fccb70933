"""A plain multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> out_dim`` with an activation between layers.

    Parameters
    ----------
    in_dim, out_dim : int
    hidden : sequence of int
        Widths of the hidden layers (may be empty: a linear map).
    activation : type of nn.Module
        Default ``nn.ReLU``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.ReLU):
        dims = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(activation())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (shape (..., in_dim) -> (..., out_dim))
        return super().forward(x)

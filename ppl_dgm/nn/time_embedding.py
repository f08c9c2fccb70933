"""Time embeddings and the epsilon-network for vectors: t -> features -> eps_theta(x_t, t)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer position encoding of the step t (Vaswani et al. 2017; used by Ho et al. 2020).

    t : (...,) integer or float steps; returns (..., dim) with cos in the first half, sin in the second.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], -1)
    return emb


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features (dim) -> MLP (dim -> out_dim -> out_dim), SiLU."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., out_dim)
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class EpsMLP(nn.Module):
    """eps_theta(x_t, t) for vector data: residual MLP blocks, each adding a projection of the time embedding.

    Parameters
    ----------
    x_dim : int
        D.
    hidden : sequence of int
        Width of the blocks (all equal to ``hidden[0]``; ``len(hidden)`` blocks).
    t_dim : int
        Size of the sinusoidal features of t.

    ``forward(x, t)``: x of shape (..., D), t of shape broadcastable to x.shape[:-1]; returns (..., D).
    """

    def __init__(self, x_dim: int, hidden: Sequence[int] = (128, 128, 128), t_dim: int = 64):
        super().__init__()
        width = int(hidden[0])
        self.inp = nn.Linear(x_dim, width)
        self.temb = TimeEmbedding(t_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(width, width)) for _ in hidden)
        self.tproj = nn.ModuleList(nn.Linear(width, width) for _ in hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, x_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the embedding is computed at t's own shape and broadcast: k distinct steps cost k rows, not k * N
        t = torch.as_tensor(t, device=x.device)
        t = t.reshape((1,) * (x.dim() - 1 - t.dim()) + tuple(t.shape))
        h, e = self.inp(x), self.temb(t)
        for block, proj in zip(self.blocks, self.tproj):
            h = h + block(h + proj(e))
        return self.out(h)

"""Time and coordinate embeddings and the epsilon-network for vectors: (x_t, t) -> features -> eps_theta(x_t, t)."""

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


class LabelEmbedding(nn.Module):
    """Labels 0..C-1, and C for "no label" (the null label of classifier-free guidance), -> (..., out_dim).

    ``forward(y, batch)``: y of integer labels broadcastable to ``batch`` (None: the null label everywhere).
    """

    def __init__(self, n_classes: int, out_dim: int):
        super().__init__()
        self.n_classes = n_classes
        self.emb = nn.Embedding(n_classes + 1, out_dim)

    def forward(self, y: torch.Tensor | None, batch: tuple[int, ...]) -> torch.Tensor:
        device = self.emb.weight.device
        y = torch.full((), self.n_classes, device=device) if y is None else torch.as_tensor(y, device=device)
        return self.emb(y.long().expand(batch))


def label_embedding(n_classes: int, out_dim: int) -> LabelEmbedding | None:
    """A :class:`LabelEmbedding` for a conditional network (``n_classes`` >= 1), else None."""
    return LabelEmbedding(n_classes, out_dim) if n_classes else None


class CoordinateFeatures(nn.Module):
    """Per-coordinate sinusoidal features at geometric frequencies, concatenated with x (Tancik et al. 2020).

    x (..., D) -> (..., D (1 + 2 F)): ``[x, sin(2^k x_d), cos(2^k x_d)]`` for k = 0..F-1 and each
    coordinate d (the sines of all (k, d) first, then the cosines).  An MLP of x alone is biased towards
    smooth functions; these features let it resolve structure at scale ~2^-F (Tancik et al. 2020).

    Parameters
    ----------
    x_dim : int
        D.
    n_freqs : int
        F, the number of frequencies 1, 2, 4, ..., 2^(F-1); 0 gives x unchanged.
    """

    def __init__(self, x_dim: int, n_freqs: int):
        super().__init__()
        self.x_dim, self.n_freqs = x_dim, n_freqs
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.x_dim * (1 + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D (1 + 2 F))
        if not self.n_freqs:
            return x
        args = (x[..., None, :] * self.freqs.to(x.dtype)[:, None]).flatten(-2)     # (..., F D), k-major
        return torch.cat([x, torch.sin(args), torch.cos(args)], -1)


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
    coord_freqs : int
        F of :class:`CoordinateFeatures`: x enters as x and sin/cos of 2^k x_d, k < F (0: x alone).
    n_classes : int
        C > 0: a label y in 0..C (C: none) is embedded and added to the time embedding (eps_theta(x_t, t, y)).
    out_dim : int, optional
        Outputs (default D; C logits for a classifier).

    ``forward(x, t, y=None)``: x of shape (..., D), t and y broadcastable to x.shape[:-1]; returns (..., out_dim).
    ``features(x, t, y=None)``: the last hidden layer, (..., hidden[0]).
    """

    def __init__(self, x_dim: int, hidden: Sequence[int] = (128, 128, 128), t_dim: int = 64, coord_freqs: int = 0,
                 n_classes: int = 0, out_dim: int | None = None):
        super().__init__()
        width = int(hidden[0])
        self.coords = CoordinateFeatures(x_dim, coord_freqs)
        self.inp = nn.Linear(self.coords.out_dim, width)
        self.temb = TimeEmbedding(t_dim, width)
        self.label = label_embedding(n_classes, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(width, width)) for _ in hidden)
        self.tproj = nn.ModuleList(nn.Linear(width, width) for _ in hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, out_dim or x_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.features(x, t, y))

    def features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # the embedding is computed at t's own shape and broadcast: k distinct steps cost k rows, not k * N
        t = torch.as_tensor(t, device=x.device)
        t = t.reshape((1,) * (x.dim() - 1 - t.dim()) + tuple(t.shape))
        h, e = self.inp(self.coords(x)), self.temb(t)
        if self.label is not None:
            e = e + self.label(y, x.shape[:-1])
        for block, proj in zip(self.blocks, self.tproj):
            h = h + block(h + proj(e))
        return h

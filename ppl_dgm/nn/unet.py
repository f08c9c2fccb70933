"""A small UNet for single-channel images (28x28, or 8x8 digits): eps_theta(x_t, t).

Two resolutions (H -> H/2 -> H/4), residual blocks with GroupNorm and the time
embedding added inside each block (Ho et al. 2020, Appendix B, much smaller).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .time_embedding import TimeEmbedding, label_embedding


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x))) + W e))), with a 1x1 skip when channels change."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.n1, self.c1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t = nn.Linear(t_dim, c_out)
        self.n2, self.c2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(self.act(self.n1(x))) + self.t(e)[:, :, None, None]
        h = self.c2(self.act(self.n2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """eps_theta for images of shape (C, H, W), H and W divisible by 4.

    Parameters
    ----------
    image_shape : (C, H, W) or (H, W)
    base : int
        Channels at full resolution (2*base and 2*base below).
    n_classes : int
        C > 0: a label y in 0..C (C: none) is embedded and added to the time embedding.

    ``forward(x, t, y=None)``: x of shape (..., C*H*W) (flattened, as the family stores data), t and y
    broadcastable to x.shape[:-1]; returns (..., C*H*W).
    """

    def __init__(self, image_shape, base: int = 32, t_dim: int = 64, n_classes: int = 0):
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise InputError(f"UNet expects images (C, H, W) with H and W divisible by 4; got {tuple(image_shape)}")
        self.shape = shape
        c, b = shape[0], base
        e = 4 * b
        self.temb = TimeEmbedding(t_dim, e)
        self.label = label_embedding(n_classes, e)
        self.inp = nn.Conv2d(c, b, 3, padding=1)
        self.d1 = ResBlock(b, b, e)
        self.down1 = nn.Conv2d(b, b, 3, stride=2, padding=1)
        self.d2 = ResBlock(b, 2 * b, e)
        self.down2 = nn.Conv2d(2 * b, 2 * b, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * b, 2 * b, e)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.u2 = ResBlock(4 * b, 2 * b, e)
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.u1 = ResBlock(3 * b, b, e)
        self.out = nn.Sequential(_norm(b), nn.SiLU(), nn.Conv2d(b, c, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        batch = x.shape[:-1]
        t = torch.as_tensor(t, device=x.device).expand(batch).reshape(-1)
        h0 = self.inp(x.reshape(-1, *self.shape))
        e = self.temb(t)
        if self.label is not None:
            e = e + self.label(y, batch).reshape(-1, e.shape[-1])
        h1 = self.d1(h0, e)                       # H
        h2 = self.d2(self.down1(h1), e)           # H/2
        m = self.mid(self.down2(h2), e)           # H/4
        u = self.u2(torch.cat([self.up2(m), h2], 1), e)
        u = self.u1(torch.cat([self.up1(u), h1], 1), e)
        return self.out(u).reshape(*batch, -1)

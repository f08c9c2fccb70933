"""Convolutional encoder/decoder for 28x28 single-channel images."""

from __future__ import annotations

import torch
from torch import nn


class ConvEncoder28(nn.Module):
    """(N, 784) -> (N, out_dim): two stride-2 convolutions (28 -> 14 -> 7) and an MLP head.

    ``activation``: the nonlinearity's class (or a factory), ReLU by default; a DCGAN discriminator uses
    ``functools.partial(nn.LeakyReLU, 0.2)``.
    """

    def __init__(self, out_dim: int, hidden: int = 256, channels: int = 32, activation=nn.ReLU):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), activation(),
            nn.Conv2d(c, 2 * c, 4, 2, 1), activation(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * 49, hidden), activation(),
                                  nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.reshape(-1, 1, 28, 28)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 784) -> (N, hidden): the head's hidden layer after its activation (the penultimate activations;
        a classifier's feature space)."""
        return self.head[:-1](self.conv(x.reshape(-1, 1, 28, 28)))


class ConvDecoder28(nn.Module):
    """(N, in_dim) -> (N, 784): an MLP to a 7x7 feature map and two transposed convolutions."""

    def __init__(self, in_dim: int, hidden: int = 256, channels: int = 32):
        super().__init__()
        c = channels
        self.c = c
        self.head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * c * 49), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, 2 * self.c, 7, 7)
        return self.deconv(h).reshape(*batch, 784)


class ConvMapEncoder28(nn.Module):
    """(N, 784) -> (N, out_channels, 7, 7): a map of vectors, one per 4x4 patch of a 28x28 image (a VQ-VAE's z_e).

    Two stride-2 convolutions (28 -> 14 -> 7), a 3x3 convolution and a 1x1 projection to ``out_channels``.
    """

    def __init__(self, out_channels: int, channels: int = 16):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(2 * c, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 28, 28))


class ConvMapDecoder28(nn.Module):
    """(N, in_channels, 7, 7) -> (N, 784): a 3x3 convolution and two transposed convolutions (7 -> 14 -> 28);
    the mirror of :class:`ConvMapEncoder28`."""

    def __init__(self, in_channels: int, channels: int = 16):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 2 * c, 3, 1, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[0], 784)

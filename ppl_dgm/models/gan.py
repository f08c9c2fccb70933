"""The generative adversarial network as an implicit model (course notes 001 "The GAN objective", notes 004
"Introduction to Generative Adversarial Network", "GAN's formulation", "The Idea of GAN Inversion").

The generator is a probabilistic program with a latent and no likelihood:

.. math::  z \\sim \\mathcal N(0, I_K), \\qquad x = G_\\theta(z),

written as a sample site ``z`` in ``pyro.plate("data", N)`` and a deterministic site ``x``.  Its density q(x)
is never evaluated (an *implicit* model), so there is no ELBO and no ``evaluate`` bound.  It is fitted by the
adversarial trainer (:mod:`ppl_dgm.inference.adversarial`): a discriminator D_phi(x) = sigma(d_phi(x)) estimates
the density ratio p / (p + q), and the two play min_theta max_phi V(D, G) on the one SVI loop.

The guide is empty: z is drawn from its prior, not inferred.  Inference of z for a given x is GAN inversion
(:meth:`GAN.encode_mean`): z* = argmin_z ||G(z) - x||^2 + lambda ||z||^2 by gradient descent, which gives the
latent tools (reconstruction, interpolation) of ``ppl-dgm latent``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..data import Dataset
from ..errors import InputError, check_choice, check_positive_int
from ..nn import MLP, ConvDecoder28, ConvEncoder28
from .base import GenerativeModel
from .options import SVIOptions, option


@dataclass
class GANConfig(SVIOptions):
    """Fit options of ``gan``: the networks, the game (loss, penalty, steps) and Adam's beta1."""

    lr: float = option(2e-4, "Learning rate of both players.", role="train", min=0, min_open=True)
    beta1: float = option(0.5, "Adam's first-moment decay (0.5 is usual for GANs).", role="train", min=0, max=1,
                          max_open=True)
    latent_dim: int = option(16, "Dimension K of z.", min=1)
    hidden: tuple[int, ...] = option((256, 256), "MLP widths of the generator and the discriminator (conv: the "
                                     "width of their dense layer is the first).")
    arch: Literal["auto", "mlp", "conv"] = option("auto", "Networks: auto is DCGAN-style conv for 28x28 images, "
                                                  "else mlp.")
    spectral_norm: bool = option(False, "Spectral normalization of the discriminator's layers.")
    loss: Literal["non-saturating", "minimax"] = option(
        "non-saturating", "Generator loss: -log D(G(z)) (non-saturating) or log(1 - D(G(z))) (minimax).",
        role="objective")
    gradient_penalty: float = option(0.0, "R1 penalty weight gamma on real examples (0: none).", role="objective",
                                     min=0)
    d_steps: int = option(1, "Discriminator steps per generator step.", role="objective", min=1)

    def resolve(self, ds: Dataset) -> GANConfig:
        out = super().resolve(ds)
        if out.arch == "auto":
            out.arch = "conv" if tuple(ds.shape) in ((28, 28), (1, 28, 28)) else "mlp"
        return out

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        return {**super().model_kwargs(ds), "output": "sigmoid" if ds.kind == "image" else "linear"}


class GAN(GenerativeModel):
    """Generative adversarial network: z ~ N(0, I), x = G_theta(z) (an implicit model), with a discriminator.

    Parameters
    ----------
    x_dim : int
        D, the flattened example size.
    latent_dim : int
        K.
    hidden : sequence of int
        MLP widths (the discriminator's mirror the generator's); for ``arch="conv"`` the first is the width of the
        dense layer between z (or the logit) and the 7x7 feature maps.
    arch : {"mlp", "conv"}
        ``conv``: a DCGAN-style pair for 28x28 images (transposed convolutions 7 -> 14 -> 28 in G, stride-2
        convolutions with LeakyReLU in D).
    output : {"sigmoid", "linear"}
        G's last activation: ``sigmoid`` for images in [0, 1], ``linear`` for vectors.
    spectral_norm : bool
        Spectral normalization of every linear and convolutional layer of D (Miyato et al. 2018).
    image_shape : sequence of int, optional
        The shape of one example (for pictures).
    """

    family = "gan"

    def __init__(self, x_dim: int, latent_dim: int = GANConfig.latent_dim,
                 hidden: Sequence[int] = GANConfig.hidden, arch: Literal["mlp", "conv"] = "mlp",
                 output: Literal["sigmoid", "linear"] = "sigmoid", spectral_norm: bool = GANConfig.spectral_norm,
                 image_shape: Sequence[int] | None = None):
        super().__init__()
        self.x_dim, self.latent_dim = check_positive_int("x_dim", x_dim), check_positive_int("latent_dim", latent_dim)
        check_choice("arch", arch, ("mlp", "conv"))
        self.output = check_choice("output", output, ("sigmoid", "linear"))
        hidden = [check_positive_int("each hidden width", h) for h in hidden]
        leaky = functools.partial(nn.LeakyReLU, 0.2)
        if arch == "conv":
            if x_dim != 784:
                raise InputError(f"arch 'conv' expects 28x28 images (784 values); got x_dim {x_dim}")
            self.generator = ConvDecoder28(latent_dim, hidden=hidden[0])
            self.discriminator = _Logit(ConvEncoder28(1, hidden=hidden[0], activation=leaky))
        else:
            self.generator = MLP(latent_dim, hidden, x_dim)
            self.discriminator = _Logit(MLP(x_dim, hidden[::-1], 1, activation=leaky))
        if spectral_norm:
            for m in list(self.discriminator.modules()):
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    _spectral_norm(m)
        self.image_shape = list(image_shape) if image_shape is not None else None
        self._store_config(locals())

    # -- the implicit model -----------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G_theta(z): (..., K) -> (..., D)."""
        out = self.generator(z)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """z ~ N(0, I_K), x = G(z) for each of the N rows of ``x`` (N, D); ``x`` only sets N (nothing is
        observed: the data enter through the discriminator)."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.deterministic("x", self.generate(z), event_dim=1)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty: z is drawn from its prior (inference of z is :meth:`encode_mean`, GAN inversion)."""

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n examples G(z), z ~ N(0, I); shape (n, D)."""
        return self.generate(torch.randn(n, self.latent_dim, device=self.device))

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """D_phi(x) = sigma(d_phi(x)), the estimate of p(x) / (p(x) + q(x)); (N, D) -> (N,)."""
        return torch.sigmoid(self.discriminator(x))

    # -- GAN inversion (the latent tools) ---------------------------------------------
    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None, steps: int = 300, lr: float = 0.05,
                    prior_weight: float = 1e-3, restarts: int = 4, seed: int = 0) -> torch.Tensor:
        """GAN inversion: z* = argmin_z ||G(z) - x||^2 + ``prior_weight`` ||z||^2 per row, by Adam from
        ``restarts`` draws of z ~ N(0, I) (the best kept); (N, D) -> (N, K).  Deterministic given ``seed``."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = x.detach()
        z = torch.randn(restarts, *x.shape[:-1], self.latent_dim, generator=gen).to(x)
        with torch.enable_grad():
            z.requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = self._inversion_loss(z, x, prior_weight)
                loss.sum().backward(inputs=[z])
                opt.step()
        with torch.no_grad():
            best = self._inversion_loss(z, x, prior_weight).argmin(0)
            return z.detach().gather(0, best[None, ..., None].expand(1, *best.shape, self.latent_dim))[0]

    def _inversion_loss(self, z: torch.Tensor, x: torch.Tensor, prior_weight: float) -> torch.Tensor:
        return (self.generate(z) - x).pow(2).sum(-1) + prior_weight * z.pow(2).sum(-1)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """G(z): (N, K) -> (N, D)."""
        return self.generate(z)


class _Logit(nn.Module):
    """A network whose single output is the discriminator's logit d_phi(x): (N, D) -> (N,)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

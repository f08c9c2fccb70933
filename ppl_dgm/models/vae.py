"""The variational autoencoder (course notes 002 §VAE; notes 000 "AE and VAE").

Generative model (decoder), for each example n (plate ``"data"``):

.. math::  z_n \\sim \\mathcal N(0, I_K), \\qquad x_n \\mid z_n \\sim p_\\theta(x \\mid z_n)

with p_theta one of: Bernoulli(logits = f_theta(z)); Gaussian N(f_theta(z), sigma^2 I) with sigma
fixed or learned per dimension; continuous Bernoulli CB(lambda = sigmoid f_theta(z)), the
normalised density C(lambda) lambda^x (1 - lambda)^(1 - x) on [0, 1] (Loaiza-Ganem & Cunningham 2019).

Amortized guide (encoder), reparameterized (notes 002, "reparameterization trick"):

.. math::  q_\\phi(z_n \\mid x_n) = \\mathcal N(g_\\mu(x_n), \\mathrm{diag}\\, g_\\sigma(x_n)^2)

Trained by maximising the ELBO of notes 002 eq. (*):
E_q[log p(x|z)] - KL(q(z|x) || p(z)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..data import Dataset
from ..errors import InputError, check_choice, check_number
from ..nn import MLP, ConvDecoder28, ConvEncoder28
from .base import GenerativeModel
from .checks import check_vae_sizes, check_width
from .options import BackendOptions, ObjectiveOptions, SVIOptions, option

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "continuous-bernoulli")
ARCHS = ("mlp", "conv")
Likelihood = Literal["bernoulli", "gaussian", "gaussian-learned", "continuous-bernoulli"]


@dataclass
class VAEConfig(ObjectiveOptions, SVIOptions, BackendOptions):
    """Fit options of ``vae`` and ``ae`` (and, with a label count, ``cvae``)."""

    latent_dim: int = option(8, "K, the size of z.", min=1)
    hidden: tuple[int, ...] = option((256,), "Hidden width(s) of the encoder and (mirrored) decoder, e.g. 512,256.")
    likelihood: Likelihood = option("bernoulli", "p(x | z); Bernoulli and continuous Bernoulli take data in [0, 1].")
    arch: Literal["auto", "mlp", "conv"] = option("auto", "Encoder/decoder: auto is conv for 28x28 images, else mlp.")
    x_scale: float = option(0.1, "sigma of the Gaussian likelihood (initial value for gaussian-learned).", min=0,
                            min_open=True)

    def resolve(self, ds: Dataset) -> VAEConfig:
        out = super().resolve(ds)
        if out.arch == "auto":  # the NumPyro twin's networks are MLPs
            image28 = tuple(ds.shape) in ((28, 28), (1, 28, 28))
            out.arch = "conv" if image28 and out.backend == "pyro" else "mlp"
        return out


class VAE(GenerativeModel):
    """Variational autoencoder with a standard-normal prior and an amortized Gaussian guide.

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    latent_dim : int
        K, the size of z.
    hidden : sequence of int
        Hidden widths of the MLP encoder and (mirrored) decoder; for ``arch="conv"``
        the first entry is the width of the dense layer.
    likelihood : {"bernoulli", "gaussian", "gaussian-learned", "continuous-bernoulli"}
        p(x | z).  Bernoulli and continuous Bernoulli take data in [0, 1]; ``gaussian`` has
        fixed scale ``x_scale``; ``gaussian-learned`` a learned log-scale per dimension, shape (D,),
        initialised at log ``x_scale``.
    arch : {"mlp", "conv"}
        ``conv`` needs 28x28 single-channel images (D = 784).
    x_scale : float
        sigma of the Gaussian likelihood.
    image_shape : sequence of int, optional
        Shape of one example, kept for plots and ``sample`` output.
    """

    family = "vae"
    records_step = True

    def __init__(
        self,
        x_dim: int,
        latent_dim: int = VAEConfig.latent_dim,
        hidden: Sequence[int] = VAEConfig.hidden,
        likelihood: Likelihood = VAEConfig.likelihood,
        arch: Literal["mlp", "conv"] = "mlp",
        x_scale: float = VAEConfig.x_scale,
        image_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        check_choice("likelihood", likelihood, LIKELIHOODS)
        check_choice("arch", arch, ARCHS)
        x_dim, latent_dim, hidden = check_vae_sizes(x_dim, latent_dim, hidden, x_scale)
        if arch == "conv" and x_dim != 784:
            raise InputError(f"arch 'conv' expects 28x28 images (x_dim 784); got x_dim {x_dim}")
        self._store_config(locals())
        self.x_dim, self.latent_dim, self.likelihood, self.x_scale = x_dim, latent_dim, likelihood, x_scale
        self.image_shape = tuple(image_shape) if image_shape else None
        if arch == "conv":
            width = hidden[0] if hidden else 256
            self.encoder: nn.Module = ConvEncoder28(2 * latent_dim, width)
            self.decoder: nn.Module = ConvDecoder28(latent_dim, width)
        else:
            self.encoder = MLP(x_dim, hidden, 2 * latent_dim)
            self.decoder = MLP(latent_dim, hidden[::-1], x_dim)
        if likelihood == "gaussian-learned":
            self.x_log_scale = nn.Parameter(torch.full((x_dim,), math.log(x_scale)))

    # -- networks -------------------------------------------------------------------
    def _net_input(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """What the encoder (t = x) or decoder (t = z) network reads; the CVAE appends the label."""
        return t

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """g_mu(x), g_sigma(x): each of shape (N, K) for x of shape (N, D)."""
        check_width(x, self.x_dim, "x")
        h = self.encoder(self._net_input(x, y))
        loc, raw = h[..., : self.latent_dim], h[..., self.latent_dim:]
        return loc, F.softplus(raw) + 1e-4

    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """g_mu(x), shape (N, K)."""
        return self.encode(x, y)[0]

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z]: probabilities (Bernoulli), means (Gaussian, continuous Bernoulli), shape (..., D)."""
        check_width(z, self.latent_dim, "z")
        return self._mean(self.decoder(self._net_input(z, y)))

    def likelihood_dist(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p_theta(x | z) with event shape (D,)."""
        check_width(z, self.latent_dim, "z")
        return self._out_dist(self.decoder(self._net_input(z, y)))

    def _mean(self, out: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return torch.sigmoid(out)
        if self.likelihood == "continuous-bernoulli":
            return self._out_dist(out).mean
        return out

    def _out_dist(self, out: torch.Tensor) -> dist.Distribution:
        """p(x | decoder output ``out``), event shape (D,)."""
        if self.likelihood == "bernoulli":
            # validate_args=False: grey levels in [0, 1] are allowed (cross-entropy), not only {0, 1}
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        if self.likelihood == "continuous-bernoulli":
            return dist.ContinuousBernoulli(logits=out).to_event(1)
        if self.likelihood == "gaussian-learned":
            return dist.Normal(out, self.x_log_scale.exp()).to_event(1)
        return dist.Normal(out, self.x_scale).to_event(1)

    # -- the model-guide pair ---------------------------------------------------------
    def prior(self, n: int, like: torch.Tensor) -> dist.Distribution:
        """p(z) = N(0, I_K), batch shape (n,), on the device and dtype of ``like``."""
        zeros = like.new_zeros((n, self.latent_dim))
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x, z) = p(z) p_theta(x | z); x of shape (N, D)."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0], x))
            pyro.sample("x", self.likelihood_dist(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(z | x) = N(g_mu(x), diag g_sigma(x)^2); x of shape (N, D)."""
        loc, scale = self.encode(x, y)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, n: int, *, y=None, mean: bool = False) -> torch.Tensor:
        """n new examples, shape (n, D): z ~ p(z), then x ~ p(x|z) (or E[x|z] if ``mean``)."""
        n = check_number("n", n, integer=True, min=0)
        z = self.prior(n, next(self.parameters())).sample()
        return self.decode_mean(z, y) if mean else self.likelihood_dist(z, y).sample()

"""The Markovian hierarchical VAE (notes 002, "Markovian Hierarchical VAE").

.. math::  p(x, z_{1:L}) = p(z_L)\\, p_\\theta(x \\mid z_1) \\prod_{l=2}^{L} p_\\theta(z_{l-1} \\mid z_l), \\qquad
           q_\\phi(z_{1:L} \\mid x) = q_\\phi(z_1 \\mid x) \\prod_{l=2}^{L} q_\\phi(z_l \\mid z_{l-1})

with p(z_L) = N(0, I) and every other conditional a diagonal Gaussian whose mean and
scale are an MLP of its parent.  The ELBO (notes 002, the last line of the HVAE derivation)

.. math::  E_q\\Big[\\log p_\\theta(x|z_1) + \\log\\frac{p(z_L)}{q(z_L|z_{L-1})}
           + \\sum_{l=1}^{L-1}\\log\\frac{p_\\theta(z_l|z_{l+1})}{q(z_l|z_{l-1})}\\Big]   (z_0 = x)

splits into one term per site ``z_l``.  The guide runs bottom-up and the model top-down, so the
model's parent of z_l (z_{l+1}) is drawn by the guide *after* z_l: the mean-field condition of
analytic-KL estimators fails, and each layer's term must be the Monte Carlo log-ratio.  The
guide sites say so (``infer={"analytic_kl": False}``, honoured by
:func:`ppl_dgm.inference.diagnostics.elbo_terms`); train with ``Trace_ELBO``, not
``TraceMeanField_ELBO``.  With L = 1 this is the VAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, check_choice, check_positive_int
from ..nn import MLP
from .base import GenerativeModel
from .checks import check_layers
from .options import BackendOptions, ObjectiveOptions, SVIOptions, option


@dataclass
class HVAEConfig(ObjectiveOptions, SVIOptions, BackendOptions):
    """Fit options of ``hvae``: the Monte Carlo ELBO by default (each layer's KL is a log-ratio, see above)."""

    objective: Literal["analytic", "elbo", "iwae"] = option(
        "elbo", "Monte Carlo ELBO, analytic-KL ELBO (falls back to Monte Carlo per layer), or IWAE.",
        role="objective")
    layers: int = option(2, "L, the number of stochastic layers.", min=1)
    latent_dims: tuple[int, ...] = option((16,), "Size of every z_l, or one size per layer (z_1 first).",
                                          flags=("--latent-dim",))
    hidden: tuple[int, ...] = option((256,), "Hidden width(s) of each conditional's MLP.")
    likelihood: Literal["bernoulli", "gaussian"] = option("bernoulli", "p(x | z_1).")
    x_scale: float = option(0.1, "sigma of the Gaussian likelihood.", min=0, min_open=True)


class GaussianLayer(nn.Module):
    """parent (..., in_dim) -> N(mu, diag sigma^2) over (..., out_dim), event shape (out_dim,)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.net = MLP(in_dim, hidden, 2 * out_dim)

    def forward(self, parent: torch.Tensor) -> dist.Distribution:
        h = self.net(parent)
        return dist.Normal(h[..., : self.out_dim], F.softplus(h[..., self.out_dim:]) + 1e-3).to_event(1)


class HVAE(GenerativeModel):
    """Markovian HVAE with L stochastic layers z_1 (next to x) ... z_L (top).

    Parameters
    ----------
    x_dim : int
        D.
    layers : int
        L.
    latent_dims : sequence of int
        Sizes of z_1..z_L (length L).
    hidden : sequence of int
        Hidden widths of every conditional's MLP.
    likelihood : {"bernoulli", "gaussian"}
        p(x | z_1): Bernoulli(logits) on [0, 1] data, or N(mean, x_scale^2).
    x_scale : float
    image_shape : sequence of int, optional
    """

    family = "hvae"
    records_step = True

    def __init__(self, x_dim: int, layers: int = HVAEConfig.layers, latent_dims: Sequence[int] = HVAEConfig.latent_dims,
                 hidden: Sequence[int] = HVAEConfig.hidden,
                 likelihood: Literal["bernoulli", "gaussian"] = HVAEConfig.likelihood,
                 x_scale: float = HVAEConfig.x_scale, image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("likelihood", likelihood, ("bernoulli", "gaussian"))
        layers, dims = check_layers(layers, latent_dims)
        latent_dims = dims
        if not x_scale > 0:
            raise InputError(f"x_scale must be > 0; got {x_scale}")
        self._store_config(locals())
        hidden = tuple(check_positive_int("each hidden width", h) for h in hidden)
        self.x_dim, self.layers, self.dims, self.likelihood, self.x_scale = x_dim, layers, dims, likelihood, x_scale
        self.image_shape = tuple(image_shape) if image_shape else None
        below = [x_dim] + dims[:-1]                         # the parent of z_l in the guide is z_{l-1} (z_0 = x)
        self.q_layers = nn.ModuleList(GaussianLayer(below[i], hidden, dims[i]) for i in range(layers))
        self.p_layers = nn.ModuleList(GaussianLayer(dims[i + 1], hidden, dims[i]) for i in range(layers - 1))
        self.decoder = MLP(dims[0], hidden[::-1], x_dim)

    def likelihood_dist(self, z1: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z_1), event shape (D,)."""
        out = self.decoder(z1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.x_scale).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(z_L) prod_{l=L}^{2} p_theta(z_{l-1} | z_l) p_theta(x | z_1); x of shape (N, D)."""
        top = self.dims[-1]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(f"z_{self.layers}", dist.Normal(x.new_zeros(x.shape[0], top), 1.0).to_event(1))
            for l in range(self.layers, 1, -1):
                z = pyro.sample(f"z_{l - 1}", self.p_layers[l - 2](z))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(z_1 | x) prod_{l=2}^{L} q_phi(z_l | z_{l-1}); x of shape (N, D)."""
        with pyro.plate("data", x.shape[0]):
            z = x
            for l in range(1, self.layers + 1):
                z = pyro.sample(f"z_{l}", self.q_layers[l - 1](z), infer={"analytic_kl": self.layers == 1})

    @property
    def latent_sites(self) -> tuple[str, ...]:
        return tuple(f"z_{l}" for l in range(1, self.layers + 1))

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of q(z_1 | x), the layer next to x: shape (N, d_1).  Latent tools work in z_1."""
        return self.q_layers[0](x).mean

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z_1], shape (N, D)."""
        return self.likelihood_dist(z).mean

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """Ancestral sampling z_L -> ... -> z_1 -> x; shape (n, D) (E[x | z_1] if ``mean``)."""
        like = next(self.parameters())
        z = torch.randn(n, self.dims[-1], device=like.device, dtype=like.dtype)
        for l in range(self.layers, 1, -1):
            z = self.p_layers[l - 2](z).sample()
        d = self.likelihood_dist(z)
        return d.mean if mean else d.sample()

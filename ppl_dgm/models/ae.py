"""The deterministic autoencoder as a model–guide pair (notes 000, "AE and VAE").

Same generative model as the VAE (z ~ N(0, I), x | z ~ p_theta(x | z)), but the
amortized guide is a point mass at the encoder's output:

.. math::  q_\\phi(z_n \\mid x_n) = \\delta(z_n - g_\\mu(x_n))

Trained by the same loop and objectives, the "ELBO" becomes
log p_theta(x | g_mu(x)) + log p(g_mu(x)) (log q = 0 for the point mass): a reconstruction
loss plus the weak penalty |z|^2 / 2.  Nothing asks the codes to *fill* the prior, which is the
notes' argument for why an AE's decoder fed z ~ p(z) generates poorly (measured in
``benchmarks/vae_variants.py``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from .vae import VAE


class AE(VAE):
    """Autoencoder: the VAE's model with a point-mass amortized guide q(z | x) = delta(z - g_mu(x)).

    Parameters are those of :class:`~ppl_dgm.models.vae.VAE`; only ``g_mu`` of the encoder is used.
    """

    family = "ae"
    records_step = True

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(z | x) = delta(z - g_mu(x)); x of shape (N, D), z of shape (N, K)."""
        loc, _ = self.encode(x, y)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(loc).to_event(1))

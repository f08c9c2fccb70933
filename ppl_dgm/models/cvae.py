"""The conditional VAE: encoder and decoder both see the label (notes 002, "conditional sampling").

For each example n with label y_n in {0, ..., C-1} and one-hot e(y_n):

.. math::  z_n \\sim \\mathcal N(0, I_K), \\qquad x_n \\mid z_n, y_n \\sim p_\\theta(x \\mid [z_n, e(y_n)]),
           \\qquad q_\\phi(z_n \\mid x_n, y_n) = \\mathcal N(g_\\mu([x_n, e(y_n)]), \\mathrm{diag}\\, g_\\sigma^2)

so the ELBO of notes 002 eq. (*) holds conditionally on y, and ``sample(n, y=3)``
decodes prior draws with the label fixed: conditional generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..errors import InputError
from ..nn import MLP
from .vae import VAE


class CVAE(VAE):
    """Conditional VAE with MLP encoder q(z | x, y) and decoder p(x | z, y).

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    n_classes : int
        C, the number of labels; y takes values 0 .. C-1.
    latent_dim, hidden, likelihood, x_scale, image_shape
        As for :class:`~ppl_dgm.models.vae.VAE` (the architecture is an MLP).
    conditional : bool
        Always True; stored in the config so runs pass labels to ``model`` / ``guide``.
    """

    family = "cvae"

    def __init__(self, x_dim: int, n_classes: int = 10, latent_dim: int = 16, hidden: Sequence[int] = (256,),
                 likelihood: str = "bernoulli", x_scale: float = 0.1, image_shape: Sequence[int] | None = None,
                 conditional: bool = True):
        super().__init__(x_dim, latent_dim, hidden, likelihood, "mlp", x_scale, image_shape)
        if not isinstance(n_classes, int) or n_classes < 2:
            raise InputError(f"n_classes must be an integer >= 2; got {n_classes!r}")
        if conditional is not True:
            raise InputError(f"a CVAE is conditional; got conditional={conditional!r}")
        self._store_config(locals())
        self.n_classes = n_classes
        hidden = tuple(int(h) for h in hidden)
        self.encoder = MLP(x_dim + n_classes, hidden, 2 * latent_dim)
        self.decoder = MLP(latent_dim + n_classes, hidden[::-1], x_dim)

    def one_hot(self, y, n: int | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
        """e(y), shape (N, C); ``y`` an int (repeated n times) or integer labels of shape (N,)."""
        like = like if like is not None else next(self.parameters())
        if y is None:
            raise InputError("a CVAE needs labels y (integers 0..C-1); got none")
        if isinstance(y, int):
            y = torch.full((n or 1,), y, dtype=torch.long, device=like.device)
        y = torch.as_tensor(y, device=like.device)
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise InputError(f"expected integer class labels; got non-integer values such as {y.flatten()[0]}")
        y = y.long().reshape(-1)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise InputError(f"expected labels in 0..{self.n_classes - 1}; got values in "
                             f"{int(y.min())}..{int(y.max())}")
        return F.one_hot(y, self.n_classes).to(like.dtype)

    # -- networks -------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """g_mu([x, e(y)]), g_sigma([x, e(y)]): each (N, K) for x of shape (N, D) and y of shape (N,)."""
        h = self.encoder(torch.cat([x, self.one_hot(y, x.shape[0], x)], -1))
        loc, raw = h[..., : self.latent_dim], h[..., self.latent_dim:]
        return loc, F.softplus(raw) + 1e-4

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """E[x | z, y], shape (N, D)."""
        return self._mean(self.decoder(torch.cat([z, self.one_hot(y, z.shape[0], z)], -1)))

    def likelihood_dist(self, z: torch.Tensor, y=None) -> dist.Distribution:
        """p_theta(x | z, y) with event shape (D,)."""
        return self._out_dist(self.decoder(torch.cat([z, self.one_hot(y, z.shape[0], z)], -1)))

    # -- the model-guide pair ---------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x, z | y) = p(z) p_theta(x | z, y); x (N, D), y (N,)."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0], x))
            pyro.sample("x", self.likelihood_dist(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(z | x, y) = N(g_mu, diag g_sigma^2); x (N, D), y (N,)."""
        loc, scale = self.encode(x, y)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- tools ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """E[x | z = g_mu(x, y), y], shape (N, D)."""
        return self.decode(self.encode(x, y)[0], y)

    @torch.no_grad()
    def sample(self, n: int, *, y=None, mean: bool = False) -> torch.Tensor:
        """n examples of shape (n, D) with label ``y`` (an int or (n,) labels; default 0,1,..,C-1,0,..)."""
        like = next(self.parameters())
        if y is None:
            y = torch.arange(n, device=like.device) % self.n_classes
        e = self.one_hot(y, n, like)
        if e.shape[0] != n:
            raise InputError(f"expected {n} labels (or one int); got {e.shape[0]}")
        z = self.prior(n, like).sample()
        out = self.decoder(torch.cat([z, e], -1))
        return self._mean(out) if mean else self._out_dist(out).sample()

"""NumPyro twin of the Markovian hierarchical VAE (course notes 002, "Markovian Hierarchical VAE").

.. math::  p(x, z_{1:L}) = p(z_L)\\, p_\\theta(x \\mid z_1) \\prod_{l=2}^{L} p_\\theta(z_{l-1} \\mid z_l), \\qquad
           q_\\phi(z_{1:L} \\mid x) = q_\\phi(z_1 \\mid x) \\prod_{l=2}^{L} q_\\phi(z_l \\mid z_{l-1})

as :mod:`ppl_dgm.models.hvae`: every conditional a diagonal Gaussian whose mean and scale (softplus + 1e-3) are an
MLP of its parent.  The guide runs bottom-up and the model top-down, so a layer's KL is not a mean-field term
(the model's parent z_{l+1} is drawn after z_l): with L > 1 the twin is trained on the Monte Carlo ELBO
(``Trace_ELBO``), as the Pyro family is.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpyro
import numpyro.distributions as dist

from ...models.checks import check_layers, check_vae_sizes
from ..nn import MLP
from .twin import Twin


class HVAE(Twin):
    """NumPyro twin of :class:`ppl_dgm.models.hvae.HVAE`.

    Parameters
    ----------
    x_dim, layers, latent_dims, hidden, likelihood, x_scale, image_shape
        As for the Pyro family (``latent_dims`` one size per layer, z_1 first).
    seed : int
        Seed of the initial weights.
    """

    family = "hvae"

    def __init__(self, x_dim: int, layers: int = 2, latent_dims: Sequence[int] = (16,), hidden: Sequence[int] = (256,),
                 likelihood: str = "bernoulli", x_scale: float = 0.1, image_shape: Sequence[int] | None = None, *,
                 seed: int = 0):
        layers, dims = check_layers(layers, latent_dims)
        x_dim, _, hidden = check_vae_sizes(x_dim, 1, hidden, x_scale)
        super().__init__(dict(x_dim=x_dim, layers=layers, latent_dims=dims, hidden=hidden, likelihood=likelihood,
                              x_scale=x_scale, image_shape=image_shape))
        self.x_dim, self.layers, self.dims, self.likelihood, self.x_scale = x_dim, layers, dims, likelihood, x_scale
        hidden = tuple(hidden)
        keys = iter(self.keys(seed, 2 * layers))
        below = [x_dim, *dims[:-1]]                     # the guide's parent of z_l is z_{l-1} (z_0 = x)
        for l in range(layers):
            self.nets[f"q_layers.{l}.net"] = MLP(below[l], hidden, 2 * dims[l], key=next(keys))
        for l in range(layers - 1):
            self.nets[f"p_layers.{l}.net"] = MLP(dims[l + 1], hidden, 2 * dims[l], key=next(keys))
        self.nets["decoder"] = MLP(dims[0], hidden[::-1], x_dim, key=next(keys))

    @property
    def latent_sites(self) -> tuple[str, ...]:
        return tuple(f"z_{l}" for l in range(1, self.layers + 1))

    @staticmethod
    def gaussian(net: MLP, parent: jax.Array) -> dist.Distribution:
        """parent (..., in) -> N(mu, diag sigma^2) over (..., out), sigma = softplus + 1e-3 (as GaussianLayer)."""
        h = net(parent)
        d = h.shape[-1] // 2
        return dist.Normal(h[..., :d], jax.nn.softplus(h[..., d:]) + 1e-3).to_event(1)

    def likelihood_dist(self, decoder: MLP, z1: jax.Array) -> dist.Distribution:
        """p_theta(x | z_1), event shape (D,)."""
        out = decoder(z1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)  # grey levels: cross-entropy
        return dist.Normal(out, self.x_scale).to_event(1)

    def model(self, x: jax.Array, y: jax.Array | None = None) -> None:
        """p(z_L) prod_{l=L}^{2} p_theta(z_{l-1} | z_l) p_theta(x | z_1); x of shape (N, D)."""
        p_nets = [self.net(f"p_layers.{l}.net") for l in range(self.layers - 1)]
        decoder = self.net("decoder")
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample(f"z_{self.layers}", dist.Normal(0.0, 1.0).expand([self.dims[-1]]).to_event(1))
            for l in range(self.layers, 1, -1):
                z = numpyro.sample(f"z_{l - 1}", self.gaussian(p_nets[l - 2], z))
            numpyro.sample("x", self.likelihood_dist(decoder, z), obs=x)

    def guide(self, x: jax.Array, y: jax.Array | None = None) -> None:
        """q_phi(z_1 | x) prod_{l=2}^{L} q_phi(z_l | z_{l-1}); x of shape (N, D)."""
        q_nets = [self.net(f"q_layers.{l}.net") for l in range(self.layers)]
        with numpyro.plate("data", x.shape[0]):
            z = x
            for l in range(1, self.layers + 1):
                z = numpyro.sample(f"z_{l}", self.gaussian(q_nets[l - 1], z))

    def sample(self, params, key: jax.Array, n: int, *, mean: bool = False, y=None):
        """Ancestral sampling z_L -> ... -> z_1 -> x with the weights ``params``: shape (n, D)."""
        nets = self.with_params(params)
        keys = jax.random.split(key, self.layers + 1)
        z = jax.random.normal(keys[0], (n, self.dims[-1]))
        for l in range(self.layers, 1, -1):
            z = self.gaussian(nets[f"p_layers.{l - 2}.net"], z).sample(keys[l - 1])
        d = self.likelihood_dist(nets["decoder"], z)
        return d.mean if mean else d.sample(keys[-1])

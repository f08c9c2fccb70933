"""NumPyro twins of the VAE and the conditional VAE (course notes 002 §VAE, "conditional sampling").

The same program as :mod:`ppl_dgm.models.vae`, for each example n in the plate ``"data"``:

.. math::  z_n \\sim \\mathcal N(0, I_K), \\qquad x_n \\mid z_n \\sim p_\\theta(x \\mid z_n), \\qquad
           q_\\phi(z_n \\mid x_n) = \\mathcal N(g_\\mu(x_n), \\mathrm{diag}\\, g_\\sigma(x_n)^2)

trained on the ELBO of notes 002 eq. (*), E_q[log p(x|z)] - KL(q(z|x) || p(z)).  The CVAE's networks read
[x, e(y)] and [z, e(y)] (e the one-hot label).  Networks are equinox MLPs registered through
``numpyro.contrib.module.eqx_module`` under the torch module names (``encoder``, ``decoder``), so a run fitted by
either backend loads into the other (:class:`~ppl_dgm.numpyro.models.twin.Twin`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ...errors import InputError
from ...models.checks import check_n_classes, check_vae_sizes
from ..nn import MLP
from .twin import Twin

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


class VAE(Twin):
    """NumPyro twin of :class:`ppl_dgm.models.vae.VAE` (MLP encoder and decoder).

    Parameters
    ----------
    x_dim, latent_dim, hidden, likelihood, x_scale, image_shape
        As for the Pyro family (``likelihood`` one of bernoulli, gaussian, gaussian-learned: NumPyro has no
        continuous Bernoulli).
    arch : {"mlp"}
        The twin's networks are MLPs.
    seed : int
        Seed of the initial weights.
    """

    family = "vae"

    def __init__(self, x_dim: int, latent_dim: int = 8, hidden: Sequence[int] = (256,),
                 likelihood: str = "bernoulli", arch: str = "mlp", x_scale: float = 0.1,
                 image_shape: Sequence[int] | None = None, *, seed: int = 0):
        if likelihood not in LIKELIHOODS:
            raise InputError(f"--backend numpyro: expected likelihood one of {', '.join(LIKELIHOODS)}; got "
                             f"{likelihood!r}")
        if arch != "mlp":
            raise InputError(f"--backend numpyro: the twin's encoder and decoder are MLPs; expected arch 'mlp'; "
                             f"got {arch!r}")
        x_dim, latent_dim, hidden = check_vae_sizes(x_dim, latent_dim, hidden, x_scale)
        super().__init__(dict(x_dim=x_dim, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, arch=arch,
                              x_scale=x_scale, image_shape=image_shape))
        self.x_dim, self.latent_dim, self.likelihood, self.x_scale = x_dim, latent_dim, likelihood, x_scale
        self._build(tuple(hidden), x_dim, latent_dim, seed)
        if likelihood == "gaussian-learned":
            self.extra["x_log_scale"] = jnp.full((x_dim,), math.log(x_scale), dtype=jnp.float32)

    def _build(self, hidden: tuple[int, ...], x_in: int, z_in: int, seed: int) -> None:
        k_enc, k_dec = self.keys(seed, 2)
        self.nets = {"encoder": MLP(x_in, hidden, 2 * self.latent_dim, key=k_enc),
                     "decoder": MLP(z_in, hidden[::-1], self.x_dim, key=k_dec)}

    # -- networks -------------------------------------------------------------------
    def _net_input(self, t: jax.Array, y: jax.Array | None) -> jax.Array:
        """What the encoder (t = x) or decoder (t = z) reads; the CVAE appends e(y)."""
        return t

    def encode(self, encoder: MLP, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """g_mu(x), g_sigma(x), each (N, K): softplus + 1e-4 on the scale, as the Pyro family."""
        h = encoder(self._net_input(x, y))
        return h[..., : self.latent_dim], jax.nn.softplus(h[..., self.latent_dim:]) + 1e-4

    def likelihood_dist(self, decoder: MLP, z: jax.Array, y: jax.Array | None = None) -> dist.Distribution:
        """p_theta(x | z), event shape (D,)."""
        out = decoder(self._net_input(z, y))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)  # grey levels: cross-entropy
        scale = jnp.exp(numpyro.param("x_log_scale", self.extra["x_log_scale"])) if "x_log_scale" in self.extra \
            else self.x_scale
        return dist.Normal(out, scale).to_event(1)

    # -- the model-guide pair ---------------------------------------------------------
    def model(self, x: jax.Array, y: jax.Array | None = None) -> None:
        """p(x, z) = p(z) p_theta(x | z); x of shape (N, D)."""
        decoder = self.net("decoder")
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([self.latent_dim]).to_event(1))
            numpyro.sample("x", self.likelihood_dist(decoder, z, y), obs=x)

    def guide(self, x: jax.Array, y: jax.Array | None = None) -> None:
        """q_phi(z | x) = N(g_mu(x), diag g_sigma(x)^2); x of shape (N, D)."""
        loc, scale = self.encode(self.net("encoder"), x, y)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def sample(self, params, key: jax.Array, n: int, *, y: jax.Array | None = None, mean: bool = False):
        """n examples (n, D): z ~ p(z), then x ~ p(x | z) (E[x | z] if ``mean``) with the weights ``params``."""
        k_z, k_x = jax.random.split(key)
        z = jax.random.normal(k_z, (n, self.latent_dim))
        with numpyro.handlers.substitute(data=params):
            d = self.likelihood_dist(self.with_params(params)["decoder"], z, y)
        return d.mean if mean else d.sample(k_x)


class CVAE(VAE):
    """NumPyro twin of :class:`ppl_dgm.models.cvae.CVAE`: encoder q(z | x, y) and decoder p(x | z, y), MLPs.

    Parameters
    ----------
    x_dim, n_classes, latent_dim, hidden, likelihood, x_scale, image_shape, arch, seed
        As for the Pyro family and :class:`VAE`.
    """

    family = "cvae"
    conditional = True

    def __init__(self, x_dim: int, n_classes: int = 10, latent_dim: int = 8, hidden: Sequence[int] = (256,),
                 likelihood: str = "bernoulli", x_scale: float = 0.1, image_shape: Sequence[int] | None = None,
                 arch: str = "mlp", *, seed: int = 0):
        self.n_classes = check_n_classes(n_classes)
        super().__init__(x_dim, latent_dim, hidden, likelihood, arch, x_scale, image_shape, seed=seed)
        self.config["n_classes"] = self.n_classes

    def _build(self, hidden: tuple[int, ...], x_in: int, z_in: int, seed: int) -> None:
        super()._build(hidden, x_in + self.n_classes, z_in + self.n_classes, seed)

    def _net_input(self, t: jax.Array, y: jax.Array | None) -> jax.Array:
        """[t, e(y)], y integer labels of shape (N,)."""
        if y is None:
            raise InputError("a CVAE needs labels y (integers 0..C-1); got none")
        e = jax.nn.one_hot(jnp.broadcast_to(y, t.shape[:-1]), self.n_classes, dtype=t.dtype)
        return jnp.concatenate([t, e], -1)

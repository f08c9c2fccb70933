"""ArviZ from NumPyro SVI: posterior draws of a NumPyro twin's per-example latents, laid out as the Pyro export.

:func:`svi_to_inference_data` draws S times from the twin's guide q(z | x) at the fitted parameters
(``numpyro.infer.Predictive(guide, params=...)``) and hands the draws to
:func:`~ppl_dgm.export.arviz.numpyro_to_inference_data`, which replays the model on each draw: the groups and dim
names are those of :func:`~ppl_dgm.export.to_inference_data` on the Pyro family (``posterior["z"]`` with dims
(chain, draw, obs, z_dim), ``log_likelihood["x"]`` (chain, draw, obs), ``posterior_predictive``,
``observed_data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .arviz import numpyro_to_inference_data


def svi_to_inference_data(twin, params: dict[str, Any], x, y=None, *, num_samples: int = 100, seed: int = 0,
                          sites: Sequence[str] | None = None, config: dict | None = None,
                          posterior_predictive: bool = True, log_likelihood: bool = True):
    """Posterior draws of a NumPyro twin fitted by SVI as ``arviz.InferenceData``.

    Parameters
    ----------
    twin : a NumPyro twin (:mod:`ppl_dgm.numpyro.models`), e.g. from :func:`ppl_dgm.runs.load_twin`
    params : dict
        Its fitted parameters (``SVI.get_params(state)``, or ``twin.params_from_torch(state_dict)``).
    x : array (N, D); y : int array (N,) for a conditional twin
    num_samples : int
        S, draws of the latents from q(z | x).
    seed : int
        Seed of the draws and of the posterior-predictive samples.

    Returns
    -------
    arviz.InferenceData
        ``posterior[site]`` of shape (1, S, N, d), dims (chain, draw, obs, <site>_dim); as the Pyro export.
    """
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.infer import Predictive

    x = jnp.asarray(x, dtype=jnp.float32)
    y = None if y is None else jnp.asarray(y, dtype=jnp.int32)
    key_q, key_p = jax.random.split(jax.random.PRNGKey(seed))
    draws = Predictive(twin.guide, params=params, num_samples=num_samples)(key_q, x, y)
    draws = {k: v for k, v in draws.items() if k in twin.latent_sites}
    model = handlers.substitute(twin.model, data=params)
    return numpyro_to_inference_data(model, x, y, samples=draws, sites=sites, config=config,
                                     posterior_predictive=posterior_predictive, log_likelihood=log_likelihood,
                                     seed=int(jax.random.randint(key_p, (), 0, 2**31 - 1)))

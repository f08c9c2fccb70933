"""NumPyro twins of the Gaussian mixture: the EM model and a Bayesian GMM sampled by NUTS.

``model(x, weights, means, scale_tril)`` mirrors :meth:`ppl_dgm.models.gmm.GMM.model`
(plate ``"data"``, enumerated site ``"c"``, observed ``"x"``).

``bayesian_model(x, n_components)`` puts priors on the globals::

    pi ~ Dirichlet(alpha 1_K)
    mu_k ~ N(m_0, s_0^2 I)                   (m_0, s_0: data mean and scale)
    L_k = diag(tau_k) L~_k,  tau_k ~ HalfNormal(s_0),  L~_k ~ LKJCholesky(D, 2)
    c_n ~ Categorical(pi)                    enumerated out by NUTS (funsor)
    x_n ~ N(mu_{c_n}, L_{c_n} L_{c_n}^T)

:func:`fit_bayesian_gmm` runs NUTS and returns ArviZ ``InferenceData``.  ``az.from_numpyro``
fails on an enumerated model while building the ``log_likelihood`` group (it
tries to sample ``c``), so that group is built here from the marginal
``log p(x_n | pi, mu, Sigma) = logsumexp_k [log pi_k + log N(x_n | mu_k, Sigma_k)]``.
JAX is imported only when these functions run.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def model(x, weights, means, scale_tril):
    """GMM with fixed parameters; ``x`` (N, D), ``scale_tril`` (K, D, D)."""
    import numpyro
    import numpyro.distributions as ndist

    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", ndist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("x", ndist.MultivariateNormal(means[c], scale_tril=scale_tril[c]), obs=x)


def bayesian_model(x, n_components: int, alpha: float = 1.0):
    """Bayesian GMM (module docstring); ``x`` (N, D)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist

    n, d = x.shape
    m0, s0 = jnp.mean(x, 0), jnp.std(x) + 1e-6
    weights = numpyro.sample("weights", ndist.Dirichlet(jnp.full(n_components, alpha)))
    with numpyro.plate("components", n_components):
        means = numpyro.sample("means", ndist.Normal(m0, 2 * s0).to_event(1))
        scales = numpyro.sample("scales", ndist.HalfNormal(s0 * jnp.ones(d)).to_event(1))
        corr = numpyro.sample("corr_cholesky", ndist.LKJCholesky(d, 2.0))
    scale_tril = scales[..., :, None] * corr
    numpyro.deterministic("scale_tril", scale_tril)
    with numpyro.plate("data", n):
        c = numpyro.sample("c", ndist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("x", ndist.MultivariateNormal(means[c], scale_tril=scale_tril[c]), obs=x)


def marginal_log_likelihood(x, weights, means, scale_tril):
    """``log p(x_n)`` with ``c`` summed out; draws in leading dims -> (..., N)."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as ndist

    comp = ndist.MultivariateNormal(means[..., None, :, :], scale_tril=scale_tril[..., None, :, :, :])
    lp = comp.log_prob(x[:, None, :]) + jnp.log(weights)[..., None, :]  # (..., N, K)
    return jax.scipy.special.logsumexp(lp, axis=-1)


def fit_bayesian_gmm(x: Any, n_components: int, *, num_warmup: int = 300,
                     num_samples: int = 300, num_chains: int = 1, seed: int = 0,
                     progress_bar: bool = False):
    """NUTS on :func:`bayesian_model` with ``c`` enumerated out; returns ``arviz.InferenceData``.

    Parameters
    ----------
    x : array, shape (N, D)
    n_components : int

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (weights, means, scales, corr_cholesky with named dims),
        ``log_likelihood`` (``x``: chain x draw x obs, from the marginal),
        ``observed_data`` and ``sample_stats`` (diverging, energy...).
    """
    import arviz as az
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    jax.config.update("jax_enable_x64", True)
    xj = jnp.asarray(np.asarray(x, dtype=np.float64))
    mcmc = MCMC(NUTS(bayesian_model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, progress_bar=progress_bar)
    mcmc.run(jax.random.PRNGKey(seed), xj, n_components)
    post = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    loglik = np.asarray(marginal_log_likelihood(xj, post["weights"], post["means"],
                                                post["scale_tril"]))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {k: np.asarray(v) for k, v in extra.items() if k in ("diverging", "energy")}
    dims = {"weights": ["component"], "means": ["component", "feature"],
            "scales": ["component", "feature"],
            "corr_cholesky": ["component", "feature", "feature_"],
            "scale_tril": ["component", "feature", "feature_"], "x": ["obs", "feature"]}
    return az.from_dict(
        posterior=post,
        log_likelihood={"x": loglik},
        observed_data={"x": np.asarray(xj)},
        sample_stats=stats,
        dims={**dims, "x": ["obs"]},
        coords={"component": np.arange(n_components)},
    )

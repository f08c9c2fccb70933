"""NumPyro twins of the Gaussian mixture: the enumerated model, MAP by ``TraceEnum_ELBO``, NUTS.

The generative program (course notes, EM section), site names as the Pyro
:class:`ppl_dgm.models.gmm.GMM` (plate ``"data"``, assignment ``"c"``, observed ``"x"``)::

    c_n ~ Categorical(pi)                    enumerated: infer={"enumerate": "parallel"}
    x_n | c_n = k ~ N(mu_k, L_k L_k^T)

* :func:`model` has given parameters.  ``TraceEnum_ELBO`` with an empty guide sums ``c``
  out exactly, so its loss is ``-sum_n log p(x_n)``, the marginal log-likelihood
  ``log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, Sigma_k)]``
  (:func:`marginal_log_likelihood`).
* :func:`map_model` / :func:`map_guide`: point estimates.  The guide has point masses
  (``Delta``) on ``pi ~ Dirichlet(1_K)`` and ``mu_k ~ N(m_0, s_0^2 I)`` and nothing for
  ``c``; the Cholesky factors ``L_k`` are a ``numpyro.param``.  ``TraceEnum_ELBO`` is
  then ``log p(x | pi, mu, L) + log p(pi) + log p(mu)``, and :func:`fit_gmm_map_svi`
  climbs it with Adam, the whole loop one ``jit`` call (the twin of
  :func:`ppl_dgm.models.gmm_svi.fit_gmm_map_svi`).
* :func:`infer_assignments`: ``infer_discrete`` on :func:`model`, the MAP ``c_n``
  (``temperature=0``: the argmax responsibility) or a draw from ``p(c_n | x_n)``.
* :func:`bayesian_model` puts priors on the globals and :func:`fit_bayesian_gmm`
  samples them by NUTS with ``c`` enumerated out::

      pi ~ Dirichlet(alpha 1_K),  mu_k ~ N(m_0, (2 s_0)^2 I)
      L_k = diag(tau_k) L~_k,  tau_k ~ HalfNormal(s_0),  L~_k ~ LKJCholesky(D, 2)

JAX is imported only when these functions run; float64 data switch on
``jax_enable_x64`` (a process-wide JAX flag).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from ...data import check_array
from ...errors import InputError, check_choice, check_number, check_positive_int


def _as_jax(x: Any):
    """``x`` (N, D), checked (finite real numbers; one-line :class:`InputError` otherwise), as a JAX array:
    float32 stays float32, anything else becomes float64 (x64 on)."""
    import jax

    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):  # ragged nested lists and the like
        raise InputError(f"x: expected an array of shape (N, D); got a {type(x).__name__} that is not one") from None
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InputError(f"x: expected an array of shape (N, D) with D >= 1; got shape {arr.shape}")
    arr = check_array(arr, "x")
    if arr.dtype != np.float32:
        jax.config.update("jax_enable_x64", True)
        arr = arr.astype(np.float64)
    import jax.numpy as jnp

    return jnp.asarray(arr)


def _mixture(xj, weights, means, scale_tril) -> tuple:
    """The parameters ``weights`` (K,), ``means`` (K, D), ``scale_tril`` (K, D, D) for data ``xj`` (N, D),
    checked (shapes, finite values) and in its dtype."""
    import jax.numpy as jnp

    d = xj.shape[1]
    try:
        w, m, t = (np.asarray(a, dtype=np.float64) for a in (weights, means, scale_tril))
    except (TypeError, ValueError):
        raise InputError("expected mixture parameters as numeric arrays (weights, means, scale_tril)") from None
    k = w.shape[0] if w.ndim == 1 else 0
    if not k or m.shape != (k, d) or t.shape != (k, d, d):
        raise InputError(f"expected weights (K,), means (K, {d}) and scale_tril (K, {d}, {d}) with K >= 1; got shapes "
                         f"{w.shape}, {m.shape}, {t.shape}")
    if not all(np.isfinite(a).all() for a in (w, m, t)):
        raise InputError("expected finite mixture parameters; got NaN or inf")
    return tuple(jnp.asarray(a, xj.dtype) for a in (w, m, t))


def model(x, weights, means, scale_tril):
    """GMM with given parameters: ``x`` (N, D), ``weights`` (K,), ``means`` (K, D), ``scale_tril`` (K, D, D)."""
    import numpyro
    import numpyro.distributions as ndist

    with numpyro.plate("data", x.shape[0]):
        c = numpyro.sample("c", ndist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("x", ndist.MultivariateNormal(means[c], scale_tril=scale_tril[c]), obs=x)


def empty_guide(*args, **kwargs) -> None:
    """No latent site: ``c`` is summed out of the model by ``TraceEnum_ELBO``."""


def map_model(x, n_components: int, prior_loc, prior_scale):
    """Weak priors on ``pi`` and ``mu``, ``L`` a parameter, ``c`` enumerated; ``x`` (N, D)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.distributions import constraints

    n, d = x.shape
    weights = numpyro.sample("weights", ndist.Dirichlet(jnp.ones(n_components, x.dtype)))
    means = numpyro.sample("means", ndist.Normal(prior_loc, prior_scale).expand((n_components, d)).to_event(2))
    eye = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), (n_components, d, d))
    scale_tril = numpyro.param("scale_tril", eye, constraint=constraints.lower_cholesky)
    with numpyro.plate("data", n):
        if n_components == 1:  # nothing to enumerate (funsor drops a size-1 enumeration dim)
            numpyro.sample("x", ndist.MultivariateNormal(means[0], scale_tril=scale_tril[0]), obs=x)
            return
        c = numpyro.sample("c", ndist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("x", ndist.MultivariateNormal(means[c], scale_tril=scale_tril[c]), obs=x)


def map_guide(x, n_components: int, prior_loc, prior_scale):
    """Point masses on ``pi`` and ``mu`` (MAP); no site for ``c``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.distributions import constraints

    d = x.shape[1]
    weights = numpyro.param("weights_map", jnp.full(n_components, 1.0 / n_components, x.dtype),
                            constraint=constraints.simplex)
    numpyro.sample("weights", ndist.Delta(weights, event_dim=1))
    means = numpyro.param("means_map", jnp.zeros((n_components, d), x.dtype))
    numpyro.sample("means", ndist.Delta(means, event_dim=2))


class MixtureFit(NamedTuple):
    """What :func:`fit_gmm_map_svi` returns (JAX arrays).

    Attributes
    ----------
    weights : array, shape (K,)
    means : array, shape (K, D)
    scale_tril : array, shape (K, D, D)
        Cholesky factors of the covariances.
    losses : ndarray, shape (steps,)
        ``-(log p(x | theta) + log p(pi) + log p(mu)) / N`` before each Adam step.
    """

    weights: Any
    means: Any
    scale_tril: Any
    losses: np.ndarray


@functools.lru_cache(maxsize=16)
def _compiled_fit(n_components: int, steps: int, lr: float):
    """One jit-compiled SVI run (``lax.scan`` over the Adam steps), cached per shape of problem."""
    import jax
    import numpyro
    from numpyro.infer import SVI, TraceEnum_ELBO

    svi = SVI(map_model, map_guide, numpyro.optim.Adam(lr), TraceEnum_ELBO(max_plate_nesting=1))

    @jax.jit
    def run(x, prior_loc, prior_scale, init):
        res = svi.run(jax.random.PRNGKey(0), steps, x, n_components, prior_loc, prior_scale,
                      progress_bar=False, init_params=init)
        return res.params, res.losses

    return run


def fit_gmm_map_svi(x: Any, init: tuple, *, steps: int = 300, lr: float = 0.05) -> MixtureFit:
    """MAP of a full-covariance GMM by NumPyro SVI, ``c`` summed out by ``TraceEnum_ELBO``.

    Parameters
    ----------
    x : array, shape (N, D)
        float32 runs in float32, anything else in float64.
    init : tuple of arrays
        ``(weights (K,), means (K, D), scale_tril (K, D, D))``, the starting point.
    steps, lr : int, float
        Adam steps on the full data and the learning rate.

    Returns
    -------
    MixtureFit

    Notes
    -----
    Deterministic: ``c`` is summed out exactly and the guide is a point mass, so no
    random draw is made; the same ``init`` gives the same numbers.  The priors are
    the Pyro twin's: ``pi ~ Dirichlet(1)`` (flat), ``mu_k ~ N(mean(x), (10 std(x))^2 I)``.
    """
    steps, lr = check_positive_int("steps", steps), check_number("lr", lr, min=0, min_open=True)
    xj = _as_jax(x)
    if not isinstance(init, (tuple, list)) or len(init) != 3:
        raise InputError(f"init: expected (weights, means, scale_tril); got {type(init).__name__}")
    w, m, tril = _mixture(xj, *init)
    run = _compiled_fit(int(w.shape[0]), steps, lr)
    params, losses = run(xj, xj.mean(0), 10.0 * xj.std(ddof=1),
                         {"weights_map": w, "means_map": m, "scale_tril": tril})
    return MixtureFit(params["weights_map"], params["means_map"], params["scale_tril"],
                      np.asarray(losses) / xj.shape[0])


def infer_assignments(x: Any, weights, means, scale_tril, *, temperature: int = 0, seed: int = 0) -> np.ndarray:
    """Assignments ``c_n`` by ``infer_discrete`` on :func:`model`, shape (N,).

    ``temperature=0`` gives the MAP ``argmax_k gamma(z_nk)`` (the E-step's argmax);
    ``temperature=1`` draws ``c_n ~ p(c_n | x_n)`` with the key ``PRNGKey(seed)``.
    """
    import jax
    from numpyro import handlers
    from numpyro.contrib.funsor import infer_discrete

    check_choice("temperature", temperature, (0, 1))
    seed = check_number("seed", seed, integer=True, min=0)
    xj = _as_jax(x)
    args = [xj, *_mixture(xj, weights, means, scale_tril)]
    if args[1].shape[0] == 1:
        return np.zeros(xj.shape[0], dtype=np.int32)
    fn = infer_discrete(model, first_available_dim=-2, temperature=temperature,
                        rng_key=jax.random.PRNGKey(seed))
    return np.asarray(handlers.trace(fn).get_trace(*args)["c"]["value"])


def marginal_log_likelihood(x, weights, means, scale_tril):
    """``log p(x_n)`` with ``c`` summed out; draws in leading dims -> (..., N)."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as ndist

    comp = ndist.MultivariateNormal(means[..., None, :, :], scale_tril=scale_tril[..., None, :, :, :])
    lp = comp.log_prob(x[:, None, :]) + jnp.log(weights)[..., None, :]  # (..., N, K)
    return jax.scipy.special.logsumexp(lp, axis=-1)


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


def fit_bayesian_gmm(x: Any, n_components: int, *, num_warmup: int = 300,
                     num_samples: int = 300, num_chains: int = 1, seed: int = 0,
                     progress_bar: bool = False):
    """NUTS on :func:`bayesian_model` with ``c`` enumerated out; returns ``arviz.InferenceData``.

    ``az.from_numpyro`` fails on an enumerated model while building the
    ``log_likelihood`` group (it tries to sample ``c``), so that group is built
    here from :func:`marginal_log_likelihood` (``c`` summed out), as
    :func:`ppl_dgm.export.arviz.numpyro_to_inference_data` does for any model
    with enumerated sites.

    Parameters
    ----------
    x : array, shape (N, D)
    n_components : int

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (weights, means, scales, corr_cholesky, scale_tril with dims
        ``component``, ``feature``), ``log_likelihood`` (``x``: chain x draw x obs,
        the marginal), ``observed_data`` and ``sample_stats`` (diverging, energy).
        Label switching: components may swap between chains.
    """
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS

    n_components = check_positive_int("n_components", n_components)
    num_warmup = check_number("num_warmup", num_warmup, integer=True, min=0)
    num_samples = check_positive_int("num_samples", num_samples)
    num_chains = check_positive_int("num_chains", num_chains)
    seed = check_number("seed", seed, integer=True, min=0)
    xj = _as_jax(x)
    if xj.dtype != np.float64:  # NUTS in float64 (x64 on)
        xj = _as_jax(np.asarray(xj, dtype=np.float64))
    mcmc = MCMC(NUTS(bayesian_model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains, progress_bar=progress_bar, chain_method="sequential")
    mcmc.run(jax.random.PRNGKey(seed), xj, n_components)
    post = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    loglik = np.asarray(marginal_log_likelihood(xj, post["weights"], post["means"],
                                                post["scale_tril"]))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {k: np.asarray(v) for k, v in extra.items() if k in ("diverging", "energy")}
    dims = {"weights": ["component"], "means": ["component", "feature"],
            "scales": ["component", "feature"],
            "corr_cholesky": ["component", "feature", "feature_"],
            "scale_tril": ["component", "feature", "feature_"], "x": ["obs"]}
    return az.from_dict(
        posterior=post,
        log_likelihood={"x": loglik},
        observed_data={"x": np.asarray(xj)},
        sample_stats=stats,
        dims=dims,
        coords={"component": np.arange(n_components)},
    )

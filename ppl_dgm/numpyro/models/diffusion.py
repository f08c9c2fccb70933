"""NumPyro/JAX twin of :class:`ppl_dgm.models.diffusion.DDPM` for vector data (the MLP epsilon-network).

The same chain (Ho et al. 2020; notes 002 §6 and 004): model p(x_T) prod p_theta(x_{t-1} | x_t) with
mu_theta from eq. 11, guide q(x_T | x_0) and q(x_{t-1} | x_t, x_0) (notes 004, beta-tilde_t and
mu-tilde_t), steps subsampled by ``numpyro.plate("t", T, subsample_size=k)``; and :func:`chain_elbo`, the
full-chain ELBO with analytic KLs.  Weights come from a fitted torch model with :func:`params_from_torch`,
so both implementations can be compared on the same network.  JAX is imported only when these run.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def schedule_tables(model) -> dict[str, np.ndarray]:
    """The float64 tables of a torch :class:`~ppl_dgm.models.schedule.NoiseSchedule` (index t = 0..T), plus sigma^2."""
    s = model.schedule
    names = ("betas", "alphas", "alpha_bars", "beta_tildes", "post_coef_x0", "post_coef_xt")
    out = {n: getattr(s, n).cpu().numpy().astype(np.float64) for n in names}
    var = out["betas"].copy()
    if model.variance == "beta_tilde":
        var[2:] = out["beta_tildes"][2:]
    out["sigma2"] = var
    return out


def params_from_torch(model) -> dict[str, Any]:
    """The EpsMLP weights of a torch DDPM as a dict of NumPy arrays (kernel = weight.T)."""
    if model.arch != "mlp":
        raise ValueError(f"the NumPyro twin covers the MLP network (vector data); got arch {model.arch!r}")
    if model.config.get("coord_freqs"):
        raise ValueError(f"the NumPyro twin has no coordinate features yet; expected coord_freqs 0; got "
                         f"{model.config['coord_freqs']}")
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in model.net.state_dict().items()}


def _linear(p, name, h):
    return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def eps_mlp(params, x, t, n_blocks: int):
    """eps_theta(x_t, t): the same computation as :class:`ppl_dgm.nn.EpsMLP`; x (..., D), t broadcastable."""
    import jax
    import jax.numpy as jnp

    t_dim = params["temb.mlp.0.weight"].shape[1]
    half = t_dim // 2
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
    args = jnp.asarray(t, dtype=x.dtype)[..., None] * freqs
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], -1)
    e = _linear(params, "temb.mlp.2", jax.nn.silu(_linear(params, "temb.mlp.0", emb)))
    h = _linear(params, "inp", x)
    for i in range(n_blocks):
        u = h + _linear(params, f"tproj.{i}", e)
        h = h + _linear(params, f"blocks.{i}.1", jax.nn.silu(u))
    return _linear(params, "out.1", jax.nn.silu(h))


def _n_blocks(params) -> int:
    return len({k.split(".")[1] for k in params if k.startswith("blocks.")})


def p_mean(tab, params, x_t, t, eps=None):
    """mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) (eq. 11); t of shape (..., 1)."""
    import jax.numpy as jnp

    eps = eps_mlp(params, x_t, t[..., 0], _n_blocks(params)) if eps is None else eps
    b, a, ab = (jnp.asarray(tab[k])[t] for k in ("betas", "alphas", "alpha_bars"))
    return (x_t - b / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(a)


def model(x0, tab, params, t_per_step: int):
    """p(x_T) and, for k subsampled steps, p_theta(x_{t-1} | x_t) (t >= 2) or p_theta(x_0 | x_1) (t = 1)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    T = len(tab["betas"]) - 1
    sig = jnp.sqrt(jnp.asarray(tab["sigma2"]))
    with numpyro.plate("data", x0.shape[0], dim=-1):
        numpyro.sample(f"x_{T}", nd.Normal(jnp.zeros_like(x0), 1.0).to_event(1))
        with numpyro.plate("t", T, subsample_size=t_per_step, dim=-2) as idx:
            t = (idx + 1)[:, None]
            with numpyro.handlers.mask(mask=False):  # same law as in the guide: log-ratio 0, not computed
                x_t = numpyro.sample("x_t", _q_t(x0, tab, t))
            mean = p_mean(tab, params, x_t, t[..., None])
            with numpyro.handlers.mask(mask=t > 1):
                numpyro.sample("x_{t-1}", nd.Normal(mean, sig[t][..., None]).to_event(1))
            with numpyro.handlers.mask(mask=t == 1):
                numpyro.sample("x", nd.Normal(mean, sig[1]).to_event(1), obs=x0)


def _q_t(x0, tab, t):
    import jax.numpy as jnp
    import numpyro.distributions as nd

    ab = jnp.asarray(tab["alpha_bars"])[t][..., None]
    return nd.Normal(jnp.sqrt(ab) * x0, jnp.broadcast_to(jnp.sqrt(1 - ab), (ab * x0).shape)).to_event(1)


def guide(x0, tab, params, t_per_step: int):
    """q(x_T | x_0) and, for the same k steps, x_t ~ q(x_t | x_0), x_{t-1} ~ q(x_{t-1} | x_t, x_0)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    T = len(tab["betas"]) - 1
    with numpyro.plate("data", x0.shape[0], dim=-1):
        numpyro.sample(f"x_{T}", _q_t(x0, tab, jnp.array(T)))
        with numpyro.plate("t", T, subsample_size=t_per_step, dim=-2) as idx:
            t = (idx + 1)[:, None]
            with numpyro.handlers.mask(mask=False):
                x_t = numpyro.sample("x_t", _q_t(x0, tab, t))
            c0, ct = (jnp.asarray(tab[k])[t][..., None] for k in ("post_coef_x0", "post_coef_xt"))
            var = jnp.where(t > 1, jnp.asarray(tab["beta_tildes"])[t], jnp.asarray(tab["betas"])[1])[..., None]
            with numpyro.handlers.mask(mask=t > 1):
                numpyro.sample("x_{t-1}", nd.Normal(ct * x_t + c0 * x0, jnp.sqrt(var) * jnp.ones_like(x_t)).to_event(1))


def chain_elbo(x0, tab, params, noise):
    """Full-chain ELBO per example (nats), analytic KLs; ``noise`` (T, N, D) gives x_t (row t - 1 for step t).

    Returns (elbo, L_T, L) with L of shape (T,): L[0] = L_0 (decoder), L[t - 1] = L_{t-1}.
    """
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x0, noise = jnp.asarray(x0, dtype=jnp.float64), jnp.asarray(noise, dtype=jnp.float64)
    T = noise.shape[0]
    ab = jnp.asarray(tab["alpha_bars"])
    L_T = 0.5 * jnp.mean(jnp.sum(ab[T] * x0**2 + (1 - ab[T]) - 1 - jnp.log(1 - ab[T]), -1))
    t = jnp.arange(1, T + 1)[:, None, None]
    x_t = jnp.sqrt(ab[t]) * x0 + jnp.sqrt(1 - ab[t]) * noise
    mean_p = p_mean(tab, params, x_t, t)
    mean_q = jnp.asarray(tab["post_coef_xt"])[t] * x_t + jnp.asarray(tab["post_coef_x0"])[t] * x0
    s2, bt = jnp.asarray(tab["sigma2"])[t], jnp.asarray(tab["beta_tildes"])[t]
    kl = 0.5 * jnp.sum((mean_q - mean_p) ** 2 / s2 + bt / s2 - 1 - jnp.log(jnp.maximum(bt, 1e-300) / s2), -1)
    nll0 = 0.5 * jnp.sum((x0 - mean_p[0]) ** 2 / s2[0] + jnp.log(2 * jnp.pi * s2[0]), -1)
    L = jnp.concatenate([jnp.mean(nll0)[None], jnp.mean(kl[1:], -1)])
    return -(L_T + jnp.sum(L)), L_T, L

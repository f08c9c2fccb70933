"""SVI for the NumPyro twins: NumPyro's ``SVI`` under ``jax.jit``, with the objectives of the Pyro side by name.

The objective names are those of :func:`ppl_dgm.inference.make_objective` (notes 002 eq. (*); notes 000
"Beta-VAE"): ``analytic`` (``TraceMeanField_ELBO``: KL(q || p) in closed form), ``elbo`` (``Trace_ELBO``), ``iwae``
(``RenyiELBO(alpha=0)``, the bound of Burda et al. with k = ``particles``, per example in the ``"data"`` plate).
beta and KL warm-up are the effect handler :class:`SiteScale` on the latent sites of model *and* guide, so every
estimator sees beta (log p(z) - log q(z | x)) = -beta KL, with the weight min(1, epoch / N) beta of each 0-based
epoch (:class:`ppl_dgm.inference.KLWarmup`) passed into the compiled step as an argument (no recompilation).
:func:`fit` is the loop: minibatches in the order of (seed, epoch), dynamic binarization inside the compiled step,
the loss summed on the device and read once per epoch, held-out ELBO terms per epoch (:func:`elbo_terms`),
checkpoints (:mod:`.checkpoint`) and an exact resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.distributions import kl_divergence
from numpyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from numpyro.primitives import Messenger

from ...data import check_array, check_label_range, check_labels
from ...errors import InputError, NonFiniteError, check_number
from ...inference.objectives import OBJECTIVES, KLWarmup
from ...inference.svi import check_fit_options, lr_at
from ...utils import atomic_write_json, ensure_writable_dir
from . import checkpoint as ckpt


class SiteScale(Messenger):
    """``handlers.scale`` restricted to the named sites, allowing a traced (and zero) scale: beta on the KL."""

    def __init__(self, fn: Callable | None = None, scale: Any = 1.0, sites: tuple[str, ...] = ("z",)):
        self.scale, self.sites = scale, frozenset(sites)
        super().__init__(fn)

    def process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites:
            msg["scale"] = self.scale if msg.get("scale") is None else self.scale * msg["scale"]


def weighted(fn: Callable, sites: tuple[str, ...]) -> Callable:
    """``fn(x, y)`` as ``fn(x, y, kl_weight=w)``: the log-densities of ``sites`` times w."""
    def program(x, y=None, kl_weight=1.0):
        with SiteScale(scale=kl_weight, sites=sites):
            fn(x, y)
    return program


def mean_field(twin) -> bool:
    """Whether each latent site's KL is a closed-form term (the guide draws no parent of a model site later)."""
    return len(twin.latent_sites) == 1


def make_loss(name: str, particles: int, twin, free_bits: float = 0.0):
    """NumPyro's estimator for the objective ``name`` (``analytic`` falls back to ``Trace_ELBO`` for a hierarchy)."""
    if name not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}; got {name!r}")
    if free_bits:
        raise InputError(f"--backend numpyro: free bits is a Pyro-side objective; expected --free-bits 0; got "
                         f"{free_bits}")
    if name == "iwae":
        return RenyiELBO(alpha=0.0, num_particles=particles)
    if name == "analytic" and mean_field(twin):
        return TraceMeanField_ELBO(num_particles=particles)
    return Trace_ELBO(num_particles=particles)


def make_optimizer(optimizer: str, lrs: jax.Array, steps: int, clip_norm: float | None):
    """Adam (or ClippedAdam) at the learning rate ``lrs[epoch]`` of each step's epoch (``steps`` per epoch),
    optionally clipping the global gradient norm at ``clip_norm`` (as ``torch.nn.utils.clip_grad_norm_``)."""
    table = jnp.asarray(lrs)
    step_size = lambda i: table[jnp.minimum(i // steps, len(table) - 1)]
    base = numpyro.optim.ClippedAdam if optimizer == "clipped_adam" else numpyro.optim.Adam
    opt = base(step_size=step_size)
    if clip_norm is not None:
        update = opt.update

        def clipped(g, state, value=None):
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(t)) for t in jax.tree_util.tree_leaves(g)))
            factor = jnp.minimum(1.0, clip_norm / (norm + 1e-6))
            return update(jax.tree_util.tree_map(lambda t: t * factor, g), state, value)

        opt.update = clipped
    return opt


def elbo_terms(twin, params, x, y=None, *, key) -> dict[str, jax.Array]:
    """Per-example ELBO terms (one draw z ~ q): ``x`` the reconstruction log p(x | z), each latent site's KL
    (closed form for a mean-field twin, else log q - log p at the draw), shape (N,) each; as
    :func:`ppl_dgm.inference.diagnostics.elbo_terms` before its mean over examples."""
    guide = handlers.trace(handlers.seed(handlers.substitute(twin.guide, data=params), key)).get_trace(x, y)
    draws = {k: s["value"] for k, s in guide.items() if s["type"] == "sample"}
    model = handlers.trace(handlers.condition(handlers.substitute(twin.model, data=params), data=draws)).get_trace(x, y)
    out = {}
    for name, site in model.items():
        if site["type"] != "sample":
            continue
        if name not in draws:  # observed (the latents are observed too, conditioned on the guide's draws)
            out[name] = site["fn"].log_prob(site["value"])
        elif mean_field(twin):
            out[name] = kl_divergence(guide[name]["fn"], site["fn"])
        else:
            out[name] = guide[name]["fn"].log_prob(site["value"]) - site["fn"].log_prob(site["value"])
    return out


def log_weights(twin, params, x, y=None, *, key, k: int) -> jax.Array:
    """log w[i, n] = log p(x_n, z_i) - log q(z_i | x_n), z_i ~ q(z | x_n), shape (k, N) (IWAE: logsumexp - log k)."""
    def one(key):
        guide = handlers.trace(handlers.seed(handlers.substitute(twin.guide, data=params), key)).get_trace(x, y)
        draws = {n: s["value"] for n, s in guide.items() if s["type"] == "sample"}
        model = handlers.trace(handlers.condition(handlers.substitute(twin.model, data=params), data=draws)
                               ).get_trace(x, y)
        log_p = sum(s["fn"].log_prob(s["value"]) for s in model.values() if s["type"] == "sample")
        return log_p - sum(s["fn"].log_prob(s["value"]) for s in guide.values() if s["type"] == "sample")
    return jax.vmap(one)(jax.random.split(key, k))


def _held_out(terms: Callable, params, x, y, key, rows: int = 2048) -> dict[str, Any]:
    """The held-out record fields (means per example) from the compiled :func:`elbo_terms`, in chunks of ``rows``."""
    sums: dict[str, float] = {}
    for i in range(0, len(x), rows):
        t = terms(params, x[i:i + rows], None if y is None else y[i:i + rows], jax.random.fold_in(key, i))
        for name, v in t.items():
            sums[name] = sums.get(name, 0.0) + float(jnp.sum(v))
    n = len(x)
    rec, kls = sums.pop("x") / n, {k: v / n for k, v in sums.items()}
    return {"test_elbo": rec - sum(kls.values()), "test_reconstruction": rec, "test_kl": sum(kls.values()),
            "test_kl_sites": kls}


def _nonfinite_sites(twin, params, x, y, key) -> list[str]:
    """Sites whose log-density is not finite at ``params`` on ``x`` (and non-finite parameter sites)."""
    bad = [n for n, v in params.items() if not all(bool(jnp.isfinite(t).all()) for t in jax.tree_util.tree_leaves(v))]
    with numpyro.validation_enabled(False):  # (NumPyro's eager argument checks would raise at the first bad site)
        terms = elbo_terms(twin, params, x, y, key=key)
    return bad + [n for n, v in terms.items() if not bool(jnp.isfinite(v).all())]


def _checked_data(twin, x, y, what: str, optional: bool = False) -> tuple[jax.Array | None, jax.Array | None]:
    """Rows ``x`` (N, x_dim) of finite numbers and, for a conditional twin, labels ``y`` (N,) in 0..C-1, as float32
    and int32 arrays; one-line :class:`InputError` otherwise (JAX would clamp a bad label's index silently).
    ``optional``: no rows (None or empty) give ``(None, None)``."""
    if optional and x is None:
        return None, None
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError):
        raise InputError(f"{what} data: expected an array of shape (N, {twin.x_dim}); got a {type(x).__name__} "
                         f"that is not one") from None
    if optional and arr.size == 0:
        return None, None
    if arr.ndim != 2 or arr.shape[1] != twin.x_dim or not len(arr):
        raise InputError(f"{what} data: expected an array of shape (N, {twin.x_dim}) with N >= 1 (flattened "
                         f"examples, the twin's x_dim); got shape {arr.shape}")
    arr = check_array(arr, f"{what} data")
    if not getattr(twin, "conditional", False):
        if y is not None:
            raise InputError(f"{what} labels: expected none for an unconditional {type(twin).__name__}; got some")
        return jnp.asarray(arr, dtype=jnp.float32), None
    if y is None:
        raise InputError(f"{what} labels: a conditional {type(twin).__name__} needs labels y (integers "
                         f"0..{twin.n_classes - 1}); got none")
    labels = check_labels(y, len(arr), f"{what} labels")
    check_label_range(labels, twin.n_classes, f"the {what} data")
    return jnp.asarray(arr, dtype=jnp.float32), jnp.asarray(labels, dtype=jnp.int32)


def fit(twin, x_train, y_train=None, x_test=None, y_test=None, *, objective: str = "analytic", particles: int = 1,
        beta: float = 1.0, warmup_epochs: int = 0, free_bits: float = 0.0, epochs: int = 50, batch_size: int = 128,
        lr: float = 1e-3, optimizer: str = "adam", lr_schedule: str = "constant", clip_norm: float | None = None,
        checkpoint_every: int = 10, held_out_examples: int | None = None, seed: int = 0, binarize: bool = False,
        out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
        devices: int = 1) -> tuple[dict, list[dict]]:
    """Fit ``twin`` by NumPyro's SVI under ``jit``; returns ``(params, history)``.

    Parameters
    ----------
    twin : a NumPyro twin (:mod:`ppl_dgm.numpyro.models`)
    x_train : array (N, D); y_train : int array (N,) for a conditional twin
    x_test, y_test : held-out rows, scored after each epoch (the first ``held_out_examples``)
    objective, particles, beta, warmup_epochs, free_bits : as ``ppl-dgm fit`` (free bits: Pyro only)
    epochs, batch_size, lr, optimizer, clip_norm, checkpoint_every : as :func:`ppl_dgm.inference.fit_svi`
    lr_schedule : {"constant", "cosine", "exponential"}
        The learning rate per epoch, :func:`ppl_dgm.inference.svi.lr_at` (the Pyro loop's schedules).
    binarize : bool
        Dynamic binarization: x ~ Bernoulli(grey level) afresh in every step (inside the compiled step).
    out_dir : path, optional
        Where ``checkpoint.npz``, ``best.npz`` and ``history.json`` go; ``resume`` continues from its checkpoint.
    devices : int
        Data parallelism over this many JAX devices (:func:`data_parallel`): each minibatch is sharded over them
        along its rows, the parameters and optimizer state are replicated, and XLA all-reduces the gradient.

    The history has the Pyro loop's records: ``epoch``, ``train_elbo`` (mean objective per example), ``lr``,
    ``kl_weight``, ``seconds`` and, with held-out rows, ``test_elbo``, ``test_reconstruction``, ``test_kl``,
    ``test_kl_sites``.
    """
    check_fit_options(optimizer, lr_schedule, lr, clip_norm=clip_norm, seed=seed, held_out_examples=held_out_examples,
                      epochs=epochs, batch_size=batch_size, checkpoint_every=checkpoint_every, particles=particles)
    check_number("beta", beta, min=0)
    x_train, y_train = _checked_data(twin, x_train, y_train, "training")
    x_test, y_test = _checked_data(twin, x_test, y_test, "test", optional=True)
    n = x_train.shape[0]
    steps = math.ceil(n / batch_size)
    sites = twin.latent_sites
    lrs = [lr_at(lr_schedule, lr, epochs)(e) for e in range(epochs)]   # Python floats for the history
    svi_lrs = np.array(lrs, dtype=np.float32)
    svi = SVI(weighted(twin.model, sites), weighted(twin.guide, sites),
              make_optimizer(optimizer, svi_lrs, steps, clip_norm),
              make_loss(objective, particles, twin, free_bits))
    key, bin_key, eval_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    terms = jax.jit(lambda p, xb, yb, kb: elbo_terms(twin, p, xb, yb, key=kb))
    state = svi.init(key, x_train[:2], None if y_train is None else y_train[:2])
    rows, put = data_parallel(devices, batch_size)
    history: list[dict[str, Any]] = []
    out = ensure_writable_dir(out_dir) if out_dir is not None else None
    if resume:
        state, history = ckpt.restore(out / ckpt.CHECKPOINT_NPZ, state, twin)
    state, x_train, y_train = put(state), put(x_train), put(y_train)
    warm = KLWarmup(warmup_epochs)

    def update(state, x_all, y_all, idx, w, t):
        """One SVI step on the rows ``idx``; ``t`` (the global step) seeds the dynamic binarization."""
        xb = rows(x_all[idx])
        if binarize:
            xb = jax.random.bernoulli(jax.random.fold_in(bin_key, t), xb).astype(xb.dtype)
        return svi.update(state, xb, None if y_all is None else rows(y_all[idx]), kl_weight=w)

    @jax.jit
    def epoch_steps(state, x_all, y_all, idx, w, t0):
        """The full minibatches of an epoch, ``idx`` of shape (S, B), in one compiled scan; the summed loss."""
        def body(carry, inp):
            state, total = carry
            idx_s, t = inp
            state, loss = update(state, x_all, y_all, idx_s, w, t)
            return (state, total + loss.astype(total.dtype)), None
        (state, total), _ = jax.lax.scan(body, (state, jnp.float32(0.0)), (idx, t0 + jnp.arange(idx.shape[0])))
        return state, total

    step = jax.jit(update)  # the last, smaller minibatch
    full = n // batch_size

    bar = _bar(progress, (epochs - len(history)) * steps)
    test_rows = None if x_test is None else slice(0, held_out_examples or len(x_test))
    best = max((h["test_elbo"] for h in history if "test_elbo" in h), default=-math.inf)
    for epoch in range(len(history), epochs):
        t0 = time.perf_counter()
        w = jnp.float32(beta * warm(epoch))
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        total = jnp.float32(0.0)
        if full:
            state, total = epoch_steps(state, x_train, y_train, jnp.asarray(perm[:full * batch_size]).reshape(full, -1),
                                       w, epoch * steps)
        if full < steps:
            state, loss = step(state, x_train, y_train, jnp.asarray(perm[full * batch_size:]), w, epoch * steps + full)
            total = total + loss
        if bar is not None:
            bar.update(steps)
        train_elbo = -float(total) / n
        params = svi.get_params(state)
        if not math.isfinite(train_elbo):
            last_good = out / ckpt.CHECKPOINT_NPZ if out else None  # (written at the last checkpoint epoch, if any)
            last_good = last_good if last_good and last_good.is_file() else "none written"
            sites_bad = _nonfinite_sites(twin, params, x_train[:batch_size], None if y_train is None
                                         else y_train[:batch_size], key)
            raise NonFiniteError(f"non-finite ELBO in epoch {epoch + 1} at sites {', '.join(sites_bad) or '?'}; "
                                 f"last good checkpoint: {last_good}",
                                 step=(epoch + 1) * steps, sites=sites_bad)
        record = {"epoch": epoch + 1, "train_elbo": train_elbo, "lr": float(lrs[epoch]),
                  "kl_weight": float(w)}
        if test_rows is not None:
            record.update(_held_out(terms, params, x_test[test_rows], None if y_test is None else y_test[test_rows],
                                    eval_key))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if bar is not None:
            held = f" test {record['test_elbo']:.3f}" if "test_elbo" in record else ""
            bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} elbo {train_elbo:.3f}{held}", refresh=False)
        if out is not None:
            if record.get("test_elbo", -math.inf) > best:
                best = record["test_elbo"]
                ckpt.save_best(out / ckpt.BEST_NPZ, twin, params, epoch + 1)
            if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                ckpt.save(out / ckpt.CHECKPOINT_NPZ, twin, state, params, history)
                atomic_write_json(out / "history.json", history)
    if bar is not None:
        bar.close()
    return svi.get_params(state), history


def data_parallel(devices: int, batch_size: int) -> tuple[Callable, Callable]:
    """``(rows, put)`` for data parallelism over ``devices`` JAX devices with ``jax.sharding``: ``rows(a)`` constrains
    a minibatch array inside the compiled step to be split along its first axis over a 1-D mesh ``("data",)``;
    ``put(tree)`` replicates arrays (parameters, optimizer state, the data) on every device.  With one device both
    are the identity.  On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX is
    imported) makes N host devices."""
    if devices == 1:
        return (lambda a: a), (lambda t: t)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices()
    if not isinstance(devices, int) or not 1 <= devices <= len(available):
        raise InputError(f"devices: expected an integer from 1 to {len(available)} (the {jax.default_backend()} "
                         f"devices JAX sees); got {devices!r}")
    if batch_size % devices:
        raise InputError(f"devices: expected a batch size divisible by {devices} devices; got {batch_size}")
    mesh = Mesh(np.array(available[:devices]), ("data",))
    split, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    return (lambda a: jax.lax.with_sharding_constraint(a, split)), (lambda t: jax.device_put(t, replicated))


def _bar(progress: bool, total: int):
    if not progress or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="numpyro svi", unit="step", dynamic_ncols=True, mininterval=0.5)

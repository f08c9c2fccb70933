"""``ppl-dgm fit vae | cvae | ae`` and ``ppl-dgm latent RUN ...``: the VAE family's commands.

Registered on the groups of :mod:`ppl_dgm.cli` when that module is imported.  The
objective options (``--objective --particles --beta --warmup-epochs --free-bits``) are
stored in the ``train`` section of ``config.json``, so ``--resume`` rebuilds the same objective.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli import _hidden, _specs, cli, data_options, fit, train_options
from .errors import InputError

LIKELIHOOD_CHOICES = ["bernoulli", "gaussian", "gaussian-learned", "continuous-bernoulli"]
OBJECTIVE_KEYS = ("objective", "particles", "beta", "warmup_epochs", "free_bits")


def objective_options(f):
    """--objective / --particles / --beta / --warmup-epochs / --free-bits."""
    for opt in reversed([
        click.option("--objective", type=click.Choice(["elbo", "analytic", "iwae"]), default="analytic",
                     show_default=True, help="Monte Carlo ELBO, analytic-KL ELBO, or IWAE with K samples."),
        click.option("--particles", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Samples of z per example (k of IWAE)."),
        click.option("--beta", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Weight of the KL of z (beta-VAE); 0 is a deterministic-AE loss."),
        click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Ramp the KL weight from 0 to beta over N epochs."),
        click.option("--free-bits", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Floor (nats) on each latent dimension's batch-mean KL (ELBO objectives)."),
    ]):
        f = opt(f)
    return f


def model_options(f):
    for opt in reversed([
        click.option("--latent-dim", type=click.IntRange(min=1), default=8, show_default=True),
        click.option("--hidden", default="256", show_default=True, help="Hidden width(s), e.g. 400 or 512,256."),
        click.option("--likelihood", type=click.Choice(LIKELIHOOD_CHOICES), default="bernoulli", show_default=True),
        click.option("--x-scale", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
                     help="sigma of the Gaussian likelihood (initial value for gaussian-learned)."),
    ]):
        f = opt(f)
    return f


def _fit(family, model_kwargs, dataset, data_path, data_dir, binarize, out, epochs, batch_size, lr, optimizer,
         lr_schedule, clip_norm, device, seed, checkpoint_every, resume, quiet, likelihood, objective, particles,
         beta, warmup_epochs, free_bits):
    from .inference.objectives import make_objective
    from .runs import train_run

    data, train = _specs(dataset, data_path, data_dir, binarize, likelihood, seed, epochs, batch_size, lr,
                         optimizer, lr_schedule, clip_norm, checkpoint_every)
    obj = dict(objective=objective, particles=particles, beta=beta, warmup_epochs=warmup_epochs,
               free_bits=free_bits)
    make_objective(objective, particles, beta, warmup_epochs, free_bits)  # refuse bad combinations up front
    train.extra.update(obj)
    train_run(family, model_kwargs, data, train, out=out, resume=resume, device=device, progress=not quiet,
              echo=lambda m: click.echo(m, err=True))


def _register_vae_like(family: str, doc: str) -> None:
    """``fit vae`` and ``fit ae``: the same model and options, different guides."""

    @fit.command(family, help=doc)
    @data_options
    @train_options
    @model_options
    @click.option("--arch", type=click.Choice(["auto", "mlp", "conv"]), default="auto", show_default=True,
                  help="auto: conv for 28x28 images, else mlp.")
    @objective_options
    def command(latent_dim, hidden, likelihood, x_scale, arch, **kw):
        if arch == "auto":
            arch = "conv" if (kw["dataset"] or "") in ("fashion-mnist", "mnist") and not kw["data_path"] else "mlp"
        _fit(family, dict(latent_dim=latent_dim, hidden=_hidden(hidden), likelihood=likelihood, x_scale=x_scale,
                          arch=arch), likelihood=likelihood, **kw)


_register_vae_like("vae", "Variational autoencoder: z ~ N(0, I), x | z ~ p(x|z), amortized Gaussian q(z|x).")
_register_vae_like("ae", "Autoencoder: the VAE's model with a point-mass guide q(z|x) = delta(z - g_mu(x)).")


@fit.command("cvae")
@data_options
@train_options
@model_options
@click.option("--n-classes", type=click.IntRange(min=2), default=None,
              help="Number of labels (default: 1 + the largest training label).")
@objective_options
def fit_cvae(latent_dim, hidden, likelihood, x_scale, n_classes, **kw):
    """Conditional VAE: encoder q(z|x,y) and decoder p(x|z,y) both see the one-hot label (labelled data)."""
    model_kwargs = dict(latent_dim=latent_dim, hidden=_hidden(hidden), likelihood=likelihood, x_scale=x_scale,
                        conditional=True)
    if n_classes is not None:
        model_kwargs["n_classes"] = n_classes
    _fit("cvae", model_kwargs, likelihood=likelihood, **kw)


# -- latent-space tools -----------------------------------------------------------------------------------
@cli.group()
@click.argument("run_dir", type=click.Path())
@click.pass_context
def latent(ctx, run_dir):
    """Latent-space pictures of a fitted VAE/AE/CVAE run: `ppl-dgm latent RUN_DIR TOOL --out FILE.png`."""
    ctx.obj = run_dir


def _load(run_dir, device="cpu"):
    from .runs import load_eval_data, load_run

    model, cfg = load_run(run_dir, device=device)
    if not hasattr(model, "encode"):
        raise InputError(f"latent tools need a family with an encoder (vae, ae, cvae); {run_dir} is "
                         f"{cfg['family']!r}")
    x, y, _ = load_eval_data(cfg)
    shape = tuple(cfg["data"]["shape"])
    if len(shape) < 2:
        raise InputError(f"latent image grids need image data; the run's examples have shape {shape}")
    return model, cfg, x, y, shape


def _index(i, n, name):
    if not 0 <= i < n:
        raise InputError(f"{name}: expected an index into the {n} test examples (0..{n - 1}); got {i}")
    return i


def _labels(model, y, idx):
    if not model.config.get("conditional"):
        return None
    if y is None:
        raise InputError("a CVAE run needs labelled test data")
    return y[idx]


def _done(out):
    click.echo(f"wrote {out}")


def _png(out):
    out = Path(out)
    if out.suffix != ".png":
        raise InputError(f"--out: expected a file ending in .png; got {str(out)!r}")
    return out


@latent.command("reconstruct")
@click.pass_obj
@click.option("-n", "n", type=click.IntRange(min=1, max=256), default=16, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def latent_reconstruct(run_dir, n, out):
    """Test inputs (top) and E[x | z = g_mu(x)] (bottom)."""
    import torch

    from .models.latent import plot_rows, reconstructions

    out = _png(out)
    model, cfg, x, y, shape = _load(run_dir)
    n = min(n, len(x))
    idx = list(range(n))
    rec = reconstructions(model, x[idx], _labels(model, y, idx))
    plot_rows(torch.stack([x[idx], rec.cpu()]), shape, out, f"{cfg['family']}: inputs (top), reconstructions")
    _done(out)


@latent.command("interpolate")
@click.pass_obj
@click.option("--a", "index_a", type=int, default=0, show_default=True, help="Index of the first test input.")
@click.option("--b", "index_b", type=int, default=1, show_default=True, help="Index of the second test input.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def latent_interpolate(run_dir, index_a, index_b, steps, out):
    """Linear (top row) and spherical (bottom row) interpolation between two test inputs."""
    import torch

    from .models.latent import interpolate, plot_rows

    out = _png(out)
    model, cfg, x, y, shape = _load(run_dir)
    a, b = _index(index_a, len(x), "--a"), _index(index_b, len(x), "--b")
    ya, yb = _labels(model, y, a), _labels(model, y, b)
    rows = torch.stack([interpolate(model, x[a], x[b], steps, m, ya, yb).cpu() for m in ("linear", "slerp")])
    plot_rows(rows, shape, out, f"{cfg['family']}: test {a} -> test {b}", row_labels=["linear", "slerp"])
    _done(out)


@latent.command("traverse")
@click.pass_obj
@click.option("--index", type=int, default=0, show_default=True, help="Test input whose code is varied.")
@click.option("--limit", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True)
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def latent_traverse(run_dir, index, limit, steps, out):
    """One row per latent dimension: z_k from -limit to +limit, the other dimensions at g_mu(x)."""
    import numpy as np

    from .models.latent import plot_rows, traverse

    out = _png(out)
    model, cfg, x, y, shape = _load(run_dir)
    i = _index(index, len(x), "--index")
    values = np.linspace(-limit, limit, steps)
    rows = traverse(model, x[i], values, y=_labels(model, y, i))
    plot_rows(rows, shape, out, f"{cfg['family']}: latent traversal of test {i}",
              row_labels=[f"z{k}" for k in range(rows.shape[0])], col_labels=[f"{v:+.1f}" for v in values])
    _done(out)


@latent.command("arithmetic")
@click.pass_obj
@click.option("--label", type=int, required=True, help="The attribute: test inputs with this label.")
@click.option("-n", "n", type=click.IntRange(min=1, max=32), default=6, show_default=True,
              help="How many inputs (without the label) to edit.")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def latent_arithmetic(run_dir, label, n, out):
    """Decode g_mu(x) + s Delta, s = -4..4, Delta = mean code with the label minus mean code without."""
    from .models.latent import arithmetic, attribute_vector, plot_rows

    out = _png(out)
    model, cfg, x, y, shape = _load(run_dir)
    if y is None:
        raise InputError("arithmetic needs labelled test data; the run's data have no labels")
    has = y == label
    delta = attribute_vector(model, x, has, _labels(model, y, slice(None)))
    idx = (~has).nonzero().flatten()[:n]
    scales = list(range(-4, 5))
    rows = arithmetic(model, x[idx], delta, scales, _labels(model, y, idx))
    plot_rows(rows, shape, out, f"{cfg['family']}: z + s * (mean z | label {label} - mean z | other)",
              col_labels=[f"s={s}" for s in scales])
    _done(out)

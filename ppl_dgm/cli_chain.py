"""``ppl-dgm fit hvae`` and ``ppl-dgm fit ddpm``: the Markov-chain families' commands.

Registered on the ``fit`` group of :mod:`ppl_dgm.cli` when that module is imported.
"""

from __future__ import annotations

import click

from .cli import _hidden, _specs, data_options, fit, train_options


def _vector_data(dataset, data_path) -> bool:
    """A 2-D toy or an (N, D) .npy file (not images)."""
    from .data import IMAGE_DATASETS

    if data_path:
        import numpy as np

        return str(data_path).endswith(".npy") and np.load(data_path, mmap_mode="r").ndim == 2
    return (dataset or "digits") not in IMAGE_DATASETS


@fit.command("ddpm")
@data_options
@train_options
@click.option("--timesteps", type=click.IntRange(min=2), default=1000, show_default=True, help="T, chain length.")
@click.option("--schedule", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True)
@click.option("--loss", "loss_kind", type=click.Choice(["simple", "elbo"]), default="simple", show_default=True,
              help="simple: ||eps - eps_theta||^2 per step (Ho eq. 14); elbo: the bound (eq. 5).")
@click.option("--t-per-step", type=click.IntRange(min=1), default=8, show_default=True,
              help="Timesteps drawn per minibatch (a subsampled plate; unbiased for the chain ELBO).")
@click.option("--variance", type=click.Choice(["beta", "beta_tilde"]), default="beta", show_default=True,
              help="sigma_t^2 of p_theta(x_{t-1} | x_t).")
@click.option("--arch", type=click.Choice(["auto", "mlp", "unet"]), default="auto", show_default=True,
              help="auto: UNet for images with sides divisible by 4, else MLP.")
@click.option("--hidden", default="128,128,128", show_default=True, help="MLP block widths.")
@click.option("--base-channels", type=click.IntRange(min=8), default=32, show_default=True, help="UNet width.")
def fit_ddpm(dataset, data_path, data_dir, binarize, out, epochs, batch_size, lr, optimizer, lr_schedule,
             clip_norm, device, seed, checkpoint_every, resume, quiet, timesteps, schedule, loss_kind, t_per_step,
             variance, arch, hidden, base_channels):
    """Denoising diffusion (DDPM): the reverse chain is the model, the forward chain the guide."""
    from .errors import InputError
    from .runs import train_run

    if t_per_step > timesteps:
        raise InputError(f"--t-per-step: expected at most --timesteps ({timesteps}); got {t_per_step}")
    if binarize not in (None, "none"):
        raise InputError(f"--binarize: a diffusion model takes grey levels; expected none; got {binarize!r}")
    vector = _vector_data(dataset, data_path)
    ctx = click.get_current_context()
    if vector and not resume:
        # Defaults measured on the 2-D toys (checkerboard, 16k points): 100 epochs at lr 2e-3 with a cosine
        # decay put DDPM-1000 *and* DDIM-50 samples at the MMD noise floor of held-out data (about 95 s on
        # one core); 50 epochs at a constant 1e-3 left DDIM-50 three times worse than DDPM-1000.
        default = click.core.ParameterSource.DEFAULT
        if ctx.get_parameter_source("lr") == default:
            lr = 2e-3
        if ctx.get_parameter_source("lr_schedule") == default:
            lr_schedule = "cosine"
        if epochs is None:
            epochs = 100
    data, train = _specs(dataset, data_path, data_dir, "none", "gaussian", seed, epochs, batch_size, lr,
                         optimizer, lr_schedule, clip_norm, checkpoint_every)
    if device == "cpu" and arch != "unet" and vector:
        # a small MLP: torch's intra-op threads cost more than they give (30x slower measured on a busy 2-core box)
        import torch

        torch.set_num_threads(1)
    model_kwargs = dict(timesteps=timesteps, schedule=schedule, loss=loss_kind, t_per_step=t_per_step,
                        variance=variance, arch=arch, hidden=_hidden(hidden), base_channels=base_channels)
    train_run("ddpm", model_kwargs, data, train, out=out, resume=resume, device=device, progress=not quiet,
              echo=lambda m: click.echo(m, err=True))


@fit.command("hvae")
@data_options
@train_options
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True, help="L, stochastic layers.")
@click.option("--latent-dim", default="16", show_default=True,
              help="Size of every z_l, or one size per layer (comma-separated, z_1 first).")
@click.option("--hidden", default="256", show_default=True, help="Hidden width(s) of each conditional's MLP.")
@click.option("--likelihood", type=click.Choice(["bernoulli", "gaussian"]), default="bernoulli", show_default=True)
@click.option("--x-scale", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--particles", type=click.IntRange(min=1), default=1, show_default=True,
              help="Monte Carlo samples of z_{1:L} per example in the training ELBO.")
def fit_hvae(dataset, data_path, data_dir, binarize, out, epochs, batch_size, lr, optimizer, lr_schedule,
             clip_norm, device, seed, checkpoint_every, resume, quiet, layers, latent_dim, hidden, likelihood,
             x_scale, particles):
    """Markovian hierarchical VAE: p(z_L) prod p(z_{l-1}|z_l) p(x|z_1), q(z_1|x) prod q(z_l|z_{l-1})."""
    from pyro.infer import Trace_ELBO

    from .runs import train_run

    dims = _hidden(latent_dim)
    data, train = _specs(dataset, data_path, data_dir, binarize, likelihood, seed, epochs, batch_size, lr,
                         optimizer, lr_schedule, clip_norm, checkpoint_every)
    model_kwargs = dict(layers=layers, latent_dims=dims if len(dims) > 1 else dims * layers, hidden=_hidden(hidden),
                        likelihood=likelihood, x_scale=x_scale)
    # Monte Carlo KL: the bottom-up guide is not mean-field relative to the top-down model (see models/hvae.py)
    train_run("hvae", model_kwargs, data, train, out=out, resume=resume, device=device, progress=not quiet,
              loss=Trace_ELBO(num_particles=particles, vectorize_particles=False),
              echo=lambda m: click.echo(m, err=True))

"""The commands, generated from the registry: `fit FAMILY` has one option per field of the family's config."""

from __future__ import annotations

import io
import json
from pathlib import Path

import click

from ..data import DATASETS, IMAGE_DATASETS
from ..errors import InputError
from ..models import REGISTRY, Family
from ..utils import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from .options import config_options, data_options, device_seed_options, explicit, one_source, run_options


class FamilyGroup(click.Group):
    """`fit FAMILY`: an unknown family gets a one-line error listing the known ones."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in self.commands:
            raise InputError(f"unknown model {name!r}; expected one of {', '.join(sorted(self.commands))}")
        return super().resolve_command(ctx, args)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ppl-dgm")
def cli():
    """Deep generative models as probabilistic programs (Pyro model-guide pairs)."""


@cli.group(cls=FamilyGroup)
def fit():
    """Fit a model family; writes a run directory."""


def _fit_command(family: Family):
    @fit.command(family.name, help=f"{family.summary}  (trainer: {family.trainer})")
    @data_options
    @run_options
    @device_seed_options
    @config_options(family.config)
    @click.pass_context
    def command(ctx, dataset, data_path, data_dir, out, binarize, resume, quiet, device, seed, **fields):
        from ..plotting import write_run_figures
        from ..runs import DataSpec, train_run

        one_source(dataset, data_path)
        if resume and (fixed := explicit(ctx, [k for k in fields if k != "epochs"])):
            raise InputError(f"--resume continues the run with its stored options; expected only --epochs; got "
                             f"--{fixed[0].replace('_', '-')}")
        options = family.config(**fields)
        image = (dataset or ("digits" if not data_path else None)) in IMAGE_DATASETS
        data = DataSpec(dataset if not data_path else None, data_path, data_dir,
                        options.binarize(binarize, image), seed)
        run = train_run(family, options, data, out=out, resume=resume, device=device, progress=not quiet,
                        echo=lambda m: click.echo(m, err=True))
        write_run_figures(run, seed=seed)

    return command


for _family in REGISTRY.values():
    _fit_command(_family)


def _load(run_dir, device="cpu"):
    from ..runs import load_run

    return load_run(run_dir, device=device)


@cli.command()
@click.argument("run_dir", type=click.Path())
@data_options
@click.option("--iwae-k", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Importance samples of the IWAE estimate (families with an ELBO).")
@device_seed_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def evaluate(run_dir, dataset, data_path, data_dir, iwae_k, device, seed, as_json):
    """Held-out likelihood: ELBO and IWAE log p(x), the chain ELBO, or the exact log-likelihood; bits/dim."""
    from ..runs import evaluate_run

    one_source(dataset, data_path)
    run = _load(run_dir, device)
    x, y, name = run.eval_data(dataset, data_path, data_dir)
    res = evaluate_run(run, x, y, name=name, iwae_k=iwae_k, seed=seed)
    if as_json:
        click.echo(json.dumps(res))
        return
    lines = [f"{res['family']} on {name} (n={res['n']}, D={res['dim']}):"]
    if run.family.bound == "exact":
        lines.append(f"  log p(x) (exact)  {res['log_likelihood']:10.4f} nats   BIC {res['bic']:.1f}")
    elif run.family.bound == "chain":
        lines.append(f"  ELBO (full chain) {res['elbo']:10.3f} nats")
    else:
        lines += [f"  ELBO            {res['elbo']:10.3f} nats  (reconstruction {res['reconstruction']:.3f}, "
                  f"KL {res['kl']:.3f})", f"  log p(x), k={iwae_k:<5} {res['log_likelihood']:10.3f} nats"]
    lines.append(f"  bits/dim        {res['bits_per_dim']:10.4f}")
    click.echo("\n".join(lines))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="FILE.npy (N, ...) or FILE.png grid.")
@click.option("--mean", is_flag=True, help="E[x | z] instead of a draw x ~ p(x | z) (families with a decoder).")
@device_seed_options
@click.option("--label", type=click.IntRange(min=0), default=None,
              help="Conditional families: the label of every sample (default: labels 0, 1, ... in turn).")
@click.option("--sampler", default=None, help="Families with several samplers (ddpm: ddpm, ddim).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps S (default 50).")
@click.option("--eta", type=click.FloatRange(min=0, max=1), default=None,
              help="DDIM stochasticity (0 deterministic, the default).")
def sample(run_dir, n, out, mean, device, seed, label, sampler, steps, eta):
    """Draw N new examples from a fitted run."""
    import numpy as np

    from ..plotting import plot_samples
    from ..runs import sample_run

    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise InputError(f"--out: expected a file ending in .npy or .png; got {str(out)!r}")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    run = _load(run_dir, device)
    x = sample_run(run, n, seed=seed, mean=mean, label=label, sampler=sampler, steps=steps, eta=eta)
    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(out, buf.getvalue())
    else:
        plot_samples(x.reshape(n, -1), run.shape, out, f"{run.family.name}: {n} samples")
    click.echo(f"wrote {n} samples of shape {run.shape} to {out}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@data_options
@click.option("--iwae-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Importance samples for the ELBO-IWAE gap.")
@click.option("--max-examples", type=click.IntRange(min=2), default=500, show_default=True)
@device_seed_options
def diagnose(run_dir, dataset, data_path, data_dir, iwae_k, max_examples, device, seed):
    """ELBO terms (per site, per latent dimension, or per chain step), active units, ELBO-IWAE gap, gradient
    SNR, convergence; writes RUN/diagnostics.json, PNGs and (latent codes) RUN/posterior.nc."""
    from ..models import require
    from ..plotting import write_diagnostic_figures
    from ..runs import diagnose_run, summary

    one_source(dataset, data_path)
    run = _load(run_dir, device)
    require(run.family, "svi", "ppl-dgm diagnose")
    x, y, name = run.eval_data(dataset, data_path, data_dir)
    diag = diagnose_run(run, x[:max_examples], None if y is None else y[:max_examples], name=name, iwae_k=iwae_k,
                        seed=seed)
    files = write_diagnostic_figures(diag, run)
    diag.report["files"] = ["diagnostics.json", *files, *(["posterior.nc"] if diag.active else [])]
    atomic_write_json(run.path / "diagnostics.json", diag.report)
    click.echo(summary(diag.report))


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Families with their capabilities, and datasets, as JSON.")
def list_cmd(as_json):
    """The model families (with what each can do) and the datasets."""
    if as_json:
        click.echo(json.dumps({"families": {n: f.capabilities() for n, f in REGISTRY.items()},
                               "datasets": DATASETS}))
        return
    click.echo("families:")
    for name, f in REGISTRY.items():
        caps = [f.trainer] + [c for c in ("encoder", "conditional", "exact_likelihood") if getattr(f, c)]
        click.echo(f"  {name:<6} [{', '.join(caps)}] {f.summary}")
    click.echo("datasets:")
    for name, doc in DATASETS.items():
        click.echo(f"  {name:<16} {doc}")
    click.echo("  --data FILE      any .npy array (N, ...) or .npz with x [y, x_test, y_test]")

"""The ``ppl-dgm`` command: ``fit``, ``evaluate``, ``sample``, ``diagnose``, ``list``.

Bad input prints one line (``error: ...``: what was expected, what came) and
exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import InputError, NonFiniteError


def _hidden(value: str) -> list[int]:
    try:
        widths = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--hidden: expected a width or comma-separated widths like 512,256; got {value!r}") from None
    if not widths or any(w < 1 for w in widths):
        raise InputError(f"--hidden: expected positive widths; got {value!r}")
    return widths


def data_options(f):
    """--dataset / --data / --data-dir / --binarize."""
    f = click.option("--binarize", type=click.Choice(["none", "static", "dynamic"]), default=None,
                     help="Binarize images (default: dynamic for a Bernoulli likelihood on images, else none).")(f)
    f = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder of IDX files for fashion-mnist / mnist.")(f)
    f = click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
                     help="A .npy array (N, ...) or .npz (x, y, x_test, y_test).")(f)
    f = click.option("--dataset", default=None, help="A named dataset (see `ppl-dgm list`); default digits.")(f)
    return f


def train_options(f):
    """Options of the shared SVI loop."""
    for opt in reversed([
        click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/<family>-<data>)."),
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Training epochs (default: 300 for digits, 50 otherwise)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True),
        click.option("--optimizer", type=click.Choice(["adam", "clipped_adam"]), default="adam", show_default=True),
        click.option("--lr-schedule", type=click.Choice(["constant", "cosine", "exponential"]), default="constant",
                     show_default=True),
        click.option("--clip-norm", type=click.FloatRange(min=0, min_open=True), default=None),
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Save a checkpoint every N epochs (and at the end)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        f = opt(f)
    return f


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


def _specs(dataset, data_path, data_dir, binarize, likelihood, seed, epochs, batch_size, lr, optimizer,
           lr_schedule, clip_norm, checkpoint_every=10):
    from .data import IMAGE_DATASETS
    from .runs import DataSpec, TrainSpec

    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")
    if binarize is None:
        image = (dataset or ("digits" if not data_path else None)) in IMAGE_DATASETS
        binarize = "dynamic" if likelihood == "bernoulli" and image else "none"
    data = DataSpec(dataset if not data_path else None, data_path, data_dir, binarize, seed)

    train = TrainSpec(epochs, batch_size, lr, optimizer, lr_schedule, clip_norm, seed, checkpoint_every)
    return data, train


# `fit vae | cvae | ae` and `latent ...` live in cli_vae.py (imported at the end of this module).


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help="Score this dataset's test split instead of the run's.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Score every example of this .npy (or x_test of this .npz).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--iwae-k", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def evaluate(run_dir, dataset, data_path, data_dir, iwae_k, device, seed, as_json):
    """Held-out ELBO (reconstruction, KL) and IWAE log-likelihood, in nats and bits/dim."""
    from .evaluation import evaluate_model
    from .runs import load_eval_data, load_run

    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")
    from .cli_em import em_family, evaluate_em

    if em_family(run_dir):  # GMM / PPCA: exact log-likelihood, BIC
        res = evaluate_em(run_dir, dataset, data_path, data_dir)
        click.echo(json.dumps(res) if as_json else
                   f"{res['family']} on {res['data']} (n={res['n']}): mean log-likelihood "
                   f"{res['log_likelihood']:.4f} nats, BIC {res['bic']:.1f}")
        return
    model, cfg = load_run(run_dir, device=device)
    x, y, name = load_eval_data(cfg, dataset, data_path, data_dir)
    if hasattr(model, "evaluate"):  # a family with its own bound (ddpm: the full-chain ELBO, bits/dim)
        res = {"run": str(run_dir), "family": cfg["family"], "data": name, **model.evaluate(x, seed=seed)}
        if as_json:
            click.echo(json.dumps(res))
        else:
            click.echo(f"{cfg['family']} on {name} (n={res['n']}, D={res['dim']}):\n"
                       f"  ELBO (full chain) {res['elbo']:10.3f} nats\n  bits/dim          {res['bits_per_dim']:10.4f}")
        return
    if cfg["model"].get("likelihood") in ("bernoulli", "continuous-bernoulli"):
        from .data import check_unit_interval

        check_unit_interval(x, name)
    rest = (y,) if cfg["model"].get("conditional") else ()
    ev = evaluate_model(model, x, *rest, iwae_k=iwae_k, seed=seed)
    result = {"run": str(run_dir), "family": cfg["family"], "data": name, **ev.as_dict()}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{cfg['family']} on {name} (n={ev.n}, D={ev.dim}):\n"
                   f"  ELBO            {ev.elbo:10.3f} nats  (reconstruction {ev.reconstruction:.3f}, KL {ev.kl:.3f})\n"
                   f"  log p(x), k={iwae_k:<5} {ev.log_likelihood:10.3f} nats\n"
                   f"  bits/dim        {ev.bits_per_dim:10.4f}  (ELBO: {ev.elbo_bits_per_dim:.4f})")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="FILE.npy (N, ...) or FILE.png grid.")
@click.option("--mean", is_flag=True, help="Return E[x | z] instead of a draw x ~ p(x | z).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--label", type=click.IntRange(min=0), default=None,
              help="Conditional runs (cvae): the label of every sample (default: labels 0, 1, ... in turn).")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default=None,
              help="Diffusion runs: ancestral DDPM (all T steps, the default) or DDIM.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Diffusion runs: DDIM steps S (default 50).")
@click.option("--eta", type=click.FloatRange(min=0, max=1), default=None,
              help="Diffusion runs: DDIM stochasticity (0 deterministic, default 0).")
def sample(run_dir, n, out, mean, device, seed, label, sampler, steps, eta):
    """Draw N new examples from a fitted run."""
    import numpy as np
    import torch

    from .plots import plot_samples
    from .runs import load_run
    from .utils import atomic_write_bytes, ensure_writable_dir

    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise InputError(f"--out: expected a file ending in .npy or .png; got {str(out)!r}")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    from .cli_em import em_family, sample_em

    family = em_family(run_dir)
    if family:  # GMM / PPCA
        if label is not None or sampler is not None or steps is not None or eta is not None:
            raise InputError(f"--label/--sampler/--steps/--eta: expected a cvae or ddpm run; {run_dir} is a "
                             f"{family!r} run")
        x = sample_em(run_dir, n, seed)
        shape = (x.shape[1],)
    else:
        model, cfg = load_run(run_dir, device=device)
        family, shape = cfg["family"], tuple(cfg["data"]["shape"])
        torch.manual_seed(seed)
        if cfg["model"].get("conditional"):
            kw = {"y": label}
        elif label is not None:
            raise InputError(f"--label: expected a conditional run (cvae); {run_dir} is a {family!r} run")
        elif family == "ddpm":
            if sampler != "ddim" and (steps is not None or eta is not None):
                raise InputError("--steps/--eta: expected --sampler ddim (ancestral DDPM runs all T steps)")
            kw = {"sampler": sampler or "ddpm", "steps": steps, "eta": eta or 0.0}
        elif sampler is not None or steps is not None or eta is not None:
            raise InputError(f"--sampler/--steps/--eta: expected a diffusion (ddpm) run; {run_dir} is a "
                             f"{family!r} run")
        else:
            kw = {}
        x = model.sample(n, mean=mean, **kw).cpu().numpy().reshape(n, *shape)
    if out.suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, x.astype(np.float32))
        atomic_write_bytes(out, buf.getvalue())
    else:
        plot_samples(x.reshape(n, -1), shape, out, f"{family}: {n} samples")
    click.echo(f"wrote {n} samples of shape {shape} to {out}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--dataset", default=None, help="Diagnose on this dataset's test split instead of the run's.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Diagnose on every example of this .npy (or x_test of this .npz).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--iwae-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Importance samples for the ELBO-IWAE gap.")
@click.option("--max-examples", type=click.IntRange(min=2), default=500, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def diagnose(run_dir, dataset, data_path, data_dir, iwae_k, max_examples, device, seed):
    """ELBO terms, active units, ELBO-IWAE gap, gradient SNR, convergence; writes RUN/diagnostics.json,
    PNGs and RUN/posterior.nc."""
    from .inference.report import diagnose_run, summary

    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")
    report = diagnose_run(run_dir, dataset=dataset, data_path=data_path, data_dir=data_dir, iwae_k=iwae_k,
                          max_examples=max_examples, device=device, seed=seed)
    click.echo(summary(report))


@cli.command("list")
def list_cmd():
    """The model families and datasets."""
    from .data import DATASETS
    from .models import FAMILIES

    click.echo("families:")
    for name, cls in FAMILIES.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        click.echo(f"  {name:<16} {doc}")
    click.echo("datasets:")
    for name, doc in DATASETS.items():
        click.echo(f"  {name:<16} {doc}")
    click.echo("  --data FILE      any .npy array (N, ...) or .npz with x [y, x_test, y_test]")


from . import cli_chain as _cli_chain  # noqa: E402,F401  (registers `fit ddpm|hvae`)
from . import cli_em as _cli_em  # noqa: E402,F401  (registers `fit gmm|ppca`)
from . import cli_vae as _cli_vae  # noqa: E402,F401  (registers `fit vae|cvae|ae` and `latent`)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="ppl-dgm", standalone_mode=False)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except NonFiniteError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    sys.exit(0)

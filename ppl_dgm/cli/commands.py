"""The commands, generated from the registry: `fit FAMILY` has one option per field of the family's config.

Nothing heavy (torch, the data, the families' modules) is imported until a command runs, so
``ppl-dgm --help`` and ``ppl-dgm fit --help`` answer at once; ``fit FAMILY`` is built when
it is asked for (its options come from the family's config dataclass).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import click

from ..errors import InputError
from ..models.registry import REGISTRY, Family, require
from ..utils import atomic_write_bytes, atomic_write_json, ensure_writable_dir, set_threads
from .options import (
    FiniteFloat,
    checkpoint_option,
    compute_options,
    config_options,
    data_options,
    explicit,
    fit_data_options,
    one_source,
    run_options,
)


class FamilyGroup(click.Group):
    """`fit FAMILY`, one command per registry entry, built on first use; an unknown family gets a one-line error
    listing the known ones.  The listing (``fit --help``) reads the registry's summaries: no family is imported."""

    def list_commands(self, ctx):
        return sorted(REGISTRY)

    def get_command(self, ctx, name):
        if name in REGISTRY and name not in self.commands:
            self.add_command(_fit_command(REGISTRY[name]))
        return self.commands.get(name)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in REGISTRY:
            raise InputError(f"unknown model {name!r}; expected one of {', '.join(sorted(REGISTRY))}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(n, click.Command(n, help=_fit_help(REGISTRY[n])).get_short_help_str(limit))
                                for n in names])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ppl-dgm")
def cli():
    """Deep generative models as probabilistic programs (Pyro model-guide pairs)."""


@cli.group(cls=FamilyGroup)
def fit():
    """Fit a model family; writes a run directory."""


def _fit_help(family: Family) -> str:
    return f"{family.summary}  (trainer: {family.trainer})"


# --resume takes the data and options from the stored run; the data options and their keys in its config.json's
# "data" section (the family's own options are its "train" or "model" keys under their own names)
_STORED = {"dataset": "dataset", "data_path": "path", "data_dir": "data_dir", "test_path": "test_path",
           "val_fraction": "val_fraction", "binarize": "binarize", "seed": "seed"}
_PATHS = {"data_path", "data_dir", "test_path", "latent_of", "codes_of"}   # compared as resolved paths
_UNSET = object()


def _check_resume(ctx: click.Context, out, given: dict) -> None:
    """``--resume`` continues a run with its stored data and options: an option typed on the command line must
    equal the run's own value (so the command that started a run, with ``--resume`` and a larger ``--epochs``,
    continues it); a different or unstored one is refused in one line."""
    from ..runs.store import read_config

    typed_in = click.core.ParameterSource.COMMANDLINE
    typed = [k for k in given if k != "epochs" and ctx.get_parameter_source(k) == typed_in]
    if not typed or out is None or not (Path(out) / "config.json").is_file():
        return  # nothing to compare, or no run to compare with (train_run refuses that, naming what is missing)
    cfg = read_config(out)
    data = cfg.get("data", {})
    for name, flag in zip(typed, explicit(ctx, typed), strict=True):
        if name in _STORED:
            stored = data.get(_STORED[name], _UNSET)
            if name == "dataset" and stored is None and not data.get("path"):
                stored = data.get("name", _UNSET)  # the embedded default (digits) is stored as no dataset
        else:
            stored = cfg["train"].get(name, cfg.get("model", {}).get(name, _UNSET))
        value = given[name]
        if stored is _UNSET:
            raise InputError(f"--resume continues the run with its stored options; {flag} is not among them "
                             f"(expected at most --epochs); got {flag}")
        if not _same(name, value, stored):
            raise InputError(f"--resume continues the run with its stored data and options; the run has {flag} "
                             f"{_shown(stored)}, got {_shown(value)} (start a new run with another --out, or "
                             f"--overwrite)")


def _same(name: str, value, stored) -> bool:
    """A typed option against its stored (JSON) value: sequences item by item, paths resolved, numbers by value."""
    if isinstance(value, (list, tuple)) or isinstance(stored, (list, tuple)):
        return isinstance(value, (list, tuple)) and isinstance(stored, (list, tuple)) and \
            len(value) == len(stored) and all(_same(name, a, b) for a, b in zip(value, stored, strict=True))
    if name in _PATHS and value is not None and stored is not None:
        return Path(value).resolve() == Path(stored).resolve()
    return value == stored


def _shown(value) -> str:
    if value is None:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _fit_command(family: Family) -> click.Command:
    @click.command(family.name, help=_fit_help(family))
    @data_options
    @fit_data_options
    @run_options
    @compute_options
    @config_options(family.config)
    @click.pass_context
    def command(ctx, dataset, data_path, data_dir, test_path, val_fraction, out, binarize, resume, overwrite, quiet,
                device, seed, threads, **fields):
        from ..data import IMAGE_DATASETS
        from ..inference.distributed import barrier
        from ..plotting import write_run_figures
        from ..runs import DataSpec, train_run

        one_source(dataset, data_path)
        if fields.get("latent_of") and (dataset or data_path or test_path):
            raise InputError("--latent-of takes the encoder run's own data; expected no --dataset/--data/--test-data")
        if fields.get("codes_of") and (dataset or data_path or test_path):
            raise InputError("--codes-of takes the VQ-VAE run's own data; expected no --dataset/--data/--test-data")
        if resume and overwrite:
            raise InputError("expected one of --resume (continue the run in --out) or --overwrite (replace it); "
                             "got both")
        if resume:
            _check_resume(ctx, out, dict(dataset=dataset, data_path=data_path, data_dir=data_dir, test_path=test_path,
                                         val_fraction=val_fraction, binarize=binarize, seed=seed, **fields))
        options = family.config(**fields)
        image = (dataset or ("digits" if not data_path else None)) in IMAGE_DATASETS
        data = DataSpec(dataset if not data_path else None, data_path, data_dir, options.binarize(binarize, image),
                        seed, test_path=test_path, val_fraction=val_fraction)
        run = train_run(family, options, data, out=out, resume=resume, overwrite=overwrite, device=device,
                        progress=not quiet, threads=threads, echo=lambda m: click.echo(m, err=True))
        if run is not None:  # None on the ranks other than 0 of a torchrun launch: rank 0 draws the pictures
            write_run_figures(run, seed=seed)
        barrier()  # torchrun: every rank leaves together (a no-op in one process)

    return command


def load(run_dir, device="cpu", checkpoint="last", threads="auto"):
    """``load_run``, then torch's thread count for the run's model (:func:`ppl_dgm.utils.set_threads`)."""
    from ..runs import load_run

    run = load_run(run_dir, device=device, checkpoint=checkpoint)
    set_threads(threads, n_params=sum(p.numel() for p in run.model.parameters()), device=device)
    return run


@cli.command()
@click.argument("run_dir", type=click.Path())
@data_options
@click.option("--iwae-k", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Importance samples of the IWAE estimate (families with an ELBO).")
@click.option("--exact", is_flag=True, help="ddpm, score: log p(x) by the probability-flow ODE (exact divergence for "
              "D <= 16, else Hutchinson with a standard error).")
@click.option("--rtol", type=FiniteFloat(min=0, min_open=True), default=1e-5, show_default=True,
              help="--exact: the ODE solver's relative tolerance.")
@click.option("--atol", type=FiniteFloat(min=0, min_open=True), default=1e-5, show_default=True,
              help="--exact: the ODE solver's absolute tolerance.")
@click.option("--probes", type=click.IntRange(min=1), default=4, show_default=True,
              help="--exact, D > 16: Hutchinson probes per example (2 or more give a standard error).")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Score only the first N examples (default all).")
@click.option("--samples", "n_samples", type=click.IntRange(min=4), default=None,
              help="Sample quality instead: draw N samples with the run's sampler and score them against N held-out "
                   "examples (FD, KID, precision, recall, class confidence; the held-out-vs-train floor).")
@click.option("--scorer", "scorer_dir", type=click.Path(), default=None,
              help="--samples: the classifier run whose features score them (default: the dataset's own scorer, "
                   "trained once into $PPL_DGM_HOME/scorers).")
@click.option("--sampler", default=None, help="--samples: the sampler of a family with several (ddpm, score).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="--samples: DDIM steps, or Langevin/PC steps per noise level.")
@checkpoint_option
@compute_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
@click.pass_context
def evaluate(ctx, run_dir, dataset, data_path, data_dir, iwae_k, exact, rtol, atol, probes, max_examples, n_samples,
             scorer_dir, sampler, steps, checkpoint, device, seed, threads, as_json):
    """Held-out likelihood: ELBO and IWAE log p(x), the chain ELBO, the exact log-likelihood, or the
    score-matching loss; bits/dim; --exact: log p(x) by the probability-flow ODE; --samples N: sample quality."""
    from ..runs import evaluate_run

    if n_samples is not None or scorer_dir or sampler or steps:
        from .quality import evaluate_samples

        return evaluate_samples(ctx, run_dir, n_samples, scorer_dir, sampler, steps, checkpoint, device, seed,
                                threads, as_json)
    one_source(dataset, data_path)
    run = load(run_dir, device, checkpoint, threads)
    require(run.family, "bound", "ppl-dgm evaluate",
            "`ppl-dgm evaluate RUN --samples N` scores its samples instead" if run.family.generative else "")
    x, y, name = run.eval_data(dataset, data_path, data_dir)
    x, y = x[:max_examples], (None if y is None else y[:max_examples])
    res = {**evaluate_run(run, x, y, name=name, iwae_k=iwae_k, seed=seed, exact=exact, rtol=rtol, atol=atol,
                          probes=probes), "checkpoint": run.checkpoint}
    if as_json:
        click.echo(json.dumps(res))
        return
    click.echo("\n".join(_evaluate_lines(run, res, name, iwae_k)))


def _evaluate_lines(run, res: dict, name: str, iwae_k: int) -> list[str]:
    lines = [f"{res['family']} on {name} (n={res['n']}, D={res['dim']}; parameters from {run.checkpoint}):"]
    if run.family.bound == "exact":
        lines.append(f"  log p(x) (exact)  {res['log_likelihood']:10.4f} nats   BIC {res['bic']:.1f}")
    elif run.family.bound == "chain":
        lines.append(f"  ELBO (full chain) {res['elbo']:10.3f} nats   bits/dim {res['bits_per_dim']:.4f}")
    elif run.family.bound == "labels":
        lines.append(f"  accuracy {res['accuracy']:.4f}   log p(y | x) {res['log_likelihood']:.4f} nats (clean x)")
        lines += [f"  at t={r['t']:<4}   accuracy {r['accuracy']:.4f}   log p(y | x_t) {r['log_likelihood']:.4f}"
                  for r in res["per_t"][1:]]
    elif run.family.bound == "dsm":
        lines.append(f"  score-matching loss {res['dsm_loss']:10.4f} (sum over {len(res['J'])} levels; not a "
                     f"likelihood{'' if 'ode' in res else ': --exact gives log p(x)'})")
    else:
        lines += [f"  ELBO            {res['elbo']:10.3f} nats  (reconstruction {res['reconstruction']:.3f}, "
                  f"KL {res['kl']:.3f})",
                  f"  log p(x), k={res.get('iwae_k', iwae_k):<5} {res['log_likelihood']:10.3f} nats"]
    if run.family.bound in ("exact", "iwae"):
        lines.append(f"  bits/dim        {res['bits_per_dim']:10.4f}")
    if two := res.get("two_stage"):  # a VQ-VAE's prior: the bound on the images, with this prior
        lines.append(f"  images: log p(x) >= {two['elbo']:.3f} nats = log p(x | z_q) {two['reconstruction']:.3f} + "
                     f"log p(z_q) {two['log_prior']:.3f}   bits/dim {two['bits_per_dim']:.4f}   (uniform prior: "
                     f"{two['uniform_prior_elbo']:.3f})")
    if ode := res.get("ode"):
        how = "exact divergence" if ode["exact"] else f"Hutchinson, {ode['probes']} probes"
        lines.append(f"  log p(x) (ODE)  {ode['log_prob']:10.3f} +- {ode['log_prob_se']:.3f} nats   bits/dim "
                     f"{ode['bits_per_dim']:.4f} +- {ode['bits_per_dim_se']:.4f}  ({how}; {ode['nfe']} drift "
                     f"evaluations, rtol {ode['rtol']:g})")
    return lines


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="FILE.npy (N, ...) or FILE.png grid.")
@click.option("--mean", is_flag=True, help="E[x | z] instead of a draw x ~ p(x | z) (families with a decoder).")
@checkpoint_option
@compute_options
@click.option("--label", type=click.IntRange(min=0), default=None,
              help="Conditional runs: the label of every sample (default: labels 0, 1, ... in turn).")
@click.option("--guidance", type=FiniteFloat(min=0), default=None,
              help="Conditional diffusion: classifier-free guidance w, (1 + w) eps(x, y) - w eps(x); 0: none. "
                   "With --classifier: classifier guidance, eps(x) - w sqrt(1 - abar) grad log p(y | x).")
@click.option("--classifier", "classifier_dir", type=click.Path(), default=None,
              help="A noise-conditional classifier run on the DDPM's schedule, for classifier guidance.")
@click.option("--sampler", default=None, help="Families with several samplers (ddpm: ddpm, ddim, langevin, pc, ode; "
              "score: langevin, pc, ode).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="DDIM steps S (default 50); Langevin/PC steps M per noise level (default 10 / 1).")
@click.option("--eta", type=FiniteFloat(min=0, max=1), default=None,
              help="DDIM stochasticity (0 deterministic, the default).")
@click.option("--step-size", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Langevin/PC: eps, the step at sigma_i being eps sigma_i^2 / sigma_L^2 (default 0.2 / 0.05 "
                   "sigma_L^2).")
@click.option("--rtol", type=FiniteFloat(min=0, min_open=True), default=None,
              help="ODE: the solver's relative tolerance (default 1e-5).")
@click.option("--atol", type=FiniteFloat(min=0, min_open=True), default=None,
              help="ODE: the solver's absolute tolerance (default 1e-5).")
@click.option("--trajectory", type=click.Path(dir_okay=False), default=None,
              help="Families with samplers: also draw the sampler's snapshots of the first draws into FILE.png.")
def sample(run_dir, n, out, mean, checkpoint, device, seed, threads, label, guidance, classifier_dir, sampler,
           trajectory, **sampler_options):
    """Draw N new examples from a fitted run."""
    import numpy as np

    from ..plotting import plot_samples, sample_labels
    from ..runs import sample_run

    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise InputError(f"--out: expected a file ending in .npy or .png; got {str(out)!r}")
    if trajectory is not None and Path(trajectory).suffix != ".png":
        raise InputError(f"--trajectory: expected a file ending in .png; got {trajectory!r}")
    for path in (out, *([Path(trajectory)] if trajectory else [])):
        ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    run = load(run_dir, device, checkpoint, threads)
    if trajectory is not None:
        from ..models import require

        require(run.family, "samplers", "--trajectory")
    classifier = load(classifier_dir, device, "last", threads) if classifier_dir is not None else None
    x = sample_run(run, n, seed=seed, mean=mean, label=label, guidance=guidance, classifier=classifier, sampler=sampler,
                   **sampler_options)
    if trajectory is not None:
        from ..plotting import plot_run_trajectory
        from ..runs import trajectory_run

        image = len(run.sample_shape) >= 2
        traj = trajectory_run(run, min(n, 8) if image else n, seed=seed, sampler=sampler, label=label,
                              guidance=guidance, classifier=classifier, **sampler_options)
        plot_run_trajectory(run, traj, Path(trajectory), sampler or run.family.samplers[0],
                            None if image else run.eval_data()[0][:2000].numpy())
    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(out, buf.getvalue())
    else:
        vector = len(run.sample_shape) < 2                   # a scatter reads against the held-out data in grey
        what = run.family.name + ("" if run.decoder is None else f" prior, decoded by {run.decoder.family.name}")
        plot_samples(x.reshape(n, -1), run.sample_shape, out, f"{what}: {n} samples",
                     reference=run.eval_data()[0].numpy() if vector else None, labels=sample_labels(run, n, label))
    also = f" and their trajectory to {trajectory}" if trajectory else ""
    click.echo(f"wrote {n} samples of shape {run.sample_shape} to {out}{also} (parameters from {run.checkpoint})")


@cli.command()
@click.argument("run_dir", type=click.Path())
@data_options
@click.option("--iwae-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Importance samples for the ELBO-IWAE gap.")
@click.option("--max-examples", type=click.IntRange(min=2), default=500, show_default=True)
@checkpoint_option
@compute_options
def diagnose(run_dir, dataset, data_path, data_dir, iwae_k, max_examples, checkpoint, device, seed, threads):
    """ELBO terms (per site, per latent dimension, or per chain step), active units, ELBO-IWAE gap, gradient
    SNR, convergence; writes RUN/diagnostics.json, PNGs and (latent codes) RUN/posterior.nc."""
    from ..models import require
    from ..plotting import write_diagnostic_figures
    from ..runs import diagnose_run, summary

    one_source(dataset, data_path)
    run = load(run_dir, device, checkpoint, threads)
    exact = run.family.bound == "exact"  # (its latents, if any, are summed out: no guide to diagnose)
    hint = f"`ppl-dgm evaluate {run_dir}` reports its exact log-likelihood" if exact else ""
    require(run.family, ("generative", "svi"), "ppl-dgm diagnose", hint)
    x, y, name = run.eval_data(dataset, data_path, data_dir)
    diag = diagnose_run(run, x[:max_examples], None if y is None else y[:max_examples], name=name, iwae_k=iwae_k,
                        seed=seed)
    files = write_diagnostic_figures(diag, run)
    diag.report["files"] = ["diagnostics.json", *files, *(["posterior.nc"] if diag.active else [])]
    diag.report["checkpoint"] = run.checkpoint
    atomic_write_json(run.path / "diagnostics.json", diag.report)
    click.echo(f"{summary(diag.report)}\nparameters from {run.checkpoint}")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Families with their capabilities, and datasets, as JSON.")
def list_cmd(as_json):
    """The model families (with what each can do) and the datasets."""
    from ..data import DATASETS

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

"""Click options built from the families' config dataclasses, and the options every command shares."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields

import click

from ..errors import InputError, check_sizes
from ..models.options import FieldSpec, FitOptions, field_specs


def _int_list(name: str):
    def parse(ctx, param, value):
        if value is None or isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            raise InputError(f"--{name}: expected a size or comma-separated sizes like 512,256; "
                             f"got {value!r}") from None
        return check_sizes(f"--{name}", out)

    return parse


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and infinities (click's ``FloatRange`` lets NaN through every bound)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"expected a finite number; got {value!r}", param, ctx)
        return value


def _click_type(spec: FieldSpec):
    """The click type of a config field (what :meth:`FitOptions.__post_init__` checks, typed on a command line)."""
    if spec.kind == "choice":
        return click.Choice([str(a) for a in spec.choices])
    bounds = dict(min=spec.min, min_open=spec.min_open, max=spec.max, max_open=spec.max_open)
    if spec.kind == "int":
        return click.IntRange(**bounds) if spec.min is not None or spec.max is not None else int
    if spec.kind == "float":
        return FiniteFloat(**bounds)
    return str


def config_options(config: type[FitOptions]):
    """Decorator adding one ``--option`` per field of ``config`` (``latent_dim`` -> ``--latent-dim``)."""
    specs = field_specs(config)

    def decorate(f):
        for fld in reversed(fields(config)):
            flag = fld.metadata.get("flags") or (f"--{fld.name.replace('_', '-')}",)
            default = None if fld.default is MISSING else fld.default
            kw: dict = {"help": fld.metadata.get("help", ""), "default": default}
            if specs[fld.name].kind == "bool" and specs[fld.name].optional:  # None: the trainer decides
                flag = (f"{flag[0]}/--no-{flag[0][2:]}", *flag[1:])
            elif specs[fld.name].kind == "bool":
                kw.update(is_flag=True, default=bool(default))
            elif specs[fld.name].kind == "sizes":
                kw.update(default=None if default is None else ",".join(map(str, default)),
                          callback=_int_list(flag[0].lstrip("-")), show_default=default is not None)
            else:
                kw.update(type=_click_type(specs[fld.name]), show_default=default is not None)
            f = click.option(*flag, fld.name, **kw)(f)
        return f

    return decorate


def data_options(f):
    """--dataset / --data / --data-dir."""
    f = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder of IDX files for fashion-mnist / mnist.")(f)
    f = click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
                     help="A .npy array (N, ...) or .npz (x, y, x_test, y_test).")(f)
    f = click.option("--dataset", default=None, help="A named dataset (see `ppl-dgm list`); default digits.")(f)
    return f


def fit_data_options(f):
    """--test-data / --val-fraction: where `fit`'s held-out rows come from."""
    f = click.option("--val-fraction", type=FiniteFloat(min=0, max=1, max_open=True), default=0.2,
                     show_default=True,
                     help="Without test data: the fraction of the rows held out (seeded); 0 trains on all.")(f)
    f = click.option("--test-data", "test_path", type=click.Path(dir_okay=False), default=None,
                     help="A .npy/.npz of held-out rows (then every row of --data trains).")(f)
    return f


class Threads(click.ParamType):
    """``N`` (a positive integer) or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        try:
            n = int(str(value).strip())
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"expected a positive integer or 'auto'; got {value!r}", param, ctx)
        return n


def threads_option(f):
    """--threads N|auto (:func:`ppl_dgm.utils.set_threads`)."""
    return click.option("--threads", type=Threads(), default="auto", show_default=True, metavar="N|auto",
                        help="torch CPU threads; auto: 1 for a small model on the CPU, else torch's default.")(f)


def compute_options(f):
    """--device / --seed / --threads: the options of every command that computes."""
    f = threads_option(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)(f)
    f = click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)(f)
    return f


def checkpoint_option(f):
    """--checkpoint best|last: which parameters of a run to load."""
    return click.option("--checkpoint", type=click.Choice(["last", "best"]), default="last", show_default=True,
                        help="The last epoch's parameters, or those of the best held-out ELBO (SVI runs).")(f)


def run_options(f):
    """Options of `fit` that are not the family's: output, resume / overwrite, binarization, progress."""
    for opt in reversed([
        click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/<family>-<data>)."),
        click.option("--binarize", type=click.Choice(["none", "static", "dynamic"]), default=None,
                     help="Binarize images (default: dynamic for a Bernoulli likelihood on images, static for the "
                          "discrete fvsbn and pixelcnn, else none)."),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out from its checkpoint, with its stored data and options "
                          "(--epochs may grow; options typed again must equal the run's)."),
        click.option("--overwrite", is_flag=True, help="Replace the run in --out (its files are removed first)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        f = opt(f)
    return f


def one_source(dataset, data_path) -> None:
    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")


def explicit(ctx: click.Context, names) -> list[str]:
    """The flags (``--latent-dim``) of the options among ``names`` that were typed on the command line."""
    src = click.core.ParameterSource.COMMANDLINE
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names if ctx.get_parameter_source(n) == src]

"""Click options built from the families' config dataclasses, and the options every command shares."""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, Field, fields

import click

from ..errors import InputError
from ..models.options import FitOptions


def _int_list(name: str):
    def parse(ctx, param, value):
        if value is None or isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            raise InputError(f"--{name}: expected a size or comma-separated sizes like 512,256; "
                             f"got {value!r}") from None
        if not out or any(v < 1 for v in out):
            raise InputError(f"--{name}: expected positive sizes; got {value!r}")
        return out

    return parse


def _click_type(f: Field, hint):
    """The click type of a config field from its annotation and ``min`` metadata."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]  # X | None
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(hint)])
    lo, open_ = f.metadata.get("min"), f.metadata.get("min_open", False)
    if hint is int:
        return click.IntRange(min=lo) if lo is not None else int
    if hint is float:
        return click.FloatRange(min=lo, min_open=open_) if lo is not None else float
    return str


def config_options(config: type[FitOptions]):
    """Decorator adding one ``--option`` per field of ``config`` (``latent_dim`` -> ``--latent-dim``)."""
    hints = typing.get_type_hints(config)

    def decorate(f):
        for fld in reversed(fields(config)):
            flag = fld.metadata.get("flags") or (f"--{fld.name.replace('_', '-')}",)
            default = None if fld.default is MISSING else fld.default
            kw: dict = {"help": fld.metadata.get("help", ""), "default": default}
            if typing.get_origin(hints[fld.name]) is tuple:
                kw.update(default=",".join(map(str, default)), callback=_int_list(flag[0].lstrip("-")),
                          show_default=True)
            else:
                kw.update(type=_click_type(fld, hints[fld.name]), show_default=default is not None)
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


def device_seed_options(f):
    f = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)(f)
    f = click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)(f)
    return f


def run_options(f):
    """Options of `fit` that are not the family's: output, resume, binarization, progress."""
    for opt in reversed([
        click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/<family>-<data>)."),
        click.option("--binarize", type=click.Choice(["none", "static", "dynamic"]), default=None,
                     help="Binarize images (default: dynamic for a Bernoulli likelihood on images, else none)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        f = opt(f)
    return f


def one_source(dataset, data_path) -> None:
    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")


def explicit(ctx: click.Context, names) -> list[str]:
    """The options among ``names`` that were typed on the command line."""
    src = click.core.ParameterSource.COMMANDLINE
    return [n for n in names if ctx.get_parameter_source(n) == src]

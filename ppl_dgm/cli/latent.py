"""``ppl-dgm latent RUN TOOL``: latent-space pictures of a family with an encoder (notes 000, latent space)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..utils import ensure_writable_dir
from .commands import cli, load
from .options import FiniteFloat, checkpoint_option, threads_option


@cli.group()
@click.argument("run_dir", type=click.Path())
@click.pass_context
def latent(ctx, run_dir):
    """Latent-space pictures of a fitted run with an encoder: `ppl-dgm latent RUN_DIR TOOL --out FILE.png`."""
    ctx.obj = run_dir


def tool_options(f):
    """--out FILE.png, --checkpoint and --threads: the options every tool shares."""
    f = threads_option(checkpoint_option(f))
    return click.option("--out", type=click.Path(dir_okay=False), required=True, help="FILE.png")(f)


def _load(run_dir, out, checkpoint, threads):
    """The run, its test data and labels, after checking that the tools apply."""
    from ..models import require

    out = Path(out)
    if out.suffix != ".png":
        raise InputError(f"--out: expected a file ending in .png; got {str(out)!r}")
    ensure_writable_dir(out.parent)
    run = load(run_dir, checkpoint=checkpoint, threads=threads)
    require(run.family, "encoder", "ppl-dgm latent")
    if len(run.shape) < 2:
        raise InputError(f"latent image grids need image data; the run's examples have shape {run.shape}")
    x, labels, _ = run.eval_data()
    if run.model.conditional and labels is None:
        raise InputError("a conditional run needs labelled test data")
    return run, x, labels, out


def _index(i, n, name):
    if not 0 <= i < n:
        raise InputError(f"{name}: expected an index into the {n} test examples (0..{n - 1}); got {i}")
    return i


def _partner(a: int, labels, n: int) -> int:
    """The default second end of an interpolation from test example ``a``: the first test example with
    another label (labelled data), else the next one."""
    if labels is not None:
        other = (labels != labels[a]).nonzero().flatten()
        if len(other):
            return int(other[0])
    return (a + 1) % n


def _at(run, labels, idx):
    """The labels the model reads at ``idx``: those of a conditional family, else None."""
    return labels[idx] if run.model.conditional else None


def _plot(run, rows, out, title, **labels):
    import torch

    from ..plotting import plot_rows

    plot_rows(torch.as_tensor(rows).detach().cpu().numpy(), run.shape, out, f"{run.family.name}: {title}", **labels)
    click.echo(f"wrote {out} (parameters from {run.checkpoint})")


@latent.command("reconstruct")
@click.pass_obj
@click.option("-n", "n", type=click.IntRange(min=1, max=256), default=16, show_default=True)
@tool_options
def latent_reconstruct(run_dir, n, out, checkpoint, threads):
    """Test inputs (top) and E[x | z = g_mu(x)] (bottom)."""
    import torch

    run, x, y, out = _load(run_dir, out, checkpoint, threads)
    idx = list(range(min(n, len(x))))
    rec = run.model.reconstruct(x[idx].to(run.model.device), _at(run, y, idx)).cpu()
    _plot(run, torch.stack([x[idx], rec.to(x.dtype)]), out, "inputs (top), reconstructions")


@latent.command("interpolate")
@click.pass_obj
@click.option("--a", "index_a", type=int, default=None, help="Index of the first test input.  [default: 0]")
@click.option("--b", "index_b", type=int, default=None,
              help="Index of the second test input.  [default: the first test input whose label differs from "
                   "--a's; unlabelled data: the next one]")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True)
@tool_options
def latent_interpolate(run_dir, index_a, index_b, steps, out, checkpoint, threads):
    """Linear (top row) and spherical (bottom row) interpolation between two test inputs."""
    import torch

    from ..models.latent import interpolate

    run, x, y, out = _load(run_dir, out, checkpoint, threads)
    a = _index(0 if index_a is None else index_a, len(x), "--a")
    b = _index(_partner(a, y, len(x)) if index_b is None else index_b, len(x), "--b")
    rows = torch.stack([interpolate(run.model, x[a], x[b], steps, m, _at(run, y, a), _at(run, y, b)).cpu().to(x.dtype)
                        for m in ("linear", "slerp")])
    ends = [f"test {i}" + ("" if y is None else f" (label {int(y[i])})") for i in (a, b)]
    _plot(run, rows, out, " -> ".join(ends), row_labels=["linear", "slerp"])


@latent.command("traverse")
@click.pass_obj
@click.option("--index", type=int, default=0, show_default=True, help="Test input whose code is varied.")
@click.option("--limit", type=FiniteFloat(min=0, min_open=True), default=3.0, show_default=True)
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True)
@tool_options
def latent_traverse(run_dir, index, limit, steps, out, checkpoint, threads):
    """One row per latent dimension: z_k from -limit to +limit, the other dimensions at g_mu(x)."""
    import numpy as np

    from ..models.latent import traverse

    run, x, y, out = _load(run_dir, out, checkpoint, threads)
    i = _index(index, len(x), "--index")
    values = np.linspace(-limit, limit, steps)
    rows = traverse(run.model, x[i], values, y=_at(run, y, i))
    _plot(run, rows, out, f"latent traversal of test {i}", row_labels=[f"z{k}" for k in range(rows.shape[0])],
          col_labels=[f"{v:+.1f}" for v in values])


@latent.command("arithmetic")
@click.pass_obj
@click.option("--label", type=int, required=True, help="The attribute: test inputs with this label.")
@click.option("-n", "n", type=click.IntRange(min=1, max=32), default=6, show_default=True,
              help="How many inputs (without the label) to edit.")
@tool_options
def latent_arithmetic(run_dir, label, n, out, checkpoint, threads):
    """Decode g_mu(x) + s Delta, s = -4..4, Delta = mean code with the label minus mean code without."""
    from ..models.latent import arithmetic, attribute_vector

    run, x, y, out = _load(run_dir, out, checkpoint, threads)
    if y is None:
        raise InputError("arithmetic needs labelled test data; the run's data have no labels")
    has = y == label
    delta = attribute_vector(run.model, x, has, _at(run, y, slice(None)))
    idx = (~has).nonzero().flatten()[:n]
    scales = list(range(-4, 5))
    rows = arithmetic(run.model, x[idx], delta, scales, _at(run, y, idx))
    _plot(run, rows, out, f"z + s * (mean z | label {label} - mean z | other)", col_labels=[f"s={s}" for s in scales])

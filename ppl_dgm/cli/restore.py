"""``ppl-dgm restore RUN --task inpaint|denoise|superres``: inverse problems by DPS with a DDPM run (notes 000, §13)."""

from __future__ import annotations

import io
from pathlib import Path

import click

from ..errors import InputError
from ..utils import atomic_write_bytes, ensure_writable_dir
from .commands import cli, load
from .options import FiniteFloat, checkpoint_option, compute_options

GRID_COLUMNS = 16
"""Examples shown in the ``--out FILE.png`` grid."""


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--task", type=click.Choice(["inpaint", "denoise", "superres"]), required=True)
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help="X.npy: measurements shaped like the run's data and on its scale (superres: low-resolution "
                   "images, or full-size ones to downsample).")
@click.option("--mask", "mask_path", type=click.Path(dir_okay=False), default=None,
              help="inpaint: M.npy, 1 where the input is observed, 0 where missing; one example's shape or X's.")
@click.option("--sigma-y", type=FiniteFloat(min=0, min_open=True), default=0.05, show_default=True,
              help="Standard deviation of the measurement noise (data scale).")
@click.option("--scale", type=click.IntRange(min=1), default=2, show_default=True,
              help="superres: the downsampling factor (average pooling).")
@click.option("--zeta", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="DPS step: x_{t-1} -= zeta grad ||y - A(x0_hat(x_t))||.")
@click.option("--reference", "reference_path", type=click.Path(dir_okay=False), default=None,
              help="CLEAN.npy: the true examples; prints PSNR/SSIM of DPS and of the baseline.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="FILE.npy (the restored examples) or FILE.png (measurement, baseline, DPS[, reference]).")
@checkpoint_option
@compute_options
def restore(run_dir, task, input_path, mask_path, sigma_y, scale, zeta, reference_path, out, checkpoint, device,
            seed, threads):
    """Inpaint, denoise or super-resolve with a DDPM run as the prior, by diffusion posterior sampling (DPS)."""
    out = Path(out)
    if out.suffix not in (".npy", ".png"):
        raise InputError(f"--out: expected a file ending in .npy or .png; got {str(out)!r}")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    from ..data.images import read_array_file
    from ..runs import check_restorable, restore_run

    arrays = {name: None if path is None else read_array_file(path, name)["x"]
              for name, path in (("--input", input_path), ("--mask", mask_path), ("--reference", reference_path))}
    run = load(run_dir, device, checkpoint, threads)
    check_restorable(run)  # before the picture check: the run's kind is the first thing wrong
    if out.suffix == ".png" and len(run.shape) < 2:
        raise InputError(f"--out: a picture grid needs image data; the run's examples have shape {run.shape} "
                         f"(write .npy)")
    res = restore_run(run, arrays["--input"], task, mask=arrays["--mask"], sigma_y=sigma_y, scale=scale, zeta=zeta,
                      seed=seed, reference=arrays["--reference"])
    _write(run, res, out, arrays["--reference"])
    click.echo("\n".join(_lines(run, res, out)))


def _write(run, res: dict, out: Path, reference) -> None:
    import numpy as np

    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, res["x"])
        atomic_write_bytes(out, buf.getvalue())
        return
    from ..plotting import plot_rows

    parts = [res["measurement"], res["baseline"], res["x"]] + ([reference] if reference is not None else [])
    rows = np.stack([np.asarray(p, dtype=np.float32)[:GRID_COLUMNS].reshape(min(res["n"], GRID_COLUMNS), -1)
                     for p in parts])
    labels = ["measurement", "baseline", "DPS", "reference"][:len(parts)]
    plot_rows(rows, run.shape, out, f"{run.family.name}: {res['task']} by DPS (zeta {res['zeta']:g}, "
              f"sigma_y {res['sigma_y']:g})", row_labels=labels)


def _lines(run, res: dict, out: Path) -> list[str]:
    lines = [f"{res['task']}: {res['n']} examples restored by DPS into {out} (parameters from {run.checkpoint})",
             f"  ||y - A(x)||  DPS {res['consistency']:.4f}   baseline {res['consistency_baseline']:.4f}   "
             f"(noise alone: sigma_y sqrt(M) = {res['noise_norm']:.4f})"]
    for key, unit in (("psnr", " dB"), ("ssim", ""), ("mse", "")):
        if key in res and (key != "mse" or "psnr" not in res):
            lines.append(f"  {key.upper():<12}  DPS {res[key]['dps']:.4f}{unit}   baseline "
                         f"{res[key]['baseline']:.4f}{unit}")
    if "psnr" in res and "ssim" not in res:
        lines.append("  SSIM          needs images with sides >= 7")
    return lines

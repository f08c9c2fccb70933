"""``ppl-dgm evaluate RUN --samples N``: sample quality of any generative run (FD, KID, precision, recall,
class confidence, with the floor), in a classifier's features for images and raw coordinates for vectors."""

from __future__ import annotations

import json

import click

from ..errors import InputError
from .commands import load
from .options import explicit

# options of the likelihood evaluation that mean nothing with --samples
_LIKELIHOOD_ONLY = ("dataset", "data_path", "data_dir", "iwae_k", "exact", "rtol", "atol", "probes", "max_examples")


def evaluate_samples(ctx: click.Context, run_dir, n: int | None, scorer_dir, sampler, steps, checkpoint, device,
                     seed, threads, as_json) -> None:
    """Run the ``--samples`` branch of ``evaluate``; the options of the other branch are refused in one line."""
    from ..runs import load_run, sample_quality_run

    if n is None:
        given = explicit(ctx, ["scorer_dir", "sampler", "steps"])
        raise InputError(f"{given[0]}: expected with --samples N; got no --samples")
    if bad := explicit(ctx, _LIKELIHOOD_ONLY):
        raise InputError(f"--samples scores samples against the run's own held-out data; expected no {bad[0]}")
    run = load(run_dir, device, checkpoint, threads)
    scorer = load_run(scorer_dir, device=device) if scorer_dir is not None else None
    options = {"sampler": sampler, **({"steps": steps} if steps is not None else {})}
    res = sample_quality_run(run, n, scorer=scorer, seed=seed, threads=threads,
                             echo=lambda m: click.echo(m, err=True), **options)
    click.echo(json.dumps(res) if as_json else "\n".join(quality_lines(res)))


def quality_lines(res: dict) -> list[str]:
    """The report of :func:`ppl_dgm.runs.sample_quality_run` in a few lines, each figure beside its floor."""
    floor = res.get("floor", {})
    f = lambda key, fmt: f"{res[key]:{fmt}}" + (f" (floor {floor[key]:{fmt}})" if key in floor else "")  # noqa: E731
    lines = [f"{res['family']} on {res['data']}: {res['n']} samples ({res['samples_per_second']:.4g} samples/s) "
             f"against {res['n']} held-out examples; features: {res['features']}"
             + (f" of {res['scorer']}" if res.get("scorer") else ""),
             f"  FD {f('fd', '.4g')}   KID {res['kid']:.4g} +- {res['kid_se']:.2g}"
             + (f" (floor {floor['kid']:.4g} +- {floor['kid_se']:.2g})" if floor else ""),
             f"  precision {f('precision', '.3f')}   recall {f('recall', '.3f')}   (k={res['k']})"]
    if "confidence" in res:
        lines.append(f"  class confidence {res['confidence']:.3f} (held-out examples {res['confidence_real']:.3f})")
    if rec := res.get("reconstruction"):
        lines.append(f"  reconstructions of the held-out examples: PSNR {rec['psnr']:.2f} dB"
                     + (f"   SSIM {rec['ssim']:.3f}" if "ssim" in rec else ""))
    return lines

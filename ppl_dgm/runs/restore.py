"""Restore measurements with a fitted DDPM run: inpainting, denoising, super-resolution by DPS (notes 000, §13).

:func:`restore_run` builds the task's operator (:mod:`ppl_dgm.models.inverse`), draws one DPS sample per
measurement, and scores it beside the baseline that uses the measurement alone: the masked input, the noisy
input, or bicubic upsampling.  PSNR and SSIM (:mod:`ppl_dgm.evaluation.quality`) are the quality figures for
images in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data import check_array
from ..errors import InputError, check_choice, check_number
from ..evaluation.quality import psnr, ssim  # noqa: F401  (the figures; imported from here before they moved)
from ..models import inverse
from .store import Run

TASKS = ("inpaint", "denoise", "superres")


def _operator(run: Run, task: str, y: np.ndarray, mask, scale: int):
    """(A, measurement rows (N, M) on the data's scale) for ``task``; inputs checked against the run's shape."""
    shape, n = run.shape, len(y)
    rows = torch.as_tensor(y, dtype=torch.float32).reshape(n, -1)
    if task != "inpaint" and mask is not None:
        raise InputError(f"--mask: expected only with --task inpaint; got --task {task}")
    if task == "superres":
        A = inverse.superres(scale, shape)
        if y.shape[1:] == shape:                     # full-size images: measure them first
            return A, A(rows)
        if y.shape[1:] != A.low_shape:
            raise InputError(f"input: expected low-resolution images of shape {A.low_shape} (or {shape} to be "
                             f"downsampled by {scale}); got {y.shape[1:]}")
        return A, rows
    if y.shape[1:] != shape:
        raise InputError(f"input: expected examples of the run's shape {shape}; got {y.shape[1:]}")
    if task == "denoise":
        return inverse.denoise(), rows
    if mask is None:
        raise InputError("--mask: expected a mask (1 observed, 0 missing) with --task inpaint; got none")
    m = np.asarray(mask)
    m = check_array(m[None] if m.shape == shape else m, "mask")
    if m.shape[1:] != shape or len(m) not in (1, n):
        raise InputError(f"mask: expected shape {shape} or {(n, *shape)}; got {np.shape(mask)}")
    A = inverse.inpaint(torch.as_tensor(m, dtype=torch.float32).reshape(len(m), -1).squeeze(0))
    return A, A(rows)


def check_restorable(run: Run) -> None:
    """Refuse, in one line, a run that cannot serve as the prior of a restoration: DPS needs a DDPM on the data."""
    if run.family.name != "ddpm":
        raise InputError(f"ppl-dgm restore needs a diffusion run (ddpm); got {run.family.name!r}")
    if run.decoder is not None:
        raise InputError("ppl-dgm restore needs a ddpm on the data itself; got a latent diffusion run (--latent-of)")


def restore_run(run: Run, y, task: str, *, mask=None, sigma_y: float = 0.05, scale: int = 2, zeta: float = 1.0,
                seed: int = 0, reference=None) -> dict:
    """DPS restorations of the measurements ``y`` with the run's DDPM as the prior.

    Parameters
    ----------
    run : Run
        A ``ddpm`` run.
    y : array, shape (N, *run.shape)
        The measurements on the data's scale: the images to inpaint (missing pixels are ignored) or denoise;
        for ``superres`` the low-resolution images (N, ..., H/scale, W/scale), or full-size ones to downsample.
    task : {"inpaint", "denoise", "superres"}
    mask : array, shape run.shape or (N, *run.shape), optional
        Inpainting: 1 where y is observed, 0 where it is missing.
    sigma_y, scale, zeta : float, int, float
        The measurement noise (data scale), the super-resolution factor, the DPS step.
    seed : int
    reference : array, shape (N, *run.shape), optional
        Clean examples: adds the MSE, and for images PSNR and SSIM, of DPS and of the baseline.

    Returns
    -------
    dict
        ``x`` (the DPS restorations), ``baseline`` and ``measurement`` (y shown at the example's size), each a
        float32 array (N, *run.shape); ``consistency`` and ``consistency_baseline``: the mean over examples of
        ||y - A(x-hat)||; ``noise_norm``: sigma_y sqrt(M) (M measured entries), the norm a consistent x-hat
        leaves; with a reference ``mse``, ``psnr``, ``ssim`` as {"dps": ..., "baseline": ...} (PSNR, SSIM:
        images; SSIM: sides >= 7).
    """
    check_restorable(run)
    check_choice("task", task, TASKS)
    sigma_y = check_number("sigma_y", sigma_y, min=0, min_open=True)
    y = check_array(y, "input")
    A, y_rows = _operator(run, task, y, mask, scale)
    model, image = run.model, len(run.shape) >= 2
    torch.manual_seed(seed)
    x = inverse.dps_sample(model, y_rows, A, sigma_y=sigma_y, zeta=zeta, record=1).x.float().cpu()
    base = A.baseline(y_rows)
    shown = y_rows if task != "superres" else F.interpolate(
        y_rows.reshape(-1, *A.chw[:1], *A.low_shape[-2:]), scale_factor=scale, mode="nearest").flatten(1)
    if image:
        base, shown = base.clamp(0, 1), shown.clamp(0, 1)
    out = {"task": task, "n": len(y), "sigma_y": sigma_y, "zeta": zeta, **({"scale": scale} if task == "superres"
                                                                          else {}),
           "consistency": float((y_rows - A(x)).norm(dim=-1).mean()),
           "consistency_baseline": float((y_rows - A(base)).norm(dim=-1).mean()),
           "noise_norm": sigma_y * float(A(torch.ones(1, model.x_dim)).count_nonzero(-1).double().sqrt().mean())}
    if reference is not None:
        ref = check_array(reference, "reference")
        if ref.shape != (len(y), *run.shape):
            raise InputError(f"reference: expected clean examples of shape {(len(y), *run.shape)}; got {ref.shape}")
        ref = torch.as_tensor(ref, dtype=torch.float32).reshape(len(y), -1)
        pairs = {"dps": x, "baseline": base}
        out["mse"] = {k: float((v - ref).pow(2).mean()) for k, v in pairs.items()}
        if image:
            out["psnr"] = {k: float(psnr(v, ref).mean()) for k, v in pairs.items()}
            if min(run.shape[-2:]) >= 7:
                out["ssim"] = {k: float(ssim(v, ref, run.shape).mean()) for k, v in pairs.items()}
    as_np = lambda v: v.float().numpy().reshape(len(y), *run.shape)  # noqa: E731
    return {**out, "x": as_np(x), "baseline": as_np(base), "measurement": as_np(shown)}

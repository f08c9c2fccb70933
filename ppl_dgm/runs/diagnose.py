"""The diagnostics of a fitted SVI run (``ppl-dgm diagnose RUN``), chosen by what the family is.

For families with a latent code (vae, cvae, ae, hvae): the ELBO taken apart per site and per latent
dimension, Burda's active units (per layer for a hierarchy) and posterior collapse, the ELBO–IWAE gap
(a lower bound on KL(q(z|x) || p(z|x)), notes 002), gradient signal-to-noise and convergence, and
q(z | x) draws as ArviZ InferenceData.  For a diffusion chain (ddpm) the latents x_1..x_T are the
fixed forward process, so "active units" would mean nothing: the report gives the chain's per-step
terms L_t instead, with the gradient SNR and convergence; for a score model, the score-matching
loss per noise level.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..export import to_inference_data
from ..inference import (
    PosteriorCollapseWarning,
    active_units,
    collapse_warnings,
    convergence,
    elbo_iwae_gap,
    elbo_terms,
    gradient_snr,
)
from ..models import require
from ..utils import seed_everything
from .store import Run
from .train import objective_for
from .use import label_args


@dataclass
class Diagnosis:
    """``report`` is the JSON of ``diagnostics.json``; the objects behind it feed the figures."""

    report: dict[str, Any]
    active: dict = field(default_factory=dict)
    gap: Any = None
    chain: Any = None
    kl_per_dim: dict = field(default_factory=dict)
    dsm: Any = None


def _latent_report(run: Run, x, rest, iwae_k: int, elbo_particles: int, seed: int) -> Diagnosis:
    model = run.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        terms = elbo_terms(model.model, model.guide, x, *rest, num_particles=elbo_particles)
        au = active_units(model.guide, x, *rest)
        gap = elbo_iwae_gap(model.model, model.guide, x, *rest, k=iwae_k) if run.family.bound == "iwae" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PosteriorCollapseWarning)
        messages = collapse_warnings(au, terms.kl_sites)
    for w in caught:  # re-issue for Python callers, once
        warnings.warn(w.message, w.category, stacklevel=3)
    report = {"terms": terms.as_dict(), "active_units": {k: v.as_dict() for k, v in au.items()},
              "gap": gap.as_dict() if gap else None, "warnings": messages,
              "notes": [f"site {k!r} uses {v.active} of {v.dim} latent dimensions" for k, v in au.items()
                        if 0 < v.active < v.dim]}
    return Diagnosis(report, au, gap, None, terms.kl_per_dim)


def diagnose_run(run: Run, x: torch.Tensor, y: torch.Tensor | None = None, *, name: str = "data",
                 iwae_k: int = 100, elbo_particles: int = 10, snr_draws: int = 10, posterior_samples: int = 50,
                 posterior_examples: int = 100, seed: int = 0) -> Diagnosis:
    """Diagnose a fitted run on examples ``x`` (N, D) (and labels ``y`` for a conditional family).

    Writes ``posterior.nc`` (q(z | x) draws of the first ``posterior_examples`` examples) into the run
    directory for latent-code families; the figures are drawn by :mod:`ppl_dgm.plotting`.
    """
    require(run.family, ("generative", "svi"), "ppl-dgm diagnose")
    t0 = time.perf_counter()
    model = run.model
    x = x.to(model.device)
    rest = label_args(run, y, name)
    seed_everything(seed)
    loss = objective_for(run.family.config.from_stored(run.config["train"]), model)  # SNR of the trained objective
    if run.family.bound == "chain":
        chain = model.chain_elbo(x, seed=seed)
        diag = Diagnosis({"chain": chain.as_dict(), "warnings": [], "notes": []}, chain=chain)
    elif run.family.bound == "dsm":
        dsm = model.dsm_terms(x, seed=seed)
        worst = int(dsm.J.argmax())
        diag = Diagnosis({"dsm": dsm.as_dict(), "warnings": [], "notes": [
            f"largest term J at sigma = {dsm.sigmas[worst]:.3g}: {dsm.J[worst]:.3f} (D / 2 = {dsm.dim / 2:g} "
            f"would be a network that predicts nothing)"]}, dsm=dsm)
    else:
        diag = _latent_report(run, x, rest, iwae_k, elbo_particles, seed)
        idata = to_inference_data(model, (x[:posterior_examples], *(r[:posterior_examples] for r in rest)),
                                  num_samples=posterior_samples, config=run.config, seed=seed)
        tmp = run.path / ".posterior.nc.tmp"
        idata.to_netcdf(str(tmp))
        os.replace(tmp, run.path / "posterior.nc")
    conv = convergence(run.history)
    if conv.status in ("improving", "worsening"):
        diag.report["warnings"].append(f"not converged: held-out ELBO {conv.status} by {conv.slope:.3g} "
                                       f"nats/epoch over the last {conv.epochs_used} epochs")
    diag.report.update({"run": str(run.path), "family": run.family.name, "data": name, "n": int(x.shape[0]),
                        "snr": gradient_snr(model, x, *rest, num_draws=snr_draws, seed=seed, loss=loss),
                        "convergence": conv.as_dict(), "seconds": time.perf_counter() - t0})
    return diag


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines of a diagnosis report."""
    lines = [f"{report['family']} on {report['data']} (n={report['n']}):"]
    if "dsm" in report:
        d = report["dsm"]
        lines.append(f"  score-matching loss {d['dsm_loss']:.4f} = sum over {len(d['J'])} levels of J_i "
                     f"(sigma {d['sigmas'][0]:.3g} .. {d['sigmas'][-1]:.3g}); not a likelihood")
    elif "chain" in report:
        c = report["chain"]
        lines.append(f"  chain ELBO {c['elbo']:.3f} nats/example ({c['bits_per_dim']:.4f} bits/dim) = "
                     f"-(L_T {c['L_T']:.3g} + sum_t L_(t-1) {c['L_sum']:.3f} + L_0 {c['L_0']:.3f})")
    else:
        t = report["terms"]
        lines.append(f"  ELBO {t['elbo']:.3f} = reconstruction {t['reconstruction']:.3f} - KL {t['kl']:.3f} "
                     f"nats/example")
        if len(t["kl_sites"]) > 1:
            lines.append("  KL per layer: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                   sorted(t["kl_sites"].items(), key=lambda kv: (len(kv[0]), kv[0]))))
        for name, au in report["active_units"].items():
            kl = t["kl_per_dim"].get(name)
            top = f"; KL per dim max {max(kl):.3f}, min {min(kl):.4f}" if kl else ""
            lines.append(f"  active units {name}: {au['active']} of {au['dim']}{top}")
        if report["gap"]:
            g = report["gap"]
            lines.append(f"  ELBO-IWAE gap (k={g['k']}): {g['gap']:.3f} +- {g['gap_se']:.3f} nats "
                         f"(IWAE {g['iwae']:.3f})")
    c = report["convergence"]
    lines.append("  gradient SNR: " + ", ".join(f"{k} {v['snr']:.3f}" for k, v in report["snr"].items()))
    if c["status"] == "too short":  # no line through fewer than 4 points: no slope to state
        lines.append(f"  convergence: too short ({c['epochs_used']} epochs of {c['metric']}; a trend needs 4)")
    else:
        lines.append(f"  convergence: {c['status']} ({c['metric']} slope {c['slope']:.3g} nats/epoch over "
                     f"{c['epochs_used']} epochs)")
    lines += [f"  note: {m}" for m in report.get("notes", [])]
    lines += [f"  warning: {m}" for m in report["warnings"]]
    lines.append(f"  wrote {', '.join(report.get('files', []))} in {report['run']}")
    return "\n".join(lines)

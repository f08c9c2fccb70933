"""The diagnostics report of a fitted run: ``ppl-dgm diagnose RUN``.

:func:`diagnose_run` gathers every diagnostic of :mod:`.diagnostics` and
:mod:`.diagnostics_derived` for a run directory and writes

- ``diagnostics.json``: ELBO terms (per site and per latent dimension), active units,
  the ELBO–IWAE gap, gradient SNR per parameter group, convergence, warnings;
- ``terms.png`` (held-out ELBO, reconstruction and KL per epoch, from ``history.json``),
  ``kl_per_dim.png`` (KL and activity per latent dimension), ``gap.png`` (ELBO vs IWAE per example);
- ``posterior.nc``: q(z | x) draws for the first examples as ArviZ InferenceData.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_write_json, seed_everything
from .arviz import to_inference_data
from .diagnostics import elbo_terms
from .diagnostics_derived import (
    ActiveUnits,
    GapEstimate,
    PosteriorCollapseWarning,
    active_units,
    collapse_warnings,
    convergence,
    elbo_iwae_gap,
    gradient_snr,
)


def _plt():
    from ..plots import _plt as plt

    return plt()


def _save(fig, path) -> None:
    from ..plots import _save as save

    save(fig, path)


def plot_terms(history: list[dict], path: str | os.PathLike, title: str = "ELBO terms per epoch") -> None:
    """Held-out ELBO and reconstruction (left) and KL per latent site (right) against the epoch."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    ep = [h["epoch"] for h in history]
    a.plot(ep, [h["train_elbo"] for h in history], color="0.6", label="train objective (-loss)")
    if any("test_elbo" in h for h in history):
        a.plot(ep, [h.get("test_elbo", math.nan) for h in history], label="held-out ELBO")
        a.plot(ep, [h.get("test_reconstruction", math.nan) for h in history], "--",
               label="held-out reconstruction E_q[log p(x|z)]")
        sites = sorted({s for h in history for s in h.get("test_kl_sites", {})})
        b.plot(ep, [h.get("test_kl", math.nan) for h in history], color="k", label="KL (total)")
        if len(sites) > 1:
            for s in sites:
                b.plot(ep, [h.get("test_kl_sites", {}).get(s, math.nan) for h in history], label=f"KL {s}")
        b.legend(fontsize=8)
    else:
        b.text(0.5, 0.5, "no held-out terms recorded", ha="center", va="center", transform=b.transAxes)
    a.set(xlabel="epoch", ylabel="nats per example", title="ELBO and reconstruction")
    b.set(xlabel="epoch", ylabel="nats per example", title="KL(q(z|x) || p(z))")
    a.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_kl_per_dim(kl_per_dim: dict[str, list[float]], active: dict[str, ActiveUnits],
                    path: str | os.PathLike, title: str = "Latent dimensions") -> None:
    """Per latent dimension: KL per example (left) and Burda's activity Cov_x E_q[z_d] (right, log scale)."""
    plt = _plt()
    names = sorted(set(kl_per_dim) | set(active))
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        au = active.get(name)
        kl = kl_per_dim.get(name)
        k = len(kl) if kl is not None else (au.dim if au else 0)
        on = np.array(au.variance) > au.threshold if au else np.ones(k, bool)
        colors = np.where(on, "tab:blue", "tab:gray")
        if kl is not None:
            row[0].bar(np.arange(k), kl, color=colors)
        row[0].set(xlabel=f"dimension of {name}", ylabel="KL (nats per example)",
                   title=f"{name}: KL per dimension (grey: inactive)")
        if au is not None:
            row[1].bar(np.arange(k), np.maximum(au.variance, 1e-8), color=colors)
            row[1].axhline(au.threshold, color="tab:red", ls="--", label=f"threshold {au.threshold}")
            row[1].set_yscale("log")
            row[1].legend(fontsize=8)
        row[1].set(xlabel=f"dimension of {name}", ylabel="Cov_x(E_q[z_d])",
                   title=f"{name}: {au.active if au else '?'} of {k} units active")
        for ax in row:
            ax.set_xticks(np.arange(k) if k <= 32 else np.arange(0, k, max(1, k // 16)))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_gap(gap: GapEstimate, path: str | os.PathLike, title: str = "ELBO vs IWAE") -> None:
    """Per example: the gap IWAE_k - ELBO (histogram, left) and ELBO against IWAE_k (right)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    g = gap.per_example_iwae - gap.per_example_elbo
    a.hist(g, bins=40, color="tab:purple", alpha=0.8)
    a.axvline(gap.gap, color="k", ls="--", label=f"mean {gap.gap:.2f} nats")
    a.set(xlabel=f"IWAE(k={gap.k}) - ELBO  (nats)", ylabel="examples",
          title="gap: lower bound on KL(q(z|x) || p(z|x))")
    a.legend(fontsize=8)
    b.scatter(gap.per_example_elbo, gap.per_example_iwae, s=6, alpha=0.5)
    lo = float(min(gap.per_example_elbo.min(), gap.per_example_iwae.min()))
    hi = float(max(gap.per_example_elbo.max(), gap.per_example_iwae.max()))
    b.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="IWAE = ELBO")
    b.set(xlabel="ELBO per example (nats)", ylabel=f"IWAE k={gap.k} (nats)", title="per example")
    b.legend(fontsize=8)
    fig.suptitle(f"{title}: ELBO {gap.elbo:.2f}, IWAE {gap.iwae:.2f} nats/example (n={gap.n})")
    fig.tight_layout()
    _save(fig, path)


def diagnose_run(run_dir: str | os.PathLike, *, dataset: str | None = None, data_path: str | None = None,
                 data_dir: str | None = None, iwae_k: int = 100, max_examples: int = 500,
                 elbo_particles: int = 10, snr_draws: int = 10, posterior_samples: int = 50,
                 posterior_examples: int = 100, device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Diagnose a fitted run directory; writes the files listed in the module docstring.

    Parameters
    ----------
    run_dir : path
        A run written by ``ppl-dgm fit``.
    dataset, data_path, data_dir
        Data to diagnose on (default: the run's own test split), as for ``ppl-dgm evaluate``.
    iwae_k : int
        Importance samples for the ELBO–IWAE gap.
    max_examples : int
        At most this many examples (the first) are used.
    posterior_samples, posterior_examples : int
        Draws of q(z | x), and examples, written to ``posterior.nc``.

    Returns
    -------
    dict
        The content of ``diagnostics.json``.
    """
    from ..runs import load_eval_data, load_run

    t0 = time.perf_counter()
    run = Path(run_dir)
    model, cfg = load_run(run, device=device)
    x, y, name = load_eval_data(cfg, dataset, data_path, data_dir)
    x = x[:max_examples].to(model.device)
    rest = (y[:max_examples].to(x.device),) if cfg["model"].get("conditional") and y is not None else ()
    seed_everything(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        terms = elbo_terms(model.model, model.guide, x, *rest, num_particles=elbo_particles)
        au = active_units(model.guide, x, *rest)
        gap = elbo_iwae_gap(model.model, model.guide, x, *rest, k=iwae_k)
    snr = gradient_snr(model, x, *rest, num_draws=snr_draws, seed=seed)
    history_path = run / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else []
    conv = convergence(history)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PosteriorCollapseWarning)
        messages = collapse_warnings(au, terms.kl_sites)
    for w in caught:  # re-issue for Python callers, once
        warnings.warn(w.message, w.category, stacklevel=2)
    if conv.status in ("improving", "worsening"):
        messages.append(f"not converged: held-out ELBO {conv.status} by {conv.slope:.3g} nats/epoch "
                        f"over the last {conv.epochs_used} epochs")
    report = {
        "run": str(run), "family": cfg["family"], "data": name, "n": int(x.shape[0]),
        "terms": terms.as_dict(),
        "active_units": {k: v.as_dict() for k, v in au.items()},
        "gap": gap.as_dict(),
        "snr": snr,
        "convergence": conv.as_dict(),
        "warnings": messages,
        "notes": [f"site {k!r} uses {v.active} of {v.dim} latent dimensions" for k, v in au.items()
                  if 0 < v.active < v.dim],
    }
    what = f"{cfg['family']} on {name}"
    if history:
        plot_terms(history, run / "terms.png", title=f"{what}: held-out ELBO terms per epoch")
    plot_kl_per_dim(terms.kl_per_dim, au, run / "kl_per_dim.png", title=f"{what}: latent dimensions (n={len(x)})")
    plot_gap(gap, run / "gap.png", title=what)
    idata = to_inference_data(model, (x[:posterior_examples], *(r[:posterior_examples] for r in rest)),
                              num_samples=posterior_samples, config=cfg, seed=seed)
    tmp = run / ".posterior.nc.tmp"
    idata.to_netcdf(str(tmp))
    os.replace(tmp, run / "posterior.nc")
    report["files"] = ["diagnostics.json", *(["terms.png"] if history else []), "kl_per_dim.png", "gap.png",
                       "posterior.nc"]
    report["seconds"] = time.perf_counter() - t0
    atomic_write_json(run / "diagnostics.json", report)
    return report


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines of a :func:`diagnose_run` report."""
    t, g, c = report["terms"], report["gap"], report["convergence"]
    lines = [f"{report['family']} on {report['data']} (n={report['n']}):",
             f"  ELBO {t['elbo']:.3f} = reconstruction {t['reconstruction']:.3f} - KL {t['kl']:.3f} nats/example"]
    for name, au in report["active_units"].items():
        kl = t["kl_per_dim"].get(name)
        top = f"; KL per dim max {max(kl):.3f}, min {min(kl):.4f}" if kl else ""
        lines.append(f"  active units {name}: {au['active']} of {au['dim']}{top}")
    lines.append(f"  ELBO-IWAE gap (k={g['k']}): {g['gap']:.3f} +- {g['gap_se']:.3f} nats "
                 f"(IWAE {g['iwae']:.3f})")
    lines.append("  gradient SNR: " + ", ".join(f"{k} {v['snr']:.3f}" for k, v in report["snr"].items()))
    lines.append(f"  convergence: {c['status']} ({c['metric']} slope {c['slope']:.3g} nats/epoch over "
                 f"{c['epochs_used']} epochs)")
    lines += [f"  note: {m}" for m in report.get("notes", [])]
    lines += [f"  warning: {m}" for m in report["warnings"]]
    lines.append(f"  wrote {', '.join(report['files'])} in {report['run']}")
    return "\n".join(lines)

"""Figures of ``ppl-dgm diagnose``: ELBO terms per epoch, KL and activity per latent dimension,
ELBO against IWAE per example, and the chain terms L_t of a diffusion model."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from .core import plt, save

if TYPE_CHECKING:
    from ..inference.diagnostics_derived import ActiveUnits, GapEstimate


def plot_terms(history: list[dict], path: str | os.PathLike, title: str = "ELBO terms per epoch"):
    """Held-out ELBO and reconstruction (left) and KL per latent site (right) against the epoch.

    The training objective (on its own scale, see :func:`.figures.plot_history`) is drawn only when no
    held-out terms were recorded.
    """
    fig, (a, b) = plt().subplots(1, 2, figsize=(10, 3.8))
    ep = [h["epoch"] for h in history]
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
        a.plot(ep, [h["train_elbo"] for h in history], color="0.6", label="train objective (-loss)")
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
    save(fig, path)
    return fig


def plot_kl_per_dim(kl_per_dim: dict[str, list[float]], active: dict[str, ActiveUnits],
                    path: str | os.PathLike, title: str = "Latent dimensions") -> None:
    """Per latent dimension: KL per example (left) and Burda's activity Cov_x E_q[z_d] (right, log scale)."""
    names = sorted(set(kl_per_dim) | set(active))
    fig, axes = plt().subplots(len(names), 2, figsize=(10, 3.2 * len(names)), squeeze=False)
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
    save(fig, path)


def plot_gap(gap: GapEstimate, path: str | os.PathLike, title: str = "ELBO vs IWAE") -> None:
    """Per example: the gap IWAE_k - ELBO (histogram, left) and ELBO against IWAE_k (right)."""
    fig, (a, b) = plt().subplots(1, 2, figsize=(10, 3.8))
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
    save(fig, path)

"""Every figure of the package, each written as a PNG through one atomic save (:func:`.core.save`).

:func:`write_run_figures` draws the pictures a family declares in the registry (its ``figures``)
into its run directory; :func:`write_diagnostic_figures` those of ``ppl-dgm diagnose``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..runs import Diagnosis, Run
from .diagnostics import plot_gap, plot_kl_per_dim, plot_terms
from .diffusion import plot_loss_per_sigma, plot_loss_per_t, plot_trajectory
from .em import plot_ellipses, plot_loglik
from .figures import plot_game, plot_history, plot_reconstructions, plot_rows, plot_samples

__all__ = ["write_run_figures", "write_diagnostic_figures", "sample_labels", "plot_run_trajectory", "plot_history",
           "plot_game",
           "plot_samples", "plot_reconstructions", "plot_rows", "plot_trajectory", "plot_loss_per_t",
           "plot_loss_per_sigma", "plot_loglik", "plot_ellipses", "plot_terms", "plot_kl_per_dim", "plot_gap"]


def _elbo(run: Run, ds: Dataset) -> None:
    plot_history(run.history, run.path / "elbo.png", title=f"{run.family.name} on {ds.name}: per epoch",
                 held_out={"dsm": "held-out -(score-matching loss)", "labels": "held-out log p(y | x_t)",
                           "exact": "held-out log p(x)"}.get(run.family.bound, "held-out ELBO"))


def _game(run: Run, ds: Dataset) -> None:
    plot_game(run.history, run.path / "game.png", title=f"{run.family.name} on {ds.name}: the game per epoch")


def _loglik(run: Run, ds: Dataset) -> None:
    plot_loglik([h["log_likelihood"] for h in run.history], run.path / "loglik.png",
                title=f"{run.family.name}: EM log-likelihood per iteration ({ds.name})")


def sample_labels(run: Run, n: int, label: int | None = None) -> np.ndarray | None:
    """The labels n samples of a conditional run are drawn with: ``label`` for all, else 0, 1, ..., C-1 in
    turn (as the conditional families' ``sample``); None for other families.  Pass them to
    :func:`plot_samples` (``labels=``) to name them in the picture."""
    if not run.model.conditional:
        return None
    return np.full(n, label) if label is not None else np.arange(n) % run.model.n_classes


def _samples(run: Run, ds: Dataset) -> None:
    image = len(run.sample_shape) >= 2                    # a latent diffusion run's samples are decoded images
    mean = image and run.family.encoder
    labels = sample_labels(run, 8 * run.model.n_classes if run.model.conditional else 0)
    n = len(labels) if labels is not None else 64 if image else 2000
    kw = {"mean": True} if mean else {}
    if labels is not None:
        kw["y"] = torch.as_tensor(labels, device=run.model.device)
    x = run.decode(run.model.sample(n, **kw))
    given = "" if labels is None else " | y" if not mean else ", y"
    what = (run.model.sample_title if run.family.samplers
            else f"E[x | z{given}], z ~ p(z)" if mean else f"x ~ p(x{given})")
    if run.decoder is not None:
        what = (f"code maps, decoded by the VQ-VAE {run.decoder.path.name}" if run.config["data"].get("codes_of")
                else f"latent diffusion, decoded by {run.decoder.path.name}")
    plot_samples(x.float().cpu().numpy(), run.sample_shape, run.path / "samples.png",
                 f"{run.family.name} samples: {what}", reference=None if image else _reference(ds)[0].numpy(),
                 labels=labels)


def _reference(ds: Dataset):
    """The held-out examples the figures compare against, or the training ones if none are held out."""
    return (ds.x_test, "held-out") if len(ds.x_test) else (ds.x_train, "training")


def _reconstructions(run: Run, ds: Dataset) -> None:
    x, _ = _reference(ds)
    xs = x[:16] if ds.kind == "image" else x[:500]
    y = (ds.y_test if len(ds.x_test) else ds.y_train)[: len(xs)].to(run.model.device) if run.model.conditional \
        else None
    rec = run.model.reconstruct(xs.to(run.model.device), y).float().cpu().numpy()
    inversion = run.family.trainer == "adversarial"  # no encoder: z* = argmin ||G(z) - x||^2
    plot_reconstructions(xs.numpy(), rec, ds.shape, run.path / "reconstructions.png", n=len(xs),
                         title=f"{run.family.name} reconstructions" + (" by GAN inversion" if inversion else ""),
                         **({"what": "G(z*), z* = argmin ||G(z) - x||^2"} if inversion else {}))


def _trajectory(run: Run, ds: Dataset) -> None:
    image = len(run.sample_shape) >= 2
    traj = run.model.trajectory(8 if image else 2000, record=8)
    plot_run_trajectory(run, traj, run.path / "trajectory.png", run.family.samplers[0],
                        None if image else _reference(ds)[0][:2000].numpy())


def plot_run_trajectory(run: Run, traj, path: Path, sampler: str, reference: np.ndarray | None = None) -> None:
    """The snapshots of a run's sampler (``ppl_dgm.runs.trajectory_run``): rows of images, or 2-D scatters over
    ``reference`` data."""
    chain = sampler in ("ddpm", "ddim")
    what = {"ddpm": "x_t along the reverse chain", "ddim": "x_t along the DDIM chain",
            "langevin": "annealed Langevin dynamics", "pc": "predictor-corrector",
            "ode": "the probability-flow ODE"}[sampler]
    plot_trajectory(run.decode(traj.xs).cpu().numpy(), traj.steps, run.sample_shape, path,
                    f"{run.family.name}: {what}" + ("" if chain else ", noise levels left to go"), reference,
                    step_name="t" if chain else "levels left")


def _loss_per_sigma(run: Run, ds: Dataset) -> None:
    x, which = _reference(ds)
    d = run.model.dsm_terms(x[: 256 if ds.kind == "image" else 2000], seed=0)
    plot_loss_per_sigma(d.J, d.sigmas, d.dim, run.path / "loss_per_sigma.png",
                        f"{run.family.name}: score-matching loss per level on {which} data (sum {d.loss:.3f})")


def _loss_per_t(run: Run, ds: Dataset) -> None:
    x, which = _reference(ds)
    ce = run.model.chain_elbo(x[: 32 if ds.kind == "image" else 1000], seed=0)
    plot_loss_per_t(ce.L, run.path / "loss_per_t.png", f"{run.family.name}: chain ELBO terms on {which} data "
                    f"(ELBO {ce.elbo:.3f} nats, {ce.bits_per_dim:.3f} bits/dim)", ce.L_T)


def _ellipses(run: Run, ds: Dataset) -> None:
    if ds.dim != 2:
        return  # ellipses are drawn for 2-D data only
    m, x = run.model, ds.x_train.double()
    plot_ellipses(x.numpy(), m.weights.numpy(), m.means.numpy(), m.covariances.numpy(), m.covariance_type,
                  run.path / "ellipses.png", labels=m.log_resp(x).argmax(1).numpy(),
                  title=f"{run.family.name} on {ds.name}")


FIGURES: dict[str, Callable[[Run, Dataset], None]] = {
    "elbo": _elbo, "game": _game, "loglik": _loglik, "samples": _samples, "reconstructions": _reconstructions,
    "trajectory": _trajectory, "loss_per_t": _loss_per_t, "loss_per_sigma": _loss_per_sigma, "ellipses": _ellipses,
}


@torch.no_grad()
def write_run_figures(run: Run, ds: Dataset | None = None, seed: int = 0) -> list[Path]:
    """Draw the family's figures into the run directory (seeded); returns the files written."""
    ds = ds if ds is not None else run.dataset()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in run.family.figures:
            FIGURES[name](run, ds)
    return sorted(p for p in run.path.glob("*.png"))


def write_diagnostic_figures(diag: Diagnosis, run: Run) -> list[str]:
    """``terms.png``, ``kl_per_dim.png``, ``gap.png`` (latent-code families) or ``chain_terms.png`` (chains)."""
    r, what, files = diag.report, f"{run.family.name} on {diag.report['data']}", []
    if run.history and "test_elbo" in run.history[0] or (run.history and "train_elbo" in run.history[0]):
        plot_terms(run.history, run.path / "terms.png", title=f"{what}: held-out ELBO terms per epoch")
        files.append("terms.png")
    if diag.dsm is not None:
        plot_loss_per_sigma(diag.dsm.J, diag.dsm.sigmas, diag.dsm.dim, run.path / "level_terms.png",
                            f"{what}: score-matching loss per level (sum {diag.dsm.loss:.3f}, n={r['n']})")
        files.append("level_terms.png")
    if diag.chain is not None:
        plot_loss_per_t(diag.chain.L, run.path / "chain_terms.png", f"{what}: chain ELBO terms per step "
                        f"(ELBO {diag.chain.elbo:.3f} nats, n={r['n']})", diag.chain.L_T)
        files.append("chain_terms.png")
    if diag.active:
        plot_kl_per_dim(diag.kl_per_dim, diag.active, run.path / "kl_per_dim.png",
                        title=f"{what}: latent dimensions (n={r['n']})")
        files.append("kl_per_dim.png")
    if diag.gap is not None:
        plot_gap(diag.gap, run.path / "gap.png", title=what)
        files.append("gap.png")
    return files

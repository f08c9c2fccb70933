"""Use a fitted run: score held-out data and draw samples, each as the family's capabilities allow."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import check_label_range, check_unit_interval
from ..errors import InputError
from ..evaluation import evaluate_model
from ..models import require
from ..utils import LN2
from .store import Run


def label_args(run: Run, y: torch.Tensor | None, name: str) -> tuple[torch.Tensor, ...]:
    """The extra model arguments: the labels of a conditional model, on the model's device (refused if the data
    have none, or labels outside 0..C-1); () for other models."""
    if not run.model.conditional:
        return ()
    if y is None:
        raise InputError(f"a conditional model needs labels; {name} has none")
    check_label_range(y, run.model.n_classes, name)
    return (y.to(run.model.device),)


def require_conditional(run: Run, what: str) -> None:
    """Refuse ``what`` in one line unless the run's model is conditional (a cvae run, or ddpm --conditional)."""
    require(run.family, "conditional", what)
    if not run.model.conditional:
        raise InputError(f"{what} needs a conditional run (cvae, or {run.family.name} fitted with --conditional); got "
                         f"{run.family.name!r} fitted without --conditional ({run.path})")


def evaluate_run(run: Run, x: torch.Tensor, y: torch.Tensor | None = None, *, name: str = "data",
                 iwae_k: int = 1000, seed: int = 0, exact: bool = False, rtol: float = 1e-5, atol: float = 1e-5,
                 probes: int = 4) -> dict:
    """Held-out numbers per example, by what the family can compute (its registry ``bound``):

    - ``"iwae"``: the ELBO (reconstruction, KL) and the IWAE estimate of log p(x) with ``iwae_k`` samples;
    - ``"chain"``: the diffusion chain's ELBO with its per-step terms L_t;
    - ``"exact"``: the exact log-likelihood and BIC;
    - ``"dsm"``: the denoising score-matching loss per noise level (not a likelihood).

    All in nats per example, with bits/dim = -nats / (D ln 2).  ``exact`` (families with a probability-flow
    ODE: ddpm, score) adds ``ode``: log p(x) by the ODE (:func:`ppl_dgm.models.flow_ode.ode_log_likelihood`,
    tolerances ``rtol``/``atol``, ``probes`` Hutchinson probes when D > 16), with its standard error.
    """
    if exact:
        require(run.family, "ode", "ppl-dgm evaluate --exact")
    require(run.family, "bound", "ppl-dgm evaluate")
    head = {"run": str(run.path), "family": run.family.name, "data": name}
    model, x = run.model, x.to(run.model.device)
    if exact:
        from ..models.flow_ode import ode_log_likelihood

        ode = ode_log_likelihood(model, x, rtol=rtol, atol=atol, probes=probes, seed=seed)
        head["ode"] = {**ode.as_dict(), "log_prob_se": float(ode.std_error.pow(2).sum().sqrt()) / len(x),
                       "rtol": rtol, "atol": atol}
    with torch.no_grad():
        return {**head, **_bound(run, model, x, y, name, iwae_k, seed)}


def _bound(run: Run, model, x: torch.Tensor, y: torch.Tensor | None, name: str, iwae_k: int, seed: int) -> dict:
    if run.family.bound == "chain":
        return model.chain_elbo(x, *label_args(run, y, name), seed=seed).as_dict()
    if run.family.bound == "dsm":
        return model.dsm_terms(x, seed=seed).as_dict()
    if run.family.bound == "labels":
        (y,) = label_args(run, y, name)
        steps = (0, *(t for t in (100, 300, 500, 700, 900) if t <= model.timesteps)) if model.noise_conditional \
            else (0,)
        torch.manual_seed(seed)
        per_t = [model.accuracy(x, y, t) for t in steps]
        return {**per_t[0], "per_t": per_t, "n": len(x), "dim": x.shape[1]}
    if run.family.bound == "exact":
        torch.manual_seed(seed)  # a dequantized flow draws its noise u
        ll = model.log_prob(x).double()
        n, d = x.shape
        out = {"log_likelihood": float(ll.mean()), "bits_per_dim": -float(ll.mean()) / (d * LN2),
               "bic": float(-2 * ll.sum() + model.n_parameters * math.log(n)), "n": n, "dim": d}
        return {**out, "two_stage": two_stage_bound(run, x, ll)} if run.config["data"].get("codes_of") else out
    if model.config.get("likelihood") in ("bernoulli", "continuous-bernoulli"):
        check_unit_interval(x, name)
    rest = label_args(run, y, name)
    if model.point_mass_guide:  # every draw of z is the same: IWAE = ELBO for every k, one draw computes both
        return evaluate_model(model, x, *rest, iwae_k=1, elbo_particles=1, seed=seed).as_dict()
    return evaluate_model(model, x, *rest, iwae_k=iwae_k, seed=seed).as_dict()


def two_stage_bound(run: Run, codes: torch.Tensor, log_prior: torch.Tensor) -> dict:
    """The bound of a VQ-VAE with a fitted prior (a ``--codes-of`` run), per example on the VQ-VAE run's held-out
    images x (the first ``len(codes)``, whose code maps ``codes`` (N, h w) are):

    .. math::  \\log p(x) \\ge \\log p(x \\mid e_{z_q(x)}) + \\log p_{prior}(z_q(x))

    (the ELBO of the point-mass guide q(z | x) = delta(z - z_q(x)), with the prior's exact ``log_prior`` (N,) in
    place of the uniform one's -h w log K).  In nats, and bits/dim over the D values of an image.
    """
    vq, chunk = run.decoder, 2048
    x = vq.dataset().x_test[: len(codes)]
    own = torch.cat([vq.model.encode_codes(part.to(vq.model.device)).flatten(1).cpu() for part in x.split(chunk)])
    if not torch.equal(own.float(), codes.float().cpu()):
        raise InputError(f"the codes of {run.path} are no longer those of {vq.path}'s held-out images (was the "
                         f"VQ-VAE refitted?); fit the prior again")
    rec = torch.cat([vq.model.code_log_likelihood(part.to(vq.model.device), c.to(vq.model.device)).double().cpu()
                     for part, c in zip(x.split(chunk), own.split(chunk))])
    bound = rec + log_prior.cpu()
    return {"elbo": float(bound.mean()), "reconstruction": float(rec.mean()), "log_prior": float(log_prior.mean()),
            "bits_per_dim": -float(bound.mean()) / (x.shape[1] * LN2), "dim": int(x.shape[1]),
            "uniform_prior_elbo": float(rec.mean()) - vq.model.positions * math.log(vq.model.n_codes)}


# which sampler reads which option: DDIM's S steps and eta; Langevin's and PC's steps per noise level and step
# size; the ODE solver's tolerances
SAMPLER_OPTIONS = {"ddim": ("steps", "eta"), "langevin": ("steps", "step_size"), "pc": ("steps", "step_size"),
                   "ode": ("rtol", "atol")}


def guidance_kwargs(run: Run, label: int | None, guidance: float | None, classifier: Run | None) -> dict:
    """``y``, ``guidance`` and ``classifier`` for ``run.model.sample``: a label needs a conditional run or a guiding
    classifier run (noise-conditional, a diffusion run only); guidance needs a label."""
    if classifier is not None:
        if run.family.name != "ddpm":
            raise InputError(f"--classifier guides a ddpm run; got {run.family.name!r}")
        if classifier.family.name != "classifier":
            raise InputError(f"--classifier: expected a classifier run; got a {classifier.family.name!r} run")
        if label is None or guidance is None:
            raise InputError("--classifier: expected --label and --guidance to steer with it; got "
                             f"{'no --label' if label is None else 'no --guidance'}")
        return {"y": label, "guidance": guidance, "classifier": classifier.model}
    kw: dict = {}
    if label is not None:
        require_conditional(run, "--label")
        kw["y"] = label
    if guidance is not None:
        require_conditional(run, "--guidance")
        if label is None:
            raise InputError("--guidance: expected a --label to steer towards; got none")
        kw["guidance"] = guidance
    return kw


def sampler_kwargs(run: Run, sampler: str | None, options: dict) -> dict:
    """The ``sampler=`` and sampler options for ``run.model.sample`` / ``trajectory``, checked: the family must have
    a choice of samplers, and each option must be one the sampler reads (:data:`SAMPLER_OPTIONS`).  None values
    are left out (the sampler's defaults)."""
    given = {k: v for k, v in options.items() if v is not None}
    if unknown := set(given) - {o for opts in SAMPLER_OPTIONS.values() for o in opts}:
        raise InputError(f"expected sampler options among {sorted(set().union(*SAMPLER_OPTIONS.values()))}; "
                         f"got {sorted(unknown)}")
    if sampler is None and not given:
        return {}
    require(run.family, "samplers", "--sampler/" + "/".join(f"--{k.replace('_', '-')}" for k in given or ["steps"]))
    sampler = sampler or run.family.samplers[0]
    if sampler not in run.family.samplers:
        raise InputError(f"--sampler: expected one of {', '.join(run.family.samplers)}; got {sampler!r}")
    if bad := [k for k in given if k not in SAMPLER_OPTIONS.get(sampler, ())]:
        takes = " or ".join(s for s, opts in SAMPLER_OPTIONS.items() if bad[0] in opts)
        raise InputError(f"--{bad[0].replace('_', '-')}: expected --sampler {takes}; got --sampler {sampler}")
    return {"sampler": sampler, **given}


@torch.no_grad()
def sample_run(run: Run, n: int, *, seed: int = 0, mean: bool = False, label: int | None = None,
               guidance: float | None = None, classifier: Run | None = None, sampler: str | None = None,
               **options) -> np.ndarray:
    """``n`` new examples of the run's example shape, float32; options the family or the sampler lacks are refused.

    ``options`` (None: the sampler's default): ``steps``, ``eta``, ``step_size``, ``rtol``, ``atol``; which
    sampler reads which is :data:`SAMPLER_OPTIONS`.  ``label`` (every sample's) and ``guidance`` w (classifier-free
    guidance, w = 0: conditional without guidance) need a conditional run, or a ``classifier`` run (a
    noise-conditional classifier on the DDPM's schedule: classifier guidance of weight w).
    """
    require(run.family, "generative", "ppl-dgm sample")
    kw = guidance_kwargs(run, label, guidance, classifier)
    if mean:
        require(run.family, "encoder", "--mean (E[x | z])")
        kw["mean"] = True
    kw.update(sampler_kwargs(run, sampler, options))
    torch.manual_seed(seed)
    x = run.decode(run.model.sample(n, **kw))
    return x.float().cpu().numpy().reshape(n, *run.sample_shape)


@torch.no_grad()
def trajectory_run(run: Run, n: int, *, seed: int = 0, record: int = 8, sampler: str | None = None,
                   label: int | None = None, guidance: float | None = None, classifier: Run | None = None, **options):
    """The snapshots of ``n`` draws along a sampler of a diffusion or score run (a
    :class:`~ppl_dgm.models.samplers.Trajectory`: ``steps`` and ``xs`` of shape (len(steps), n, D)); ``label`` and
    ``guidance`` as in :func:`sample_run`."""
    require(run.family, "samplers", "--trajectory")
    kw = {**sampler_kwargs(run, sampler, options), **guidance_kwargs(run, label, guidance, classifier)}
    torch.manual_seed(seed)
    return run.model.trajectory(n, record=record, **kw)

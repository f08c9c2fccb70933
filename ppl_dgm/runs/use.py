"""Use a fitted run: score held-out data and draw samples, each as the family's capabilities allow."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data import check_unit_interval
from ..errors import InputError
from ..evaluation import evaluate_model
from ..models import require
from ..utils import LN2
from .store import Run


def _labels(run: Run, x: torch.Tensor, y: torch.Tensor | None, name: str) -> tuple[torch.Tensor, ...]:
    """The extra model arguments: the labels of a conditional family (refused if the data have none)."""
    if not run.family.conditional:
        return ()
    if y is None:
        raise InputError(f"a conditional model needs labels; {name} has none")
    return (y,)


@torch.no_grad()
def evaluate_run(run: Run, x: torch.Tensor, y: torch.Tensor | None = None, *, name: str = "data",
                 iwae_k: int = 1000, seed: int = 0) -> dict:
    """Held-out numbers per example, by what the family can compute (its registry ``bound``):

    - ``"iwae"``: the ELBO (reconstruction, KL) and the IWAE estimate of log p(x) with ``iwae_k`` samples;
    - ``"chain"``: the diffusion chain's ELBO with its per-step terms L_t;
    - ``"exact"``: the exact log-likelihood and BIC.

    All in nats per example, with bits/dim = -nats / (D ln 2).
    """
    require(run.family, "bound", "ppl-dgm evaluate")
    head = {"run": str(run.path), "family": run.family.name, "data": name}
    model, x = run.model, x.to(run.model.device)
    if run.family.bound == "chain":
        return {**head, **model.chain_elbo(x, seed=seed).as_dict()}
    if run.family.bound == "exact":
        ll = model.log_prob(x).double()
        n, d = x.shape
        return {**head, "log_likelihood": float(ll.mean()), "bits_per_dim": -float(ll.mean()) / (d * LN2),
                "bic": float(-2 * ll.sum() + model.n_parameters * math.log(n)), "n": n, "dim": d}
    if model.config.get("likelihood") in ("bernoulli", "continuous-bernoulli"):
        check_unit_interval(x, name)
    rest = tuple(t.to(x.device) for t in _labels(run, x, y, name))
    return {**head, **evaluate_model(model, x, *rest, iwae_k=iwae_k, seed=seed).as_dict()}


# which sampler reads which option: DDIM's S steps and eta; Langevin's and PC's steps per noise level
SAMPLER_OPTIONS = {"ddim": ("steps", "eta"), "langevin": ("steps",), "pc": ("steps",)}


@torch.no_grad()
def sample_run(run: Run, n: int, *, seed: int = 0, mean: bool = False, label: int | None = None,
               sampler: str | None = None, steps: int | None = None, eta: float | None = None) -> np.ndarray:
    """``n`` new examples of the run's example shape, float32; options the family lacks are refused."""
    kw: dict = {}
    if label is not None:
        require(run.family, "conditional", "--label")
        kw["y"] = label
    if mean:
        require(run.family, "encoder", "--mean (E[x | z])")
        kw["mean"] = True
    if sampler is not None or steps is not None or eta is not None:
        require(run.family, "samplers", "--sampler/--steps/--eta")
        sampler = sampler or run.family.samplers[0]
        if sampler not in run.family.samplers:
            raise InputError(f"--sampler: expected one of {', '.join(run.family.samplers)}; got {sampler!r}")
        given = [k for k, v in (("steps", steps), ("eta", eta)) if v is not None]
        if bad := [k for k in given if k not in SAMPLER_OPTIONS.get(sampler, ())]:
            takes = " or ".join(s for s, opts in SAMPLER_OPTIONS.items() if bad[0] in opts)
            raise InputError(f"--{bad[0]}: expected --sampler {takes}; got --sampler {sampler}")
        kw.update(sampler=sampler, **({"steps": steps} if steps else {}), **({"eta": eta} if eta else {}))
    torch.manual_seed(seed)
    x = run.model.sample(n, **kw)
    return x.float().cpu().numpy().reshape(n, *run.shape)

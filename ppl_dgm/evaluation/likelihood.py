"""Held-out ELBO and the importance-weighted log-likelihood estimate (Burda et al., IWAE).

.. math::  \\log p(x) \\approx \\log \\frac1k \\sum_{i=1}^k \\frac{p(x, z_i)}{q(z_i \\mid x)},
           \\qquad z_i \\sim q(z \\mid x)

is a lower bound in expectation that is >= the ELBO and rises to log p(x) as k grows.
It works for any model–guide pair whose latents all sit in the ``"data"``
plate: the k samples are drawn in one pass by repeating each example k times.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError
from ..inference.diagnostics import elbo_terms
from ..inference.traces import importance_log_weights
from ..utils import LN2


@dataclass
class Evaluation:
    """Per-example held-out numbers in nats (and bits per dimension).

    ``elbo = reconstruction - kl``; ``log_likelihood`` is the IWAE estimate with ``iwae_k`` samples.
    """

    elbo: float
    reconstruction: float
    kl: float
    log_likelihood: float
    bits_per_dim: float
    elbo_bits_per_dim: float
    iwae_k: int
    n: int
    dim: int

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def iwae_log_likelihood(model, guide, x: torch.Tensor, *rest: torch.Tensor, k: int = 1000,
                        max_rows: int = 65_536) -> torch.Tensor:
    """log p(x_n) estimated with k importance samples from the guide; shape (N,).

    Parameters
    ----------
    model, guide : callables taking ``(x, *rest)``
    x : Tensor, shape (N, D)
    rest : further per-example tensors (e.g. labels y of shape (N,))
    k : int
        Importance samples per example (k = 1 gives a one-sample ELBO estimate).
    max_rows : int
        Rows of one vectorised pass (examples x samples); bounds memory.
    """
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i, lw in importance_log_weights(model, guide, x, *rest, k=k, max_rows=max_rows):
        out[i: i + lw.shape[1]] = torch.logsumexp(lw, 0) - math.log(k)
    return out


@torch.no_grad()
def evaluate_model(model, x: torch.Tensor, *rest: torch.Tensor, iwae_k: int = 1000,
                   elbo_particles: int = 10, batch_size: int = 1000, seed: int = 0) -> Evaluation:
    """Held-out ELBO (with its reconstruction and KL parts) and IWAE log-likelihood.

    Parameters
    ----------
    model : a family instance with ``model`` and ``guide``
    x : Tensor, shape (N, D)
    iwae_k : int
        Importance samples for ``log_likelihood``.
    elbo_particles : int
        Samples averaged for the ELBO terms.

    Returns
    -------
    Evaluation
        Per-example nats; bits/dim = -nats / (D ln 2).
    """
    if x.shape[0] == 0:
        raise InputError("expected at least one example to evaluate; got none")
    was_training = model.training
    model.eval()
    dev = next(iter(model.parameters()), torch.empty(0)).device
    x = x.to(dev)
    rest = tuple(r.to(dev) for r in rest)
    n, d = x.shape[0], int(x[0].numel())
    sums = torch.zeros(3, dtype=torch.float64)
    ll = torch.empty(n, dtype=torch.float64)
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, n, batch_size):
            b = (x[i: i + batch_size], *(r[i: i + batch_size] for r in rest))
            t = elbo_terms(model.model, model.guide, *b, num_particles=elbo_particles)
            sums += torch.tensor([t.elbo, t.reconstruction, t.kl], dtype=torch.float64) * t.n
            ll[i: i + batch_size] = iwae_log_likelihood(model.model, model.guide, *b, k=iwae_k)
    model.train(was_training)
    elbo, rec, kl = (sums / n).tolist()
    lmean = float(ll.mean())
    return Evaluation(elbo, rec, kl, lmean, -lmean / (d * LN2), -elbo / (d * LN2), iwae_k, n, d)

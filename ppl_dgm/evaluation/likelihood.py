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

import pyro.poutine as poutine
import torch

from ..errors import InputError
from ..inference.diagnostics import elbo_terms
from ..inference.objectives import per_row_log_prob

LN2 = math.log(2.0)


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
def importance_log_weights(model, guide, x: torch.Tensor, *rest: torch.Tensor, k: int, max_rows: int = 65_536):
    """Yield ``(start, log_w)`` per chunk of examples: log_w[i, n] = log p(x_n, z_i) - log q(z_i | x_n),
    z_i ~ q(z | x_n), shape (k, m) in float64 for examples ``start .. start + m``.

    The k samples are drawn by repeating each example in the ``"data"`` plate, at most
    ``max_rows`` rows per pass.  Shared by :func:`iwae_log_likelihood` and the ELBO-IWAE gap.
    """
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k (importance samples) must be a positive integer; got {k!r}")
    n = x.shape[0]
    k_chunk = min(k, max(1, max_rows // max(1, min(n, 256))))
    n_chunk = max(1, min(n, max_rows // k_chunk))
    for i in range(0, n, n_chunk):
        xs = (x[i: i + n_chunk], *(r[i: i + n_chunk] for r in rest))
        m = xs[0].shape[0]
        log_w = []
        for done in range(0, k, k_chunk):
            kk = min(k_chunk, k - done)
            rep = tuple(t.repeat((kk,) + (1,) * (t.dim() - 1)) for t in xs)
            g_tr = poutine.trace(guide).get_trace(*rep)
            m_tr = poutine.trace(poutine.replay(model, trace=g_tr)).get_trace(*rep)
            lw = (per_row_log_prob(m_tr, kk * m, "model", require_rsample=False)
                  - per_row_log_prob(g_tr, kk * m, "guide", require_rsample=False))
            log_w.append(lw.reshape(kk, m).double().cpu())
        yield i, torch.cat(log_w, 0)


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

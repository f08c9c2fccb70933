"""The vector quantizer of a VQ-VAE (van den Oord et al. 2017; course notes 001, "K-means + VAE").

A codebook e_1 .. e_K in R^d; each encoder output z_e (one per position of the code map) is assigned to its
nearest code, as K-means assigns a point to its nearest centre:

.. math::  k(z_e) = \\arg\\min_k \\lVert z_e - e_k \\rVert^2, \\qquad z_q = e_{k(z_e)}.

The argmin has no gradient, so the decoder is fed the *straight-through* value
z_st = z_e + sg[z_q - z_e] (sg = stop-gradient, ``detach``): its value is z_q and its gradient with respect
to z_e is the identity, so the decoder's gradient at z_q is copied to the encoder.  Two losses move the codes
and the encoder towards each other (per position, summed):

- codebook loss ||sg[z_e] - e_k||^2: gradient to the codebook only (K-means' centre update, by SGD);
- commitment loss ||z_e - sg[e_k]||^2: gradient to the encoder only (keeps z_e near its code).

With ``ema_decay`` the codebook is not trained by gradient: each training step moves it by exponential moving
averages of the assignments (van den Oord et al. 2017, appendix A.1), K-means' centre update done online:

.. math::  N_k \\leftarrow \\gamma N_k + (1 - \\gamma) n_k, \\quad
           m_k \\leftarrow \\gamma m_k + (1 - \\gamma) \\sum_{i: k(z_{e,i}) = k} z_{e,i}, \\quad
           e_k \\leftarrow m_k / N_k

(n_k: the step's assignments to code k; N_k starts at 1 and m_k at e_k, so a code nobody picks stays where it
is).  Codebook usage is counted over an epoch: the perplexity exp(H(p)) of the average assignment p_k =
n_k / sum_j n_j (K if every code is used equally, 1 if one code takes everything) and the dead codes
(n_k = 0), which :meth:`VectorQuantizer.restart` moves to random encoder outputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..errors import InputError, check_positive_int


class Quantized(NamedTuple):
    """What :meth:`VectorQuantizer.forward` returns for encoder outputs z_e of shape (..., d).

    Attributes
    ----------
    codes : LongTensor, shape (...)
        k(z_e), the index of the nearest code.
    z_q : Tensor, shape (..., d)
        e_k: the nearest code (gradient to the codebook).
    z_st : Tensor, shape (..., d)
        z_e + sg[z_q - z_e]: the value of z_q with the gradient of z_e (straight-through).
    codebook_loss : Tensor, shape (...)
        ||sg[z_e] - e_k||^2 per position.
    commitment_loss : Tensor, shape (...)
        ||z_e - sg[e_k]||^2 per position.
    """

    codes: torch.Tensor
    z_q: torch.Tensor
    z_st: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class Usage(NamedTuple):
    """Codebook usage over a set of assignments: ``perplexity`` = exp(H(p)), ``dead`` = codes never assigned,
    ``counts`` (K,) the assignments per code."""

    perplexity: float
    dead: int
    counts: torch.Tensor


def usage_of(counts: torch.Tensor) -> Usage:
    """Usage from assignment counts n_k, shape (K,): p_k = n_k / sum n, perplexity exp(-sum_k p_k log p_k)
    (0 log 0 = 0; 0 assignments: perplexity 0), dead codes #{k : n_k = 0}."""
    counts = counts.detach().double().cpu()
    total = float(counts.sum())
    if total == 0:
        return Usage(0.0, int(counts.numel()), counts)
    p = counts / total
    entropy = -float(torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum())
    return Usage(math.exp(entropy), int((counts == 0).sum()), counts)


class VectorQuantizer(nn.Module):
    """A codebook of K vectors in R^d with nearest-code assignment and the straight-through estimator.

    Parameters
    ----------
    n_codes : int
        K.
    code_dim : int
        d.
    ema_decay : float in (0, 1), optional
        gamma of the EMA codebook updates; None: the codebook is a parameter trained by the codebook loss.

    Buffers (saved with the model): ``codebook`` (K, d) when EMA (else a parameter), ``ema_count`` (K,) and
    ``ema_sum`` (K, d) (EMA only), ``counts`` (K,) int64: assignments since the last :meth:`reset_usage`,
    ``initialized``: whether :meth:`init_from` has set the codes from data.
    """

    def __init__(self, n_codes: int, code_dim: int, ema_decay: float | None = None):
        super().__init__()
        self.n_codes, self.code_dim = check_positive_int("n_codes", n_codes), check_positive_int("code_dim", code_dim)
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise InputError(f"ema_decay: expected a number in (0, 1) or None; got {ema_decay!r}")
        self.ema_decay = ema_decay
        init = torch.empty(n_codes, code_dim).uniform_(-1.0 / n_codes, 1.0 / n_codes)
        if ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(n_codes))
            self.register_buffer("ema_sum", init.clone())
        self.register_buffer("counts", torch.zeros(n_codes, dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(False))
        self.candidates: torch.Tensor | None = None  # the last training minibatch's z_e (restart points)

    @property
    def ema(self) -> bool:
        return self.ema_decay is not None

    # -- assignment ----------------------------------------------------------------------
    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """k(z_e) = argmin_k ||z_e - e_k||^2 (ties: the lowest k); z_e (..., d) -> LongTensor (...)."""
        if z_e.shape[-1] != self.code_dim:
            raise InputError(f"expected encoder outputs of size d = {self.code_dim} in the last dimension; got "
                             f"shape {tuple(z_e.shape)}")
        flat = z_e.detach().reshape(-1, self.code_dim)
        e = self.codebook.detach()
        dist2 = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)[None, :]
        return dist2.argmin(1).reshape(z_e.shape[:-1])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """e_k for code indices of shape (...) -> (..., d); out-of-range indices are refused."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise InputError(f"expected code indices in 0..{self.n_codes - 1}; got {int(codes.min())}.."
                             f"{int(codes.max())}")
        return self.codebook[codes]

    def forward(self, z_e: torch.Tensor, codes: torch.Tensor | None = None) -> Quantized:
        """Quantize encoder outputs z_e of shape (..., d) to ``codes`` (default: their nearest, :meth:`assign`)
        with the current codebook (no side effects; see :meth:`update`)."""
        codes = self.assign(z_e) if codes is None else codes
        z_q = self.lookup(codes)
        z_st = z_e + (z_q - z_e).detach()
        return Quantized(codes, z_q, z_st, (z_e.detach() - z_q).pow(2).sum(-1), (z_e - z_q.detach()).pow(2).sum(-1))

    # -- what a training step changes -------------------------------------------------------
    @torch.no_grad()
    def init_from(self, z_e: torch.Tensor) -> None:
        """Set the codes to K random rows of z_e (..., d) (K-means' Forgy start; with replacement if fewer)."""
        flat = z_e.detach().reshape(-1, self.code_dim)
        idx = (torch.randperm(len(flat), device=flat.device)[: self.n_codes] if len(flat) >= self.n_codes
               else torch.randint(len(flat), (self.n_codes,), device=flat.device))
        self.codebook.copy_(flat[idx])
        if self.ema:
            self.ema_count.fill_(1.0)
            self.ema_sum.copy_(self.codebook)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """The side effects of one training step: count the assignments, keep z_e as restart candidates, and
        (EMA) move the codebook by the moving averages of the module docstring."""
        flat, k = z_e.detach().reshape(-1, self.code_dim), codes.reshape(-1)
        n_k = torch.bincount(k, minlength=self.n_codes)
        self.counts += n_k
        self.candidates = flat.clone()
        if not self.ema:
            return
        g = self.ema_decay
        sums = torch.zeros_like(self.ema_sum).index_add_(0, k, flat.to(self.ema_sum.dtype))
        self.ema_count.mul_(g).add_(n_k.to(self.ema_count.dtype), alpha=1 - g)
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
        alive = self.ema_count > 1e-12
        self.codebook.copy_(torch.where(alive[:, None], self.ema_sum / self.ema_count.clamp(min=1e-12)[:, None],
                                        self.codebook))

    def usage(self) -> Usage:
        """Usage of the assignments counted since the last :meth:`reset_usage`."""
        return usage_of(self.counts)

    def reset_usage(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, candidates: torch.Tensor | None = None) -> int:
        """Move the codes ``dead`` (a bool mask (K,)) to random rows of ``candidates`` (M, d) (default: the last
        training minibatch's z_e); (EMA) their averages restart there with N_k = 1.  Returns how many moved."""
        candidates = self.candidates if candidates is None else candidates
        n = int(dead.sum())
        if n == 0 or candidates is None or not len(candidates):
            return 0
        idx = (torch.randperm(len(candidates), device=candidates.device)[:n] if len(candidates) >= n
               else torch.randint(len(candidates), (n,), device=candidates.device))
        where = dead.nonzero().flatten()
        self.codebook[where] = candidates[idx].to(self.codebook.dtype)
        if self.ema:
            self.ema_count[where] = 1.0
            self.ema_sum[where] = self.codebook[where]
        return n

"""The adversarial trainer: a GAN's two-player game on the one SVI loop (course notes 001 "The GAN objective",
notes 004 "GAN's formulation" and "Instability of GAN").

An implicit model has a latent site ``z`` and a deterministic push-forward ``x = G_theta(z)`` but no likelihood,
so there is no ELBO to climb.  A discriminator D_phi(x) = sigma(d_phi(x)) is a density-ratio estimator: the
classifier of real (label 1) against generated (label 0) examples, whose optimum for a fixed generator q is

.. math::  D^*(x) = \\frac{p(x)}{p(x) + q(x)},

and at D* the game's value

.. math::  V(D, G) = E_{p}[\\log D(x)] + E_{z}[\\log(1 - D(G(z)))] = 2\\,\\mathrm{JSD}(p \\| q) - \\log 4.

Algorithm 1 of the notes alternates ``d_steps`` ascents of V in phi with one descent in theta.  The generator's
minimax loss log(1 - D(G(z))) has gradient -D(G(z)) in the logit (notes 004), which vanishes when D rejects the
samples; the non-saturating loss -log D(G(z)) has gradient -(1 - D(G(z))) and does not.

With logits a = d_phi(x):  log D = -softplus(-a),  log(1 - D) = -softplus(a).

:class:`AdversarialState` keeps the :class:`~.svi.SVIState` interface (``step``, ``evaluate``, checkpoints, EMA),
so ``fit_svi`` runs it with its loop, callbacks, progress bar, resume and divergence checks unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pyro
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, NonFiniteError, check_choice
from .svi import SVIState

LOSSES = ("non-saturating", "minimax")


def log_d(logits: torch.Tensor) -> torch.Tensor:
    """log D = log sigma(a), elementwise."""
    return -F.softplus(-logits)


def log_one_minus_d(logits: torch.Tensor) -> torch.Tensor:
    """log(1 - D) = log sigma(-a), elementwise."""
    return -F.softplus(logits)


@dataclass
class AdversarialObjective:
    """The GAN game: losses of the discriminator and of the generator (means over a minibatch).

    Parameters
    ----------
    loss : {"non-saturating", "minimax"}
        The generator's loss: -E log D(G(z)) (non-saturating), or E log(1 - D(G(z))) (minimax, Algorithm 1).
    gradient_penalty : float
        gamma >= 0 of the R1 penalty (gamma / 2) E_p ||grad_x d_phi(x)||^2 on real examples (Mescheder et al.
        2018), added to the discriminator's loss; 0: none.
    d_steps : int
        Discriminator steps per generator step (k of Algorithm 1).
    """

    loss: Literal["non-saturating", "minimax"] = "non-saturating"
    gradient_penalty: float = 0.0
    d_steps: int = 1
    progress_name = "V"  # what fit_svi's progress bar calls the training objective (a class attribute)

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if not (isinstance(self.gradient_penalty, (int, float)) and self.gradient_penalty >= 0
                and math.isfinite(self.gradient_penalty)):
            raise InputError(f"expected gradient_penalty as a finite number >= 0; got {self.gradient_penalty!r}")
        if not (isinstance(self.d_steps, int) and self.d_steps >= 1):
            raise InputError(f"expected d_steps as an integer >= 1; got {self.d_steps!r}")

    @staticmethod
    def value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """V(D, G) = mean log D(x) + mean log(1 - D(G(z))); 2 JSD - log 4 at the optimal D (a scalar)."""
        return log_d(real_logits).mean() + log_one_minus_d(fake_logits).mean()

    def discriminator_loss(self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """-V(D, G) (the cross-entropy of real = 1 against fake = 0), plus the R1 penalty when asked."""
        if self.gradient_penalty > 0:
            real = real.detach().requires_grad_(True)
        real_logits = critic(real)
        loss = -self.value(real_logits, critic(fake))
        if self.gradient_penalty > 0:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + 0.5 * self.gradient_penalty * grad.pow(2).reshape(len(real), -1).sum(1).mean()
        return loss

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Minimax: mean log(1 - D(G(z))); non-saturating: -mean log D(G(z))."""
        if self.loss == "minimax":
            return log_one_minus_d(fake_logits).mean()
        return -log_d(fake_logits).mean()

    # -- what fit_svi asks of an objective with its own step --------------------------------------------
    def check(self, model, guide, *batch: torch.Tensor) -> None:
        """Instead of the guide check (z comes from the prior, not from a guide): the push-forward runs, with
        Pyro's argument validation on."""
        with pyro.validation_enabled(True), torch.no_grad():
            push_forward(model, guide, *batch)

    def make_state(self, module, model, guide, params, optimizer, modules, clip_norm, ema) -> AdversarialState:
        """The :class:`AdversarialState` of ``module`` (its ``discriminator`` is the critic)."""
        return AdversarialState(model, guide, None, params, optimizer, modules, clip_norm, ema,
                                critic=getattr(module, "discriminator", None), objective=self)


def push_forward(model, guide, *batch: torch.Tensor) -> torch.Tensor:
    """The generated examples of the implicit model: its ``"x"`` site in a trace of ``model(*batch)`` (replayed on
    the guide's trace, which is empty for a GAN), one per row of the batch."""
    guide_trace = poutine.trace(guide).get_trace(*batch)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    if "x" not in trace.nodes:
        raise InputError("expected the implicit model to record its generated examples at a site 'x' "
                         "(pyro.deterministic('x', G(z)))")
    return trace.nodes["x"]["value"]


@dataclass
class AdversarialState(SVIState):
    """:class:`~.svi.SVIState` for the game: one Adam over both players' tensors, each step updating only one.

    Attributes (beyond SVIState's)
    ----------
    critic : nn.Module
        The discriminator network d_phi: (N, D) -> (N,) logits.
    objective : AdversarialObjective
    critic_names : set of str
        The names (in ``params``) of the discriminator's tensors; the others are the generator's.
    """

    critic: nn.Module | None = None
    objective: AdversarialObjective = field(default_factory=AdversarialObjective)
    critic_names: set[str] = field(default_factory=set)
    _sums: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.critic is None:
            raise InputError("the adversarial trainer needs a model with a `discriminator` module; got none")
        ids = {id(p) for p in self.critic.parameters()}
        self.critic_names = {n for n, p in self.params.items() if id(p) in ids}
        self.critic_params = [p for n, p in self.params.items() if n in self.critic_names]
        self.generator_params = [p for n, p in self.params.items() if n not in self.critic_names]
        if not self.critic_params or not self.generator_params:
            raise InputError("the adversarial trainer needs trainable generator and discriminator parameters; got "
                             f"{len(self.generator_params)} and {len(self.critic_params)} tensors")

    def _update(self, loss: torch.Tensor, params: list[torch.Tensor], who: str) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            sites = [f"param {n}" for n, p in self.params.items() if not torch.isfinite(p).all()]
            raise NonFiniteError(f"non-finite {who} loss ({value}) from {', '.join(sites) or 'the game itself'}",
                                 sites=sites)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # the other player's tensors get no gradient, so Adam leaves them alone
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        self.optimizer.step()
        return value

    def step(self, *batch: torch.Tensor) -> float:
        """``d_steps`` discriminator steps, then one generator step, on fresh z each time; returns -V * m (the
        loop's convention: a loss summed over the m examples, so the epoch's ``train_elbo`` is the mean V)."""
        real, m = batch[0], batch[0].shape[0]
        for _ in range(self.objective.d_steps):
            fake = push_forward(self.model, self.guide, *batch).detach()
            d_loss = self._update(self.objective.discriminator_loss(self.critic, real, fake), self.critic_params,
                                  "discriminator")
        fake_logits = self.critic(push_forward(self.model, self.guide, *batch))
        g_loss = self._update(self.objective.generator_loss(fake_logits), self.generator_params, "generator")
        with torch.no_grad():
            real_logits = self.critic(real)
            value = float(self.objective.value(real_logits, fake_logits.detach()))
            d_real, d_fake = float(torch.sigmoid(real_logits).mean()), float(torch.sigmoid(fake_logits).mean())
        for k, v in (("d_loss", d_loss), ("g_loss", g_loss), ("d_real", d_real), ("d_fake", d_fake)):
            self._sums[k] = self._sums.get(k, 0.0) + v * m
        self._sums["n"] = self._sums.get("n", 0) + m
        return -value * m

    def epoch_metrics(self) -> dict[str, float]:
        """Means over the epoch's minibatches: the two losses and D on real and on generated examples."""
        n = self._sums.pop("n", 0)
        out = {k: v / n for k, v in self._sums.items()} if n else {}
        self._sums.clear()
        return out

    @torch.no_grad()
    def evaluate(self, *data: torch.Tensor, batch_size: int = 512, particles: int = 1) -> dict[str, Any]:
        """On held-out examples against as many fresh samples: the value V (``value``: 2 JSD - log 4 if D were
        optimal; it rises as D wins) and D's mean output on each (``d_real``, ``d_fake``).  No ``elbo``: an
        implicit model has none (so ``best.pt`` is not written)."""
        self.train(False)
        n, sums = data[0].shape[0], {"value": 0.0, "d_real": 0.0, "d_fake": 0.0}
        for i in range(0, n, batch_size):
            batch = tuple(t[i: i + batch_size] for t in data)
            a_real, a_fake = self.critic(batch[0]), self.critic(push_forward(self.model, self.guide, *batch))
            m = len(batch[0])
            sums["value"] += float(self.objective.value(a_real, a_fake)) * m
            sums["d_real"] += float(torch.sigmoid(a_real).mean()) * m
            sums["d_fake"] += float(torch.sigmoid(a_fake).mean()) * m
        return {k: v / n for k, v in sums.items()}

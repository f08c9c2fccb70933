"""A classifier p_phi(y | x_t, t) of (optionally noisy) examples: classifier guidance and sample-quality figures.

Course notes 000, "Classifier guidance": a diffusion prior p(x_t) is steered towards a label y by adding
w grad log p_phi(y | x_t) to its score,

.. math::  \\nabla \\log p_w(x_t \\mid y) = \\nabla \\log p(x_t) + w\\, \\nabla \\log p_\\phi(y \\mid x_t),
           \\qquad \\tilde\\epsilon = \\epsilon_\\theta(x_t, t)
           - w \\sqrt{1 - \\bar\\alpha_t}\\, \\nabla \\log p_\\phi(y \\mid x_t),

so the classifier must score *noisy* inputs: it is trained on x_t ~ q(x_t | x_0) at t ~ U{1..T} of the same
noise schedule as the DDPM it steers (``noise_conditional=True``, Dhariwal & Nichol 2021).  With
``noise_conditional=False`` it sees clean examples only (t = 0): the independent classifier that scores
samples (accuracy, and the features of a Fréchet distance).

Two networks: the residual MLP :class:`~ppl_dgm.nn.EpsMLP` (``arch="mlp"``, any data, noise-conditional or not)
and, for clean 28x28 images, the convolutional :class:`~ppl_dgm.nn.ConvEncoder28` (``arch="conv"``): the scorer of
sample quality (:mod:`ppl_dgm.evaluation.quality`), whose features follow shapes rather than pixel speckle.
``arch="auto"`` takes the convolutional one for clean 28x28 images and the MLP otherwise.

As a probabilistic program it has no latent: the model observes ``y ~ Categorical(logits = f_phi(x_t, t))`` in
``pyro.plate("data", N)`` and the guide is empty, so the "ELBO" is the log-likelihood log p_phi(y | x_t) and
SVI is maximum likelihood.  The noise x_t is drawn in the model as data augmentation (not a site: it is
not inferred).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..data import Dataset
from ..errors import InputError, check_choice
from ..nn import ConvEncoder28, EpsMLP
from .base import GenerativeModel
from .options import SVIOptions, n_classes_of, option
from .schedule import SCHEDULES, NoiseSchedule


@dataclass
class ClassifierConfig(SVIOptions):
    """Fit options of ``classifier``: the noise it is trained on (that of the DDPM it will steer) and its MLP."""

    epochs: int | None = option(None, "Training epochs (default: 100 for digits, 20 otherwise).", role="train", min=1)
    noise_conditional: bool = option(False, "Train on noisy x_t of the DDPM schedule below (classifier guidance); "
                                     "else on clean examples.")
    timesteps: int = option(1000, "T of the DDPM it will steer.", min=2)
    schedule: Literal["linear", "cosine"] = option("linear", "Noise schedule of the DDPM it will steer.")
    hidden: tuple[int, ...] = option((256, 256, 256), "MLP block widths; conv: hidden[0] is the width of the "
                                     "head's hidden layer (the features).")
    arch: Literal["auto", "mlp", "conv"] = option("auto", "Network: residual MLP, or two convolutions and a head "
                                                  "(clean 28x28 images); auto: conv for clean 28x28 images, else mlp.")
    channels: int = option(32, "conv: channels of the first convolution (the second has twice as many).", min=1)

    def resolve(self, ds: Dataset) -> ClassifierConfig:
        out = SVIOptions.resolve(self, ds)
        out.epochs = self.epochs or (100 if ds.name == "digits" else 20)
        return out

    def model_kwargs(self, ds: Dataset) -> dict:
        return {**super().model_kwargs(ds), "n_classes": n_classes_of(ds)}

    def binarize(self, requested: str | None, image: bool) -> str:
        if requested not in (None, "none"):
            raise InputError(f"binarize: a classifier takes grey levels; expected 'none'; got {requested!r}")
        return "none"


class Classifier(GenerativeModel):
    """Classifier p_phi(y | x_t, t) of noisy (or clean) examples, for classifier guidance and sample scores.

    Parameters
    ----------
    x_dim : int
        D.
    n_classes : int
        C, labels 0..C-1.
    noise_conditional : bool
        Trained on x_t ~ q(x_t | x_0), t ~ U{1..T}; else on x_0 (t = 0).
    timesteps : int
        T of the noise schedule.
    schedule : {"linear", "cosine"}
    hidden : sequence of int
        Width and depth of the residual MLP (an :class:`~ppl_dgm.nn.EpsMLP` trunk with C outputs); ``conv``:
        ``hidden[0]`` is the width of the head's hidden layer.
    arch : {"auto", "mlp", "conv"}
        ``conv`` (:class:`~ppl_dgm.nn.ConvEncoder28` with C outputs) takes clean 28x28 images only; ``auto``
        resolves to ``conv`` for those and to ``mlp`` otherwise (the resolved value is stored in ``config``).
    channels : int
        ``conv``: channels of the first convolution.
    image_shape : sequence of int, optional
        Images get data in [0, 1] mapped to [-1, 1], as the DDPM sees them.
    """

    family = "classifier"
    records_step = True
    latent_sites = ()
    conditional = True

    chunk = 2048
    """Rows per forward pass in :meth:`accuracy`, :meth:`features` and :meth:`probabilities` (bounded memory)."""

    def __init__(self, x_dim: int, n_classes: int, noise_conditional: bool = ClassifierConfig.noise_conditional,
                 timesteps: int = ClassifierConfig.timesteps,
                 schedule: Literal["linear", "cosine"] = ClassifierConfig.schedule,
                 hidden: Sequence[int] = ClassifierConfig.hidden,
                 arch: Literal["auto", "mlp", "conv"] = ClassifierConfig.arch,
                 channels: int = ClassifierConfig.channels, image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("schedule", schedule, SCHEDULES)
        check_choice("arch", arch, ("auto", "mlp", "conv"))
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise InputError(f"n_classes must be an integer >= 2; got {n_classes!r}")
        self._store_config(locals())
        self.x_dim, self.n_classes, self.noise_conditional = x_dim, n_classes, bool(noise_conditional)
        shape = tuple(int(s) for s in image_shape) if image_shape else (x_dim,)
        if int(np.prod(shape)) != x_dim:
            raise InputError(f"image_shape {shape} does not hold x_dim={x_dim} values")
        self.image_shape, self.is_image = shape, len(shape) >= 2
        self.timesteps = timesteps
        self.schedule = NoiseSchedule(timesteps, schedule)
        side28 = shape[-2:] == (28, 28) and x_dim == 784
        self.arch = arch if arch != "auto" else "conv" if side28 and not self.noise_conditional else "mlp"
        self.config["arch"] = self.arch
        if self.arch == "conv" and not side28:
            raise InputError(f"arch 'conv' takes 28x28 images; got examples of shape {shape} (use arch 'mlp')")
        if self.arch == "conv" and self.noise_conditional:
            raise InputError("arch 'conv' scores clean images; expected noise_conditional=False (or arch 'mlp'); "
                             "got noise_conditional=True")
        self.net = (ConvEncoder28(n_classes, hidden=int(hidden[0]), channels=channels) if self.arch == "conv"
                    else EpsMLP(x_dim, tuple(hidden), out_dim=n_classes))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Classifier:
        """Rebuild from ``config.json``; runs stored before ``arch`` existed hold an MLP."""
        return super().from_config({"arch": "mlp", **config})

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data -> the DDPM's x_0: images in [0, 1] to [-1, 1]; vectors unchanged."""
        return 2 * x - 1 if self.is_image else x

    def logits(self, x_t: torch.Tensor, t=0) -> torch.Tensor:
        """f_phi(x_t, t): x_t (..., D) in model space, t broadcastable to x_t.shape[:-1]; returns (..., C)."""
        if self.arch == "conv":
            return self.net(x_t).reshape(*x_t.shape[:-1], self.n_classes)
        return self.net(x_t, t if self.noise_conditional else torch.zeros((), device=x_t.device))

    def grad_log_prob(self, y: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
        """grad_{x_t} log p_phi(y | x_t, t), shape of x_t (the guidance term of the module docstring)."""
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            lp = F.log_softmax(self.logits(x, t), -1)
            picked = lp.gather(-1, torch.as_tensor(y, device=x.device).long().expand(x.shape[:-1])[..., None])
            return torch.autograd.grad(picked.sum(), x)[0]

    def _noisy(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.noise_conditional:
            return x0, torch.zeros(len(x0), device=x0.device, dtype=torch.long)
        t = torch.randint(1, self.timesteps + 1, (len(x0),), device=x0.device)
        return self.schedule.q_sample(x0, t, torch.randn_like(x0)), t

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """y ~ Categorical(softmax f_phi(x_t, t)) observed, with x_t ~ q(x_t | x_0) (or x_0), in the data plate."""
        if y is None:
            raise InputError("a classifier needs labels y for its data; got none")
        x_t, t = self._noisy(self.to_model_space(x))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(logits=self.logits(x_t, t)), obs=y.long())

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent: the ELBO is log p_phi(y | x_t), and SVI is maximum likelihood."""

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, t: int = 0) -> dict[str, Any]:
        """Accuracy and mean log p_phi(y | x_t) (nats) at step t (0: clean x); x (N, D) in data space."""
        x0 = self.to_model_space(x.to(self.device))
        x_t = x0 if t == 0 else self.schedule.q_sample(x0, torch.full((len(x0),), t, device=x0.device),
                                                          torch.randn_like(x0))
        lp = torch.cat([F.log_softmax(self.logits(part, t), -1) for part in x_t.split(self.chunk)])
        y = y.to(lp.device).long()
        return {"accuracy": float((lp.argmax(-1) == y).double().mean()),
                "log_likelihood": float(lp.gather(-1, y[:, None]).double().mean()), "t": t}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations of the network on clean x (N, D) (data space): (N, width) (``hidden[0]``
        for both archs), the feature space of the sample-quality figures (:mod:`ppl_dgm.evaluation.quality`)."""
        x0, t0 = self.to_model_space(x.to(self.device)), torch.zeros((), device=self.device)
        net = self.net.features if self.arch == "conv" else lambda v: self.net.features(v, t0)
        return torch.cat([net(part) for part in x0.split(self.chunk)])

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """p_phi(y | x) of clean x (N, D) (data space): (N, C)."""
        x0 = self.to_model_space(x.to(self.device))
        return torch.cat([F.softmax(self.logits(part), -1) for part in x0.split(self.chunk)])

    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        raise InputError("a classifier does not generate examples; sample a generative run instead")

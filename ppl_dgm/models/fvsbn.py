"""The fully visible sigmoid belief network (course notes 002 §1, "Entire Linear Regression").

The chain rule of notes 002 §1 ("Principle") writes any distribution over D binary pixels as

.. math::  p(x) = p(x_1) \\prod_{i=2}^{D} p(x_i \\mid x_{<i}),

and the FVSBN makes each factor "an entire logistic regression" on the pixels before it:

.. math::  p(x_i = 1 \\mid x_{<i}) = \\sigma\\Big(a_i + \\sum_{j<i} W_{ij} x_j\\Big),

with W strictly lower triangular (a :class:`~ppl_dgm.nn.MaskedLinear` with M_ij = 1 iff j < i).  All D
conditionals come from one masked matrix product, so log p(x) is exact and costs O(D^2) per example.  There is no
latent variable: the model observes ``x`` in ``pyro.plate("data", N)``, the guide is empty, the ELBO is log p(x),
and ``fit_svi`` is maximum likelihood.

This module also holds what both autoregressive families (``fvsbn``, ``pixelcnn``) share: their fit options
(:class:`DiscreteOptions`: static binarization of grey-level images by default) and the check that data are
discrete (:func:`check_levels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ..data import Dataset
from ..errors import InputError, check_positive_int
from ..nn import MaskedLinear, autoregressive_mask, free_parameters
from .base import GenerativeModel
from .options import SVIOptions, option


def check_levels(x: torch.Tensor, levels: int, what: str) -> None:
    """Refuse ``x`` unless every value is one of 0, 1, ..., levels - 1 (one line naming what came)."""
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    integral = bool((x == x.round()).all())
    if lo < 0 or hi > levels - 1 or not integral:
        values = "{0, 1}" if levels == 2 else f"{{0, ..., {levels - 1}}}"
        hint = "; pass --binarize static (or dynamic) for grey levels in [0, 1]" if levels == 2 and lo >= 0 and \
            hi <= 1 else ""
        raise InputError(f"{what}: expected discrete values in {values}; got values in [{lo:g}, {hi:g}]"
                         f"{'' if integral else ', not all integers'}{hint}")


@dataclass
class DiscreteOptions(SVIOptions):
    """Fit options of the autoregressive families: data are discrete, {0, ..., levels - 1}."""

    def binarize(self, requested: str | None, image: bool) -> str:
        """Grey-level images are binarized once (``static``) unless asked otherwise; other data as they are."""
        return requested or ("static" if image else "none")

    def levels_of(self, ds: Dataset) -> int:
        """The number of values a pixel takes (the dataset's ``levels``; 2 if it does not say), with the data
        checked to hold only those (the training split is grey levels under dynamic binarization)."""
        levels = ds.levels or 2
        if ds.binarize != "dynamic":
            check_levels(ds.x_train, levels, f"{ds.name} (train)")
        check_levels(ds.x_test, levels, f"{ds.name} (test)")
        return levels


@dataclass
class FVSBNConfig(DiscreteOptions):
    """Fit options of ``fvsbn``."""

    lr: float = option(1e-2, "Learning rate.", role="train", min=0, min_open=True)

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        levels = self.levels_of(ds)
        if levels != 2:
            raise InputError(f"fvsbn models binary data (levels 2); {ds.name} has {levels} levels (fit pixelcnn)")
        return super().model_kwargs(ds)


class FVSBN(GenerativeModel):
    """Fully visible sigmoid belief network: p(x) = prod_i Bernoulli(x_i | sigmoid(a_i + sum_{j<i} W_ij x_j)).

    Parameters
    ----------
    x_dim : int
        D, the number of binary values of an example (pixels of an image in raster order).
    image_shape : sequence of int, optional
        The shape of one example, kept for pictures.
    """

    family = "fvsbn"
    latent_sites = ()

    def __init__(self, x_dim: int, image_shape: Sequence[int] | None = None):
        super().__init__()
        x_dim = check_positive_int("x_dim", x_dim)
        shape = tuple(check_positive_int("each image_shape entry", s) for s in image_shape) if image_shape else None
        if shape is not None and int(torch.Size(shape).numel()) != x_dim:
            raise InputError(f"image_shape {shape} does not hold x_dim={x_dim} values")
        self._store_config(locals())
        self.x_dim, self.image_shape = x_dim, shape
        self.regression = MaskedLinear(autoregressive_mask(x_dim))  # a = bias, W = weight * mask
        torch.nn.init.zeros_(self.regression.bias)

    @property
    def n_parameters(self) -> int:
        """D + D (D - 1) / 2: the biases a and the strictly lower triangle of W."""
        return free_parameters(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """a_i + sum_{j<i} W_ij x_j for every i at once: x (N, D) -> (N, D)."""
        return self.regression(x)

    def _check(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise InputError(f"{what}: expected examples of shape (N, {self.x_dim}); got {tuple(x.shape)}")
        check_levels(x, 2, what)
        return x

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """x_i | x_<i ~ Bernoulli(sigmoid(a_i + sum_{j<i} W_ij x_j)), observed, for x (N, D) in the data plate."""
        x = self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=self.logits(x)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent: the ELBO is log p(x), and SVI is maximum likelihood."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats, (N,), for binary x (N, D)."""
        x = self._check(x.to(self.regression.weight.dtype))
        return dist.Bernoulli(logits=self.logits(x)).log_prob(x).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n examples (n, D), pixel by pixel: x_i ~ Bernoulli(sigmoid(l_i)).

        The logits l = a + W x are cached and updated as each pixel is drawn (l += x_i W[:, i]), so a sample
        costs O(D^2), as one evaluation of log p(x), rather than the O(D^3) of recomputing every logit at
        every step.
        """
        if kwargs:
            raise InputError(f"fvsbn sample takes no options; got {sorted(kwargs)}")
        n = check_positive_int("n", n)
        w = self.regression.masked_weight
        logits = self.regression.bias.expand(n, self.x_dim).clone()
        x = torch.zeros_like(logits)
        for i in range(self.x_dim):
            x[:, i] = torch.bernoulli(torch.sigmoid(logits[:, i]))
            logits += x[:, i, None] * w[:, i]  # column i feeds the pixels after i only (W strictly lower)
        return x

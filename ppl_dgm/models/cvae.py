"""The conditional VAE: encoder and decoder both see the label (notes 002, "conditional sampling").

For each example n with label y_n in {0, ..., C-1} and one-hot e(y_n):

.. math::  z_n \\sim \\mathcal N(0, I_K), \\qquad x_n \\mid z_n, y_n \\sim p_\\theta(x \\mid [z_n, e(y_n)]),
           \\qquad q_\\phi(z_n \\mid x_n, y_n) = \\mathcal N(g_\\mu([x_n, e(y_n)]), \\mathrm{diag}\\, g_\\sigma^2)

so the ELBO of notes 002 eq. (*) holds conditionally on y, and ``sample(n, y=3)``
decodes prior draws with the label fixed: conditional generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from ..data import Dataset, check_class_labels
from ..errors import InputError
from ..nn import MLP
from .base import recording
from .checks import check_n_classes
from .options import n_classes_of, option
from .vae import VAE, Likelihood, VAEConfig


@dataclass
class CVAEConfig(VAEConfig):
    """Fit options of ``cvae``: the VAE's, with an MLP encoder and decoder and a label count."""

    arch: Literal["mlp"] = option("mlp", "Encoder/decoder: a CVAE is an MLP.")
    n_classes: int | None = option(None, "Number of labels (default: 1 + the largest training label).", min=2)

    def model_kwargs(self, ds: Dataset) -> dict:
        kw = super().model_kwargs(ds)
        n = n_classes_of(ds)  # refuses unlabelled data
        kw["n_classes"] = kw["n_classes"] or n
        return kw


class CVAE(VAE):
    """Conditional VAE with MLP encoder q(z | x, y) and decoder p(x | z, y).

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    n_classes : int
        C, the number of labels; y takes values 0 .. C-1.
    latent_dim, hidden, likelihood, x_scale, image_shape
        As for :class:`~ppl_dgm.models.vae.VAE`.
    arch : {"mlp"}
        The only architecture (kept so every VAE config fits).
    """

    family = "cvae"
    records_step = True  # the labels' values are checked once per fit (check_data), not in a recorded step
    conditional = True

    def __init__(self, x_dim: int, n_classes: int = 10, latent_dim: int = VAEConfig.latent_dim,
                 hidden: Sequence[int] = VAEConfig.hidden, likelihood: Likelihood = VAEConfig.likelihood,
                 x_scale: float = VAEConfig.x_scale, image_shape: Sequence[int] | None = None, arch: str = "mlp"):
        if arch != "mlp":
            raise InputError(f"a CVAE has an MLP encoder and decoder; expected arch 'mlp'; got {arch!r}")
        super().__init__(x_dim, latent_dim, hidden, likelihood, "mlp", x_scale, image_shape)
        check_n_classes(n_classes)
        self._store_config(locals())
        self.n_classes = n_classes
        hidden = tuple(int(h) for h in hidden)
        self.encoder = MLP(x_dim + n_classes, hidden, 2 * latent_dim)
        self.decoder = MLP(latent_dim + n_classes, hidden[::-1], x_dim)

    def one_hot(self, y, n: int | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
        """e(y), shape (N, C); ``y`` an int (repeated n times) or integer labels of shape (N,)."""
        like = like if like is not None else next(self.parameters())
        if y is None:
            raise InputError("a CVAE needs labels y (integers 0..C-1); got none")
        if isinstance(y, int):
            y = torch.full((n or 1,), y, dtype=torch.long, device=like.device)
        y = torch.as_tensor(y, device=like.device)
        if not recording():  # a recorded fit step: fit_svi has checked every label (check_data)
            check_class_labels(y, self.n_classes)
        return F.one_hot(y.long().reshape(-1), self.n_classes).to(like.dtype)

    def _net_input(self, t: torch.Tensor, y) -> torch.Tensor:
        """[t, e(y)]: the encoder reads [x, e(y)], the decoder [z, e(y)]."""
        e = self.one_hot(y, t.shape[0], t)
        if e.shape[0] != t.shape[0]:
            raise InputError(f"expected {t.shape[0]} labels (or one int); got {e.shape[0]}")
        return torch.cat([t, e], -1)

    @torch.no_grad()
    def sample(self, n: int, *, y=None, mean: bool = False) -> torch.Tensor:
        """n examples of shape (n, D) with label ``y`` (an int or (n,) labels; default 0,1,..,C-1,0,..)."""
        if y is None:
            y = torch.arange(n) % self.n_classes
        return super().sample(n, y=y, mean=mean)

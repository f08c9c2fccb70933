"""Score-based model: a noise-conditional score network trained by denoising score matching (notes 002 §7).

Course notes 000 ("Score Function, Langevin Dynamics, & Tweedie's Formula") and 002 §7; Song & Ermon
2019 (NCSN), Vincent 2011 (denoising score matching).  Data are blurred with Gaussian noise at a
geometric ladder of levels sigma_1 > ... > sigma_L (notes 000: "Blur with Gaussian kernel of variance
sigma_0, sigma_1, ...").  A network s_theta(x, sigma) is fitted to the score of each blurred law by

.. math::  \\mathcal L(\\theta) = \\sum_{i=1}^{L} \\lambda(\\sigma_i)\\,
           \\mathbb E_{x \\sim p,\\, \\epsilon \\sim N(0, I)} \\tfrac12
           \\big\\| s_\\theta(x + \\sigma_i \\epsilon, \\sigma_i) + \\epsilon / \\sigma_i \\big\\|^2,
           \\qquad \\lambda(\\sigma) = \\sigma^2,

whose minimiser is s_theta(x, sigma) = grad log p_sigma(x), p_sigma = p * N(0, sigma^2 I): the target
-eps / sigma = -(x_tilde - x) / sigma^2 is the score of N(x_tilde; x, sigma^2 I), and its average
over x given x_tilde is the marginal score (Tweedie, notes 000: E[x | x_tilde] = x_tilde + sigma^2 s).

**This is a loss, not a likelihood bound.**  To train it with ``fit_svi`` it is written as a
model-guide pair whose negative "ELBO" *is* the loss above (per example, summed over levels):

- guide: in ``pyro.plate("data", N)`` and a subsampled ``pyro.plate("sigma", L)`` (k levels per
  minibatch, each term scaled by L/k, as DDPM's ``"t"`` plate), x_tilde ~ N(x, sigma_i^2 I);
- model: the same site x_tilde with the same law (its log-ratio is exactly 0; it hands the draw to
  the model) and the observed site ``x``, a ``pyro.factor`` carrying -lambda(sigma) ||s + eps/sigma||^2 / 2.

So the reported "ELBO" is minus the DSM loss; its optimum is not log p(x).  The log-likelihood of a
score model is given by the probability-flow ODE (:func:`ppl_dgm.models.flow_ode.ode_log_likelihood`).

Parametrisation (Song & Ermon 2020, "s(x, sigma) = s(x) / sigma"; Karras et al. 2022 input scaling):
s_theta(x, sigma) = -net(x / sqrt(1 + sigma^2), 100 log sigma) / sigma, with ``net`` the DDPM's
eps-network (EpsMLP or UNet) and 100 log sigma fed to its sinusoidal embedding.  Then
lambda(sigma) ||s + eps / sigma||^2 = ||eps - net||^2, and the network is a DDPM eps-network in
disguise: x / sqrt(1 + sigma^2) is x_t with abar_t = 1 / (1 + sigma^2) (:mod:`.samplers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from ..data import Dataset
from ..errors import InputError, check_choice
from ..nn import EpsMLP, UNet
from .base import GenerativeModel
from .diffusion import DiffusionOptions
from .discretized import to_grid
from .options import option
from .samplers import SCORE_SAMPLERS, ScoreField, Trajectory, denoise, draw


@dataclass
class ScoreConfig(DiffusionOptions):
    """Fit options of ``score``: the noise ladder, and the network and schedule shared with ``ddpm``.  sigma_max
    defaults to the largest distance between training examples (Song & Ermon 2020, technique 1)."""

    sigma_max: float | None = option(None, "sigma_1, the largest noise level (default: the largest distance between "
                                     "training examples, Song & Ermon 2020).", min=0, min_open=True)
    sigma_min: float = option(0.01, "sigma_L, the smallest noise level.", min=0, min_open=True)
    levels: int = option(50, "L, noise levels (geometric from sigma_max to sigma_min).", min=2)
    sigmas_per_step: int = option(8, "Noise levels drawn per minibatch (a subsampled plate; unbiased).", min=1)

    def resolve(self, ds: Dataset) -> ScoreConfig:
        out = DiffusionOptions.resolve(self, ds)
        if out.sigma_max is None:
            out.sigma_max = max_distance(ds.x_train, image=ds.kind != "vector")
        if not out.sigma_min < out.sigma_max:
            raise InputError(f"expected sigma_min < sigma_max; got {out.sigma_min} and {out.sigma_max}")
        return out


@dataclass
class DSMTerms:
    """Held-out denoising score-matching loss of :meth:`ScoreModel.dsm_terms`, per example.

    Attributes
    ----------
    loss : float
        sum_i J_i, the training loss with all L levels (minus the "ELBO" that ``fit`` records); not a bound.
    J : ndarray, shape (L,)
        J_i = lambda(sigma_i) E ||s_theta(x + sigma_i eps, sigma_i) + eps / sigma_i||^2 / 2 (nats^0: a squared
        error); D / 2 per level means the network predicts nothing (s = 0).
    sigmas : ndarray, shape (L,)
    n, dim : int
    """

    loss: float
    J: np.ndarray
    sigmas: np.ndarray
    n: int
    dim: int

    def as_dict(self) -> dict:
        return {"dsm_loss": self.loss, "n": self.n, "dim": self.dim, "J": self.J.tolist(),
                "sigmas": self.sigmas.tolist()}


def max_distance(x: torch.Tensor, image: bool, n: int = 2000) -> float:
    """The largest Euclidean distance between (up to ``n`` of) the examples ``x`` (N, D), in model space
    (images: [0, 1] -> [-1, 1]), to 3 significant digits: the default sigma_1."""
    x = x.reshape(len(x), -1)[:n].double()
    x = 2 * x - 1 if image else x
    d = float(torch.cdist(x, x).max()) if len(x) > 1 else 1.0
    return float(f"{max(d, 1e-3):.3g}")


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """sigma_1 = sigma_max > ... > sigma_L = sigma_min, a geometric sequence; float64, shape (L,)."""
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels, dtype=torch.float64)


class ScoreModel(GenerativeModel):
    """Noise-conditional score network s_theta(x, sigma) trained by denoising score matching.

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    sigma_max, sigma_min : float
        sigma_1 > sigma_L, the ends of the geometric noise ladder (``ppl-dgm fit score`` sets sigma_1 to the
        largest distance between training examples, :func:`max_distance`).
    levels : int
        L.
    sigmas_per_step : int or None
        k levels drawn per minibatch in training (None, or k >= L: all L); evaluation mode uses all L.
    arch : {"auto", "mlp", "unet"}
    hidden : sequence of int
        MLP block widths.
    coord_freqs : int
        F: the MLP sees x with sin/cos of 2^k x_d, k < F (:class:`~ppl_dgm.nn.CoordinateFeatures`).
    base_channels : int
        UNet width.
    image_shape : sequence of int, optional
        Images ((H, W) or (C, H, W)) get data in [0, 1] mapped to the 256-level grid in [-1, 1].
    """

    family = "score"
    records_step = True
    latent_sites = ()
    samplers = tuple(SCORE_SAMPLERS)
    sample_title = "annealed Langevin dynamics from N(0, sigma_max^2 I)"

    def __init__(self, x_dim: int, sigma_max: float = 10.0, sigma_min: float = ScoreConfig.sigma_min,
                 levels: int = ScoreConfig.levels, sigmas_per_step: int | None = ScoreConfig.sigmas_per_step,
                 arch: Literal["auto", "mlp", "unet"] = ScoreConfig.arch, hidden: Sequence[int] = ScoreConfig.hidden,
                 coord_freqs: int = ScoreConfig.coord_freqs, base_channels: int = ScoreConfig.base_channels,
                 image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("arch", arch, ("auto", "mlp", "unet"))
        if not isinstance(x_dim, int) or x_dim < 1:
            raise InputError(f"x_dim must be a positive integer; got {x_dim!r}")
        if not 0 < sigma_min < sigma_max:
            raise InputError(f"expected 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        if not isinstance(levels, int) or levels < 2:
            raise InputError(f"levels must be an integer >= 2; got {levels!r}")
        if sigmas_per_step is not None and (not isinstance(sigmas_per_step, int) or sigmas_per_step < 1):
            raise InputError(f"sigmas_per_step must be a positive integer or None; got {sigmas_per_step!r}")
        self._store_config(locals())
        shape = tuple(int(s) for s in image_shape) if image_shape else (x_dim,)
        if int(np.prod(shape)) != x_dim:
            raise InputError(f"image_shape {shape} does not hold x_dim={x_dim} values")
        self.x_dim, self.image_shape, self.is_image = x_dim, shape, len(shape) >= 2
        self.sigmas_per_step = sigmas_per_step
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, levels), persistent=False)
        if arch == "auto":
            arch = "unet" if self.is_image and shape[-1] % 4 == 0 and shape[-2] % 4 == 0 else "mlp"
        self.arch = arch
        self.net = (UNet(shape, base_channels) if arch == "unet"
                    else EpsMLP(x_dim, tuple(hidden), coord_freqs=coord_freqs))

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data -> x_0: images in [0, 1] to the 256-level grid in [-1, 1]; vectors unchanged."""
        return to_grid(x) if self.is_image else x

    def to_data_space(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 -> data: images back to [0, 1]."""
        return ((x0 + 1) / 2).clamp(0, 1) if self.is_image else x0

    # -- the score and Tweedie ----------------------------------------------------------------
    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """s_theta(x, sigma) = -net(x / sqrt(1 + sigma^2), 100 log sigma) / sigma ~ grad_x log p_sigma(x).

        x : (..., D); sigma : float or tensor broadcastable to x.shape[:-1]; returns (..., D).
        """
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        col = sigma[..., None]
        return -self.net(x / (1 + col**2).sqrt(), 100 * sigma.log()) / col

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Tweedie (notes 000): E[x_0 | x_0 + sigma eps = x] = x + sigma^2 s_theta(x, sigma); x (..., D)."""
        return denoise(self.score_field(), x, sigma)

    def score_field(self) -> ScoreField:
        """Itself, for the samplers of :mod:`.samplers`: x ~ N(0, sigma_1^2 I) at the top of the ladder."""
        return ScoreField(self, self.score, self.sigmas, float(self.sigmas[0]))

    @torch.no_grad()
    def dsm_terms(self, x: torch.Tensor, *, seed: int = 0, batch_size: int = 512) -> DSMTerms:
        """J_i for every level on examples x (N, D) in data space, one eps per example and level (seeded; the
        global generator is restored)."""
        was = self.training
        self.eval()
        J = torch.zeros(len(self.sigmas), dtype=torch.float64)
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            for xb in x.to(self.device).split(batch_size):
                x0 = self.to_model_space(xb)
                for i, sigma in enumerate(self.sigmas.tolist()):
                    eps = torch.randn_like(x0)
                    J[i] += float(((sigma * self.score(x0 + sigma * eps, sigma) + eps) ** 2).sum() / 2)
        self.train(was)
        J = (J / len(x)).numpy()
        return DSMTerms(float(J.sum()), J, self.sigmas.cpu().numpy(), len(x), self.x_dim)

    # -- the training program: denoising score matching as a model-guide pair -------------------
    def _levels(self, x0: torch.Tensor):
        """``pyro.plate("sigma", L)``: ``sigmas_per_step`` levels in training, all L in eval mode."""
        L = len(self.sigmas)
        k = min(self.sigmas_per_step or L, L) if self.training else L
        return pyro.plate("sigma", L, subsample_size=k, dim=-2, device=x0.device)

    def _noisy(self, x0: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma_i (k, 1) and x_tilde ~ N(x_0, sigma_i^2 I), shape (k, N, D)."""
        sigma = self.sigmas[idx].to(x0).reshape(-1, 1)
        noisy = dist.Normal(x0, sigma[..., None].expand(-1, *x0.shape)).to_event(1)
        return sigma, pyro.sample("x_tilde", noisy)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """x_tilde with the guide's law, and the factor ``x``: -lambda(sigma) ||s_theta + eps / sigma||^2 / 2."""
        x0 = self.to_model_space(x)
        with pyro.plate("data", x0.shape[0], dim=-1), self._levels(x0) as idx:
            sigma, x_tilde = self._noisy(x0, idx)
            eps = (x_tilde - x0) / sigma[..., None]
            dsm = ((self.score(x_tilde, sigma) + eps / sigma[..., None]) ** 2).sum(-1) / 2
            pyro.factor("x", -sigma**2 * dsm)                                        # lambda(sigma) = sigma^2

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """For k levels sigma_i of the ladder, x_tilde = x + sigma_i eps ~ N(x, sigma_i^2 I)."""
        x0 = self.to_model_space(x)
        with pyro.plate("data", x0.shape[0], dim=-1), self._levels(x0) as idx:
            self._noisy(x0, idx)

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def trajectory(self, n: int, *, sampler: str = "langevin", record: int = 10, **kw) -> Trajectory:
        """Draw n examples with ``sampler`` (langevin, pc, ode) and keep ``record`` snapshots; ``kw`` go to the
        sampler of :mod:`.samplers` (``steps``, ``step_size``, ``rtol``, ``atol``, ...)."""
        return draw(self, n, sampler, record=record, **kw)

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str = "langevin", **kw) -> torch.Tensor:
        """n new examples of shape (n, D) in data space."""
        return self.trajectory(n, sampler=sampler, record=1, **kw).x

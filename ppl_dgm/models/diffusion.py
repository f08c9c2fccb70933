"""DDPM as a model–guide pair: the reverse chain is the model, the fixed forward chain the guide.

Notes 002 §6 (diffusion as a Markovian hierarchical VAE with a fixed encoder) and notes 004
("Forward/Reverse diffusion process"); equation numbers are Ho et al. 2020.

Model (eq. 1):  p(x_T) = N(0, I),   p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I),

.. math::  \\mu_\\theta(x_t, t) = \\frac{1}{\\sqrt{\\alpha_t}}\\Big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}
           \\epsilon_\\theta(x_t, t)\\Big) \\qquad \\text{(eq. 11)}

and the decoder p_theta(x_0 | x_1): Gaussian for vectors, discretized Gaussian (eq. 13) for images.
Guide (the forward chain in reverse factorisation, eq. 5): q(x_T | x_0) prod_{t>=2} q(x_{t-1} | x_t, x_0).
The ELBO with analytic KLs (eq. 5):

.. math::  -\\mathrm{ELBO} = \\underbrace{KL(q(x_T|x_0) \\| p(x_T))}_{L_T}
           + \\sum_{t \\ge 2} \\underbrace{E_q KL(q(x_{t-1}|x_t,x_0) \\| p_\\theta(x_{t-1}|x_t))}_{L_{t-1}}
           \\underbrace{- E_q \\log p_\\theta(x_0 | x_1)}_{L_0}

:meth:`DDPM.chain_model` / :meth:`DDPM.chain_guide` write this literally with sites ``x_T .. x_1, x``.
:meth:`DDPM.model` / :meth:`DDPM.guide` (what ``fit_svi`` trains) are its unbiased estimator: each
L_{t-1} only needs x_t ~ q(x_t | x_0) (eq. 4), so k steps are drawn in a subsampled ``pyro.plate("t", T)``.
Site ``x_t`` has the same law q(x_t | x_0) in both programs, so its log-ratio is exactly 0; it only hands the
draw to the model, and is masked out (``poutine.mask(mask=False)``) in both so that no objective computes that 0.
Which k steps, and their weights, depend on the module's mode:

- training: k = ``t_per_step`` steps uniformly without replacement, each scaled by T/k (the plate's scale).
  E[(T/k) sum_{t in S} L_{t-1}] = sum_t L_{t-1} since each t is in S with probability k/T.
- evaluation (``model.eval()``, e.g. the held-out ELBO of ``fit_svi``): a stratified grid.  1..T is cut
  into k = ``t_eval`` strata S_1 = {1}, S_2, ..., S_k growing about geometrically (:meth:`DDPM.strata`),
  one t_j is drawn uniformly in each, and its term is scaled by |S_j| (the plate's T/k times |S_j| k / T).
  E[|S_j| L_{t_j - 1}] = sum_{t in S_j} L_{t-1}, so the sum over strata is unbiased too.  The small steps,
  where L_{t-1} changes fastest (and L_0 is of another size), get strata of their own, which is what
  cuts the variance.  With ``t_eval`` = 64 and T = 1000 the held-out ELBO's standard deviation between
  draws is ~0.03 nats on moons (4,000 examples; 8 uniform steps: ~5) and ~1 of ~327 nats on 8x8 digits
  (359 examples; 8 uniform steps: ~115); ``chain_elbo``'s between seeds is ~0.03 and ~0.4.  It costs 64
  network calls per example (docs/diffusion.md).
  The guide draws the grid (its plate's subsample site ``t``); the model, replayed on the guide's
  trace, reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch.distributions import kl_divergence

from ..data import Dataset, check_label_range
from ..errors import InputError, check_choice
from ..nn import EpsMLP, UNet
from ..utils import LN2
from .base import GenerativeModel, recording
from .checks import check_width
from .discretized import DiscretizedGaussian, to_grid
from .options import SVIOptions, n_classes_of, option
from .samplers import ScoreField, Trajectory, draw, vp_field
from .schedule import SCHEDULES, NoiseSchedule

LOSSES = ("elbo", "simple")
VARIANCES = ("beta_tilde", "beta")


@dataclass
class DiffusionOptions(SVIOptions):
    """Options shared by the diffusion families (``ddpm``, ``score``): the network and the training schedule.
    Vector data (2-D toys, (N, D) arrays) get 100 epochs at lr 2e-3 with a cosine decay and EMA 0.999 unless told
    otherwise: on the checkerboard (16k points) that put DDPM-1000 and DDIM-50 samples at the MMD noise floor of
    held-out data, where 50 epochs at a constant 1e-3 left DDIM-50 three times worse."""

    epochs: int | None = option(None, "Training epochs (default: 300 for digits, 100 for vector data, 50 otherwise).",
                                role="train", min=1)
    lr: float | None = option(None, "Learning rate (default 1e-3; 2e-3 for vector data).", role="train", min=0,
                              min_open=True)
    lr_schedule: Literal["constant", "cosine", "exponential"] | None = option(
        None, "Learning rate against the epoch (default constant; cosine for vector data).", role="train")
    arch: Literal["auto", "mlp", "unet"] = option("auto", "auto: UNet for images with sides divisible by 4, else MLP.")
    hidden: tuple[int, ...] = option((128, 128, 128), "MLP block widths.")
    coord_freqs: int = option(6, "MLP: x enters with sin/cos of 2^k x_d for k < N (coordinate features; 0: off).",
                              min=0)
    base_channels: int = option(32, "UNet width.", min=8)
    ema: float | None = option(None, "Decay of the moving average of the weights used for held-out evaluation, "
                               "checkpoints and sampling (default 0.999 for vector data; 0: off).", role="train",
                               min=0, max=1, max_open=True)

    def resolve(self, ds: Dataset) -> DiffusionOptions:
        vector = ds.kind == "vector"
        out = dataclasses.replace(self, epochs=self.epochs or (100 if vector else None))
        out = SVIOptions.resolve(out, ds)
        out.lr = out.lr or (2e-3 if vector else 1e-3)
        out.lr_schedule = out.lr_schedule or ("cosine" if vector else "constant")
        out.ema = (0.999 if vector else 0.0) if out.ema is None else out.ema
        if out.held_out_examples is None and not vector and len(ds.x_test) > 1000:
            # 64 strata (or L levels) each: on Fashion-MNIST (1 CPU thread) 512 rows took 5 min after an 8-min epoch
            out.held_out_examples = 128
        return out

    def binarize(self, requested: str | None, image: bool) -> str:
        if requested not in (None, "none"):
            raise InputError(f"binarize: a diffusion model takes grey levels; expected 'none'; got {requested!r}")
        return "none"


@dataclass
class DDPMConfig(DiffusionOptions):
    """Fit options of ``ddpm``: the chain, its loss, and the shared diffusion options."""

    timesteps: int = option(1000, "T, the length of the chain.", min=2)
    schedule: Literal["linear", "cosine"] = option("linear", "Noise schedule beta_1..beta_T.")
    loss: Literal["simple", "elbo"] = option("simple", "simple: ||eps - eps_theta||^2 per step (Ho eq. 14); elbo: "
                                             "the bound (eq. 5).")
    t_per_step: int = option(8, "Timesteps drawn per minibatch (a subsampled plate; unbiased for the chain ELBO).",
                             min=1)
    variance: Literal["beta", "beta_tilde"] = option("beta", "sigma_t^2 of p_theta(x_{t-1} | x_t).")
    conditional: bool = option(False, "Condition eps_theta on the labels (sample --label L --guidance W: "
                               "classifier-free guidance).")
    p_uncond: float = option(0.1, "Conditional: probability of training with the null label instead of y (CFG).",
                             min=0, max=1, max_open=True)
    latent_of: str | None = option(None, "A fitted VAE (or other unconditional encoder) run: model its posterior "
                                   "means E[z | x] of its data, and decode samples through it (latent diffusion).",
                                   role="data")

    def model_kwargs(self, ds: Dataset) -> dict:
        kw = super().model_kwargs(ds)
        kw["n_classes"] = n_classes_of(ds) if kw.pop("conditional") else 0
        return kw


@dataclass
class ChainELBO:
    """The full-chain ELBO of :meth:`DDPM.chain_elbo`, per example (nats).

    Attributes
    ----------
    elbo : float
        -(L_T + sum_t L_{t-1}); a lower bound on log p(x) (a discrete one for images).
    bits_per_dim : float
        -elbo / (D ln 2).
    L_T : float
    L : ndarray, shape (T,)
        ``L[t - 1]`` is L_{t-1}: ``L[0]`` the decoder term L_0, ``L[t - 1]`` the KL of step t.
    n, dim : int
    """

    elbo: float
    bits_per_dim: float
    L_T: float
    L: np.ndarray
    n: int
    dim: int

    def as_dict(self) -> dict:
        return {"elbo": self.elbo, "bits_per_dim": self.bits_per_dim, "L_T": self.L_T, "L_0": float(self.L[0]),
                "L_sum": float(self.L[1:].sum()), "n": self.n, "dim": self.dim, "L_t": self.L.tolist()}


class DDPM(GenerativeModel):
    """Denoising diffusion probabilistic model with an epsilon-prediction network.

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    timesteps : int
        T.
    schedule : {"linear", "cosine"}
    loss : {"simple", "elbo"}
        Training weighting: "elbo" is the bound of eq. 5; "simple" rescales each L_{t-1} to
        ||eps - eps_theta||^2 / 2 (eq. 14).  Evaluation always reports the true ELBO.
    t_per_step : int or None
        k steps drawn per minibatch in training; None uses all T.  In eval mode :meth:`model`/:meth:`guide`
        draw one step in each of ``t_eval`` (class attribute, 64) strata instead (module docstring).
    arch : {"auto", "mlp", "unet"}
        auto: a UNet for images whose sides divide by 4, else an MLP.
    hidden : sequence of int
        Widths of the MLP blocks.
    coord_freqs : int
        F: the MLP sees x with sin/cos of 2^k x_d, k < F (:class:`~ppl_dgm.nn.CoordinateFeatures`).  0 here,
        so run directories written without the option load as they were; ``ppl-dgm fit`` passes
        ``DDPMConfig.coord_freqs``.
    base_channels : int
        UNet width.
    variance : {"beta", "beta_tilde"}
        sigma_t^2 of p_theta(x_{t-1}|x_t) for t >= 2 (sigma_1^2 = beta_1 always).  "beta" gives the
        tighter bound for data with a density (tests/test_diffusion.py: the Gaussian gap goes to 0 with T).
    n_classes : int
        C > 0: a label-conditional eps_theta(x_t, t, y), y in 0..C-1, trained with the null label C in place of
        y with probability ``p_uncond`` so that it also learns eps_theta(x_t, t) (classifier-free guidance,
        notes 000; Ho & Salimans 2022).  :meth:`model`, :meth:`guide` and :meth:`chain_elbo` then take y.
    p_uncond : float
        The label-dropout probability in training.
    image_shape : sequence of int, optional
        Shape of one example; images ((H, W) or (C, H, W)) get data in [0, 1] mapped to [-1, 1] and
        the discretized decoder (eq. 13).
    """

    family = "ddpm"
    records_step = True
    sample_title = "x_0 of the reverse chain from x_T ~ N(0, I)"
    t_eval = 64
    """Strata of steps (one step drawn in each) of :meth:`model`/:meth:`guide` in eval mode."""

    def __init__(self, x_dim: int, timesteps: int = DDPMConfig.timesteps,
                 schedule: Literal["linear", "cosine"] = DDPMConfig.schedule,
                 loss: Literal["simple", "elbo"] = DDPMConfig.loss, t_per_step: int | None = DDPMConfig.t_per_step,
                 arch: Literal["auto", "mlp", "unet"] = DDPMConfig.arch, hidden: Sequence[int] = DDPMConfig.hidden,
                 base_channels: int = DDPMConfig.base_channels, coord_freqs: int = 0,
                 variance: Literal["beta", "beta_tilde"] = DDPMConfig.variance, n_classes: int = 0,
                 p_uncond: float = DDPMConfig.p_uncond, image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("schedule", schedule, SCHEDULES)
        check_choice("loss", loss, LOSSES)
        check_choice("arch", arch, ("auto", "mlp", "unet"))
        check_choice("variance", variance, VARIANCES)
        if not isinstance(x_dim, int) or x_dim < 1:
            raise InputError(f"x_dim must be a positive integer; got {x_dim!r}")
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise InputError(f"timesteps must be a positive integer; got {timesteps!r}")
        if t_per_step is not None and (not isinstance(t_per_step, int) or not 1 <= t_per_step <= timesteps):
            raise InputError(f"t_per_step must be an integer in 1..timesteps ({timesteps}) or None; got {t_per_step!r}")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0:
            raise InputError(f"n_classes must be an integer >= 0 (0: unconditional); got {n_classes!r}")
        if not 0 <= p_uncond < 1:
            raise InputError(f"p_uncond must be in [0, 1); got {p_uncond!r}")
        self._store_config(locals())
        shape = tuple(int(s) for s in image_shape) if image_shape else (x_dim,)
        if int(np.prod(shape)) != x_dim:
            raise InputError(f"image_shape {shape} does not hold x_dim={x_dim} values")
        self.image_shape, self.is_image = shape, len(shape) >= 2
        self.x_dim, self.timesteps, self.loss, self.variance = x_dim, timesteps, loss, variance
        self.t_per_step, self.n_classes, self.p_uncond = t_per_step, n_classes, p_uncond
        self._guidance: tuple | None = None       # (labels, w, classifier or None), set by :meth:`conditioned`
        self.schedule = NoiseSchedule(timesteps, schedule)
        if arch == "auto":
            arch = "unet" if self.is_image and shape[-1] % 4 == 0 and shape[-2] % 4 == 0 else "mlp"
        self.arch = arch
        self.net = (UNet(shape, base_channels, n_classes=n_classes) if arch == "unet"
                    else EpsMLP(x_dim, tuple(hidden), coord_freqs=coord_freqs, n_classes=n_classes))

    @property
    def conditional(self) -> bool:
        return self.n_classes > 0

    def labels(self, y, n: int | None = None, classifier=None) -> torch.Tensor:
        """``y`` (an int or a sequence) as labels in 0..C-1 on the model's device, shape (n,) if ``n`` is given (C: of
        the guiding ``classifier`` if given); refused in one line without labels to use or out of range."""
        if classifier is None and not self.conditional:
            raise InputError("labels need a conditional DDPM (ppl-dgm fit ddpm --conditional) or a classifier to "
                             "guide it; this one has neither")
        c = classifier.n_classes if classifier is not None else self.n_classes
        y = torch.as_tensor(y, device=self.device).long()
        y = y.expand(n) if n is not None and y.dim() == 0 else y
        if not recording():  # a recorded fit step: fit_svi has checked every label (check_data)
            check_label_range(y.reshape(-1), c)
        return y

    @contextlib.contextmanager
    def conditioned(self, y, guidance: float = 0.0, classifier=None):
        """Within the block, :meth:`eps` called without labels (by the samplers, :meth:`score`, :meth:`denoise`) is
        eps_theta(x_t, t, y), and with guidance w > 0 the classifier-free guided

        .. math::  \\tilde\\epsilon = (1 + w)\\, \\epsilon_\\theta(x_t, t, y) - w\\, \\epsilon_\\theta(x_t, t),

        i.e. the score grad log p(x_t) + (1 + w) grad log p(y | x_t) (notes 000, classifier-free guidance).
        y : int or (N,) labels of the N rows being drawn; w = 0 is conditional sampling without guidance.

        With a ``classifier`` (a noise-conditional :class:`~ppl_dgm.models.classifier.Classifier` on the same
        schedule), classifier guidance instead: eps_theta(x_t, t) - w sqrt(1 - abar_t) grad log p_phi(y | x_t, t),
        the score grad log p(x_t) + w grad log p_phi(y | x_t) (notes 000, classifier guidance).
        """
        if not guidance >= 0 or guidance != guidance:
            raise InputError(f"guidance must be a number >= 0; got {guidance!r}")
        if classifier is not None:
            if not classifier.noise_conditional:
                raise InputError("classifier guidance needs a noise-conditional classifier "
                                 "(ppl-dgm fit classifier --noise-conditional); got one trained on clean data")
            if (classifier.timesteps, classifier.config["schedule"]) != (self.timesteps, self.config["schedule"]):
                raise InputError(f"classifier guidance needs the DDPM's noise schedule (T={self.timesteps}, "
                                 f"{self.config['schedule']}); the classifier has T={classifier.timesteps}, "
                                 f"{classifier.config['schedule']}")
        before = self._guidance
        self._guidance = (self.labels(y, classifier=classifier), float(guidance), classifier)
        try:
            yield self
        finally:
            self._guidance = before

    # -- pieces of the chain -------------------------------------------------------------
    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data -> x_0: images in [0, 1] to the 256-level grid in [-1, 1]; vectors unchanged."""
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise InputError(f"expected x of shape (N, {self.x_dim}); got shape {tuple(x.shape)}")
        return to_grid(x) if self.is_image else x

    def to_data_space(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 -> data: images back to [0, 1]."""
        return ((x0 + 1) / 2).clamp(0, 1) if self.is_image else x0

    @property
    def max_rows(self) -> int:
        """Examples x steps per network call when evaluating (bounds the UNet's memory)."""
        return 4096 if self.arch == "unet" else 1 << 18

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, max_rows: int | None = None,
            y: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t, t) or eps_theta(x_t, t, y): x_t (..., D), t and y broadcastable to x_t.shape[:-1];
        returns (..., D).

        ``max_rows``: if given, x_t of shape (k, N, D) and t (k, 1) go through the network a few steps at a
        time (at most ``max_rows`` rows per call); the values are the same.  ``y`` None: the labels and
        guidance of :meth:`conditioned`, if inside it; else the null label (the unconditional eps).
        """
        check_width(x_t, self.x_dim, "x_t", lead="...")
        if isinstance(t, torch.Tensor) and not t.is_floating_point():  # (fractional t: the probability-flow ODE)
            self.schedule.steps(t)  # steps in 0..T (checked once per tensor, shared with the schedule's lookups)
        if y is None and self._guidance is not None:
            y, w, classifier = self._guidance
            if classifier is not None:
                grad = classifier.grad_log_prob(y, x_t, t)
                scale = (1 - self.schedule.at("alpha_bars", t, x_t)).sqrt()
                return self._net(x_t, t, None, max_rows) - w * scale * grad
            if w:
                return (1 + w) * self._net(x_t, t, y, max_rows) - w * self._net(x_t, t, None, max_rows)
        return self._net(x_t, t, y, max_rows)

    def _net(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, max_rows: int | None) -> torch.Tensor:
        if max_rows is None or x_t.dim() != 3:
            return self.net(x_t, t, y)
        chunk = max(1, max_rows // x_t.shape[1])
        return torch.cat([self.net(x_t[i: i + chunk], t[i: i + chunk], y) for i in range(0, len(x_t), chunk)])

    def p_mean(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """mu_theta(x_t, t) of eq. 11; x_t, eps of shape (..., D), t broadcastable to x_t.shape[:-1]."""
        s = self.schedule
        coef = s.at("betas", t, x_t) / (1 - s.at("alpha_bars", t, x_t)).sqrt()
        return (x_t - coef * eps) / s.at("alphas", t, x_t).sqrt()

    def p_var(self, t: torch.Tensor, like: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
        """sigma_t^2, shape t.shape + (1,) * event_dims: beta-tilde_t or beta_t for t >= 2, and beta_1 at
        t = 1 (so the decoder has a width)."""
        s = self.schedule
        beta = s.at("betas", t, like, event_dims)
        if self.variance == "beta":
            return beta
        t_col = torch.as_tensor(t, device=like.device).reshape(beta.shape)
        return torch.where(t_col > 1, s.at("beta_tildes", t, like, event_dims), beta)

    def p_step(self, x_t: torch.Tensor, t: torch.Tensor) -> dist.Distribution:
        """p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I), event shape (D,)."""
        mean = self.p_mean(x_t, t, self.eps(x_t, t))
        return dist.Normal(mean, self.p_var(t, x_t).sqrt().expand_as(mean)).to_event(1)

    def decoder(self, x_1: torch.Tensor, eps: torch.Tensor | None = None) -> dist.Distribution:
        """p_theta(x_0 | x_1): N(mu_theta(x_1, 1), beta_1 I), discretized for images (eq. 13)."""
        if eps is None:
            eps = self.eps(x_1, torch.ones(x_1.shape[:-1], dtype=torch.long, device=x_1.device))
        mean = self.p_mean(x_1, 1, eps)          # t = 1 as a Python int: the schedule reads no tensor
        std = self.p_var(1, x_1).sqrt().expand_as(mean)
        base = DiscretizedGaussian(mean, std) if self.is_image else dist.Normal(mean, std)
        return base.to_event(1)

    def q_t(self, x0: torch.Tensor, t) -> dist.Distribution:
        """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (eq. 4; notes 002 "key!")."""
        mean, std = self.schedule.q_mean_std(x0, t)
        return dist.Normal(mean, std.expand_as(mean)).to_event(1)

    def _prior(self, x0: torch.Tensor) -> dist.Distribution:
        return dist.Normal(torch.zeros_like(x0), torch.ones_like(x0)).to_event(1)

    def strata(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Edges 0 = e_0 < e_1 = 1 < ... < e_k = T of the eval-mode strata, shape (k + 1,), k = min(t_eval, T).

        Stratum j holds the steps t = e_{j-1} + 1 .. e_j: {1} first, then sizes growing about geometrically
        (e_j ~ T^{(j-1)/(k-1)}, at least one step each).
        """
        T, k = self.timesteps, min(self.t_eval, self.timesteps)
        edges = [0]
        for j in range(1, k + 1):
            target = round(T ** ((j - 1) / (k - 1))) if k > 1 else T
            edges.append(min(max(edges[-1] + 1, target), T - (k - j)))
        return torch.tensor(edges, device=device)

    def _weight(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
        """Scale of step t (k, 1) on top of the plate's T/k.  Training: 1 for the ELBO; 1 / (2 w_t) for "simple",
        w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1-abar_t)) being the factor of ||eps - eps_theta||^2 in L_{t-1}
        (so each term becomes ||eps - eps_theta||^2 / 2).  Eval mode: |S_j| k / T for t in stratum S_j."""
        if not self.training:
            edges = self.strata(t.device)
            j = torch.searchsorted(edges, t - 1, right=True) - 1            # the stratum of each t
            return ((edges[j + 1] - edges[j]) * (len(edges) - 1) / self.timesteps).to(like.dtype)
        if self.loss != "simple":
            return 1.0
        s = self.schedule
        w = s.at("betas", t, like, 0) ** 2 / (2 * self.p_var(t, like, 0) * s.at("alphas", t, like, 0)
                                              * (1 - s.at("alpha_bars", t, like, 0)))
        return 1.0 / (2 * w)

    def _time_plate(self, x0: torch.Tensor):
        """``pyro.plate("t", T)`` over k steps: ``t_per_step`` uniform ones in training, one per stratum in eval."""
        if self.training:
            k = self.t_per_step if self.t_per_step is not None else self.timesteps
            return pyro.plate("t", self.timesteps, subsample_size=k, dim=-2, device=x0.device)
        edges = self.strata(x0.device)
        size = edges[1:] - edges[:-1]
        idx = edges[:-1] + (torch.rand(len(size), device=x0.device) * size).long().clamp_max(size - 1)
        return pyro.plate("t", self.timesteps, subsample=idx, dim=-2, device=x0.device)

    # -- the training program: the chain ELBO with subsampled steps -----------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x_T) and, for k subsampled steps t, p_theta(x_{t-1} | x_t) (t >= 2) or p_theta(x_0 | x_1) (t = 1)."""
        x0, y = self.to_model_space(x), self._train_labels(y, len(x))
        with pyro.plate("data", x0.shape[0], dim=-1):
            pyro.sample(f"x_{self.timesteps}", self._prior(x0))
            with self._time_plate(x0) as idx:
                t = (idx + 1).reshape(-1, 1)                           # (k, 1): steps in 1..T
                with poutine.mask(mask=False):                          # same law as in the guide: log-ratio 0
                    x_t = pyro.sample("x_t", self.q_t(x0, t))
                eps = self.eps(x_t, t, None if self.training else self.max_rows, y)
                with poutine.scale(scale=self._weight(t, x0)):
                    with poutine.mask(mask=t > 1):
                        mean = self.p_mean(x_t, t, eps)
                        pyro.sample("x_{t-1}", dist.Normal(mean, self.p_var(t, x0).sqrt().expand_as(mean)).to_event(1))
                    with poutine.mask(mask=t == 1):
                        pyro.sample("x", self.decoder(x_t, eps), obs=x0)

    def _train_labels(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The labels eps_theta sees in :meth:`model`: y (checked), with the null label C in place of each with
        probability ``p_uncond`` in training (classifier-free guidance); None for an unconditional DDPM."""
        if not self.conditional:
            return None
        if y is None:
            raise InputError("a conditional DDPM needs labels y for its training data; got none")
        y = self.labels(y)
        if y.shape != (n,):
            raise InputError(f"expected {n} labels, one per example; got shape {tuple(y.shape)}")
        if self.training and self.p_uncond:
            y = torch.where(torch.rand(n, device=y.device) < self.p_uncond, self.n_classes, y)
        return y

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(x_T | x_0) and, for the same k steps, x_t ~ q(x_t | x_0), x_{t-1} ~ q(x_{t-1} | x_t, x_0)."""
        x0 = self.to_model_space(x)
        with pyro.plate("data", x0.shape[0], dim=-1):
            pyro.sample(f"x_{self.timesteps}", self.q_t(x0, self.timesteps))
            with self._time_plate(x0) as idx:
                t = (idx + 1).reshape(-1, 1)
                with poutine.mask(mask=False):
                    x_t = pyro.sample("x_t", self.q_t(x0, t))
                mean, var = self.schedule.q_posterior(x_t, x0, t)
                var = torch.where(t[..., None] > 1, var, self.schedule.at("betas", t, x0))   # t = 1: masked out
                with poutine.scale(scale=self._weight(t, x0)), poutine.mask(mask=t > 1):
                    pyro.sample("x_{t-1}", dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(1))

    # -- the literal chain: sites x_T, ..., x_1 and x --------------------------------------
    def chain_model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x_T) prod_{t=T}^{2} p_theta(x_{t-1} | x_t) p_theta(x_0 | x_1), one site per step (T network calls)."""
        x0 = self.to_model_space(x)
        with pyro.plate("data", x0.shape[0]):
            x_t = pyro.sample(f"x_{self.timesteps}", self._prior(x0))
            for step in range(self.timesteps, 1, -1):
                t = torch.full((x0.shape[0],), step, device=x0.device)
                x_t = pyro.sample(f"x_{step - 1}", self.p_step(x_t, t))
            pyro.sample("x", self.decoder(x_t), obs=x0)

    def chain_guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(x_T | x_0) prod_{t=T}^{2} q(x_{t-1} | x_t, x_0): the forward chain, sampled top-down."""
        x0 = self.to_model_space(x)
        with pyro.plate("data", x0.shape[0]):
            x_t = pyro.sample(f"x_{self.timesteps}", self.q_t(x0, self.timesteps))
            for step in range(self.timesteps, 1, -1):
                mean, var = self.schedule.q_posterior(x_t, x0, step)
                x_t = pyro.sample(f"x_{step - 1}", dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(1))

    # -- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def chain_elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, *, max_rows: int | None = None,
                   seed: int | None = None, noise: torch.Tensor | None = None) -> ChainELBO:
        """The full-chain ELBO L_T + sum_{t>=2} L_{t-1} + L_0 (eq. 5), every step, analytic KLs; of log p(x | y)
        for a conditional DDPM given labels y (N,) (without: of the unconditional log p(x), the null label).

        Each L_{t-1} is E_{q(x_t|x_0)} of a closed form; x_t is drawn once per example and step.
        x : (N, D) data; ``max_rows`` bounds examples x steps per network call; ``noise`` (T, N, D), if
        given, is the eps of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (row t - 1 for step t).
        """
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise InputError(f"expected data of shape (N, {self.x_dim}); got {tuple(x.shape)}")
        was = self.training
        self.eval()
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        x0 = self.to_model_space(x.to(self.device))
        y = None if y is None else self.labels(y)
        n, T = x0.shape[0], self.timesteps
        chunk = max(1, (max_rows or self.max_rows) // n)
        L = torch.zeros(T, dtype=torch.float64)
        L_T = kl_divergence(self.q_t(x0, T), self._prior(x0)).double().mean()
        for start in range(1, T + 1, chunk):
            t = torch.arange(start, min(T, start + chunk - 1) + 1, device=x0.device).reshape(-1, 1)
            x_t = self.q_t(x0, t).sample() if noise is None else \
                self.schedule.q_sample(x0, t, noise[start - 1: start - 1 + len(t)].to(x0))
            eps = self.eps(x_t, t, y=y)
            mean, var = self.schedule.q_posterior(x_t, x0, t)
            p_mean = self.p_mean(x_t, t, eps)
            kl = kl_divergence(dist.Normal(mean, var.clamp_min(1e-30).sqrt().expand_as(mean)),
                               dist.Normal(p_mean, self.p_var(t, x0).sqrt().expand_as(p_mean))).sum(-1)
            terms = kl.double().mean(-1)
            if start == 1:
                terms[0] = -self.decoder(x_t[0], eps[0]).log_prob(x0).double().mean()
            L[start - 1: start - 1 + len(t)] = terms.cpu()
        if seed is not None:
            torch.random.set_rng_state(gen_state)
        self.train(was)
        elbo = -(float(L_T) + float(L.sum()))
        return ChainELBO(elbo, -elbo / (self.x_dim * LN2), float(L_T), L.numpy(), n, self.x_dim)

    # -- sampling: the shared samplers (:mod:`.samplers`) ------------------------------------
    samplers = ("ddpm", "ddim", "langevin", "pc", "ode")
    """The ``sampler=`` values of :meth:`sample`: the chain's own two, and the score samplers on :meth:`score_field`."""

    def score(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """grad log q(x_t) ~ -eps_theta(x_t, t) / sqrt(1 - abar_t) (the eps <-> score identity); x_t (..., D)."""
        return -self.eps(x_t, t) / (1 - self.schedule.at("alpha_bars", t, x_t)).sqrt()

    def denoise(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Tweedie: E[x_0 | x_t] = (x_t + (1 - abar_t) grad log q(x_t)) / sqrt(abar_t), the x-hat_0 of eq. 4."""
        return self.schedule.predict_x0(x_t, t, self.eps(x_t, t))

    def score_field(self) -> ScoreField:
        """This DDPM in VE coordinates x_t / sqrt(abar_t) = x_0 + sigma_t eps, for the score samplers."""
        return vp_field(self)

    @torch.no_grad()
    def trajectory(self, n: int, *, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                   record: int = 10, **kw) -> Trajectory:
        """Draw n examples and keep ``record`` snapshots (data space); see :mod:`.samplers`.

        ``steps``: DDIM's number of steps, or Langevin / corrector steps per level; ``eta``: DDIM only;
        ``kw``: the score samplers' options (``step_size``, ``rtol``, ``atol``, ...), and for a conditional
        DDPM ``y`` (an int or (n,) labels) and ``guidance`` w (:meth:`conditioned`).
        """
        if sampler == "ddim":
            kw.update(steps=50 if steps is None else steps, eta=eta)
        elif steps is not None:
            kw["steps"] = steps
        return draw(self, n, sampler, record=record, **kw)

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
               **kw) -> torch.Tensor:
        """n new examples of shape (n, D) in data space (the last step is the noiseless mean, as in Ho et al.);
        ``y=``, ``guidance=``: labels and classifier-free guidance of a conditional DDPM (:meth:`conditioned`)."""
        return self.trajectory(n, sampler=sampler, steps=steps, eta=eta, record=1, **kw).x

"""Inverse problems with a diffusion prior: a measurement model, and diffusion posterior sampling (DPS).

Course notes 000, §13 "Posterior Sampling & Inverse Problems" (DPS) and §14 (a Gaussian pushed through a
nonlinear function is no longer Gaussian, so p(y | x_t) has no closed form).  A measurement is

.. math::  y = A(x) + \\sigma_y n, \\qquad n \\sim \\mathcal N(0, I),

so the inverse problem is a probabilistic program with two parts: the prior over x (the DDPM) and one
observed likelihood site ``y ~ N(A(x), sigma_y^2 I)`` (:func:`measurement_model`).  Its posterior has the
score grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t).  DPS (Chung et al. 2023, Algorithm 1)
approximates p(y | x_t) by p(y | x-hat_0(x_t)) with x-hat_0 Tweedie's E[x_0 | x_t]
(:meth:`NoiseSchedule.predict_x0` with eps_theta) and adds its gradient to each ancestral step:

.. math::  x'_{t-1} \\sim p_\\theta(x_{t-1} \\mid x_t), \\qquad
           x_{t-1} = x'_{t-1} - \\zeta\\, \\nabla_{x_t} \\lVert y - A(\\hat x_0(x_t)) \\rVert_2 .

This is the paper's step zeta_t grad ||y - A(x-hat_0)||^2 with zeta_t = zeta / (2 ||y - A(x-hat_0)||), the
normalisation of the authors' code: each step moves by about zeta whatever the residual's size, so one zeta
serves every task and noise level.  The gradient runs through the eps network (vector-Jacobian product).

Operators act on model-space rows (N, D) (images in [-1, 1]); they are plain callables, so any
differentiable function ``A(x) -> (N, M)`` can replace them.  All three here are linear, and each one
commutes with the affine map between data and model space (its weights sum to 1, or it only masks), so
``y`` is given on the data's scale and :func:`to_model_space` maps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ..errors import InputError, check_number
from .samplers import Trajectory, _run, _x0_hat, in_batches

Operator = Callable[[torch.Tensor], torch.Tensor]


# -- measurement operators ------------------------------------------------------------------------
@dataclass(frozen=True)
class Inpaint:
    """A(x) = m * x: keep the entries where ``mask`` is 1, zero the others.

    mask : Tensor, shape (D,) (one mask for every row) or (N, D) (one per row), values 0 or 1.
    """

    mask: torch.Tensor

    def __post_init__(self):
        if not bool(((self.mask == 0) | (self.mask == 1)).all()):
            raise InputError("mask: expected values 0 (missing) and 1 (observed) only")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x) * x

    def rows(self, sl: slice) -> Inpaint:
        """The operator of rows ``sl`` (a per-row mask is sliced with them)."""
        return self if self.mask.dim() == 1 else Inpaint(self.mask[sl])

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """The masked input: y itself, 0 where nothing is observed."""
        return self(y)


@dataclass(frozen=True)
class Identity:
    """A(x) = x: denoising."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """The noisy input."""
        return y


@dataclass(frozen=True)
class SuperRes:
    """A(x) = average pooling of ``scale`` x ``scale`` blocks; rows (N, C*H*W) -> (N, C*(H/s)*(W/s)).

    image_shape : (H, W) or (C, H, W), with H and W divisible by ``scale``.
    """

    scale: int
    image_shape: tuple[int, ...]

    def __post_init__(self):
        check_number("scale", self.scale, integer=True, min=1)
        if len(self.image_shape) not in (2, 3):
            raise InputError(f"superres needs images (H, W) or (C, H, W); got examples of shape {self.image_shape}")
        if self.image_shape[-1] % self.scale or self.image_shape[-2] % self.scale:
            raise InputError(f"scale: expected a divisor of the image sides {self.image_shape[-2:]}; got {self.scale}")

    @property
    def chw(self) -> tuple[int, int, int]:
        return (1, *self.image_shape) if len(self.image_shape) == 2 else tuple(self.image_shape)

    @property
    def low_shape(self) -> tuple[int, ...]:
        """The shape of one measurement: the image's, each side divided by ``scale``."""
        h, w = self.image_shape[-2:]
        return (*self.image_shape[:-2], h // self.scale, w // self.scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.reshape(-1, *self.chw), self.scale).flatten(1)

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling of y back to the image size, rows (N, D)."""
        c, h, w = self.chw
        low = y.reshape(-1, c, h // self.scale, w // self.scale)
        return F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).flatten(1)


def inpaint(mask: torch.Tensor) -> Inpaint:
    """A(x) = m * x, with ``mask`` (D,) or (N, D), 1 where x is observed."""
    return Inpaint(torch.as_tensor(mask))


def denoise() -> Identity:
    """A(x) = x."""
    return Identity()


def superres(scale: int, image_shape: tuple[int, ...]) -> SuperRes:
    """A(x) = ``scale`` x ``scale`` average pooling of images of ``image_shape``."""
    return SuperRes(scale, tuple(int(s) for s in image_shape))


def to_model_space(model, A: Operator, y: torch.Tensor, sigma_y: float) -> tuple[torch.Tensor, float]:
    """(y, sigma_y) on the data's scale -> model space.  Images: x_model = 2 x - 1, so for a linear A
    A(x_model) = 2 A(x) + A(-1) and y_model = 2 y + A(-1), sigma_model = 2 sigma_y; vectors unchanged."""
    if not model.is_image:
        return y, sigma_y
    return 2 * y + A(-torch.ones(1, model.x_dim, dtype=y.dtype, device=y.device)), 2 * sigma_y


# -- the measurement model -----------------------------------------------------------------------
def measurement_model(prior: Callable[[int], torch.Tensor] | torch.Tensor, A: Operator, y: torch.Tensor,
                      sigma_y: float) -> torch.Tensor:
    """The inverse problem as a Pyro program: x ~ prior, ``y ~ N(A(x), sigma_y^2 I)`` observed (notes 000, §13 DPS).

    Parameters
    ----------
    prior : callable or Tensor
        ``prior(n)`` draws x, shape (n, D), with its own Pyro sites (e.g. :func:`chain_prior`); or a tensor
        x (N, D) at which to score y.
    A : callable
        The measurement operator, (N, D) -> (N, M).
    y : Tensor, shape (N, M)
        The measurements (model space, like ``A``'s output).
    sigma_y : float
        The noise standard deviation.

    Returns
    -------
    x : Tensor, shape (N, D)
    """
    sigma_y = check_number("sigma_y", sigma_y, min=0, min_open=True)
    with pyro.plate("data", y.shape[0]):
        x = prior(y.shape[0]) if callable(prior) else prior
        pyro.sample("y", dist.Normal(A(x), sigma_y).to_event(1), obs=y)
    return x


def chain_prior(model) -> Callable[[int], torch.Tensor]:
    """A DDPM's reverse chain as a prior for :func:`measurement_model`: sites x_T, ..., x_1 and ``x``
    (p(x_T) prod_t p_theta(x_{t-1} | x_t) p_theta(x_0 | x_1), model space), called inside the ``data`` plate."""

    def prior(n: int) -> torch.Tensor:
        T, like = model.timesteps, torch.zeros(n, model.x_dim, device=model.device)
        x_t = pyro.sample(f"x_{T}", dist.Normal(like, 1.0).to_event(1))
        for step in range(T, 1, -1):
            x_t = pyro.sample(f"x_{step - 1}", model.p_step(x_t, torch.full((n,), step, device=model.device)))
        return pyro.sample("x", model.decoder(x_t))

    return prior


# -- DPS -----------------------------------------------------------------------------------------
def dps_sample(model, y: torch.Tensor, A: Operator, *, sigma_y: float, zeta: float = 1.0,
               record: int = 10) -> Trajectory:
    """Diffusion posterior sampling (Chung et al. 2023, Alg. 1; notes 000 §13): one x ~ p(x | y) per row of y.

    Parameters
    ----------
    model : DDPM
    y : Tensor, shape (N, M)
        Measurements on the data's scale (images in [0, 1]); mapped by :func:`to_model_space`.
    A : callable
        (N', D) -> (N', M) on model-space rows; an operator with a ``rows(slice)`` method (a per-row
        :class:`Inpaint`) is sliced with the batches of rows.
    sigma_y : float
        The measurement noise (data scale).  The normalised step (module docstring) does not need it: it is
        checked and kept for the caller's measurement model.
    zeta : float
        zeta, the step of the likelihood gradient (> 0).
    record : int
        Snapshots kept (as for the other samplers).

    Returns
    -------
    Trajectory
        ``x`` (N, D) in data space and the snapshots of the chain.
    """
    check_number("sigma_y", sigma_y, min=0, min_open=True)
    zeta = check_number("zeta", zeta, min=0, min_open=True)
    if y.dim() != 2 or not torch.isfinite(y).all():
        raise InputError(f"y: expected finite measurements of shape (N, M); got shape {tuple(y.shape)}"
                         + ("" if y.dim() != 2 else " with NaN or inf values"))
    y, _ = to_model_space(model, A, y.to(model.device, next(model.parameters()).dtype), sigma_y)
    was = model.training
    model.eval()
    try:
        def rows(r: slice) -> Trajectory:                  # one _run batch each, so y's rows follow
            A_r = A.rows(r) if hasattr(A, "rows") else A
            return _run(model, r.stop - r.start, list(range(model.timesteps, 0, -1)), _dps_step(model, y[r], A_r, zeta),
                        record)

        return in_batches(model, len(y), rows)
    finally:
        model.train(was)


def _dps_step(model, y: torch.Tensor, A: Operator, zeta: float):
    """update(x_t, t, t_prev) -> x_{t-1}: ancestral step from Tweedie's x-hat_0, minus zeta grad ||y - A(x-hat_0)||."""
    s = model.schedule

    def update(x, t, t_prev):
        tt = torch.full(x.shape[:-1], t, device=x.device, dtype=torch.long)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            eps = model.eps(x, tt)
            residual = (y - A(s.predict_x0(x, tt, eps))).norm(dim=-1)          # (N,): one norm per row
            grad, = torch.autograd.grad(residual.sum(), x)
        x, eps = x.detach(), eps.detach()
        mean, _ = s.q_posterior(x, _x0_hat(model, x, tt, eps), tt)
        if t > 1:
            mean = mean + model.p_var(tt, x).sqrt() * torch.randn_like(x)
        return mean - zeta * grad

    return update

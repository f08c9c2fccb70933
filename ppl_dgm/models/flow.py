"""Normalizing flows as density models: RealNVP and neural spline flows, with dequantization for images.

Course notes 000 ("Flows": an invertible map between a simple distribution and the data's) and 002 §3.
z ~ N(0, I_D) is pushed through invertible layers f = f_L o ... o f_1 (:mod:`ppl_dgm.nn.flows`: affine or
rational-quadratic spline couplings with permutations between them), then through a fixed map g to the
data's scale, and the change of variables gives the exact density

.. math::  \\log p(y) = \\log N(f^{-1}(g^{-1}(y)); 0, I) - \\sum_l \\log |\\det J_{f_l}| - \\log |\\det J_g|.

g standardizes continuous data (y = mu + s * h: the training data's mean and standard deviation) and maps
dequantized images to [0, 1]: y = (sigmoid(c h) - a) / (1 - 2a), the logit preprocessing of RealNVP (Dinh et
al. 2017) with a = 1e-6, scaled by c = 4 so that the data's h lie in [-3.5, 3.5] (inside the splines'
interval [-4, 4], and on the scale of the N(0, I) base).  No latent: the guide is empty, the ELBO is log p(x),
and ``fit_svi`` is maximum likelihood.

**Dequantization** (Theis et al. 2016; Ho et al. 2019).  Grey levels are discrete: x = k * step,
k in {0, ..., L-1} (step = 1/(L-1): L = 17 for the 8x8 digits, 256 for Fashion-MNIST; step = 1 for data of
``Dataset.levels``, e.g. 0/1 after binarization).  A density on them would be unbounded, so the flow models
y = (k + u) / L, u in [0, 1)^D; since the cell of k has volume L^-D,

.. math::  \\log P(k) = \\log \\int_{[0,1)^D} p(\\tfrac{k + u}{L}) L^{-D} du
           \\ge E_{q(u|k)}[\\log p(\\tfrac{k + u}{L}) - D \\log L - \\log q(u \\mid k)].

``uniform``: q = U[0, 1)^D (log q = 0), u is drawn inside the model (not a site: like the classifier's
noise, data augmentation), and the "ELBO" is this bound.  ``variational`` (Flow++): u is a latent site
with a uniform prior and the guide is q(u | k), conditional affine couplings squashed to (0, 1); the ELBO
is the variational-dequantization bound.  :meth:`Flow.log_prob` is the bound on log P(k) (nats, one draw
of u per example), so bits/dim = -log_prob / (D ln 2) is an upper bound on the discrete data's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch.distributions import constraints

from ..data import Dataset
from ..errors import InputError, check_choice
from ..nn.flows import COUPLINGS, ConditionalFlowStack, coupling_flow
from .base import GenerativeModel
from .options import SVIOptions, option

DEQUANTIZATIONS = ("uniform", "variational", "none")
LOGIT_ALPHA = 1e-6
LOGIT_SCALE = 4.0
SPLINE_BOUND = 4.0
MAX_LEVELS = 256


def _tolerance(top: float) -> float:
    """How far from an integer k = x / step may be, for levels up to ``top``: float32 rounding of x (2^-25 per
    unit, times top) with a margin of 8."""
    return 1e-6 + 2.5e-7 * top


def grid_levels(x: torch.Tensor, max_levels: int = MAX_LEVELS) -> int | None:
    """The smallest L in 2..max_levels with every value of x on {0, 1/(L-1), ..., 1}, or None.

    >>> grid_levels(torch.tensor([0.0, 0.25, 1.0]))
    5
    """
    v = torch.unique(x.detach().double().flatten())
    if v.numel() == 0 or v.min() < 0 or v.max() > 1:
        return None
    for m in range(1, max_levels):
        if ((v * m - (v * m).round()).abs() <= _tolerance(m)).all():
            return m + 1
    return None


def data_levels(ds: Dataset) -> int | None:
    """L of discrete data: ``ds.levels`` (integers 0..L-1, e.g. 2 once binarized), or the grey-level grid of both
    splits (:func:`grid_levels`); None for continuous data."""
    if ds.levels:
        return int(ds.levels)
    return grid_levels(torch.cat([torch.unique(ds.x_train), torch.unique(ds.x_test)]))


def grid_index(x: torch.Tensor, levels: int, step: float, what: str = "data") -> torch.Tensor:
    """k = x / step, the level of every value (float tensor of integers 0..L-1); data off that grid are refused
    in one line."""
    k = x.double() / step
    r = k.round().clamp(0, levels - 1)
    bad = (k - r).abs() > _tolerance(levels - 1)
    if bad.any():
        i = tuple(int(j) for j in bad.nonzero()[0])
        raise InputError(f"{what}: expected {levels} levels k * {step:.6g}, k = 0..{levels - 1} (what the flow was "
                         f"fitted on); got {float(x[i]):.6g} at index {i}")
    return r.to(x.dtype)


class Dequantized(dist.TorchDistribution):
    """x = k * step on L levels, scored through a density p of y = (k + u) / L for a given u in [0, 1)^D:
    log p(x | u) = log p((k + u) / L) - D log L; summed against q(u | x) it gives the module's bound.

    Parameters
    ----------
    density : Distribution over y of event shape (D,)
    levels : int
        L.
    step : float
        The value of level 1 (x = k * step).
    u : Tensor (N, D)
        The dequantization noise.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, density, levels: int, step: float, u: torch.Tensor):
        self.density, self.levels, self.step, self.u = density, levels, step, u
        super().__init__(u.shape[:-1], u.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None) -> Dequantized:
        return Dequantized(self.density, self.levels, self.step, self.u.expand(*batch_shape, *self.event_shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        k = grid_index(x, self.levels, self.step)
        d = x.shape[-1]
        return self.density.log_prob((k + self.u) / self.levels) - d * math.log(self.levels)

    def sample(self, sample_shape=()) -> torch.Tensor:
        y = self.density.sample(torch.Size(sample_shape) + self.batch_shape)
        return (y * self.levels).floor().clamp(0, self.levels - 1) * self.step


@dataclass
class FlowConfig(SVIOptions):
    """Fit options of ``flow``: the layers, their width, and the dequantization of images."""

    epochs: int | None = option(None, "Training epochs (default: 20; 10 for images larger than the 8x8 digits).",
                                role="train", min=1)
    flow: Literal["realnvp", "spline"] = option(
        "realnvp", "RealNVP affine couplings, or rational-quadratic spline couplings (neural spline flow).")
    layers: int = option(8, "Coupling layers (a fixed permutation between consecutive ones).", min=1)
    hidden: tuple[int, ...] = option((256, 256), "Widths of each coupling's MLP (over the flattened example).")
    count_bins: int = option(8, "Spline knots per dimension (spline only).", min=2)
    dequantization: Literal["uniform", "variational", "none"] | None = option(
        None, "Discrete data (grey levels, binarized): uniform (default) or variational (Flow++) noise u in "
              "[0,1)^D, bits/dim a bound on the discrete data; continuous data: none, the exact density.")
    clip_norm: float | None = option(100.0, "Clip the global gradient norm.", role="train", min=0, min_open=True)

    def resolve(self, ds: Dataset) -> FlowConfig:
        out = SVIOptions.resolve(self, ds)
        out.epochs = self.epochs or (10 if ds.kind == "image" and ds.dim > 64 else 20)
        out.dequantization = self.dequantization or ("none" if data_levels(ds) is None else "uniform")
        return out

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        kw, levels = super().model_kwargs(ds), data_levels(ds)
        if kw["dequantization"] == "none":
            if levels is not None:
                raise InputError(f"dequantization 'none': expected continuous data; {ds.name} takes {levels} levels, "
                                 "on which a density is unbounded (use --dequantization uniform or variational)")
            x = ds.x_train.double()
            kw.update(data_loc=x.mean(0).tolist(), data_scale=x.std(0).clamp_min(1e-3).nan_to_num(1.0).tolist())
            return kw
        if levels is None:
            raise InputError(f"dequantization {kw['dequantization']!r}: expected grey levels in [0, 1] on a grid "
                             f"k/(L-1) with L <= {MAX_LEVELS}; {ds.name} is not (use --dequantization none for "
                             "continuous data)")
        return {**kw, "levels": levels, "step": 1.0 if ds.levels else 1.0 / (levels - 1)}

    def binarize(self, requested: str | None, image: bool) -> str:
        return requested or "none"


class Flow(GenerativeModel):
    """Normalizing flow (RealNVP or neural spline couplings) with an exact or dequantized log-likelihood.

    Parameters
    ----------
    x_dim : int
        D >= 2 (the flattened example).
    flow : {"realnvp", "spline"}
    layers : int
        L coupling layers.
    hidden : sequence of int
        Widths of each coupling's MLP.
    count_bins : int
        Spline knots (``spline``).
    dequantization : {"none", "uniform", "variational"}
        ``none``: x is continuous and ``log_prob`` exact; else x lies on ``levels`` levels and ``log_prob`` is
        the dequantization bound (module docstring).
    levels : int, optional
        L (2..256), needed unless ``dequantization="none"``.
    step : float, optional
        x = k * step; default 1 / (L - 1) (grey levels in [0, 1]).
    data_loc, data_scale : sequence of float, optional
        The standardization y = loc + scale * h of continuous data (default 0 and 1).
    image_shape : sequence of int, optional
        The example's shape (pictures only).
    """

    family = "flow"
    latent_sites = ()

    def __init__(self, x_dim: int, flow: Literal["realnvp", "spline"] = FlowConfig.flow,
                 layers: int = FlowConfig.layers, hidden: Sequence[int] = FlowConfig.hidden,
                 count_bins: int = FlowConfig.count_bins, dequantization: str = "none", levels: int | None = None,
                 step: float | None = None, data_loc: Sequence[float] | None = None,
                 data_scale: Sequence[float] | None = None, image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("flow", flow, COUPLINGS)
        check_choice("dequantization", dequantization, DEQUANTIZATIONS)
        if dequantization != "none" and not (isinstance(levels, int) and 2 <= levels <= MAX_LEVELS):
            raise InputError(f"dequantization {dequantization!r}: expected levels in 2..{MAX_LEVELS}; got {levels!r}")
        self._store_config(locals())
        self.x_dim, self.dequantization = x_dim, dequantization
        self.levels = levels if dequantization != "none" else None
        self.step = float(step) if step is not None else 1.0 / (levels - 1) if self.levels else None
        self.image_shape = tuple(image_shape) if image_shape else (x_dim,)
        self.flow = coupling_flow(x_dim, layers, hidden, flow, count_bins=count_bins, bound=SPLINE_BOUND)
        for name, v, fill in (("data_loc", data_loc, 0.0), ("data_scale", data_scale, 1.0)):
            t = torch.full((x_dim,), fill) if v is None else torch.as_tensor(v, dtype=torch.float32)
            if t.shape != (x_dim,):
                raise InputError(f"{name}: expected {x_dim} values; got shape {tuple(t.shape)}")
            self.register_buffer(name, t)
        self.register_buffer("zero", torch.zeros(()))
        if dequantization == "variational":  # q(u | k): conditional couplings on N(0, I), squashed to (0, 1)
            self.dequantizer = ConditionalFlowStack(x_dim, x_dim, 4, [int(hidden[0])], seed=1)

    # -- the densities -------------------------------------------------------------------
    def _to_data(self) -> list:
        """g: the flow's output h -> the data's scale y (standardization, or the logit preprocessing)."""
        if self.levels is None:
            return [T.AffineTransform(self.data_loc, self.data_scale, event_dim=1)]
        a = LOGIT_ALPHA
        return [T.AffineTransform(0.0, LOGIT_SCALE), T.SigmoidTransform(),
                T.AffineTransform(-a / (1 - 2 * a), 1 / (1 - 2 * a))]

    def density(self) -> dist.TransformedDistribution:
        """p(y): N(0, I_D) through f and g (event shape (D,)); y = x for continuous data, (k + u) / L else."""
        base = dist.Normal(self.zero, 1.0).expand([self.x_dim]).to_event(1)
        return dist.TransformedDistribution(base, self.flow.transforms + self._to_data())

    def q_u(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """q(u | k) of variational dequantization, event shape (D,), values in (0, 1): x (N, D) on the grid."""
        k = grid_index(x, self.levels, self.step)
        context = 2 * k / (self.levels - 1) - 1
        base = dist.Normal(self.zero, 1.0).expand([x.shape[0], self.x_dim]).to_event(1)
        eps = 1e-5  # keeps u off the ends of [0, 1) in float32
        return dist.TransformedDistribution(base, self.dequantizer.condition(context) + [
            T.SigmoidTransform(), T.AffineTransform(eps, 1 - 2 * eps)])

    # -- the contract --------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """x ~ p (continuous), or x ~ Dequantized(p, u) with u ~ U[0, 1)^D (drawn, or a site), in the data plate."""
        n = x.shape[0]
        with pyro.plate("data", n):
            if self.levels is None:
                pyro.sample("x", self.density().expand([n]), obs=x)
                return
            if self.dequantization == "variational":
                u = pyro.sample("u", dist.Uniform(self.zero, self.zero + 1).expand([n, self.x_dim]).to_event(1))
            else:
                u = torch.rand_like(x)
            pyro.sample("x", Dequantized(self.density(), self.levels, self.step, u), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Empty (maximum likelihood), or q(u | x) for variational dequantization."""
        if self.dequantization == "variational":
            with pyro.plate("data", x.shape[0]):
                pyro.sample("u", self.q_u(x))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, particles: int = 1, chunk: int = 1024) -> torch.Tensor:
        """log p(x) per example, shape (N,), nats: exact for continuous data; else the dequantization bound
        log (1/S) sum_s p((k + u_s)/L) L^-D / q(u_s | k) on log P(k), S = ``particles`` draws u_s ~ q (S = 1:
        the bound of the module docstring; it tightens as S grows).  Uses torch's global RNG."""
        x = x.to(self.data_loc)
        if self.levels is None:
            return torch.cat([self.density().log_prob(c) for c in x.split(chunk)])
        grid_index(x, self.levels, self.step)  # refuse off-grid data before any work
        out = []
        for c in x.split(chunk):
            terms, left = [], particles
            while left:  # S draws per row, as many at once as fit in a chunk
                s = min(left, max(1, chunk // len(c)))
                left -= s
                cs = c.repeat(s, 1)
                if self.dequantization == "variational":
                    q = self.q_u(cs)
                    u = q.sample()
                    log_q = q.log_prob(u)
                else:
                    u, log_q = torch.rand_like(cs), 0.0
                terms.append((Dequantized(self.density(), self.levels, self.step, u).log_prob(cs) - log_q)
                             .reshape(s, len(c)))
            out.append(torch.logsumexp(torch.cat(terms), 0) - math.log(particles))
        return torch.cat(out)

    @property
    def n_parameters(self) -> int:
        """Parameters of the density p (the dequantizer q(u | x) is part of the bound, not of the model)."""
        return sum(p.numel() for p in self.flow.parameters())

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n draws, shape (n, D): y ~ p; quantized to the grid for dequantized data (x = floor(L y) * step,
        clamped to the L levels: the cell y falls in), else y itself."""
        if kwargs:
            raise InputError(f"a flow samples with no options; got {', '.join(sorted(kwargs))}")
        if self.levels is None:
            return self.density().sample((n,))
        u = self.zero.new_zeros(n, self.x_dim)
        return Dequantized(self.density(), self.levels, self.step, u).sample()

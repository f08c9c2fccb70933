"""Invertible layers for normalizing flows, built from Pyro's transforms (``pyro.distributions.transforms``).

A flow pushes a base density through an invertible map f = f_L o ... o f_1 (course notes 000, "Flows":
an invertible transformation between a simple distribution and the data's; notes 002 §3).  By the
change of variables,

.. math::  \\log p_X(x) = \\log p_Z(f^{-1}(x)) - \\sum_{l=1}^L \\log |\\det \\partial f_l / \\partial h_{l-1}|,
           \\qquad h_0 = z, \\; h_L = x,

so each layer must be invertible with a cheap log|det J|.  The layers here:

- ``realnvp``: affine coupling (Dinh et al. 2017): x = (x_a, x_b) split at d = D // 2,
  y_a = x_a, y_b = x_b * exp(s(x_a)) + t(x_a); log|det J| = sum s(x_a), with s soft-clamped to (-2, 2)
  (:class:`~pyro.distributions.transforms.AffineCoupling`, :class:`SoftClampedScale`);
- ``spline``: rational-quadratic spline coupling (neural spline flows, Durkan et al. 2019): y_a = x_a, y_b a
  monotone rational-quadratic spline of x_b with K bins whose widths, heights and knot derivatives come from
  x_a, on [-B, B], the identity outside (:class:`~pyro.distributions.transforms.SplineCoupling`, order
  ``"quadratic"``; Pyro's default is the rational-linear spline of Dolatabadi et al. 2020);
- ``iaf``: affine autoregressive (inverse autoregressive flow, Kingma et al. 2016):
  y_i = mu_i(x_<i) + sigma_i(x_<i) x_i, one pass to sample, D passes to invert
  (:class:`~pyro.distributions.transforms.AffineAutoregressive`);
- ``spline-ar``: rational-quadratic spline autoregressive
  (:class:`~pyro.distributions.transforms.SplineAutoregressive`);
- between layers a fixed permutation (:class:`~pyro.distributions.transforms.Permute`; log|det J| = 0):
  alternately the reversal (the halves swap, so every coordinate is transformed within two layers) and, for
  D > 4, a random permutation from a fixed seed (:func:`permutations`); stored as buffers (checkpointed).

Couplings invert in one pass both ways (density models: score data *and* sample); the autoregressive
layers sample in one pass (guides: draw z and score that z from the cache).  :class:`FlowStack` holds the
layers and gives Pyro the transform list; :class:`ConditionalFlowStack` the same conditioned on a context c
(conditional affine couplings), for q(u | x) in variational dequantization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pyro.distributions.transforms as T
import torch
from pyro.nn import AutoRegressiveNN, ConditionalDenseNN, DenseNN
from torch import nn
from torch.distributions import Transform

from ..errors import InputError

COUPLINGS = ("realnvp", "spline")
AUTOREGRESSIVE = ("iaf", "spline-ar")


def permutations(dim: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """The ``n`` permutations put between ``n + 1`` layers: the reversal after layers 1, 3, 5, ... (it swaps the
    halves, so the next coupling transforms what the last one kept: every coordinate is transformed within two
    layers) and, for D > 4, a random permutation drawn from ``seed`` after layers 2, 4, ... (it mixes which
    coordinates share a half; a local generator: the global RNG is untouched)."""
    g = torch.Generator().manual_seed(seed)
    flip = torch.arange(dim - 1, -1, -1)
    return [flip if i % 2 == 0 or dim <= 4 else torch.randperm(dim, generator=g) for i in range(n)]


class FlowStack(nn.Module):
    """Invertible layers f_1 ... f_L with a fixed permutation between consecutive ones.

    Parameters
    ----------
    layers : sequence of Pyro ``TransformModule``
        The trained layers f_1 (next to the base) ... f_L, each on vectors of size D (event dim 1).
    perms : sequence of LongTensor (D,)
        ``len(layers) - 1`` permutations; ``perms[i]`` follows ``layers[i]``.

    Notes
    -----
    :attr:`transforms` is the list a ``TransformedDistribution(base, transforms)`` takes (base -> data);
    :meth:`forward` and :meth:`inverse` apply it to a tensor (N, D), the former with log|det J| of shape (N,).
    """

    def __init__(self, layers: Sequence[nn.Module], perms: Sequence[torch.Tensor]):
        super().__init__()
        if len(perms) != max(len(layers) - 1, 0):
            raise InputError(f"expected {len(layers) - 1} permutations for {len(layers)} layers; got {len(perms)}")
        self.layers = nn.ModuleList(layers)
        for i, p in enumerate(perms):
            self.register_buffer(f"perm_{i}", torch.as_tensor(p, dtype=torch.long))

    @property
    def transforms(self) -> list[Transform]:
        """[f_1, P_1, f_2, ..., P_{L-1}, f_L] as Pyro transforms (base -> data)."""
        out: list[Transform] = []
        for i, layer in enumerate(self.layers):
            if i:
                out.append(T.Permute(getattr(self, f"perm_{i - 1}")))
            out.append(layer)
        return out

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) and log|det df/dz|, shapes (N, D) and (N,)."""
        log_det = z.new_zeros(z.shape[:-1])
        for t in self.transforms:
            x = t(z)
            log_det = log_det + t.log_abs_det_jacobian(z, x)
            z = x
        return z, log_det

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """z = f^{-1}(x), shape (N, D)."""
        for t in reversed(self.transforms):
            x = t.inv(x)
        return x


# softplus^-1(1 - 1e-3): Pyro's spline derivative min_derivative + softplus(d) is then 1 (the identity)
_UNIT_DERIVATIVE = math.log(math.expm1(1 - 1e-3))


def _identity_init(layer: nn.Module, kind: str, count_bins: int) -> nn.Module:
    """Zero the last linear map of a coupling's MLP (and, for a spline, set the knot derivatives to 1): every
    coupling starts as the identity, so a deep stack starts tame (Dinh et al. 2017; Kingma & Dhariwal 2018)."""
    last = layer.nn.net.layers[-1] if kind == "realnvp" else layer.upper_spline.nn.layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    if kind == "spline":  # outputs: widths (D_b K), heights (D_b K), derivatives (D_b (K - 1))
        d_b = last.bias.numel() // (3 * count_bins - 1)
        with torch.no_grad():
            last.bias[2 * d_b * count_bins:] = _UNIT_DERIVATIVE
    return layer


class SoftClampedScale(nn.Module):
    """An affine coupling's network x_a -> (t, s) with the log-scale soft-clamped, s = c tanh(s_raw / c): each
    layer scales by at most e^c, so a deep stack cannot overflow in one optimizer step (Pyro's own hard clamp to
    [-5, 3] passes the gradient through and lets 8 layers compound to e^24)."""

    def __init__(self, net: nn.Module, limit: float = 2.0):
        super().__init__()
        self.net, self.limit = net, float(limit)

    def forward(self, x: torch.Tensor, **context) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self.net(x, **context)
        return t, self.limit * torch.tanh(s / self.limit)


def _layer(kind: str, dim: int, hidden: Sequence[int], count_bins: int, bound: float) -> nn.Module:
    hidden, split, k = [int(h) for h in hidden], dim // 2, count_bins
    if kind == "realnvp":
        net = SoftClampedScale(DenseNN(split, hidden, param_dims=[dim - split, dim - split]))
        return T.AffineCoupling(split, net)
    if kind == "spline":  # rational-quadratic (Durkan et al. 2019); x_a passes unchanged
        d_b = dim - split
        net = DenseNN(split, hidden, param_dims=[d_b * k, d_b * k, d_b * (k - 1)])
        return T.SplineCoupling(dim, split, net, count_bins=k, bound=bound, order="quadratic", identity=True)
    if kind == "iaf":  # identity order: the permutations between layers change it
        return T.AffineAutoregressive(AutoRegressiveNN(dim, hidden, permutation=torch.arange(dim)))
    if kind == "spline-ar":
        arn = AutoRegressiveNN(dim, hidden, param_dims=[k, k, k - 1], permutation=torch.arange(dim))
        return T.SplineAutoregressive(dim, arn, count_bins=k, bound=bound, order="quadratic")
    raise InputError(f"flow layer: expected one of {', '.join(COUPLINGS + AUTOREGRESSIVE)}; got {kind!r}")


def _check(dim: int, layers: int, kinds: Sequence[str], kind: str) -> None:
    if kind not in kinds:
        raise InputError(f"flow layer: expected one of {', '.join(kinds)}; got {kind!r}")
    if dim < 2 and kind in COUPLINGS:
        raise InputError(f"a coupling layer splits the vector in two; expected dim >= 2; got {dim}")
    if layers < 1:
        raise InputError(f"expected at least one flow layer; got {layers}")


def coupling_flow(dim: int, layers: int, hidden: Sequence[int], kind: Literal["realnvp", "spline"] = "realnvp",
                  count_bins: int = 8, bound: float = 3.0, seed: int = 0, identity_init: bool = True) -> FlowStack:
    """``layers`` coupling layers on vectors of size ``dim`` (split at dim // 2), permuted in between.

    Parameters
    ----------
    dim : int
        D >= 2.
    layers : int
        L.
    hidden : sequence of int
        Widths of each coupling's MLP (Pyro's ``DenseNN``, ReLU) from x_a to the parameters of x_b's map.
    kind : {"realnvp", "spline"}
        Affine coupling or rational-quadratic spline coupling.
    count_bins, bound : int, float
        Spline knots K and the half-width B of the spline's interval (spline only).
    seed : int
        Seed of the permutations (D > 4).
    identity_init : bool
        Zero each coupling MLP's last layer (affine couplings then start as the identity).
    """
    _check(dim, layers, COUPLINGS, kind)
    made = [_layer(kind, dim, hidden, count_bins, bound) for _ in range(layers)]
    if identity_init:
        made = [_identity_init(m, kind, count_bins) for m in made]
    return FlowStack(made, permutations(dim, layers - 1, seed))


def autoregressive_flow(dim: int, layers: int, hidden: Sequence[int], kind: Literal["iaf", "spline-ar"] = "iaf",
                        count_bins: int = 8, bound: float = 3.0, seed: int = 0) -> FlowStack:
    """``layers`` autoregressive layers (IAF or spline autoregressive) on vectors of size ``dim``, for guides:
    one pass samples z and scores it.  Arguments as :func:`coupling_flow`."""
    _check(dim, layers, AUTOREGRESSIVE, kind)
    return FlowStack([_layer(kind, dim, hidden, count_bins, bound) for _ in range(layers)],
                     permutations(dim, layers - 1, seed))


class ConditionalFlowStack(nn.Module):
    """Conditional affine couplings g_1(. ; c) ... g_L(. ; c) with permutations between them: s and t of each
    coupling are an MLP of (x_a, c), s soft-clamped (:class:`SoftClampedScale`), each coupling the identity at
    the start.

    Parameters
    ----------
    dim, context_dim : int
        D (>= 2) and the size of the context c.
    layers : int
    hidden : sequence of int
        Widths of each coupling's MLP from (x_a, c) to (s, t) of x_b.
    seed : int
        Seed of the permutations (D > 4).
    """

    def __init__(self, dim: int, context_dim: int, layers: int, hidden: Sequence[int], seed: int = 0):
        super().__init__()
        _check(dim, layers, COUPLINGS, "realnvp")
        split = dim // 2
        nets = [SoftClampedScale(ConditionalDenseNN(split, context_dim, [int(h) for h in hidden],
                                                    param_dims=[dim - split, dim - split])) for _ in range(layers)]
        for net in nets:  # each coupling starts as the identity
            nn.init.zeros_(net.net.layers[-1].weight)
            nn.init.zeros_(net.net.layers[-1].bias)
        self.layers = nn.ModuleList(T.ConditionalAffineCoupling(split, net) for net in nets)
        for i, p in enumerate(permutations(dim, layers - 1, seed)):
            self.register_buffer(f"perm_{i}", p)

    def condition(self, context: torch.Tensor) -> list[Transform]:
        """The transforms (base -> output) given the context c of shape (N, context_dim)."""
        out: list[Transform] = []
        for i, layer in enumerate(self.layers):
            if i:
                out.append(T.Permute(getattr(self, f"perm_{i - 1}")))
            out.append(layer.condition(context))
        return out

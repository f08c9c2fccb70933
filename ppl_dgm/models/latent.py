"""Latent-space tools for the VAE families (notes 000, "Why the latent space is crucial").

All of them work on the posterior means z = g_mu(x) of a family with an encoder
(``encode_mean`` / ``decode_mean``, declared by ``encoder=True`` in the registry) and decode
with E[x | z]; a conditional model (CVAE) also takes the labels y.

- ``model.reconstruct(x, y)``: E[x | z = g_mu(x)].
- :func:`interpolate`: decode z(t) for t in [0, 1] on the straight line (``linear``) or the great
  circle (``slerp``): z(t) = sin((1-t) w) / sin w z_a + sin(t w) / sin w z_b, cos w = <z_a, z_b> / |z_a||z_b|
  (slerp keeps |z| near the shell where N(0, I) puts its mass).
- :func:`traverse`: vary one latent dimension over a grid of values, the others fixed.
- :func:`attribute_vector` and :func:`arithmetic`: Delta = mean z of inputs with an attribute minus
  mean z of inputs without it; decode z + s Delta for s in {-4, ..., 4}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError


@torch.no_grad()
def encode_mean(model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """g_mu(x) (or g_mu(x, y)), shape (N, K), on the model's device."""
    return model.encode_mean(x.to(model.device), y)


@torch.no_grad()
def decode_mean(model, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x | z] (or E[x | z, y]), shape (N, D)."""
    return model.decode_mean(z, y)


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation; z_a, z_b of shape (K,), t of shape (T,) -> (T, K). Linear if nearly parallel."""
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm()).clamp(min=1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    t = t[:, None]
    if float(torch.sin(omega)) < 1e-6:
        return (1 - t) * z_a + t * z_b
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10, method: str = "linear",
                y_a=None, y_b=None) -> torch.Tensor:
    """Decoded path between two inputs x_a, x_b (each shape (D,)): shape (steps, D).

    ``method`` is ``"linear"`` (z_a + t (z_b - z_a)) or ``"slerp"``; t = 0 .. 1 in ``steps`` points.
    For a CVAE the label moves from y_a to y_b halfway (y_b defaults to y_a).
    """
    if method not in ("linear", "slerp"):
        raise InputError(f"method must be 'linear' or 'slerp'; got {method!r}")
    if not isinstance(steps, int) or steps < 2:
        raise InputError(f"steps must be an integer >= 2; got {steps!r}")
    ya = None if y_a is None else torch.as_tensor([int(y_a)])
    yb = ya if y_b is None else torch.as_tensor([int(y_b)])
    z_a = encode_mean(model, x_a.reshape(1, -1), ya)[0]
    z_b = encode_mean(model, x_b.reshape(1, -1), yb)[0]
    t = torch.linspace(0.0, 1.0, steps, device=z_a.device, dtype=z_a.dtype)
    z = z_a + t[:, None] * (z_b - z_a) if method == "linear" else slerp(z_a, z_b, t)
    y = None
    if ya is not None:
        y = torch.where(t < 0.5, ya.to(z.device), yb.to(z.device)).long()
    return decode_mean(model, z, y)


def traverse(model, x: torch.Tensor, values: Sequence[float] = tuple(np.linspace(-3, 3, 9)),
             dims: Sequence[int] | None = None, y=None) -> torch.Tensor:
    """Vary each latent dimension of g_mu(x) over ``values``: shape (len(dims), len(values), D)."""
    yy = None if y is None else torch.as_tensor([int(y)])
    z0 = encode_mean(model, x.reshape(1, -1), yy)[0]
    k = z0.shape[0]
    dims = list(range(k)) if dims is None else [int(d) for d in dims]
    if any(d < 0 or d >= k for d in dims):
        raise InputError(f"latent dimensions must be in 0..{k - 1}; got {dims}")
    vals = torch.as_tensor(list(values), dtype=z0.dtype, device=z0.device)
    z = z0.repeat(len(dims), len(vals), 1)
    for i, d in enumerate(dims):
        z[i, :, d] = vals
    ys = None if yy is None else yy.repeat(len(dims) * len(vals))
    return decode_mean(model, z.reshape(-1, k), ys).reshape(len(dims), len(vals), -1)


def attribute_vector(model, x: torch.Tensor, has: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Delta = mean g_mu(x_n) over n with the attribute minus the mean over n without it; shape (K,).

    ``has`` is a boolean mask of shape (N,) (e.g. ``labels == 3``).
    """
    has = torch.as_tensor(has, dtype=torch.bool).reshape(-1)
    if has.shape[0] != x.shape[0]:
        raise InputError(f"expected one attribute flag per input ({x.shape[0]}); got {has.shape[0]}")
    if not has.any() or has.all():
        raise InputError("expected inputs both with and without the attribute; got "
                         f"{int(has.sum())} with and {int((~has).sum())} without")
    z = encode_mean(model, x, y)
    has = has.to(z.device)
    return z[has].mean(0) - z[~has].mean(0)


def arithmetic(model, x: torch.Tensor, delta: torch.Tensor, scales: Sequence[float] = tuple(range(-4, 5)),
               y: torch.Tensor | None = None) -> torch.Tensor:
    """Decode g_mu(x_n) + s Delta for every input and scale: shape (N, len(scales), D)."""
    z = encode_mean(model, x, y)
    s = torch.as_tensor(list(scales), dtype=z.dtype, device=z.device)
    zs = z[:, None, :] + s[None, :, None] * delta.to(z)[None, None, :]
    ys = None if y is None else y.to(z.device).repeat_interleave(len(s))
    return decode_mean(model, zs.reshape(-1, z.shape[-1]), ys).reshape(z.shape[0], len(s), -1)

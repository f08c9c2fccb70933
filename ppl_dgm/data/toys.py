"""Two-dimensional toy distributions, drawn from a seed.

Each sampler returns an array of shape (n, 2), roughly standardised to [-4, 4].  Two of them are equal-weight
mixtures of isotropic Gaussians with known centres and standard deviation, listed in :data:`TOY_MIXTURES`
for the mode-coverage metric (:func:`ppl_dgm.evaluation.modes.mode_coverage`):

- ``eight-gaussians``: 8 centres on the circle of radius 2.8, std 0.2;
- ``grid-25``: 25 centres on the grid {-4, -2, 0, 2, 4}^2, std 0.05 (the "2-D grid" of Srivastava et al. 2017,
  VEEGAN, used to measure mode collapse of GANs: 3 std = 0.15, far below the spacing of 2).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ToyMixture(NamedTuple):
    """An equal-weight mixture of isotropic Gaussians: x = centres[k] + std * eps, k ~ Uniform{0..K-1}, eps ~ N(0, I).

    Attributes
    ----------
    centres : ndarray, shape (K, 2)
    std : float
    """

    centres: np.ndarray
    std: float


def _circle_centres(k: int, radius: float) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(angles), np.sin(angles)], 1)


TOY_MIXTURES: dict[str, ToyMixture] = {
    "eight-gaussians": ToyMixture(_circle_centres(8, 2.8), 0.2),
    "grid-25": ToyMixture(np.array([[a, b] for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0)]),
                          0.05),
}
for _toy in TOY_MIXTURES.values():
    _toy.centres.setflags(write=False)


def _mixture(n, rng, name):
    """n draws of the equal-weight mixture ``TOY_MIXTURES[name]``: the component, then the Gaussian noise."""
    centres, std = TOY_MIXTURES[name]
    k = rng.integers(0, len(centres), n)
    return centres[k] + std * rng.standard_normal((n, 2))


def _moons(n, rng):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return (x - [0.5, 0.25]) * 2.0


def _circles(n, rng):
    from sklearn.datasets import make_circles

    x, _ = make_circles(n, noise=0.04, factor=0.5, random_state=int(rng.integers(2**31)))
    return x * 3.0


def _eight_gaussians(n, rng):
    return _mixture(n, rng, "eight-gaussians")


def _grid_25(n, rng):
    return _mixture(n, rng, "grid-25")


def _swiss_roll(n, rng):
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 4.0
    return x + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(n, rng):
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2.0


def _pinwheel(n, rng, arms=5, radial_sd=0.3, tangential_sd=0.1, rate=0.25):
    rads = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    feats = rng.standard_normal((n, 2)) * [radial_sd, tangential_sd]
    feats[:, 0] += 1.0
    labels = rng.integers(0, arms, n)
    angle = rads[labels] + rate * np.exp(feats[:, 0])
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], 1).reshape(-1, 2, 2)
    return 2.0 * np.einsum("ti,tij->tj", feats, rot)


def _rings(n, rng, rings=5, gap=0.8, width=0.08):
    """Concentric rings of radii gap, 2 gap, ..., rings * gap, each drawn with the same probability (so the
    inner rings are the densest, and a model that smears them into a disc is penalised by the MMD); the
    radius gets N(0, width^2) noise."""
    radius = gap * (1 + rng.choice(rings, n))
    radius = radius + width * rng.standard_normal(n)
    angle = 2 * np.pi * rng.random(n)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)


def _two_spirals(n, rng, turns=1.5, noise=0.08):
    """Two interleaved Archimedean spirals r = 2.5 theta / (2 pi), theta up to turns * 2 pi (radius <= 3.75),
    uniform along the arc length (theta ~ sqrt(U)), the second arm the first rotated by pi; N(0, noise^2)."""
    theta = np.sqrt(rng.random(n)) * turns * 2 * np.pi
    arm = rng.integers(0, 2, n) * np.pi
    x = (2.5 * theta / (2 * np.pi))[:, None] * np.stack([np.cos(theta + arm), np.sin(theta + arm)], 1)
    return x + noise * rng.standard_normal((n, 2))


TOYS = {
    "moons": _moons,
    "circles": _circles,
    "eight-gaussians": _eight_gaussians,
    "swiss-roll": _swiss_roll,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "two-spirals": _two_spirals,
    "grid-25": _grid_25,
}


def sample_toy(name: str, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` points of the toy ``name`` with ``seed``; shape (n, 2), float32."""
    return TOYS[name](n, np.random.default_rng(seed)).astype(np.float32)

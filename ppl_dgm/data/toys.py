"""Two-dimensional toy distributions, drawn from a seed.

Each sampler returns an array of shape (n, 2), roughly standardised to [-4, 4].
"""

from __future__ import annotations

import numpy as np


def _moons(n, rng):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return (x - [0.5, 0.25]) * 2.0


def _circles(n, rng):
    from sklearn.datasets import make_circles

    x, _ = make_circles(n, noise=0.04, factor=0.5, random_state=int(rng.integers(2**31)))
    return x * 3.0


def _eight_gaussians(n, rng):
    angles = 2 * np.pi * rng.integers(0, 8, n) / 8
    centres = 2.8 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centres + 0.2 * rng.standard_normal((n, 2))


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
}


def sample_toy(name: str, n: int, seed: int) -> np.ndarray:
    """Draw ``n`` points of the toy ``name`` with ``seed``; shape (n, 2), float32."""
    return TOYS[name](n, np.random.default_rng(seed)).astype(np.float32)

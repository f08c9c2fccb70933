"""Mode coverage (ppl_dgm.evaluation.modes) against known answers: the true mixture, a collapsed sampler, the
count threshold, a uniform spray, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ppl_dgm.data import TOY_MIXTURES, sample_toy
from ppl_dgm.errors import InputError
from ppl_dgm.evaluation import ModeCoverage, mode_coverage

GRID = TOY_MIXTURES["grid-25"]
RING = TOY_MIXTURES["eight-gaussians"]


@pytest.mark.parametrize("name", ["grid-25", "eight-gaussians"])
@pytest.mark.parametrize("n_sigma", [3.0, 2.0])
def test_true_mixture_covers_every_mode(name, n_sigma):
    centres, std = TOY_MIXTURES[name]
    n = 200_000
    r = mode_coverage(sample_toy(name, n, seed=1), centres, std, n_sigma=n_sigma)
    # the radius of a 2-D isotropic Gaussian draw is sigma * chi(2): P(r <= s sigma) = 1 - exp(-s^2 / 2)
    p = 1 - math.exp(-n_sigma**2 / 2)  # 0.98889 at 3 sigma, 0.86466 at 2 sigma
    assert abs(r.high_quality - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert r.modes_covered == r.n_modes == len(centres) and r.n_samples == n
    assert r.min_count == math.ceil(0.2 * n / len(centres))
    # multinomial noise only: E KL ~ (K - 1) / (2 N_hq)
    assert 0 <= r.kl_uniform < 10 * (len(centres) - 1) / (2 * n)
    assert sum(r.counts) == round(r.high_quality * n)


def test_three_modes_give_three_and_kl_log_k_over_3():
    rng = np.random.default_rng(0)
    picked = [0, 7, 24]
    x = np.repeat(GRID.centres[picked], 100, axis=0) + 0.3 * GRID.std * rng.standard_normal((300, 2))
    r = mode_coverage(x, GRID.centres, GRID.std)
    assert isinstance(r, ModeCoverage)
    assert r.modes_covered == 3 and r.high_quality == 1.0
    assert [i for i, c in enumerate(r.counts) if c] == picked and r.counts[7] == 100
    assert r.kl_uniform == pytest.approx(math.log(25 / 3), abs=1e-12)


def test_min_count_is_the_rule():
    """2,500 samples on 25 modes: the default threshold is 20; 19 samples do not cover a mode, 20 do."""
    far = np.full((2500 - 39, 2), 10.0)  # nearest centre (4, 4) at distance 8.5: not high quality
    x = np.concatenate([np.repeat(GRID.centres[[0]], 19, 0), np.repeat(GRID.centres[[1]], 20, 0), far])
    r = mode_coverage(x, GRID.centres, GRID.std)
    assert r.min_count == 20 and r.modes_covered == 1 and r.counts[:2] == [19, 20] and sum(r.counts) == 39
    assert r.high_quality == 39 / 2500
    # KL of (19, 20) / 39 from uniform on 25
    p = np.array([19, 20]) / 39
    assert r.kl_uniform == pytest.approx(float(np.sum(p * np.log(25 * p))), rel=1e-12)
    assert mode_coverage(x, GRID.centres, GRID.std, min_count=19).modes_covered == 2
    assert mode_coverage(x[:, ::-1], GRID.centres, GRID.std).counts[5] == 20  # (-2, -4) after the flip


@pytest.mark.parametrize("name", ["grid-25", "eight-gaussians"])
def test_uniform_box_gives_the_area_fraction(name):
    centres, std = TOY_MIXTURES[name]
    n, half = 400_000, 5.0
    x = np.random.default_rng(1).uniform(-half, half, (n, 2))
    r = mode_coverage(x, centres, std)
    # K disjoint discs of radius 3 std inside the box of area (2 half)^2
    p = len(centres) * math.pi * (3 * std) ** 2 / (2 * half) ** 2  # grid: 0.017671; ring: 0.090478
    assert abs(r.high_quality - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert r.modes_covered == 0  # each disc holds ~ n p / K, far below a fifth of the fair share n / K
    assert mode_coverage(x, centres, std, min_count=1).modes_covered == len(centres)


def test_no_high_quality_sample_gives_nan_kl():
    r = mode_coverage(np.full((10, 2), 9.0), GRID.centres, GRID.std)
    assert r.modes_covered == 0 and r.high_quality == 0.0 and math.isnan(r.kl_uniform)
    assert r.as_dict()["counts"] == [0] * 25


@pytest.mark.parametrize("samples, centres, std, kw, message", [
    (np.zeros((5, 3)), GRID.centres, 0.05, {}, r"expected samples of shape \(N, 2\) .*got shape \(5, 3\)"),
    (np.zeros(5), GRID.centres, 0.05, {}, r"expected samples of shape \(N, 2\) .*got shape \(5,\)"),
    (np.zeros((0, 2)), GRID.centres, 0.05, {}, r"expected samples of shape \(N, 2\) with N >= 1"),
    (np.array([[0.0, np.nan]]), GRID.centres, 0.05, {}, "expected finite samples; got 1 NaN and 0 inf"),
    (np.array([["a", "b"]]), GRID.centres, 0.05, {}, "expected samples of shape"),
    (np.zeros((5, 2)), np.zeros(2), 0.05, {}, r"expected centres of shape \(K, D\)"),
    (np.zeros((5, 2)), np.array([[np.inf, 0.0]]), 0.05, {}, "expected finite centres; got 0 NaN and 1 inf"),
    (np.zeros((5, 2)), GRID.centres, 0.0, {}, "expected std as a finite number > 0; got 0.0"),
    (np.zeros((5, 2)), GRID.centres, float("nan"), {}, "expected std as a finite number > 0"),
    (np.zeros((5, 2)), GRID.centres, 0.05, {"n_sigma": -1.0}, "expected n_sigma as a finite number > 0"),
    (np.zeros((5, 2)), GRID.centres, 0.05, {"min_count": 0}, "expected min_count as a positive integer; got 0"),
    (np.zeros((5, 2)), GRID.centres, 0.05, {"min_count": 2.5}, "expected min_count as a positive integer"),
])
def test_bad_input_is_one_line(samples, centres, std, kw, message):
    with pytest.raises(InputError, match=message) as err:
        mode_coverage(samples, centres, std, **kw)
    assert "\n" not in str(err.value)

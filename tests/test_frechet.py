"""The Fréchet distance against its closed form for Gaussians (issue 12/14 sample-quality figures)."""

import numpy as np
import pytest

from ppl_dgm.errors import InputError
from ppl_dgm.evaluation import frechet_distance


def test_gaussians_with_commuting_covariances():
    """For diagonal S_a, S_b: ||mu_a - mu_b||^2 + sum (sqrt(s_a) - sqrt(s_b))^2, estimated from 200k draws."""
    rng = np.random.default_rng(0)
    sa, sb = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = rng.normal([0, 0, 0], np.sqrt(sa), (200_000, 3))
    b = rng.normal([1, -1, 0], np.sqrt(sb), (200_000, 3))
    exact = 2.0 + ((np.sqrt(sa) - np.sqrt(sb)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_general_covariances_match_scipy_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)), rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("a, b", [(np.zeros((1, 3)), np.zeros((5, 3))), (np.zeros((5, 3)), np.zeros((5, 2))),
                                  (np.full((5, 3), np.nan), np.zeros((5, 3)))])
def test_bad_feature_sets_are_refused(a, b):
    with pytest.raises(InputError):
        frechet_distance(a, b)

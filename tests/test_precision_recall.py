"""k-NN precision and recall (Kynkäänniemi et al. 2019) against answers worked out by hand."""

import numpy as np
import pytest

from ppl_dgm.errors import InputError
from ppl_dgm.evaluation import precision_recall


def test_identical_sets_have_full_precision_and_recall():
    x = np.random.default_rng(0).normal(size=(200, 5))
    r = precision_recall(x, x, k=3)
    assert r["precision"] == 1.0 and r["recall"] == 1.0


def test_hand_worked_line():
    # real at 0, 1, 2, 3: with k = 1 every real radius is 1, so the real manifold is [-1, 4];
    # fake at 0, 0.5, 10, 10.5: fake radii are 0.5 (k = 1), so the fake manifold covers [-0.5, 1] and [9.5, 11].
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.0], [0.5], [10.0], [10.5]])
    r = precision_recall(real, fake, k=1)
    assert r["precision"] == pytest.approx(0.5)  # 0 and 0.5 inside, 10 and 10.5 outside
    assert r["recall"] == pytest.approx(0.5)  # real 0 and 1 covered, 2 and 3 not


def test_mode_dropping_lowers_recall_not_precision():
    rng = np.random.default_rng(1)
    real = np.concatenate([rng.normal(-5, 1, size=(500, 2)), rng.normal(5, 1, size=(500, 2))])
    fake = rng.normal(-5, 1, size=(1000, 2))  # one of the two modes
    r = precision_recall(real, fake, k=3)
    assert r["precision"] > 0.95
    assert 0.4 < r["recall"] < 0.6


def test_bad_input_is_one_line():
    with pytest.raises(InputError, match="one width"):
        precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="1 <= k"):
        precision_recall(np.zeros((5, 2)), np.zeros((3, 2)), k=3)

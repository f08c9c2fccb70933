"""GaussianMixture and PPCA are scikit-learn estimators: scikit-learn's own checks, then its tools."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ppl_dgm import PPCA, GaussianMixture
from ppl_dgm.errors import InputError
from ppl_dgm.estimators import ESTIMATORS

# max_iter is kept small on purpose: the convergence warnings that follow are expected
pytestmark = pytest.mark.filterwarnings("ignore::ppl_dgm.inference.em.ConvergenceWarning")

# Every check runs; none is expected to fail.  scikit-learn itself skips check_array_api_input
# unless SCIPY_ARRAY_API=1 is set (with it set, that check passes too).  Small max_iter keeps the
# file fast; the JAX, SVI and NumPyro backends are checked as well as the default torch one.
CHECKED = [
    GaussianMixture(),
    GaussianMixture(backend="jax", n_init=2, max_iter=5),
    GaussianMixture(backend="svi", max_iter=5),
    GaussianMixture(backend="numpyro", max_iter=5),
    PPCA(),
    PPCA(method="em", max_iter=20),
]


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def three_blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [-5.0, 4.0, 2.0]])
    return np.concatenate([rng.normal(size=(n // 3, 3)) * 0.6 + c for c in centers])


def test_registry_names_and_init_only_stores():
    assert ESTIMATORS == {"gmm": GaussianMixture, "ppca": PPCA}
    g = GaussianMixture(n_components=-3, backend="nope")  # checked at fit, not here
    assert g.get_params()["backend"] == "nope" and clone(g).n_components == -3
    with pytest.raises(ValueError, match="'(n_components|backend)' parameter of GaussianMixture"):
        g.fit(three_blobs())


def test_grid_search_selects_k_by_held_out_log_likelihood():
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=3)
    search.fit(np.random.default_rng(1).permutation(three_blobs()))
    assert search.best_params_ == {"n_components": 3}
    scores = search.cv_results_["mean_test_score"]  # held-out mean log-likelihood per K
    assert scores[0] < scores[1] - 0.1 < scores[2] - 0.2


def test_pipeline_and_pandas_feature_names():
    pd = pytest.importorskip("pandas")
    x = three_blobs()
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    pipe = make_pipeline(StandardScaler(), PPCA(2)).set_output(transform="pandas")
    out = pipe.fit_transform(frame)
    assert list(out.columns) == ["ppca0", "ppca1"] and out.shape == (300, 2)
    g = GaussianMixture(3, random_state=0).fit(frame)
    assert list(g.feature_names_in_) == ["a", "b", "c"] and g.n_features_in_ == 3
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(g.predict(frame), g.predict(x))
    with pytest.raises(InputError, match="feature names"):
        g.predict(frame[["b", "a", "c"]])

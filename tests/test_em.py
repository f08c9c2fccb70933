"""fit_em: the one loop (monotonicity, warnings, restarts) and the chunked GMM statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference.em import ConvergenceWarning, EMResult, EStep, fit_em
from ppl_dgm.models.gmm_em import GMMFamily


def data(n=500, d=4, k=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = 4 * torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.randint(k, (n,), generator=g)
    x = centers[labels] + torch.randn(n, d, generator=g, dtype=torch.float64)
    return (x + 50.0).to(dtype)


class Counter:
    """A toy family whose log-likelihood follows a script (params = iteration index)."""

    def __init__(self, script):
        self.script = list(script)

    def prepare(self, x):
        return x

    def initialize(self, data, generator):
        return 0

    def e_step(self, params, data):
        return EStep(self.script[min(params, len(self.script) - 1)], None)

    def m_step(self, estep, data):
        self.i = getattr(self, "i", 0) + 1
        return self.i

    def monotone_slack(self, params):
        return 1e-12


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init", ["kmeans", "random", "random_from_data", "k-means++"])
def test_monotone_every_iteration(ct, init):
    # point-based inits start from singleton components: they need reg_covar > 0, which
    # fit_em's own check allows for (slack reg_covar * tr(P)); the others run exact EM
    reg = 0.0 if init in ("kmeans", "random") else 1e-6
    res = fit_em(GMMFamily(4, ct, reg_covar=reg, init_params=init), data(), max_iter=30,
                 tol=0.0, warn=False, seed=1)
    h = np.array(res.history)
    assert isinstance(res, EMResult) and len(h) == 30
    assert np.all(np.diff(h) >= -1e-12 * np.abs(h[1:]))


def test_decrease_raises_runtime_error_not_assert():
    with pytest.raises(RuntimeError, match="decreased at iteration 3: -1.0 -> -2.0"):
        fit_em(Counter([-5.0, -1.0, -2.0, -0.5]), torch.zeros(3, 1), max_iter=10, tol=0.0)
    res = fit_em(Counter([-5.0, -1.0, -2.0, -0.5]), torch.zeros(3, 1), max_iter=4, tol=0.0,
                 check_monotone=False, warn=False)
    assert res.history == [-5.0, -1.0, -2.0, -0.5]


def test_convergence_and_warning():
    res = fit_em(Counter([-5.0, -1.0, -0.9995, -0.9994]), torch.zeros(3, 1), max_iter=10, tol=1e-3)
    assert res.converged and res.n_iter == 3 and res.lower_bound == -0.9995
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        res = fit_em(Counter([-5.0, -1.0, -0.5]), torch.zeros(3, 1), max_iter=2, tol=1e-3)
    assert not res.converged and res.n_iter == 2


def test_restarts_keep_best_and_are_seeded():
    x = data(k=5, seed=3)
    fam = GMMFamily(5, "full", init_params="random_from_data")
    res = fit_em(fam, x, n_init=4, max_iter=40, seed=0, warn=False)
    assert len(res.histories) == 4
    assert res.lower_bound == max(h[-1] for h in res.histories)
    again = fit_em(fam, x, n_init=4, max_iter=40, seed=0, warn=False)
    assert again.history == res.history


@pytest.mark.parametrize("bad", [{"n_init": 0}, {"max_iter": 0}, {"tol": -1.0}])
def test_loop_arguments_checked(bad):
    with pytest.raises(InputError, match="expected"):
        fit_em(GMMFamily(2), data(), **bad)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_chunked_statistics_equal_one_shot(ct):
    x = data(n=1000)
    one = GMMFamily(4, ct, chunk_size=10**6)
    init = one.initialize(one.prepare(x), torch.Generator().manual_seed(0))
    ref = one.e_step(init, one.prepare(x))
    chunked = GMMFamily(4, ct, chunk_size=77)  # an odd chunk: the last one is short
    d = chunked.prepare(x)
    assert d.chunk_size == 77 and not d.direct
    got = chunked.e_step(init, d)
    assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13)
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("chunk, dim", [(77, 16), (10**6, 16), (77, 34), (100, 6)])
def test_direct_and_feature_forms_give_the_same_statistics(chunk, dim):
    x = data(n=1000, d=dim, k=3)  # 1, 2 or 4 (uneven) row blocks of the triangles
    fam = GMMFamily(3, "full", chunk_size=chunk, strategy="direct")
    d = fam.prepare(x)
    assert d.direct and GMMFamily(4, "full").use_direct(dim) == (dim >= 16)  # auto: 4 K <= D ...
    auto = GMMFamily(4, "full").prepare(x)  # (1,000 rows: too few for auto's pruned form)
    assert auto.direct == (dim >= 16) and not auto.pruned
    init = fam.initialize(d, torch.Generator().manual_seed(0))
    feats = GMMFamily(3, "full", chunk_size=chunk, strategy="features")
    ref = feats.e_step(init, feats.prepare(x))
    got = fam.e_step(init, d)
    assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-12)
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-10, atol=1e-8)
    r32 = fam.e_step(type(init)(*(t.float() for t in init)), fam.prepare(x.float()))
    assert r32.stats.dtype == torch.float64
    assert r32.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-5)
    with pytest.raises(InputError, match="covariance_type='full' with strategy='direct'"):
        GMMFamily(3, "diag", strategy="direct")


def test_float32_follows_float64():
    x64 = data(n=2000)
    fam = GMMFamily(4, "full")
    init = fam.initialize(fam.prepare(x64), torch.Generator().manual_seed(0))
    r64 = fit_em(fam, x64, init=init, max_iter=20, tol=0.0, warn=False)
    init32 = type(init)(*(t.float() for t in init))
    r32 = fit_em(fam, x64.float(), init=init32, max_iter=20, tol=0.0, warn=False)
    assert r32.params.means.dtype == torch.float32
    np.testing.assert_allclose(r32.history, r64.history, rtol=1e-5)


def test_k_larger_than_n_is_input_error():
    with pytest.raises(InputError, match="expected n_components <= n_samples; got 9 > 5"):
        fit_em(GMMFamily(9), data(n=5))


@pytest.mark.parametrize("x, match", [
    (torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [1.0, float("inf")]] * 3), "expected finite data; got NaN or inf "
                                                                               "in 6 row"),
    (torch.ones(10), r"expected real data of shape \(N, D\) with N, D >= 1; got torch.float32 of shape \(10,\)"),
    (torch.ones(0, 3), r"of shape \(0, 3\)"),
    (torch.ones(5, 2, dtype=torch.long), "got torch.int64"),
    (torch.full((4, 2), 1e308, dtype=torch.float64), "a column's sum overflows"),
])
def test_bad_data_is_refused_before_em_not_read_as_a_collapse(x, match):
    """A NaN in the rows used to surface as 'a component collapsed' after the first M-step."""
    with pytest.raises(InputError, match=match):
        fit_em(GMMFamily(2), x)


def test_n_components_is_checked():
    for k in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="expected n_components as a positive integer"):
            GMMFamily(k)


@pytest.mark.parametrize("strategy", ["direct", "pruned"])
def test_direct_and_pruned_forms_match_sklearn_per_iteration(strategy):
    import warnings

    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x = data(n=900, d=16, k=3).numpy()
    fam = GMMFamily(3, "full", init_params="random_from_data", chunk_size=100, strategy=strategy)
    xt = torch.tensor(x)
    init = fam.initialize(fam.prepare(xt), torch.Generator().manual_seed(0))
    assert getattr(fam.prepare(xt), strategy)
    u = init.precisions_cholesky
    sk = SkGaussianMixture(3, covariance_type="full", max_iter=15, tol=0.0, weights_init=init.weights.numpy(),
                           means_init=init.means.numpy(), precisions_init=(u @ u.transpose(-1, -2)).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x)
    res = fit_em(fam, xt, init=init, max_iter=15, tol=0.0, warn=False)
    np.testing.assert_allclose(res.history, sk.lower_bounds_, rtol=1e-9)
    np.testing.assert_allclose(res.params.covariances.numpy(), sk.covariances_, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_direct_form_from_given_precisions_matches_sklearn(backend):
    # precisions_init gives a lower Cholesky factor (scikit-learn's convention); the direct form's
    # triangle blocks need an upper one: upper_factor converts it (this once gave wrong numbers)
    import warnings

    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from ppl_dgm import GaussianMixture

    if backend == "jax":
        pytest.importorskip("jax")
    x = data(n=900, d=20, k=3).numpy()
    rng = np.random.default_rng(0)
    init = dict(weights_init=np.full(3, 1 / 3), means_init=x[rng.choice(900, 3, replace=False)],
                precisions_init=np.broadcast_to(np.linalg.inv(np.cov(x.T)), (3, 20, 20)).copy())
    sk = SkGaussianMixture(3, covariance_type="full", max_iter=10, tol=0.0, **init)
    ours = GaussianMixture(3, max_iter=10, tol=0.0, backend=backend, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x)
        ours.fit(x)
    assert GMMFamily(3, "full").use_direct(20)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-9)

"""The pruned E-step (ppl_dgm.models.gmm_prune): a valid bound, the dense form's statistics, the auto rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm import log_gaussian_prob
from ppl_dgm.models.gmm_em import GMMFamily
from ppl_dgm.models.gmm_prune import _gram, augment, bounds, exp_, make_plan, padded, row_width, screen


def blobs(n: int, d: int, k: int, spread: float, seed: int = 0) -> torch.Tensor:
    """K blobs with centres ~ N(0, spread^2 I) and unit noise, shifted by 5; the first blob stretched 30x
    along one axis and the second along two (elongated components, whose bound needs eigen-directions)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64) * spread
    labels = torch.randint(k, (n,), generator=g)
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise[labels == 0, 0] *= 30
    noise[labels == 1, :2] *= 30
    return centres[labels] + noise + 5.0


def fitted(x: torch.Tensor, k: int, iters: int = 5):
    fam = GMMFamily(k, "full", strategy="features")
    return fit_em(fam, x, max_iter=iters, tol=0.0, warn=False, seed=0).params


def exact_log_joint(x: torch.Tensor, params) -> torch.Tensor:
    """log pi_k N(x | mu_k, Sigma_k), (N, K), densely."""
    lp = log_gaussian_prob(x, params.means, params.precisions_cholesky, "full")
    return lp + params.weights.log()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bound_is_above_every_exact_log_density(dtype):
    x = blobs(3000, 20, 6, spread=3.0)
    params = fitted(x, 6)
    far = x[:50] * 40.0  # rows far from every component as well
    rows = torch.cat([x, far]).to(dtype)
    shift = x.mean(0).to(dtype)
    fam = GMMFamily(6, "full", strategy="pruned")
    u = params.precisions_cholesky.to(dtype)
    mu = params.means.to(dtype) - shift
    c0 = params.weights.to(dtype).log() - 10 * math.log(2 * math.pi) + u.diagonal(dim1=1, dim2=2).log().sum(1)
    plan = make_plan(u, mu, c0)
    assert plan.r >= 2  # the stretched blobs' components need two eigen-directions
    assert plan.va.shape == (21, padded(6 * plan.r, "cpu")) and not bool(plan.va[:, 6 * plan.r :].any())
    bound, below = (b.double() for b in bounds(augment(rows, shift), plan))
    exact = exact_log_joint(rows.double(), params)
    tol = 1e-9 if dtype == torch.float64 else 1e-2  # float32: the exact values' own round-off
    assert float((bound - exact).min()) >= -tol * float(exact.abs().max())
    assert float((exact - below).min()) >= -tol * float(exact.abs().max())
    # the lower bound (the largest eigenvalue only) is close for the round components (4 of 6), loose for the
    # stretched ones: nats below each row's best pair
    near = (exact - below)[: len(x)].gather(1, exact[: len(x)].argmax(1, keepdim=True)).squeeze(1)
    assert float(near.quantile(0.25)) < 15.0
    # and a useful one: on the pairs of distant components, at least a quarter of the Mahalanobis term
    maha, lower = -2 * (exact - c0.double()), -2 * (bound - c0.double())
    far_pairs = maha > 100
    assert float((lower[far_pairs] < maha[far_pairs] / 4).double().mean()) < 0.02
    assert fam.prepare(rows).pruned


@pytest.mark.parametrize("spread, chunk", [(3.0, 10**6), (3.0, 333), (0.3, 10**6), (0.3, 333)])
def test_pruned_statistics_equal_the_feature_form(spread, chunk):
    # spread 3: separated blobs, nearly every row keeps one pair; 0.3: overlapping, rows keep several
    x = blobs(4000, 24, 8, spread=spread, seed=1)
    params = fitted(x, 8, iters=3)
    feats = GMMFamily(8, "full", strategy="features")
    ref = feats.e_step(params, feats.prepare(x))
    fam = GMMFamily(8, "full", strategy="pruned", chunk_size=chunk)
    got = fam.e_step(params, fam.prepare(x))
    assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13)
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-10, atol=1e-8)
    data = fam.prepare(x)
    u, mu, c0 = fam._centred_factors(params, data)
    scr = screen(augment(x, data.shift), make_plan(u, mu, c0))
    if spread == 3.0:  # many rows sure (no per-row product; not the stretched blobs' rows, nor all round ones)
        assert 1.0 <= fam.last_pairs_per_row < 2.0  # of 8
        assert 0.25 < scr.n_sure / len(x) < 0.9
    else:
        assert fam.last_pairs_per_row > 2.0
        assert scr.n_sure < 0.05 * len(x)
    r32 = fam.e_step(type(params)(*(t.float() for t in params)), fam.prepare(x.float()))
    assert r32.stats.dtype == torch.float64
    assert r32.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-5)


@pytest.mark.parametrize("f", [21, 47, 48, 65, 72, 84])
def test_gram_of_row_blocks_equals_the_plain_product(f):
    # one block of rows per thread; from F = 48 the lower-left block is the upper-right one transposed, split at a
    # multiple of 12 columns (84: 36 + 48)
    g = torch.Generator().manual_seed(f)
    a = torch.randn(5001, f, generator=g, dtype=torch.float64) + 3.0
    b = a * torch.rand(5001, 1, generator=g, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = _gram(a, b)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, a.T @ b, rtol=1e-12, atol=1e-9)


def test_augmented_rows_are_padded_to_a_multiple_of_twelve_on_cpu():
    assert [row_width(d, "cpu") for d in (2, 9, 10, 11, 20, 56, 64, 70)] == [4, 11, 12, 24, 24, 60, 72, 72]
    assert row_width(64, "meta") == 66  # (other devices: no padding)
    assert [padded(n, "cpu") for n in (0, 1, 8, 12, 128)] == [0, 12, 12, 12, 132] and padded(128, "meta") == 128
    x = torch.randn(7, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = x.mean(0)
    out = torch.full((9, 24), math.nan, dtype=torch.float64)  # a reused buffer: the padding is written too
    xb = augment(x, shift, out)
    assert xb.shape == (7, 24) and xb.data_ptr() == out.data_ptr()
    torch.testing.assert_close(xb[:, :20], x - shift, rtol=0, atol=0)
    assert bool((xb[:, 20] == 1).all()) and bool((xb[:, 22:] == 0).all())
    torch.testing.assert_close(xb[:, 21], ((x - shift) ** 2).sum(1), rtol=1e-15, atol=0)


def test_pruned_statistics_at_a_width_with_symmetric_blocks():
    # D = 56: the moments take _gram's three-block form; the buffers are reused by the second E-step
    x = blobs(12000, 56, 4, spread=4.0, seed=5)
    params = fitted(x, 4, iters=2)
    feats = GMMFamily(4, "full", strategy="features")
    ref = feats.e_step(params, feats.prepare(x))
    fam = GMMFamily(4, "full", strategy="pruned")
    data = fam.prepare(x)
    for _ in range(2):
        got = fam.e_step(params, data)
        assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13)
        torch.testing.assert_close(got.stats, ref.stats, rtol=1e-10, atol=1e-8)
    assert {"augmented", "sorted", "both"} <= set(data.work)


def test_pruned_fit_follows_the_dense_fit_and_sklearn():
    import warnings

    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x = blobs(3000, 32, 10, spread=2.0, seed=2)
    init = GMMFamily(10, "full").initialize(GMMFamily(10, "full").prepare(x), torch.Generator().manual_seed(0))
    runs = {s: fit_em(GMMFamily(10, "full", strategy=s), x, init=init, max_iter=12, tol=0.0, warn=False)
            for s in ("pruned", "direct")}
    np.testing.assert_allclose(runs["pruned"].history, runs["direct"].history, rtol=1e-12)
    torch.testing.assert_close(runs["pruned"].params.covariances, runs["direct"].params.covariances,
                               rtol=1e-9, atol=1e-11)
    u = init.precisions_cholesky
    sk = SkGaussianMixture(10, covariance_type="full", max_iter=12, tol=0.0, weights_init=init.weights.numpy(),
                           means_init=init.means.numpy(), precisions_init=(u @ u.transpose(-1, -2)).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x.numpy())
    np.testing.assert_allclose(runs["pruned"].history, sk.lower_bounds_, rtol=1e-9)


def test_auto_rule_and_refusals():
    n = 16384
    assert GMMFamily(4, "full").use_pruned(16, n) and not GMMFamily(4, "full").use_pruned(15, n)
    assert not GMMFamily(4, "full").use_pruned(16, n - 1) and GMMFamily(4, "full", strategy="pruned").use_pruned(2, 9)
    assert not GMMFamily(4, "diag").use_pruned(64, n) and not GMMFamily(3, "full").use_pruned(64, n)
    assert not GMMFamily(4, "full", strategy="direct").use_pruned(64, n)
    with pytest.raises(InputError, match="covariance_type='full' with strategy='pruned'"):
        GMMFamily(3, "tied", strategy="pruned")
    x = blobs(40000, 20, 4, spread=3.0)
    data = GMMFamily(4, "full").prepare(x)
    assert data.pruned and data.prune_chunk == 40000  # 2^21 // 22 = 95,325 rows a chunk, capped by N
    fam = GMMFamily(4, "full")
    assert fam.prepare(torch.cat([x] * 3)).prune_chunk == 2**21 // 22
    assert fam.prepare(torch.cat([x] * 4, 1)).prune_chunk == 32768  # D = 80: at least 32,768


def test_jax_backend_keeps_its_forms_and_refuses_pruned():
    pytest.importorskip("jax")
    from ppl_dgm.numpyro.inference.em import JaxGMMFamily

    jf = JaxGMMFamily(GMMFamily(3, "full"))
    assert not jf.family.use_pruned(64, 10**6) and jf.family.use_direct(64)
    with pytest.raises(InputError, match="strategy='pruned' runs on the torch backend only"):
        JaxGMMFamily(GMMFamily(3, "full", strategy="pruned"))


@pytest.mark.parametrize("d, k, pairs, pays", [
    (20, 64, 2.37, False), (20, 64, 1.47, True), (16, 64, 7.14, False), (16, 8, 1.53, False), (20, 8, 1.05, True),
    (24, 64, 1.30, True), (24, 16, 13.0, False), (32, 64, 45.9, False), (48, 64, 24.8, False), (64, 16, 1.55, True),
    (64, 4, 1.0, True), (20, 4, 1.0, True)])
def test_cost_model_picks_the_form_measured_faster(d, k, pairs, pays):
    # shapes of the paired timings the model was fitted to (docs/gmm.md, "Which form"): pruned against the faster
    # dense form at 60,000 rows from the k-means start, e.g. D = 20, K = 64: 2.37 pairs a row, pruned 2,043 ns a row
    # and features 1,591; 1.47 pairs (1M rows), pruned 1,621, features 2,261
    assert GMMFamily(k, "full").prune_pays(pairs, d) == pays


@pytest.mark.parametrize("spread, pays", [(8.0, True), (0.3, False)])
def test_auto_screens_each_e_step_and_takes_the_dense_form_when_pruning_does_not_pay(spread, pays):
    x = blobs(3000, 24, 8, spread=spread, seed=3)
    fam = GMMFamily(8, "full")
    fam.prune_min_n = 1000  # (auto's rule for few rows; a short test)
    fam.prune_probe_rows = 500  # two chunks: the probe decides for both
    data = fam.prepare(x)
    params = fam.initialize(data, torch.Generator().manual_seed(0))
    assert data.pruned
    got = fam.e_step(params, data)
    assert fam.prune_pays(fam.last_pairs_per_row, 24) == pays
    assert fam.last_form == ("pruned" if pays else "direct" if data.direct else "features")
    forced = GMMFamily(8, "full", strategy="pruned")  # a forced strategy runs whatever it costs
    dense = GMMFamily(8, "full", strategy="direct" if data.direct else "features")
    same = forced if pays else dense
    forced.prune_probe_rows = 500
    assert torch.equal(got.stats, same.e_step(params, same.prepare(x)).stats)  # the very form that ran
    ref = dense.e_step(params, dense.prepare(x))
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-10, atol=1e-8)


def test_sharded_code_path_with_identity_shards_equals_the_plain_pruned_fit():
    from ppl_dgm.models.shards import Shards

    x = blobs(2000, 16, 4, spread=4.0, seed=4)
    for strategy in ("pruned", "auto"):
        fams = [GMMFamily(4, "full", strategy=strategy, chunk_size=300, shards=s) for s in (None, Shards(lambda t: t))]
        for f in fams:
            f.prune_min_n = 1000
        plain, one = (fit_em(f, x, n_init=2, max_iter=15, tol=0.0, warn=False, seed=0) for f in fams)
        assert one.n_iter == plain.n_iter and fams[1].last_pairs_per_row == fams[0].last_pairs_per_row
        for a, b in zip(one.params, plain.params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype, floor", [(torch.float64, -708.0), (torch.float32, -87.0)])
def test_exp_raises_arguments_whose_exp_is_subnormal(dtype, floor):
    # the vector exp is slow on arguments whose exp is subnormal or 0: they are raised to log(smallest normal) first
    t = torch.tensor([0.0, -1.0, -50.0, floor + 1, floor - 1, -1e4, -math.inf], dtype=dtype)
    got = exp_(t.clone())
    torch.testing.assert_close(got[:4], t[:4].exp(), rtol=0, atol=0)
    assert bool((got[4:] == math.exp(floor)).all()) and float(got[4]) >= torch.finfo(dtype).tiny
    assert math.isnan(float(exp_(torch.tensor([math.nan], dtype=dtype))))  # (a NaN is still reported)


def test_dense_e_step_of_well_separated_components_equals_the_exact_softmax():
    # log-ratios down to -1e5 (exp 0): the responsibilities and the log-likelihood of the plain log-sum-exp
    x = blobs(3000, 3, 4, spread=40.0, seed=2) * 3.0
    params = fitted(x, 4, iters=3)
    lp = exact_log_joint(x, params)
    assert float((lp - lp.amax(1, keepdim=True)).min()) < -1e4
    resp = torch.softmax(lp, 1)
    fam = GMMFamily(4, "full", strategy="features")
    got = fam.e_step(params, fam.prepare(x))
    assert got.log_likelihood == pytest.approx(float(torch.logsumexp(lp, 1).mean()), rel=1e-13)
    torch.testing.assert_close(got.stats[-1], resp.sum(0), rtol=1e-12, atol=1e-9)  # the counts N_k


def test_sure_moments_kept_across_e_steps_equal_fresh_ones(monkeypatch):
    # the sure rows' moments of a chunk and component are reused while the same rows are sure for it; after a
    # change of parameters (component 5 weighted out: its rows go to others, it keeps no sure rows) the reused and
    # recomputed moments equal a fresh E-step's, and so they do on the way back
    import ppl_dgm.models.gmm_prune as gp

    x = blobs(6000, 24, 8, spread=3.0, seed=4)
    p1 = fitted(x, 8, iters=3)
    w = p1.weights.clone()
    w[5] = 1e-300
    p2 = p1._replace(weights=w / w.sum())
    fam = GMMFamily(8, "full", strategy="pruned", chunk_size=1500)
    data = fam.prepare(x)
    for step, params in enumerate((p1, p1, p2, p1)):
        before = dict(data.work.get("sure_moments", {}))
        got = fam.e_step(params, data)
        fresh = GMMFamily(8, "full", strategy="pruned", chunk_size=1500)
        ref = fresh.e_step(params, fresh.prepare(x))
        assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-14)
        torch.testing.assert_close(got.stats, ref.stats, rtol=1e-13, atol=1e-10)
        labels = torch.cat([lab for lab, _ in data.work["sure_moments"].values()])
        assert bool((labels == 5).any()) == (params is p1)
        kept = [key for key, entry in data.work["sure_moments"].items() if before.get(key) is entry]
        assert len(kept) == (4 if step == 1 else 0)  # the same parameters again: every chunk's moments reused
    assert sorted(data.work["sure_moments"]) == [0, 1500, 3000, 4500]  # the chunks' first rows
    # within the budget only: none kept, the same sums
    monkeypatch.setattr(gp, "SURE_CACHE_BYTES", 0)
    fam2 = GMMFamily(8, "full", strategy="pruned", chunk_size=1500)
    data2 = fam2.prepare(x)
    for params in (p1, p2):
        got = fam2.e_step(params, data2)
        assert data2.work["sure_moments"] == {}
        torch.testing.assert_close(got.stats, fam.e_step(params, data).stats, rtol=1e-13, atol=1e-10)


def test_kept_moments_of_another_number_of_components_are_not_reused():
    x = blobs(6000, 24, 8, spread=3.0, seed=4)
    fam8 = GMMFamily(8, "full", strategy="pruned", chunk_size=1500)
    data = fam8.prepare(x)
    fam8.e_step(fitted(x, 8, iters=2), data)
    fam4 = GMMFamily(4, "full", strategy="pruned", chunk_size=1500)
    p4 = fitted(x, 4, iters=2)
    got = fam4.e_step(p4, data)  # the same data (and its kept moments of 8 components)
    ref = fam4.e_step(p4, fam4.prepare(x))
    torch.testing.assert_close(got.stats, ref.stats, rtol=1e-13, atol=1e-10)
    assert all(m.shape[0] == 4 for _, m in data.work["sure_moments"].values())


def test_kept_moments_are_freed_when_the_screen_takes_the_dense_form():
    # under auto, an E-step that the screen sends to the dense form drops the pruned form's kept moments (stale,
    # up to SURE_CACHE_BYTES); a later pruned E-step computes them afresh and gets a fresh E-step's sums
    x = blobs(3000, 24, 8, spread=8.0, seed=3)
    fam = GMMFamily(8, "full")
    fam.prune_min_n, fam.prune_probe_rows = 1000, 500
    data = fam.prepare(x)
    p1 = fitted(x, 8, iters=3)
    broad = p1._replace(precisions_cholesky=p1.precisions_cholesky * 0.01)  # covariances 1e4 x: all overlap
    for params, form in ((p1, "pruned"), (broad, "direct" if data.direct else "features"), (p1, "pruned")):
        got = fam.e_step(params, data)
        assert fam.last_form == form
        assert bool(data.work.get("sure_moments")) == (form == "pruned")
        fresh = GMMFamily(8, "full", strategy=form)
        torch.testing.assert_close(got.stats, fresh.e_step(params, fresh.prepare(x)).stats, rtol=1e-10, atol=1e-8)

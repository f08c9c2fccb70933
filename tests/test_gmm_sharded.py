"""Sharded EM (``GaussianMixture(distributed=True)``) on 2 gloo processes equals the single-process fit.

Two processes are spawned once (module fixture); each fits every case on its block of
the rows (:func:`shard_rows`, N odd so the blocks differ in size) and saves what it got.
The tests compare, per case, rank 0 with rank 1 (bit for bit: every rank takes the same
M-step from the same summed statistics) and rank 0 with a single-process fit on all the
rows here (to 1e-12 relative in float64: only the order of the sums differs).
"""

from __future__ import annotations

import os
import pickle
import time
import warnings

import numpy as np
import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.estimators import GaussianMixture, shard_rows
from ppl_dgm.models.shards import Shards

WORLD = 2
N = 1001  # odd: blocks of 501 and 500 rows
# name -> (D, GaussianMixture options); chunk_size 97 makes every rank's last chunk short
CASES = {
    "full-kmeans": (5, dict(covariance_type="full", init_params="kmeans")),
    "diag-kmeans": (5, dict(covariance_type="diag", init_params="kmeans")),
    "full-random_from_data": (5, dict(covariance_type="full", init_params="random_from_data")),
    "diag-random_from_data": (5, dict(covariance_type="diag", init_params="random_from_data")),
    "tied-k-means++": (5, dict(covariance_type="tied", init_params="k-means++")),
    "spherical-random": (5, dict(covariance_type="spherical", init_params="random")),
    "full-direct-kmeans": (16, dict(covariance_type="full", init_params="kmeans")),  # 4 K <= D: direct form
    # given means (the weights and covariances from the seeded k-means, collectively)
    "diag-means_init": (5, dict(covariance_type="diag", means_init=[[0.0] * 5, [1.0] * 5, [-1.0] * 5])),
}
COMMON = dict(n_components=3, n_init=2, tol=1e-8, max_iter=300, random_state=3, chunk_size=97)
FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_")


def blobs(d: int, n: int = N, seed: int = 0) -> np.ndarray:
    """Three overlapping Gaussian blobs in D dimensions (float64), shape (n, d)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.0, size=(3, d))
    scales = rng.uniform(0.5, 1.5, size=(3, d))
    c = rng.integers(0, 3, size=n)
    return centers[c] + scales[c] * rng.normal(size=(n, d))


def summary(gm: GaussianMixture, x: np.ndarray) -> dict:
    out = {name: np.asarray(getattr(gm, name)) for name in FITTED}
    out.update(n_iter=gm.n_iter_, converged=gm.converged_, lower_bound=gm.lower_bound_,
               predict=gm.predict(x), score=gm.score(x), sample=gm.sample(5)[0])
    return out


def _worker(rank: int, store: str, out_dir: str) -> None:
    """One rank: every case on its rows, then the refusal of unequal D; results pickled per rank."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    results: dict = {}
    try:
        for name, (d, opts) in CASES.items():
            x = blobs(d)
            gm = GaussianMixture(**COMMON, **opts, distributed=True)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm.fit(shard_rows(x, rank, WORLD))
            results[name] = summary(gm, x) | {"seconds": time.perf_counter() - t0}
        x = blobs(5)
        try:  # rank 1 has one column fewer
            GaussianMixture(3, distributed=True).fit(shard_rows(x if rank == 0 else x[:, :4], rank, WORLD))
        except InputError as e:
            results["unequal-D"] = str(e)
        bad = x.copy()
        bad[-1, 0] = np.nan  # in rank 1's block: rank 1 says why, rank 0 that rank 1 failed (neither hangs)
        try:
            GaussianMixture(3, distributed=True).fit(shard_rows(bad, rank, WORLD))
        except InputError as e:
            results["invalid-rows"] = str(e)
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(results, f)
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Run :func:`_worker` on 2 spawned gloo processes (at most 80 s); returns each rank's results."""
    tmp = tmp_path_factory.mktemp("sharded")
    ctx = torch.multiprocessing.start_processes(_worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD,
                                                join=False, start_method="spawn")
    deadline = time.monotonic() + 80
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2 gloo processes did not finish in 80 s")
    out = []
    for r in range(WORLD):
        with open(tmp / f"rank{r}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out


def _rel(a, b) -> float:
    """max |a - b| / max |b| (relative to the array's scale)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_equals_single_process(ranks, name):
    d, opts = CASES[name]
    x = blobs(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = summary(GaussianMixture(**COMMON, **opts).fit(x), x)
    r0, r1 = ranks[0][name], ranks[1][name]
    for key in (*FITTED, "predict", "sample", "n_iter", "lower_bound", "score"):  # every rank: the same bits
        assert np.array_equal(r0[key], r1[key]), (name, key)
    assert r0["n_iter"] == single["n_iter"] > 5 and r0["converged"] == single["converged"]
    assert np.array_equal(r0["predict"], single["predict"])
    rels = {key: _rel(r0[key], single[key]) for key in (*FITTED, "lower_bound", "sample")}
    print(f"{name}: n_iter {r0['n_iter']}, max relative difference sharded vs single "
          f"{max(rels.values()):.2e} ({max(rels, key=rels.get)}), {r0['seconds']:.2f} s")
    assert max(rels.values()) < 1e-12, rels


def test_direct_form_is_taken():
    from ppl_dgm.models.gmm_em import GMMFamily

    assert GMMFamily(3, "full").use_direct(CASES["full-direct-kmeans"][0])
    assert not GMMFamily(3, "full").use_direct(CASES["full-kmeans"][0])


def test_unequal_columns_refused_on_every_rank(ranks):
    for r in range(WORLD):
        msg = ranks[r]["unequal-D"]
        assert "\n" not in msg and msg == "expected the same number of columns D on every rank; got D = [5, 4] " \
                                          "on ranks 0..1"


def test_invalid_rows_on_one_rank_refused_on_every_rank(ranks):
    assert ranks[0]["invalid-rows"] == "expected valid rows on every rank; got invalid rows on rank(s) [1]"
    assert ranks[1]["invalid-rows"] == "expected finite values in X; got NaN or inf in 1 row(s)"


def test_refused_without_process_group():
    assert not torch.distributed.is_initialized()
    with pytest.raises(InputError, match="^expected an initialized torch.distributed process group") as e:
        GaussianMixture(2, distributed=True).fit(blobs(3, 20))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("backend", ["jax", "svi", "numpyro"])
def test_refused_with_other_backends(backend):
    with pytest.raises(InputError, match=r"^expected backend='torch' with distributed=True .*got backend=") as e:
        GaussianMixture(2, backend=backend, distributed=True).fit(blobs(3, 20))
    assert "\n" not in str(e.value)


def test_identity_shards_equal_the_plain_fit():
    """One rank whose sum over ranks is the identity: the sharded code path gives the plain fit."""
    from ppl_dgm.inference.em import fit_em
    from ppl_dgm.models.gmm_em import GMMFamily

    x = torch.as_tensor(blobs(4, 301))
    for init in ("kmeans", "k-means++", "random", "random_from_data"):
        plain = fit_em(GMMFamily(3, "full", init_params=init, chunk_size=50), x, n_init=2, tol=1e-8, warn=False)
        one = fit_em(GMMFamily(3, "full", init_params=init, chunk_size=50, shards=Shards(lambda t: t)), x,
                     n_init=2, tol=1e-8, warn=False)
        assert one.n_iter == plain.n_iter and one.best_init == plain.best_init
        for a, b in zip(one.params, plain.params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_shard_rows_blocks():
    x = np.arange(11)
    blocks = [shard_rows(x, r, 3) for r in range(3)]
    assert [len(b) for b in blocks] == [4, 4, 3] and np.array_equal(np.concatenate(blocks), x)
    assert torch.equal(shard_rows(torch.arange(5), 1, 2), torch.tensor([3, 4]))
    with pytest.raises(InputError, match="^expected 0 <= rank < world_size"):
        shard_rows(x, 3, 3)


class _Stub:
    """An EM family whose restart r converges at once to the log-likelihood ``finals[r]``."""

    def __init__(self, finals):
        self.finals, self.r = list(finals), -1

    def prepare(self, x):
        return x

    def initialize(self, data, generator):
        self.r += 1
        return self.r

    def e_step(self, params, data):
        from ppl_dgm.models.base import EStep

        return EStep(self.finals[params], None)

    def m_step(self, estep, data):
        return self.r

    def monotone_slack(self, params):
        return 0.0


@pytest.mark.parametrize("dtype, second, kept", [
    (torch.float64, -7.0 * (1 - 1e-13), 0),  # within round-off of the first: the first is kept
    (torch.float64, -7.0 * (1 - 1e-9), 1),   # better beyond round-off
    (torch.float32, -7.0 * (1 - 1e-5), 0),   # float32 round-off
    (torch.float32, -7.0 * (1 - 1e-3), 1),
])
def test_restart_ties_keep_the_first(dtype, second, kept):
    from ppl_dgm.inference.em import fit_em

    res = fit_em(_Stub([-7.0, second]), torch.zeros(3, 1, dtype=dtype), n_init=2, max_iter=2, warn=False)
    assert res.best_init == kept

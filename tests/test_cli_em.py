"""`ppl-dgm fit gmm | ppca`, `evaluate` and `sample` on their run dirs; bad input gives one line, exit 2."""

import json

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGM

from .conftest import run_cli as run


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    d = tmp_path_factory.mktemp("em")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(150, 2)) * 0.5 + c for c in ([0, 0], [3, 3], [-3, 2])])
    np.save(d / "x.npy", rng.permutation(x))
    return d


def test_fit_gmm_evaluate_sample(blobs, capsys):
    out = blobs / "gmm"
    code, stdout, err = run(["fit", "gmm", "--data", blobs / "x.npy", "-k", "3", "--covariance", "full",
                             "--n-init", "2", "--tol", "1e-8", "--out", out], capsys)
    assert code == 0, err
    for name in ("config.json", "checkpoint.pt", "history.json", "loglik.png", "ellipses.png"):
        assert (out / name).is_file()
    code, stdout, _ = run(["evaluate", out, "--data", blobs / "x.npy", "--json"], capsys)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["n"] == 450 and set(res) >= {"log_likelihood", "bic", "n"}
    # the same fit in scikit-learn reaches the same mean log-likelihood on the same data
    x = np.load(blobs / "x.npy")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["family"] == "gmm" and cfg["result"]["converged"]
    sk = SkGM(3, n_init=5, tol=1e-8, random_state=0).fit(x)
    assert res["log_likelihood"] == pytest.approx(sk.score(x), abs=0.02)
    code, _, _ = run(["sample", out, "-n", "20", "--out", blobs / "s.npy"], capsys)
    assert code == 0 and np.load(blobs / "s.npy").shape == (20, 2)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_fit_gmm_backends_and_ppca(blobs, capsys, backend):
    code, stdout, err = run(["fit", "gmm", "--data", blobs / "x.npy", "-k", "2", "--covariance", "diag",
                             "--backend", backend, "--out", blobs / f"g-{backend}"], capsys)
    assert code == 0, err
    code, _, err = run(["fit", "ppca", "--latent-dim", "3", "--out", blobs / f"p-{backend}"], capsys)
    assert code == 0, err
    code, stdout, _ = run(["evaluate", blobs / f"p-{backend}", "--json"], capsys)
    assert json.loads(stdout.splitlines()[-1])["n"] == 359


def test_fit_gmm_numpyro_backend_is_map_by_enumeration(blobs, capsys):
    out = blobs / "g-numpyro"
    code, _, err = run(["fit", "gmm", "--data", blobs / "x.npy", "-k", "3", "--backend", "numpyro",
                        "--max-iter", "200", "--out", out], capsys)
    assert code == 0, err
    code, stdout, _ = run(["evaluate", out, "--data", blobs / "x.npy", "--json"], capsys)
    x = np.load(blobs / "x.npy")
    sk = SkGM(3, n_init=5, tol=1e-8, random_state=0).fit(x)
    assert json.loads(stdout.splitlines()[-1])["log_likelihood"] == pytest.approx(sk.score(x), abs=0.02)


def test_em_bad_input(blobs, tmp_path, capsys):
    np.save(tmp_path / "three.npy", np.zeros((3, 2)) + np.arange(3)[:, None])
    code, _, err = run(["fit", "gmm", "--data", tmp_path / "three.npy", "-k", "5", "--out", tmp_path / "a"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "n_components" in err
    assert not (tmp_path / "a").exists()
    nan = np.load(blobs / "x.npy")
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    code, _, err = run(["fit", "gmm", "--data", tmp_path / "nan.npy", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "expected finite values" in err
    np.save(tmp_path / "wide.npy", np.zeros((10, 5)))
    code, _, err = run(["fit", "gmm", "--data", blobs / "x.npy", "-k", "2", "--out", tmp_path / "c"], capsys)
    assert code == 0
    code, _, err = run(["evaluate", tmp_path / "c", "--data", tmp_path / "wide.npy"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "5" in err and "2" in err

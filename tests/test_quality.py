"""Sample quality (issue 14 item 4): KID against its closed form, the floor, PSNR/SSIM, the scorer and its cache,
the convolutional classifier, and `ppl-dgm evaluate --samples`."""

import json
import math

import numpy as np
import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.errors import InputError
from ppl_dgm.evaluation import kernel_inception_distance, reconstruction_quality, sample_quality
from ppl_dgm.models.classifier import Classifier
from ppl_dgm.runs import DataSpec, load_run, scorer_for
from ppl_dgm.runs.quality import SCORER_RECIPES

from .conftest import run_cli

TINY_RECIPE = {"name": "tiny", "version": 0, "family": "classifier",
               "options": {"arch": "mlp", "hidden": [32, 32], "epochs": 15, "lr": 3e-3}}


def cubic_kernel_mean(mu_a: np.ndarray, mu_b: np.ndarray) -> float:
    """E (a.b / d + 1)^3 for independent a ~ N(mu_a, I), b ~ N(mu_b, I): s = a.b is a sum of independent
    u_i = a_i b_i with E u = ab, E u^2 = (a^2 + 1)(b^2 + 1), E u^3 = (a^3 + 3a)(b^3 + 3b); their cumulants add."""
    a, b, d = mu_a, mu_b, len(mu_a)
    m1, m2, m3 = a * b, (a**2 + 1) * (b**2 + 1), (a**3 + 3 * a) * (b**3 + 3 * b)
    k1, k2, k3 = m1.sum(), (m2 - m1**2).sum(), (m3 - 3 * m1 * m2 + 2 * m1**3).sum()
    e1, e2, e3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return e3 / d**3 + 3 * e2 / d**2 + 3 * e1 / d + 1


def test_cubic_kernel_mean_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.3, -0.5, 1.0]), np.array([0.7, 0.2, -0.4])
    a, b = rng.normal(mu_a, 1, (400_000, 3)), rng.normal(mu_b, 1, (400_000, 3))
    mc = ((a * b).sum(1) / 3 + 1) ** 3
    assert abs(mc.mean() - cubic_kernel_mean(mu_a, mu_b)) < 4 * mc.std() / math.sqrt(len(mc))


def test_kid_of_shifted_gaussians_is_the_closed_form_mmd2():
    d, shift = 4, 0.5
    zero, mu = np.zeros(d), np.full(d, shift)
    exact = cubic_kernel_mean(zero, zero) + cubic_kernel_mean(mu, mu) - 2 * cubic_kernel_mean(zero, mu)
    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (4000, d)), rng.normal(shift, 1, (4000, d))
    res = kernel_inception_distance(x, y, subsets=100, subset_size=500)
    assert res["subset_size"] == 500 and res["blocks_per_pass"] == 8
    assert exact > 20 * res["kid_se"]                      # the shift is resolved: the check below can fail
    assert abs(res["kid"] - exact) < 3 * res["kid_se"], (res, exact)


def test_kid_is_zero_within_its_se_for_one_distribution():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (2000, 8))
    other = kernel_inception_distance(x, rng.normal(0, 1, (2000, 8)), subsets=50, subset_size=500)
    assert other["kid_se"] > 0 and abs(other["kid"]) < 3 * other["kid_se"], other
    # identical sets: the blocks of the two sides may share a point, so E[KID] = 2 (A - D) / N exactly, with A the
    # mean of k over distinct pairs and D over the diagonal: O(1/N), not 0
    k = (x @ x.T / 8 + 1) ** 3
    diag, off = k.diagonal().mean(), (k.sum() - k.trace()) / (2000 * 1999)
    same = kernel_inception_distance(x, x, subsets=50, subset_size=500)
    assert abs(same["kid"] - 2 * (off - diag) / 2000) < 3 * same["kid_se"], same
    assert abs(same["kid"]) < 0.002 * diag
    small = kernel_inception_distance(x[:40], x[40:80], subsets=10, subset_size=1000)  # m capped at N / 2
    assert small["subset_size"] == 20 and small["blocks_per_pass"] == 2


def test_kid_refuses_bad_input():
    with pytest.raises(InputError, match="one width"):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(InputError, match="subsets as an integer >= 2"):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 3)), subsets=1)
    with pytest.raises(InputError, match="at least 4 rows"):
        kernel_inception_distance(np.zeros((3, 3)), np.zeros((10, 3)))


def test_psnr_and_ssim_of_a_known_perturbation():
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8 + 0.1
    signs = torch.ones(64, dtype=torch.float64)
    signs[1::2] = -1
    res = reconstruction_quality(x, x + 0.05 * signs, (8, 8))       # MSE 0.0025: 10 log10(400) dB exactly
    assert math.isclose(res["psnr"], 10 * math.log10(400), rel_tol=1e-9) and res["psnr_se"] < 1e-9
    assert math.isclose(res["mse"], 0.0025, rel_tol=1e-6)
    assert math.isclose(reconstruction_quality(x, x, (8, 8))["ssim"], 1.0, rel_tol=1e-12)
    assert "ssim" not in reconstruction_quality(x[:, :4], x[:, :4], (2, 2))   # sides < 7: no SSIM


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return scorer_for(DataSpec("digits"), recipe=TINY_RECIPE, home=tmp_path_factory.mktemp("home"), echo=print)


def test_scorer_trains_once_into_the_cache_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_DGM_HOME", str(tmp_path))
    lines = []
    first = scorer_for(DataSpec("digits", seed=0), recipe=TINY_RECIPE, echo=lines.append)
    assert first.path.parent == tmp_path / "scorers" and first.path.name.startswith("digits-")
    assert len(lines) == 2 and "training the sample-quality scorer" in lines[0] and "trained in" in lines[1]
    stamp = (first.path / "checkpoint.pt").stat().st_mtime_ns
    recipe = json.loads((first.path / "recipe.json").read_text())
    assert recipe["options"] == TINY_RECIPE["options"] and recipe["fit_options"]["epochs"] == 15
    assert recipe["test_accuracy"] > 0.9 and recipe["cpu_seconds"] > 0
    again = scorer_for(DataSpec("digits", seed=0, binarize="static"), recipe=TINY_RECIPE, echo=lines.append)
    assert again.path == first.path and len(lines) == 2                # reused: binarization is ignored
    assert (first.path / "checkpoint.pt").stat().st_mtime_ns == stamp
    other = scorer_for(DataSpec("digits", seed=1), recipe=TINY_RECIPE, echo=lines.append)  # another split
    assert other.path != first.path and len(lines) == 4


def test_scorer_needs_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 8, 8)))
    with pytest.raises(InputError, match="needs labelled data"):
        scorer_for(DataSpec(path=str(tmp_path / "x.npy")), home=tmp_path)


def test_real_test_images_against_training_images_score_near_the_floor(scorer):
    ds = load_dataset("digits")
    n = 300
    res = sample_quality(scorer.model, ds.x_test[:n], ds.x_train[:n], ds.x_train[n:], seed=0)
    floor = res["floor"]
    assert res["n"] == floor["n"] == n and res["features"].startswith("classifier (mlp)")
    assert 0.5 < res["fd"] / floor["fd"] < 2
    assert abs(res["kid"] - floor["kid"]) < 3 * math.hypot(res["kid_se"], floor["kid_se"])
    assert abs(res["precision"] - floor["precision"]) < 0.08 and abs(res["recall"] - floor["recall"]) < 0.08
    assert res["confidence"] > 0.9 and res["confidence_real"] > 0.9
    # pixels shuffled within each image: the same grey levels, no digits; far above the floor
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    bad = sample_quality(scorer.model, ds.x_test[:n], ds.x_train[:n][:, perm], seed=0)
    assert bad["fd"] > 5 * floor["fd"] and bad["precision"] < floor["precision"] - 0.3
    assert bad["kid"] > floor["kid"] + 5 * math.hypot(bad["kid_se"], floor["kid_se"])
    with pytest.raises(InputError, match="as many samples"):
        sample_quality(scorer.model, ds.x_test[:10], ds.x_train[:11])


def test_raw_coordinates_without_a_scorer():
    rng = np.random.default_rng(3)
    real, fake = torch.as_tensor(rng.normal(0, 1, (500, 2))), torch.as_tensor(rng.normal(0, 1, (500, 2)) + 3)
    res = sample_quality(None, real, fake, torch.as_tensor(rng.normal(0, 1, (800, 2))))
    assert res["features"] == "raw coordinates" and "confidence" not in res
    assert 17 < res["fd"] < 19 and res["floor"]["fd"] < 0.1      # ||shift||^2 = 18
    assert res["precision"] < 0.05 and res["floor"]["precision"] > 0.85


def test_conv_classifier_arch():
    assert Classifier(784, 10, image_shape=[28, 28]).arch == "conv"
    assert Classifier(784, 10, image_shape=[28, 28], noise_conditional=True, timesteps=10).arch == "mlp"
    assert Classifier(64, 10, image_shape=[8, 8]).arch == "mlp"
    with pytest.raises(InputError, match="arch 'conv' takes 28x28 images"):
        Classifier(64, 10, image_shape=[8, 8], arch="conv")
    with pytest.raises(InputError, match="expected noise_conditional=False"):
        Classifier(784, 10, image_shape=[28, 28], arch="conv", noise_conditional=True)
    clf = Classifier(784, 3, image_shape=[28, 28], hidden=(16,), channels=4)
    x = torch.rand(5, 784)
    assert clf.features(x).shape == (5, 16) and clf.logits(2 * x - 1).shape == (5, 3)
    assert torch.allclose(clf.probabilities(x).sum(-1), torch.ones(5))
    assert clf.config["arch"] == "conv" and Classifier.from_config(clf.config).arch == "conv"
    old = {k: v for k, v in Classifier(784, 3, image_shape=[28, 28], arch="mlp", hidden=(8,)).config.items()
           if k not in ("arch", "channels")}
    assert Classifier.from_config(old).arch == "mlp"                   # runs from before the option: MLPs


def test_conv_classifier_learns_a_separable_task(tmp_path, capsys):
    """Class 0: a bright top half, class 1: a bright bottom half, in noise: a conv classifier is exact."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.random((400, 28, 28)) * 0.3
    for i, c in enumerate(y):
        x[i, 14 * c: 14 * c + 14] += 0.6
    np.savez(tmp_path / "halves.npz", x=x[:300], y=y[:300], x_test=x[300:], y_test=y[300:])
    code, _, err = run_cli(["fit", "classifier", "--data", tmp_path / "halves.npz", "--epochs", "10", "--lr", "3e-3",
                            "--hidden", "16", "--channels", "4", "--out", tmp_path / "c", "--quiet"], capsys)
    assert code == 0, err
    run = load_run(tmp_path / "c")
    assert run.model.arch == "conv" and run.model.features(torch.rand(2, 784)).shape == (2, 16)
    code, out, _ = run_cli(["evaluate", tmp_path / "c", "--json"], capsys)
    assert code == 0 and json.loads(out)["accuracy"] == 1.0


def test_cli_evaluate_samples(tmp_path, capsys, monkeypatch, scorer):
    monkeypatch.setenv("PPL_DGM_HOME", str(tmp_path / "home"))
    assert run_cli(["fit", "vae", "--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--out", tmp_path / "v",
                    "--quiet"], capsys)[0] == 0
    code, out, err = run_cli(["evaluate", tmp_path / "v", "--samples", "40", "--scorer", scorer.path, "--json"],
                             capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 40 and res["scorer"] == str(scorer.path) and res["scorer_test_accuracy"] > 0.9
    assert res["fd"] > res["floor"]["fd"] and 0 <= res["precision"] <= 1 and res["samples_per_second"] > 0
    assert 0 < res["reconstruction"]["psnr"] < 40 and 0 < res["reconstruction"]["ssim"] <= 1
    assert not (tmp_path / "home").exists()                            # an explicit scorer: nothing trained
    code, out, err = run_cli(["evaluate", tmp_path / "v", "--samples", "40", "--scorer", scorer.path], capsys)
    assert code == 0 and "FD" in out and "(floor" in out and "class confidence" in out and "PSNR" in out
    for args, message in (
            (["--scorer", scorer.path], "--scorer: expected with --samples N"),
            (["--samples", "10", "--exact"], "expected no --exact"),
            (["--samples", "10", "--scorer", tmp_path / "v"], "expected a classifier run; got a 'vae' run"),
            (["--samples", "400"], "expected an integer in 4..359"),
            (["--samples", "10", "--sampler", "ode"], "needs a family with a choice of samplers")):
        code, _, err = run_cli(["evaluate", tmp_path / "v", *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "home").exists()                            # refused before a scorer trains
    monkeypatch.setitem(SCORER_RECIPES, "mlp", {**SCORER_RECIPES["mlp"], **TINY_RECIPE["options"]})
    code, out, err = run_cli(["evaluate", tmp_path / "v", "--samples", "40"], capsys)  # the default scorer: trained
    assert code == 0 and "training the sample-quality scorer for digits (mlp classifier)" in err, err
    assert str(tmp_path / "home" / "scorers" / "digits-") in out
    code, out, err = run_cli(["evaluate", tmp_path / "v", "--samples", "40"], capsys)  # and reused
    assert code == 0 and err == ""

"""CLI smoke tests of `fit ddpm`, `fit hvae`, `sample --sampler`, and `evaluate --json` for ddpm runs."""

import json

import numpy as np
import pytest

from ppl_dgm.cli import main

from .conftest import run_cli as run


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddpm")
    rng = np.random.default_rng(0)
    np.save(root / "toy2d.npy", rng.standard_normal((600, 2)).astype(np.float32))
    out = root / "run"
    with pytest.raises(SystemExit) as info:
        main(["fit", "ddpm", "--data", str(root / "toy2d.npy"), "--out", str(out), "--epochs", "2",
              "--timesteps", "40", "--hidden", "32,32", "--quiet"])
    assert info.value.code == 0
    return out


def test_fit_ddpm_writes_run_and_pictures(ddpm_run):
    for name in ("config.json", "checkpoint.pt", "history.json", "samples.png", "trajectory.png", "loss_per_t.png"):
        assert (ddpm_run / name).is_file(), name
    cfg = json.loads((ddpm_run / "config.json").read_text())
    assert cfg["family"] == "ddpm" and cfg["model"]["timesteps"] == 40 and cfg["model"]["loss"] == "simple"


def test_sample_ddpm_and_ddim(ddpm_run, capsys, tmp_path):
    code, _, err = run(["sample", ddpm_run, "-n", "9", "--out", tmp_path / "a.npy"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "a.npy").shape == (9, 2)
    code, _, err = run(["sample", ddpm_run, "-n", "9", "--sampler", "ddim", "--steps", "5", "--eta", "0.5",
                        "--out", tmp_path / "b.png"], capsys)
    assert code == 0 and (tmp_path / "b.png").is_file(), err
    code, _, err = run(["sample", ddpm_run, "-n", "3", "--steps", "5", "--out", tmp_path / "c.npy"], capsys)
    assert code == 2 and "expected --sampler ddim" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["sample", ddpm_run, "-n", "3", "--sampler", "ddim", "--steps", "41",
                        "--out", tmp_path / "c.npy"], capsys)
    assert code == 2 and "1..40" in err


def test_evaluate_ddpm_json(ddpm_run, capsys):
    code, out, err = run(["evaluate", ddpm_run, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["family"] == "ddpm" and np.isfinite(res["elbo"]) and "bits_per_dim" in res and len(res["L_t"]) == 40


def test_fit_ddpm_bad_input(capsys, tmp_path):
    code, _, err = run(["fit", "ddpm", "--dataset", "moons", "--timesteps", "10", "--t-per-step", "20",
                        "--out", tmp_path / "x"], capsys)
    assert code == 2 and "t_per_step" in err and len(err.strip().splitlines()) == 1


def test_fit_hvae_and_sampler_refused_for_other_families(capsys, tmp_path):
    out = tmp_path / "hvae"
    code, _, err = run(["fit", "hvae", "--layers", "2", "--latent-dim", "4", "--hidden", "32", "--epochs", "1",
                        "--out", out, "--quiet"], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["layers"] == 2 and cfg["model"]["latent_dims"] == [4, 4]
    code, _, err = run(["sample", out, "-n", "4", "--sampler", "ddim", "--out", tmp_path / "s.npy"], capsys)
    assert code == 2 and "needs a family with a choice of samplers (ddpm, score); got 'hvae'" in err
    code, out_, err = run(["evaluate", out, "--iwae-k", "5", "--json"], capsys)
    assert code == 0 and "log_likelihood" in json.loads(out_.strip().splitlines()[-1])

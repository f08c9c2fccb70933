"""The score family through the run layer and the CLI (issue 11 items 1-3): fit, evaluate (--exact), sample with
every sampler and its options, diagnose; the noise ladder's default top; the ODE likelihood beside the chain ELBO."""

import json

import numpy as np
import pytest
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.errors import InputError
from ppl_dgm.models.score import ScoreConfig, ScoreModel, max_distance
from ppl_dgm.runs import evaluate_run, load_run, sample_run

from .conftest import run_cli as run

TINY = ["--epochs", "2", "--batch-size", "512", "--levels", "6", "--hidden", "16,16", "--quiet"]


@pytest.fixture(scope="module")
def score_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "run"
    from ppl_dgm.cli import main

    with pytest.raises(SystemExit) as info:
        main(["fit", "score", "--dataset", "moons", *TINY, "--out", str(out)])
    assert info.value.code == 0
    return out


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "run"
    from ppl_dgm.cli import main

    with pytest.raises(SystemExit) as info:
        main(["fit", "ddpm", "--dataset", "moons", "--epochs", "1", "--batch-size", "1024", "--timesteps", "20",
              "--hidden", "16,16", "--quiet", "--out", str(out)])
    assert info.value.code == 0
    return out


def test_sigma_max_defaults_to_the_largest_distance_between_examples():
    ds = load_dataset("moons", n_toy=500)
    cfg = ScoreConfig().resolve(ds)
    x = ds.x_train.double()
    assert cfg.sigma_max == pytest.approx(float(torch.cdist(x, x).max()), rel=1e-2)
    assert ScoreConfig(sigma_max=3.0).resolve(ds).sigma_max == 3.0
    img = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert max_distance(img, image=True) == pytest.approx(2 * 2**0.5, rel=1e-3)  # [0, 1] -> [-1, 1]
    with pytest.raises(InputError, match="sigma_min < sigma_max"):
        ScoreConfig(sigma_min=50.0).resolve(ds)


def test_the_run_stores_its_ladder_and_trains_with_ema(score_run):
    r = load_run(score_run)
    cfg = json.loads((score_run / "config.json").read_text())
    assert r.family.name == "score" and isinstance(r.model, ScoreModel)
    assert cfg["model"]["levels"] == 6 and cfg["model"]["sigma_max"] > 1 and cfg["train"]["ema"] == 0.999
    assert {p.name for p in score_run.glob("*.png")} == {"elbo.png", "samples.png", "trajectory.png",
                                                          "loss_per_sigma.png"}


def test_held_out_dsm_terms_are_minus_the_recorded_elbo(score_run):
    """The per-level J_i of ``evaluate`` sum to the loss whose negative ``fit`` records as the held-out "ELBO"."""
    r = load_run(score_run)
    x, _, _ = r.eval_data()
    res = evaluate_run(r, x, seed=0)
    assert len(res["J"]) == 6 and res["dsm_loss"] == pytest.approx(sum(res["J"]))
    assert 0 < res["dsm_loss"] < 6 * 2 / 2 * 1.5                         # a network near s = 0 scores D/2 per level
    assert -r.history[-1]["test_elbo"] == pytest.approx(res["dsm_loss"], rel=0.15)  # other noise draws


def test_evaluate_exact_prints_the_ode_likelihood(score_run, ddpm_run, capsys):
    code, out, err = run(["evaluate", score_run, "--exact", "--max-examples", "50", "--rtol", "1e-4", "--atol",
                          "1e-4"], capsys)
    assert code == 0, err
    assert "score-matching loss" in out and "log p(x) (ODE)" in out and "exact divergence" in out
    code, out, err = run(["evaluate", ddpm_run, "--exact", "--max-examples", "50", "--json"], capsys)
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and res["n"] == 50 and "elbo" in res and res["ode"]["exact"] and res["ode"]["n"] == 50
    assert np.isfinite(res["ode"]["log_prob"]) and res["ode"]["log_prob_se"] == 0.0
    code, out, _ = run(["evaluate", ddpm_run, "--max-examples", "50"], capsys)
    assert code == 0 and "ELBO (full chain)" in out and "ODE" not in out


@pytest.mark.parametrize("sampler,options", [
    ("langevin", {"steps": 2, "step_size": 1e-4}), ("pc", {"steps": 1, "step_size": 1e-5}),
    ("ode", {"rtol": 1e-3, "atol": 1e-3}),
])
def test_every_score_sampler_takes_its_options(score_run, sampler, options):
    r = load_run(score_run)
    x = sample_run(r, 30, sampler=sampler, seed=1, **options)
    assert x.shape == (30, 2) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, sample_run(r, 30, sampler=sampler, seed=1, **options))


@pytest.mark.parametrize("args,message", [
    (["--sampler", "ddim"], "--sampler: expected one of langevin, pc, ode; got 'ddim'"),
    (["--sampler", "langevin", "--rtol", "1e-3"], "--rtol: expected --sampler ode; got --sampler langevin"),
    (["--sampler", "ode", "--step-size", "0.1"], "--step-size: expected --sampler langevin or pc; got --sampler ode"),
    (["--eta", "0.5"], "--eta: expected --sampler ddim; got --sampler langevin"),
    (["--step-size", "-1"], "--step-size"),
])
def test_sampler_options_that_do_not_apply_are_refused_in_one_line(score_run, tmp_path, capsys, args, message):
    code, _, err = run(["sample", score_run, "-n", "4", "--out", tmp_path / "x.npy", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_sample_and_diagnose_from_the_cli(score_run, tmp_path, capsys):
    code, out, err = run(["sample", score_run, "-n", "16", "--sampler", "pc", "--out", tmp_path / "pc.png"], capsys)
    assert code == 0 and (tmp_path / "pc.png").stat().st_size > 0, err
    code, out, err = run(["diagnose", score_run, "--max-examples", "100"], capsys)
    assert code == 0, err
    report = json.loads((score_run / "diagnostics.json").read_text())
    assert "score-matching loss" in out and len(report["dsm"]["J"]) == 6 and "active_units" not in report
    assert "level_terms.png" in report["files"] and (score_run / "level_terms.png").exists()


def test_a_conditional_run_is_diagnosed_only_with_valid_labels(tmp_path, capsys):
    """Labels outside 0..C-1 are refused in one line before any tracing."""
    code, _, err = run(["fit", "cvae", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--quiet",
                        "--out", tmp_path / "c"], capsys)
    assert code == 0, err
    r = load_run(tmp_path / "c")
    x, y, _ = r.eval_data()
    from ppl_dgm.runs import diagnose_run

    with pytest.raises(InputError, match=r"expected labels in 0..9; bad has labels in 0..12"):
        diagnose_run(r, x[:20], torch.full((20,), 12).index_fill(0, torch.tensor([0]), 0), name="bad")
    with pytest.raises(InputError, match="needs labels"):
        evaluate_run(r, x[:20], None, name="bad")


@pytest.mark.parametrize("sampler", ["langevin", "pc", "ode"])
def test_sample_draws_the_trajectory_of_each_sampler(score_run, ddpm_run, tmp_path, capsys, sampler):
    code, out, err = run(["sample", score_run, "-n", "50", "--sampler", sampler, "--out", tmp_path / "x.npy",
                          "--trajectory", tmp_path / "t.png"], capsys)
    assert code == 0 and (tmp_path / "t.png").stat().st_size > 0 and "trajectory" in out, err
    code, out, err = run(["sample", ddpm_run, "-n", "50", "--sampler", sampler, "--out", tmp_path / "y.npy",
                          "--trajectory", tmp_path / "u.png"], capsys)
    assert code == 0 and (tmp_path / "u.png").stat().st_size > 0, err


def test_trajectory_is_refused_for_families_without_samplers(tmp_path, capsys):
    code, _, err = run(["fit", "ppca", "--latent-dim", "2", "--out", tmp_path / "p"], capsys)
    assert code == 0
    code, _, err = run(["sample", tmp_path / "p", "--out", tmp_path / "x.npy", "--trajectory", tmp_path / "t.png"],
                       capsys)
    assert code == 2 and "--trajectory needs a family with a choice of samplers (ddpm, score)" in err
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "t.png").exists()

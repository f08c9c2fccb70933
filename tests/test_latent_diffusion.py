"""Latent diffusion (issue 12 item 3, notes 004): a DDPM on a fitted VAE's posterior means, decoded by the VAE."""

import json

import numpy as np
import pytest
import torch

from ppl_dgm.runs import load_run
from ppl_dgm.runs.store import encoded_dataset

from .conftest import run_cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ppl_dgm.cli import main

    root = tmp_path_factory.mktemp("ldm")
    for args in (["fit", "vae", "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--out", root / "vae"],
                 ["fit", "ddpm", "--latent-of", root / "vae", "--epochs", "2", "--timesteps", "20", "--hidden", "32,32",
                  "--out", root / "ldm"]):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in [*args, "--quiet"]])
        assert info.value.code == 0
    return root


def test_the_ddpm_models_the_vae_posterior_means(runs):
    vae, ldm = load_run(runs / "vae"), load_run(runs / "ldm")
    ds = encoded_dataset(vae)
    own = vae.dataset()
    torch.testing.assert_close(ds.x_train, vae.model.encode_mean(own.x_train))
    assert ds.shape == (4,) and ldm.shape == (4,) and ldm.sample_shape == (8, 8)
    cfg = json.loads((runs / "ldm" / "config.json").read_text())
    assert cfg["data"]["latent_of"] == str((runs / "vae").absolute()) and cfg["model"]["x_dim"] == 4
    x, _, name = ldm.eval_data()
    assert x.shape == (len(own.x_test), 4) and name.startswith("latents of vae")


def test_samples_are_decoded_images(runs, tmp_path, capsys):
    code, out, err = run_cli(["sample", runs / "ldm", "-n", "5", "--out", tmp_path / "s.npy"], capsys)
    x = np.load(tmp_path / "s.npy")
    assert code == 0 and x.shape == (5, 8, 8) and 0 <= x.min() and x.max() <= 1, err
    ldm = load_run(runs / "ldm")
    torch.manual_seed(0)
    z = ldm.model.sample(5)
    torch.manual_seed(0)
    with torch.no_grad():
        np.testing.assert_allclose(ldm.decode(ldm.model.sample(5)).numpy(), ldm.decoder.model.decode_mean(z).numpy())
    assert {p.name for p in (runs / "ldm").glob("*.png")} >= {"samples.png", "trajectory.png"}


def test_evaluate_scores_latents_and_refusals(runs, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", runs / "ldm", "--json"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["dim"] == 4, err
    code, _, err = run_cli(["evaluate", runs / "ldm", "--dataset", "digits"], capsys)
    assert code == 2 and "scores its encoder run's own held-out data" in err
    code, _, err = run_cli(["fit", "ddpm", "--latent-of", runs / "vae", "--dataset", "digits", "--out",
                            tmp_path / "x"], capsys)
    assert code == 2 and "--latent-of takes the encoder run's own data" in err
    code, _, err = run_cli(["fit", "ddpm", "--latent-of", runs / "ldm", "--epochs", "1", "--out", tmp_path / "y"],
                           capsys)
    assert code == 2 and "--latent-of needs a family with an encoder" in err and not (tmp_path / "y").exists()

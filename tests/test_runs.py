"""Run folders are safe: refusals, the lock, clean failed starts, resume rules, best.pt, divergence, config checks."""

import json
import os

import numpy as np
import pytest
import torch

from ppl_dgm.errors import CheckpointError, DivergenceError, InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.models import VAE, get_family
from ppl_dgm.runs import DataSpec, load_run, train_run

TINY = dict(epochs=2, hidden=(8,), latent_dim=2, checkpoint_every=1)


def _fit(out, family="vae", resume=False, overwrite=False, **kw):
    fam = get_family(family)
    opts = fam.config(**{**(TINY if fam.trainer == "svi" else {}), **kw})
    data = DataSpec("digits", binarize="static") if fam.trainer == "svi" else DataSpec("moons")
    return train_run(fam, opts, data, out=out, resume=resume, overwrite=overwrite, progress=False,
                     echo=lambda m: None)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("runs") / "vae").path


def test_a_run_is_never_written_over_without_resume_or_overwrite(vae_run, tmp_path):
    import shutil

    d = tmp_path / "r"
    shutil.copytree(vae_run, d)
    before = (d / "config.json").read_text()
    with pytest.raises(InputError, match="already holds a run; pass --resume .* --overwrite"):
        _fit(d, "gmm", n_components=2)
    with pytest.raises(InputError, match="holds a 'vae' run; got `fit gmm`"):
        _fit(d, "gmm", resume=True)
    assert (d / "config.json").read_text() == before
    run = _fit(d, "gmm", overwrite=True, n_components=2)
    assert run.family.name == "gmm" and not (d / "best.pt").exists()  # the VAE's files went with it


def test_lock_refuses_a_concurrent_fit_and_takes_over_a_stale_one(tmp_path):
    d = tmp_path / "locked"
    d.mkdir()
    import socket

    (d / ".lock").write_text(f"{socket.gethostname()}:{os.getpid()}")  # a live process holds it
    with pytest.raises(InputError, match="being written by another fit"):
        _fit(d)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (d / ".lock").write_text(f"{socket.gethostname()}:{dead}")
    run = _fit(d)
    assert run.path == d and not (d / ".lock").exists()


def test_a_failed_start_leaves_nothing_and_stale_temporaries_are_cleaned(vae_run, tmp_path):
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        _fit(tmp_path / "boom", lr=1e6, epochs=3)
    assert not (tmp_path / "boom").exists()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda"):
            train_run("vae", get_family("vae").config(**TINY), DataSpec("digits"), out=tmp_path / "c",
                      device="cuda", progress=False, echo=lambda m: None)
        assert not (tmp_path / "c").exists()
    import shutil

    d = tmp_path / "tmp"
    shutil.copytree(vae_run, d)
    (d / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a file")
    _fit(d, resume=True, epochs=3)
    assert not list(d.glob(".*.tmp"))


def test_resume_rules(vae_run, tmp_path):
    import shutil

    d = tmp_path / "res"
    shutil.copytree(vae_run, d)
    with pytest.raises(InputError, match="--epochs may only grow; the run was set to 2 epochs; got 1"):
        _fit(d, resume=True, epochs=1)
    (d / "checkpoint.pt").unlink()
    history = (d / "history.json").read_text()
    with pytest.raises(InputError, match="expected .*checkpoint.pt to continue from; found none"):
        _fit(d, resume=True, epochs=4)
    assert (d / "history.json").read_text() == history


def test_best_checkpoint_is_the_best_held_out_epoch(vae_run):
    last, best = load_run(vae_run), load_run(vae_run, checkpoint="best")
    hist = last.history
    i = int(np.argmax([h["test_elbo"] for h in hist]))
    state = torch.load(vae_run / "best.pt", weights_only=True)
    assert state["epoch"] == hist[i]["epoch"] and state["test_elbo"] == pytest.approx(hist[i]["test_elbo"])
    assert best.checkpoint == "best.pt" and last.checkpoint == "checkpoint.pt"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, digits):
    from ppl_dgm.inference.callbacks import Callback

    class Explode(Callback):  # at the start of epoch 3, decoder weights blown up 1000-fold (the loss stays finite)
        def on_epoch_start(self, run):
            if run.epoch == 2:
                with torch.no_grad():
                    for p in run.model.decoder.parameters():
                        p.mul_(1e3)

    torch.manual_seed(0)
    vae = VAE(digits.dim, latent_dim=2, hidden=[8])
    with pytest.raises(DivergenceError) as info:
        fit_svi(vae, digits.x_train, epochs=5, out_dir=tmp_path, checkpoint_every=1, progress=False,
                callbacks=[Explode()])
    assert "last good checkpoint" in str(info.value)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] <= 2 and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("model"), "expected a 'model' section"),
    (lambda c: c.pop("train"), "expected a 'train' section"),
    (lambda c: c["data"].update(shape=[8, -8]), "data.shape as a list of positive integers"),
    (lambda c: c["data"].update(seed=-1), "data.seed as an integer >= 0"),
])
def test_broken_config_is_one_line(vae_run, tmp_path, edit, message):
    import shutil

    d = tmp_path / "cfg"
    shutil.copytree(vae_run, d)
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_run(d)


def test_corrupt_history_and_unresumable_checkpoint(vae_run, tmp_path):
    import shutil

    d = tmp_path / "h"
    shutil.copytree(vae_run, d)
    (d / "history.json").write_text("[{oops")
    with pytest.raises(CheckpointError, match="history.json: expected JSON"):
        load_run(d)
    shutil.copy(vae_run / "history.json", d / "history.json")
    state = torch.load(d / "checkpoint.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, d / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="expected a resumable checkpoint .* without optimizer"):
        _fit(d, resume=True, epochs=3)


def test_fit_svi_checks_its_data(digits):
    vae = VAE(digits.dim, latent_dim=2, hidden=[8])
    x = digits.x_train[:64]
    fit_svi(vae, x.double(), epochs=1, progress=False)  # float64 data: cast to the module's float32
    bad = x.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(InputError, match="expected finite real training data; got NaN or inf in 1 values"):
        fit_svi(vae, bad, epochs=1, progress=False)
    with pytest.raises(InputError, match=r"expected x of shape \(N, 64\); got shape \(64, 10\)"):
        fit_svi(vae, x[:, :10], epochs=1, progress=False)
    with pytest.raises(InputError, match=r"Bernoulli likelihood expects values in \[0, 1\]; got values in \[0, 5"):
        fit_svi(vae, x * 5, epochs=1, progress=False)
    with pytest.raises(InputError, match="expected latent_dim as a positive integer; got 2.5"):
        VAE(64, latent_dim=2.5)


def test_non_finite_weights_and_changed_data_are_reported(vae_run, tmp_path):
    import shutil

    d = tmp_path / "nan"
    shutil.copytree(vae_run, d)
    state = torch.load(d / "checkpoint.pt", weights_only=True)
    next(iter(state["model"].values())).fill_(float("nan"))
    torch.save(state, d / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="expected finite parameters; 'encoder.0.weight' holds NaN"):
        load_run(d)
    x = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = train_run("vae", get_family("vae").config(epochs=1, hidden=(4,), latent_dim=2), DataSpec(
        path=str(tmp_path / "x.npy"), val_fraction=0.25), out=tmp_path / "f", progress=False, echo=lambda m: None)
    assert run.config["data"]["path"] == str((tmp_path / "x.npy").absolute())
    assert run.config["data"]["fingerprints"]["path"]["size"] == (tmp_path / "x.npy").stat().st_size
    np.save(tmp_path / "x.npy", x[::-1])
    from ppl_dgm.runs.store import DataChangedWarning

    with pytest.warns(DataChangedWarning, match="has changed since the run was fitted"):
        run.dataset()


def test_save_run_refuses_what_is_not_a_family_model_and_writes_nothing(tmp_path):
    from ppl_dgm.runs import save_run

    for bad in (object(), torch.nn.Linear(2, 2)):
        with pytest.raises(InputError, match=f"save_run: expected a model of a ppl_dgm family .*; got "
                                             f"{type(bad).__name__}"):
            save_run(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert load_run(save_run(VAE(4, 2, [8]), tmp_path / "run")).family.name == "vae"

"""Every CLI subcommand runs; every bad input gives one line and exit status 2."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ppl_dgm.cli import main

from .conftest import run_cli as run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    with pytest.raises(SystemExit) as info:
        main(["fit", "vae", "--out", str(out), "--epochs", "3", "--hidden", "32", "--latent-dim", "4", "--quiet"])
    assert info.value.code == 0
    return out


def test_fit_writes_run_dir(run_dir):
    for name in ("config.json", "checkpoint.pt", "history.json", "elbo.png", "samples.png", "reconstructions.png"):
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["family"] == "vae" and cfg["data"]["binarize"] == "dynamic" and cfg["model"]["latent_dim"] == 4
    assert len(json.loads((run_dir / "history.json").read_text())) == 3


def test_evaluate_json(run_dir, capsys):
    code, out, _ = run(["evaluate", run_dir, "--iwae-k", "20", "--json"], capsys)
    assert code == 0
    res = json.loads(out.strip().splitlines()[-1])
    for key in ("elbo", "reconstruction", "kl", "log_likelihood", "bits_per_dim", "n"):
        assert key in res
    assert res["n"] == 359 and res["log_likelihood"] >= res["elbo"]
    assert res["elbo"] == pytest.approx(res["reconstruction"] - res["kl"])
    code, out, _ = run(["evaluate", run_dir, "--iwae-k", "5"], capsys)
    assert code == 0 and "bits/dim" in out


def test_evaluate_on_npy(run_dir, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((12, 8, 8)))
    code, out, _ = run(["evaluate", run_dir, "--data", tmp_path / "x.npy", "--iwae-k", "3", "--json"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["n"] == 12


def test_sample_npy_and_png(run_dir, tmp_path, capsys):
    code, _, _ = run(["sample", run_dir, "-n", "5", "--out", tmp_path / "s.npy"], capsys)
    assert code == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (5, 8, 8) and set(np.unique(x)) <= {0.0, 1.0}
    code, _, _ = run(["sample", run_dir, "-n", "9", "--mean", "--out", tmp_path / "s.png"], capsys)
    assert code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_list(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0 and "vae" in out and "fashion-mnist" in out and "pinwheel" in out


def test_resume_extends_run(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    code, _, err = run(["fit", "vae", "--out", d, "--resume", "--epochs", "4", "--quiet"], capsys)
    assert code == 0, err
    assert len(json.loads((d / "history.json").read_text())) == 4


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "ppl_dgm", "list"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "families:" in r.stdout


def _bad(tmp_path):
    rng = np.random.default_rng(0)
    nan = rng.random((20, 4))
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "inf.npy", np.full((20, 4), np.inf))
    np.save(tmp_path / "rank1.npy", rng.random(20))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    np.save(tmp_path / "wide.npy", rng.random((20, 4)) * 5)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    (tmp_path / "afile").write_text("x")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["fit", "vae", "--data", "{t}/nan.npy"], "expected finite values; got 1 NaN and 0 inf"),
    (["fit", "vae", "--data", "{t}/inf.npy"], "expected finite values; got 0 NaN and 80 inf"),
    (["fit", "vae", "--data", "{t}/rank1.npy"], "rank >= 2; got shape (20,)"),
    (["fit", "vae", "--data", "{t}/empty.npy"], "expected at least one example"),
    (["fit", "vae", "--data", "{t}/wide.npy"], "a Bernoulli likelihood expects values in [0, 1]; got values in"),
    (["fit", "vae", "--data", "{t}/missing.npy"], "expected a .npy or .npz file"),
    (["fit", "vae", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["fit", "transformer"], "unknown model 'transformer'; expected one of"),
    (["fit", "vae", "--likelihood", "poisson"], "Invalid value for '--likelihood'"),
    (["fit", "vae", "--hidden", "a,b"], "--hidden: expected a size or comma-separated sizes"),
    (["fit", "vae", "--dataset", "digits", "--data", "{t}/wide.npy"], "expected one of --dataset or --data"),
    (["fit", "vae", "--epochs", "1", "--out", "{t}/afile"], "expected a directory"),
    (["evaluate", "{t}/nowhere"], "expected a run directory"),
    (["sample", "{t}", "-n", "2", "--out", "{t}/x.txt"], "expected a file ending in .npy or .png"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, message):
    t = _bad(tmp_path)
    code, out, err = run([a.format(t=t) for a in args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert not any(p.name.startswith("vae-") for p in t.iterdir())  # nothing half-written


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root can write into a read-only directory")
def test_unwritable_out_dir(tmp_path, capsys):
    t = _bad(tmp_path)
    code, _, err = run(["fit", "vae", "--epochs", "1", "--out", t / "ro" / "run"], capsys)
    assert code == 2 and "must be writable" in err


def test_unwritable_out_dir_path_under_file(tmp_path, capsys):
    t = _bad(tmp_path)
    code, _, err = run(["fit", "vae", "--epochs", "1", "--out", t / "afile" / "run"], capsys)
    assert code == 2 and "must be writable" in err and len(err.strip().splitlines()) == 1


def test_corrupt_and_foreign_checkpoints(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(run_dir, d)
    (d / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    code, _, err = run(["evaluate", d], capsys)
    assert code == 2 and "expected a ppl_dgm checkpoint" in err and len(err.strip().splitlines()) == 1
    torch.save({"format": "somebody-else/3", "weights": torch.zeros(2)}, d / "checkpoint.pt")
    code, _, err = run(["sample", d, "--out", tmp_path / "s.npy"], capsys)
    assert code == 2 and "not a ppl_dgm checkpoint" in err
    torch.save({"format": "ppl_dgm.checkpoint/1", "family": "gmm", "model": {}}, d / "checkpoint.pt")
    code, _, err = run(["evaluate", d], capsys)
    assert code == 2 and "expected a checkpoint of family 'vae'" in err
    (d / "config.json").write_text("{oops")
    code, _, err = run(["evaluate", d], capsys)
    assert code == 2 and "expected JSON" in err


class Arbitrary:
    """An object a pickle-based checkpoint could smuggle in."""


def test_pickled_object_refused(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "p"
    shutil.copytree(run_dir, d)
    torch.save({"format": "ppl_dgm.checkpoint/1", "x": Arbitrary()}, d / "checkpoint.pt")
    code, _, err = run(["evaluate", d], capsys)
    assert code == 2 and "could not read it" in err


def test_dimension_mismatch_at_evaluate(run_dir, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((5, 3)))
    code, _, err = run(["evaluate", run_dir, "--data", tmp_path / "x.npy"], capsys)
    assert code == 2 and "expects examples of 64 values" in err


def test_existing_run_needs_resume(run_dir, capsys):
    code, _, err = run(["fit", "vae", "--out", run_dir, "--epochs", "1"], capsys)
    assert code == 2 and "already holds a run; pass --resume" in err


def test_overwrite_replaces_a_run(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "o"
    shutil.copytree(run_dir, d)
    (d / "stale.png").write_bytes(b"old picture")
    code, _, err = run(["fit", "vae", "--out", d, "--epochs", "1", "--hidden", "8", "--latent-dim", "3", "--quiet",
                        "--overwrite"], capsys)
    assert code == 0, err
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == 3 and len(json.loads((d / "history.json").read_text())) == 1
    assert not (d / "stale.png").exists()


def test_test_data_and_val_fraction_are_stored(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.random((30, 4)).astype("float32"))
    np.save(tmp_path / "test.npy", rng.random((7, 4)).astype("float32"))
    common = ["fit", "gmm", "--components", "2", "--data", tmp_path / "train.npy"]
    code, _, err = run([*common, "--test-data", tmp_path / "test.npy", "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "a" / "config.json").read_text())["data"]
    assert data["test_path"] == str(tmp_path / "test.npy") and data["path"] == str(tmp_path / "train.npy")
    code, out, _ = run(["evaluate", tmp_path / "a", "--json"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["n"] == 7
    code, _, err = run([*common, "--val-fraction", "0.5", "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["val_fraction"] == 0.5
    code, out, _ = run(["evaluate", tmp_path / "b", "--json"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["n"] == 15
    code, _, err = run([*common, "--val-fraction", "1", "--out", tmp_path / "c"], capsys)
    assert code == 2 and "--val-fraction" in err and not (tmp_path / "c").exists()


def test_resume_takes_the_runs_own_options_and_refuses_others(run_dir, tmp_path, capsys):
    out = tmp_path / "vae"
    shutil.copytree(run_dir, out)
    # the command that started the run, with --resume and more epochs, continues it
    code, _, err = run(["fit", "vae", "--out", out, "--epochs", "4", "--hidden", "32", "--latent-dim", "4", "--quiet",
                        "--resume", "--seed", "0", "--dataset", "digits", "--binarize", "dynamic"], capsys)
    assert code == 0, err
    assert len(json.loads((out / "history.json").read_text())) == 4
    for args, message in [(["--val-fraction", "0.5"], "the run has --val-fraction 0.2, got 0.5"),
                          (["--hidden", "64"], "the run has --hidden 32, got 64"),
                          (["--seed", "1"], "the run has --seed 0, got 1"),
                          (["--data-dir", tmp_path], f"the run has --data-dir none, got {tmp_path}")]:
        code, _, err = run(["fit", "vae", "--out", out, "--resume", *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert len(json.loads((out / "history.json").read_text())) == 4
    code, _, err = run(["fit", "vae", "--resume", "--epochs", "5"], capsys)
    assert code == 2 and "--resume: expected --out, the run directory to continue" in err


@pytest.mark.parametrize("which, name", [("last", "checkpoint.pt"), ("best", "best.pt")])
def test_checkpoint_choice_is_reported(run_dir, tmp_path, capsys, which, name):
    code, out, _ = run(["evaluate", run_dir, "--iwae-k", "2", "--checkpoint", which, "--json"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["checkpoint"] == name
    code, out, _ = run(["evaluate", run_dir, "--iwae-k", "2", "--checkpoint", which], capsys)
    assert code == 0 and f"parameters from {name}" in out.splitlines()[0]
    code, out, _ = run(["sample", run_dir, "-n", "2", "--out", tmp_path / "s.npy", "--checkpoint", which], capsys)
    assert code == 0 and out.strip().endswith(f"(parameters from {name})")


def test_checkpoint_option_reads_that_file(run_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(run_dir, d)
    (d / "best.pt").write_bytes(b"truncated")
    code, _, err = run(["evaluate", d, "--iwae-k", "1", "--checkpoint", "best"], capsys)
    assert code == 2 and "best.pt" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["evaluate", d, "--iwae-k", "1", "--checkpoint", "last"], capsys)
    assert code == 0, err
    (d / "best.pt").unlink()
    code, _, err = run(["latent", d, "reconstruct", "--checkpoint", "best", "--out", tmp_path / "r.png"], capsys)
    assert code == 2 and "no best.pt" in err


def test_threads_option_sets_torch_threads(run_dir, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        code, _, _ = run(["sample", run_dir, "-n", "2", "--out", tmp_path / "s.npy", "--threads", "2"], capsys)
        assert code == 0 and torch.get_num_threads() == 2
        code, _, _ = run(["sample", run_dir, "-n", "2", "--out", tmp_path / "s.npy"], capsys)  # auto: a small model
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_resume_and_overwrite_together_refused(run_dir, capsys):
    before = (run_dir / "checkpoint.pt").read_bytes()
    code, _, err = run(["fit", "vae", "--out", run_dir, "--resume", "--overwrite", "--epochs", "9"], capsys)
    assert code == 2 and "expected one of --resume" in err and "got both" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("args", [["fit", "vae", "--lr", "nan"], ["fit", "gmm", "--tol", "inf"],
                                  ["fit", "vae", "--val-fraction", "nan"],
                                  ["sample", ".", "--out", "s.png", "--eta", "nan"],
                                  ["latent", ".", "traverse", "--out", "t.png", "--limit", "inf"]])
def test_non_finite_option_values_refused(args, capsys):
    code, _, err = run(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "expected a finite number" in err

"""Every command x every family: it works, or it refuses in one line naming the families that can (exit 2).

The expected outcome of each pair is written out here, not read from the registry, so a change in what a
family can do has to change this table too.  Every family added to the registry gets a row.
"""

import json
import re

import numpy as np
import pytest

from ppl_dgm.cli import main
from ppl_dgm.models import REGISTRY

from .conftest import run_cli as run

TINY = {
    "vae": ["--epochs", "1", "--hidden", "8", "--latent-dim", "2"],
    "cvae": ["--epochs", "1", "--hidden", "8", "--latent-dim", "2"],
    "ae": ["--epochs", "1", "--hidden", "8", "--latent-dim", "2"],
    "hvae": ["--epochs", "1", "--hidden", "8", "--latent-dim", "2"],
    "vqvae": ["--epochs", "1", "--hidden", "8", "--n-codes", "4", "--code-dim", "2"],
    "ddpm": ["--dataset", "moons", "--epochs", "1", "--batch-size", "1024", "--timesteps", "20", "--hidden", "16,16"],
    "score": ["--dataset", "moons", "--epochs", "1", "--batch-size", "1024", "--levels", "5", "--hidden", "16,16"],
    "classifier": ["--epochs", "1", "--hidden", "8", "--noise-conditional", "--timesteps", "20"],
    "gmm": ["--dataset", "moons", "-k", "2"],
    "ppca": ["--latent-dim", "2"],
    "flow": ["--epochs", "1", "--layers", "2", "--hidden", "8"],
    "fvsbn": ["--epochs", "1"],
    "pixelcnn": ["--epochs", "1", "--channels", "4", "--layers", "1"],
    "gan": ["--epochs", "1", "--hidden", "8", "--latent-dim", "2"],
}

# command -> the families for which it works (all others must refuse in one line)
WORKS = {
    "evaluate": {"vae", "cvae", "hvae", "vqvae", "ddpm", "score", "classifier", "gmm", "ppca", "fvsbn", "pixelcnn",
                 "flow"},
    "evaluate --exact": {"ddpm", "score"},
    "evaluate --samples": set(TINY) - {"classifier"},  # digits: the digits scorer's features; moons: raw coordinates
    "sample": set(TINY) - {"classifier"},
    "sample --mean": {"vae", "cvae", "ae", "hvae", "vqvae", "ppca", "gan"},
    "sample --label": {"cvae"},
    "sample --sampler": {"ddpm", "score"},
    "latent": {"vae", "cvae", "ae", "hvae", "vqvae", "ppca", "gan"},
    "diagnose": {"vae", "cvae", "ae", "hvae", "vqvae", "ddpm", "score"},
}


def test_every_family_has_a_row():
    assert set(TINY) == set(REGISTRY)


@pytest.fixture(scope="module", autouse=True)
def _scorer_home(tmp_path_factory):
    """`evaluate --samples` trains a digits scorer once, by a tiny recipe, into a temporary PPL_DGM_HOME."""
    from ppl_dgm.runs.quality import SCORER_RECIPES

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PPL_DGM_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setitem(SCORER_RECIPES, "mlp", {**SCORER_RECIPES["mlp"], "hidden": [16], "epochs": 2})
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per family."""
    root = tmp_path_factory.mktemp("matrix")
    for name, args in TINY.items():
        with pytest.raises(SystemExit) as info:
            main(["fit", name, *args, "--out", str(root / name), "--quiet"])
        assert info.value.code == 0, name
    return {name: root / name for name in TINY}


def _args(command: str, run_dir, tmp):
    return {
        "evaluate": ["evaluate", run_dir, "--iwae-k", "3", "--json"],
        "evaluate --exact": ["evaluate", run_dir, "--exact", "--max-examples", "20", "--rtol", "1e-3", "--atol",
                             "1e-3"],
        "evaluate --samples": ["evaluate", run_dir, "--samples", "20", "--json"],
        "sample": ["sample", run_dir, "-n", "4", "--out", tmp / "s.npy"],
        "sample --mean": ["sample", run_dir, "-n", "4", "--mean", "--out", tmp / "m.npy"],
        "sample --label": ["sample", run_dir, "-n", "4", "--label", "1", "--out", tmp / "l.npy"],
        "sample --sampler": ["sample", run_dir, "-n", "4", "--sampler", "ode", "--rtol", "1e-3",
                             "--out", tmp / "d.png"],
        "latent": ["latent", run_dir, "interpolate", "--steps", "3", "--out", tmp / "i.png"],
        "diagnose": ["diagnose", run_dir, "--iwae-k", "3", "--max-examples", "40"],
    }[command]


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("command", list(WORKS))
def test_command_family_pair(runs, family, command, tmp_path, capsys):
    code, out, err = run(_args(command, runs[family], tmp_path), capsys)
    assert "Traceback" not in err
    if family in WORKS[command]:
        assert code == 0, err
    else:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert "needs" in lines[0] and f"got {family!r}" in lines[0]
        assert any(f in lines[0] for f in WORKS[command] - {family})  # names the families that can
        if command in ("evaluate", "sample", "latent", "diagnose"):  # and only those (no option narrows them)
            listed = re.search(r" \(([^()]*)\); got ", lines[0]).group(1)
            assert set(listed.split(", ")) == WORKS[command], lines[0]
        if command == "diagnose" and family in ("gmm", "ppca", "flow"):  # exact likelihoods: says what to run
            assert lines[0].endswith(f"`ppl-dgm evaluate {runs[family]}` reports its exact log-likelihood")


def test_outputs_have_the_promised_content(runs, tmp_path, capsys):
    code, out, _ = run(["evaluate", runs["gmm"], "--json"], capsys)
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and res["n"] == 4000 and res["bic"] > -2 * res["log_likelihood"] * res["n"]
    code, out, _ = run(["sample", runs["cvae"], "-n", "3", "--label", "7", "--out", tmp_path / "x.npy"], capsys)
    assert code == 0 and np.load(tmp_path / "x.npy").shape == (3, 8, 8)
    code, out, _ = run(["diagnose", runs["ddpm"], "--max-examples", "40"], capsys)
    assert code == 0 and "chain ELBO" in out and "active units" not in out  # per-step terms, not units of x_t
    report = json.loads((runs["ddpm"] / "diagnostics.json").read_text())
    assert len(report["chain"]["L_t"]) == 20 and "active_units" not in report
    code, out, _ = run(["diagnose", runs["hvae"], "--iwae-k", "3", "--max-examples", "40"], capsys)
    assert code == 0 and "KL per layer: z_1" in out


def test_list_json_is_machine_readable(capsys):
    code, out, _ = run(["list", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and set(info["families"]) == set(TINY) and "digits" in info["datasets"]
    assert info["families"]["gmm"]["trainer"] == "em" and info["families"]["gmm"]["exact_likelihood"]
    assert info["families"]["ppca"]["encoder"]
    assert info["families"]["ddpm"]["samplers"] == ["ddpm", "ddim", "langevin", "pc", "ode"]
    assert "latent_dim" in info["families"]["vae"]["options"]

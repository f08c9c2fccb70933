"""The help is instant: `import ppl_dgm.cli`, `ppl-dgm --help` and `ppl-dgm fit --help` import no torch;
the lazy package namespaces keep their public names; run files get the usual file mode; --threads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ppl_dgm
import ppl_dgm.models
from ppl_dgm import utils
from ppl_dgm.errors import InputError, NonFiniteError
from ppl_dgm.models import REGISTRY

from .conftest import run_cli as run

HEAVY = ("torch", "numpy", "pyro", "sklearn", "matplotlib", "jax", "scipy")

_PROBE = """
import sys
from ppl_dgm.cli import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
print("LOADED", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})))
"""


@pytest.mark.parametrize("argvs", [[], [["--help"]], [["fit", "--help"]], [[]], [["--version"]]],
                         ids=["import", "help", "fit-help", "bare", "version"])
def test_help_imports_no_torch(argvs):
    """In a fresh interpreter: the CLI and its top-level and fit help load none of the heavy libraries."""
    code = _PROBE.format(argvs=argvs, heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "LOADED []", r.stdout[-500:]


def test_import_ppl_dgm_is_lazy():
    code = "import sys, ppl_dgm, ppl_dgm.models, ppl_dgm.utils; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


def test_bare_command_prints_help_exit_0(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: ppl-dgm") and "Commands:" in out and "fit" in out


def test_fit_help_lists_every_family_with_its_summary(capsys):
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    listed = [line.split()[0] for line in out.split("Commands:")[1].strip().splitlines()]
    assert listed == sorted(REGISTRY)
    assert "Variational autoencoder with a standard-normal prior" in out


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_summary_is_the_models_docstring(name):
    """The static summary (no torch needed) is the first line of the model class's docstring."""
    fam = REGISTRY[name]
    assert fam.summary == fam.model.__doc__.strip().splitlines()[0]


def test_family_fit_help_has_its_config_options(capsys):
    code, out, _ = run(["fit", "vae", "--help"], capsys)
    assert code == 0
    for flag in ("--latent-dim", "--epochs", "--threads", "--overwrite", "--test-data", "--val-fraction"):
        assert flag in out, flag


def test_lazy_namespaces_keep_their_names():
    for mod in (ppl_dgm, ppl_dgm.models):
        assert set(mod.__all__) <= set(dir(mod))
        for name in mod.__all__:
            assert getattr(mod, name) is not None, name
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            mod.nope  # noqa: B018
    from ppl_dgm.estimators import PPCA as EstimatorPPCA
    from ppl_dgm.models.vae import VAE

    assert ppl_dgm.VAE is VAE and ppl_dgm.models.VAE is VAE and ppl_dgm.PPCA is EstimatorPPCA
    assert ppl_dgm.REGISTRY is REGISTRY and REGISTRY["ae"].config is REGISTRY["vae"].config


def test_list_json_capabilities_unchanged(capsys):
    code, out, _ = run(["list", "--json"], capsys)
    fams = json.loads(out)["families"]
    assert code == 0 and list(fams) == list(REGISTRY)
    assert fams["ddpm"] == {"trainer": "svi", "bound": "chain", "encoder": False, "conditional": True,
                            "samplers": ["ddpm", "ddim", "langevin", "pc", "ode"],
                            "figures": ["elbo", "samples", "trajectory", "loss_per_t"], "generative": True,
                            "exact_likelihood": False, "ode_likelihood": True, "summary": REGISTRY["ddpm"].summary,
                            "options": fams["ddpm"]["options"]}
    assert "timesteps" in fams["ddpm"]["options"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_mode_follows_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        utils.atomic_write_bytes(tmp_path / "f.bin", b"abc")
        utils.atomic_write_json(tmp_path / "f.json", {"a": 1})
    finally:
        os.umask(old)
    for f in ("f.bin", "f.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == mode, f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.json"]  # no temporaries left


def test_run_files_are_world_readable(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        code, _, err = run(["fit", "gmm", "--dataset", "moons", "--components", "2", "--out", tmp_path / "r"],
                           capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    files = [p for p in (tmp_path / "r").iterdir() if p.is_file() and not p.name.startswith(".")]
    assert {"config.json", "checkpoint.pt", "history.json"} <= {p.name for p in files}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


@pytest.fixture
def threads():
    """set_threads changes the process's thread count: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_set_threads_rule(threads, monkeypatch):
    monkeypatch.setattr(utils, "_DEFAULT_THREADS", [2])  # as if torch had started with 2 threads
    assert utils.set_threads(3) == 3 == torch.get_num_threads()
    assert utils.set_threads("auto", n_params=utils.SMALL_MODEL_PARAMS - 1) == 1 == torch.get_num_threads()
    assert utils.set_threads("auto", n_params=utils.SMALL_MODEL_PARAMS) == 2 == torch.get_num_threads()
    utils.set_threads(1)
    assert utils.set_threads("auto") == 2  # unknown size: torch's default
    for bad in (0, -1, "two", 1.5, True, None):
        with pytest.raises(InputError, match="threads: expected a positive integer or 'auto'"):
            utils.set_threads(bad)


def test_set_threads_remembers_torchs_default(threads, monkeypatch):
    monkeypatch.setattr(utils, "_DEFAULT_THREADS", [])
    before = torch.get_num_threads()
    utils.set_threads(1)
    assert utils._DEFAULT_THREADS == [before] and utils.set_threads("auto", n_params=10**9) == before


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_threads_option_refuses_bad_values(value, capsys):
    code, _, err = run(["fit", "vae", "--threads", value], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: Invalid value for '--threads'"), err


@pytest.mark.parametrize("exc, status", [(InputError("what came\nTrace Shapes:\n Param Sites:"), 2),
                                         (NonFiniteError("loss nan\nat site z"), 1)])
def test_error_is_one_line_whatever_the_message(exc, status, monkeypatch, capsys):
    """Pyro appends the trace shapes to an error raised inside a model: the CLI prints the first line only."""
    from ppl_dgm.cli import commands

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(commands, "load", fail)
    code, out, err = run(["evaluate", "somewhere"], capsys)
    assert code == status and out == "" and err == f"error: {str(exc).splitlines()[0]}\n"

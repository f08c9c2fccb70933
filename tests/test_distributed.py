"""fit_svi under torchrun (gloo on this CPU), --precision and the CUDA paths (skipped without CUDA).

The torchrun tests launch ``python -m torch.distributed.run --standalone --nproc-per-node 2`` in a subprocess
(a free rendezvous port each time); each launch costs about 8 s here (two fresh interpreters import torch and Pyro).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppl_dgm.errors import InputError
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.callbacks import Callback
from ppl_dgm.inference.devices import Precision
from ppl_dgm.inference.distributed import Distributed, launched
from tests.conftest import run_cli
from tests.ddp_worker import fit as fit_worker

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def torchrun(*args, n: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang is killed with its workers
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s: {err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def params(out: Path, name: str = "params.pt") -> dict[str, torch.Tensor]:
    return torch.load(out / name)["params"] if name == "params.pt" else torch.load(out / name)


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_take_the_steps_of_one_and_resume_across_world_sizes(tmp_path):
    # 1 process (here): 2 epochs, and 3 epochs uninterrupted, of a deterministic model (MAP guide, no draws)
    one, three, two = tmp_path / "one", tmp_path / "three", tmp_path / "two"
    fit_worker(str(one), 2)
    fit_worker(str(three), 3)
    torchrun(WORKER, two, 2)
    assert max_diff(params(two), params(one)) < 1e-6  # 2 gloo ranks, global batch 64 = 2 x 32, after 8 steps
    assert max_diff(params(two, "params-rank1.pt"), params(two)) == 0  # every rank ends with the same parameters
    h1, h2 = torch.load(one / "params.pt")["history"], torch.load(two / "params.pt")["history"]
    assert [r["train_elbo"] for r in h2] == pytest.approx([r["train_elbo"] for r in h1], rel=1e-6)
    # the group is freed on leaving it: no gloo thread outlives the interpreter (one that did aborted 5 of 196 runs)
    assert [json.loads((two / f"threads-rank{r}.json").read_text()) for r in (0, 1)] == [0, 0]
    files = {p.name for p in two.iterdir()} - {"params.pt", "params-rank0.pt", "params-rank1.pt",
                                                "threads-rank0.json", "threads-rank1.json"}
    assert files == {"checkpoint.pt", "history.json"}  # written once, by rank 0
    assert len(json.loads((two / "history.json").read_text())) == 2

    fit_worker(str(two), 3, resume=True)  # 2 processes -> 1
    assert max_diff(params(two), params(three)) < 1e-6
    torchrun(WORKER, one, 3, "--resume")  # 1 process -> 2
    assert max_diff(params(one), params(three)) < 1e-6
    assert [r["epoch"] for r in torch.load(one / "params.pt")["history"]] == [1, 2, 3]


def test_cli_under_torchrun_writes_one_run_that_evaluate_reads(tmp_path, capsys):
    out = tmp_path / "run"
    # with the progress bar: rank 0 has a callback the others lack (a hang once: the ranks' broadcasts must pair up)
    done = torchrun("-m", "ppl_dgm", "fit", "vae", "--epochs", "2", "--hidden", "8", "--latent-dim", "2",
                    "--batch-size", "64", "--out", out, timeout=60)
    assert done.stderr.count("writing") == 1 and "2 processes" in done.stderr  # rank 0 alone prints
    assert "fit vae" in done.stderr  # rank 0's progress bar
    assert {"config.json", "checkpoint.pt", "history.json", "samples.png"} <= {p.name for p in out.iterdir()}
    assert not (out / ".lock").exists()
    code, stdout, _ = run_cli(["evaluate", out, "--iwae-k", "5", "--json"], capsys)
    res = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and res["n"] == 359 and -60 < res["elbo"] < -30
    code, _, err = run_cli(["fit", "vae", "--out", out, "--resume", "--epochs", "2", "--quiet"], capsys)  # 2 -> 1
    history = json.loads((out / "history.json").read_text())
    assert code == 0 and [r["epoch"] for r in history] == [1, 2] and all(
        abs(r["train_elbo"]) < 60 for r in history), err


def test_plain_run_has_no_process_group_and_batch_must_divide():
    assert not launched() and not torch.distributed.is_initialized()
    ctx = Distributed(0, 2, 0, torch.device("cpu"))
    assert ctx.check_batch(64) == 32
    with pytest.raises(InputError, match="expected a multiple of 2; got 63"):
        ctx.check_batch(63)


@pytest.mark.parametrize("kw, why", [({"compile_step": True}, "compile_step"), ({"fuse_step": True}, "fuse_step"),
                                      ({"loss": "free-bits"}, "FreeBitsELBO, not a sum over rows")])
def test_data_parallel_refuses_what_does_not_split_by_rows(digits, monkeypatch, kw, why):
    from ppl_dgm.inference import make_objective, svi

    monkeypatch.setattr(svi, "data_parallel", lambda device: Distributed(0, 2, 0, torch.device("cpu")))
    if kw.get("loss") == "free-bits":
        kw = {"loss": make_objective("analytic", free_bits=0.5)}
    with pytest.raises(InputError, match=f"under torchrun \\(data-parallel fit\\); got {why}.*: run it in one"):
        fit_svi(_vae(), digits.x_train[:128], epochs=1, batch_size=64, progress=False, **kw)


class FirstLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, run, step, loss):
        self.losses.append(loss)


def _vae(seed=0):
    from ppl_dgm.models import get_family

    torch.manual_seed(seed)
    return get_family("vae").model(x_dim=64, hidden=(32,), latent_dim=4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_fit_on_cpu_runs_with_float32_elbo(digits, precision):
    x = digits.x_train[:256]
    losses = {}
    for p in ("fp32", precision):
        cb = FirstLosses()
        model = _vae()
        fit_svi(model, x, epochs=1, batch_size=64, progress=False, callbacks=[cb], precision=p, seed=3)
        losses[p] = cb.losses
        assert all(torch.isfinite(q).all() for q in model.parameters())
        assert next(model.parameters()).dtype == torch.float32
    # step 0: same weights, same draws; only the networks' matrix products are rounded to 8 (bf16) / 11 (fp16) bits
    assert losses[precision][0] == pytest.approx(losses["fp32"][0], rel=1e-3)  # measured: 4e-6 (bf16), 2e-6
    model = _vae()
    amp = Precision(precision, torch.device("cpu"), {"model": model})
    from ppl_dgm.inference.objectives import AnalyticELBO

    with amp:
        loss = amp.loss(AnalyticELBO().differentiable_loss)(model.model, model.guide, x[:64])
        with torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
            assert model.decoder(torch.zeros(3, 4)).dtype == torch.float32  # network outputs back in float32
    assert loss.dtype == torch.float32 and amp.handles == []
    assert (amp.scaler is not None) == (precision == "fp16")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_compiled_step_records_the_autocast_step(digits, precision):
    """compile_step under --precision: the recorded graph holds autocast's casts, so the replayed steps are the eager
    low-precision steps bit for bit (and not the float32 ones)."""
    x = digits.x_train[:256]
    losses = {}
    for p, compiled in (("fp32", False), (precision, False), (precision, True)):
        cb = FirstLosses()
        fit_svi(_vae(), x, epochs=1, batch_size=64, progress=False, callbacks=[cb], precision=p, seed=3,
                compile_step=compiled)
        losses[p, compiled] = [float(q) for q in cb.losses]
    assert losses[precision, True] == losses[precision, False]
    assert losses[precision, True] != losses["fp32", False]


def test_precision_is_a_fit_option(tmp_path, capsys):
    code, _, err = run_cli(["fit", "vae", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--precision",
                            "bf16", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["precision"] == "bf16"


@cuda
def test_cuda_fit_and_bf16_autocast(digits):
    model = _vae()
    res = fit_svi(model, digits.x_train[:512], epochs=1, batch_size=128, device="cuda", progress=False,
                  precision="bf16")
    assert next(model.parameters()).is_cuda and res.history[0]["train_elbo"] > -100


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_nccl_two_processes_equal_one(tmp_path):
    done = torchrun("-m", "ppl_dgm", "fit", "vae", "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                    "--device", "cuda", "--out", tmp_path / "run", "--quiet")
    assert "2 processes" in done.stderr and (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_gmm_under_torchrun_is_sharded_em_equal_to_one_process(tmp_path, capsys):
    done = torchrun("-m", "ppl_dgm", "fit", "gmm", "-k", "4", "--out", tmp_path / "two", "--quiet")
    assert "(2 processes, torchrun: sharded EM)" in done.stderr and done.stderr.count("run dir") == 1
    code, _, err = run_cli(["fit", "gmm", "-k", "4", "--out", tmp_path / "one", "--quiet"], capsys)
    assert code == 0, err
    one, two = (torch.load(tmp_path / d / "checkpoint.pt")["model"] for d in ("one", "two"))
    for name in ("weights", "means", "covariances"):  # measured: <= 1.3e-13 relative to the largest entry
        assert float((one[name] - two[name]).abs().max() / one[name].abs().max()) < 1e-11, name
    h1, h2 = (json.loads((tmp_path / d / "history.json").read_text()) for d in ("one", "two"))
    assert [r["log_likelihood"] for r in h2] == pytest.approx([r["log_likelihood"] for r in h1], rel=1e-12)


@pytest.mark.parametrize("args, what", [(["ppca"], "fit ppca` with a closed-form"),
                                        (["gmm", "--backend", "jax"], "fit gmm` with --backend jax")])
def test_cli_em_under_torchrun_refuses_what_it_cannot_shard(tmp_path, capsys, monkeypatch, args, what):
    from ppl_dgm.runs import train

    monkeypatch.setattr(train, "launched", lambda: True)
    code, _, err = run_cli(["fit", *args, "--out", tmp_path / "r", "--quiet"], capsys)
    assert code != 0 and f"torchrun shards EM for `fit gmm --backend torch`; got `{what}" in err
    assert not (tmp_path / "r").exists()


def test_cli_under_torchrun_refuses_the_gan_before_writing(tmp_path, capsys, monkeypatch):
    from ppl_dgm.runs import train

    monkeypatch.setattr(train, "launched", lambda: True)
    monkeypatch.setattr(train, "data_parallel", lambda device: Distributed(0, 2, 0, torch.device("cpu")))
    code, _, err = run_cli(["fit", "gan", "--epochs", "1", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 2 and "got AdversarialObjective, an objective with its own step: run it in one process" in err
    assert not (tmp_path / "r").exists()

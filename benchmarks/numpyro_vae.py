"""The NumPyro backend of the VAE against plain PyTorch and the Pyro path, and both backends' held-out ELBOs.

``speed``: one epoch of a VAE 784-400-20 (MLP, Bernoulli, analytic KL), batch 128, Adam(lr=1e-3), on Fashion-MNIST
binarized once (random binary vectors if it is absent), three ways in one process, alternating, ``--repeats``
times: the hand-written PyTorch loop of ``svi_overhead.py``, ``fit_svi`` (the Pyro family), and the package's NumPyro
loop (``ppl_dgm.numpyro.inference.svi.fit``: ``SVI.update`` under ``jax.jit``, minibatch gather inside the compiled
step, loss read once per epoch).  The NumPyro time is its second epoch's (the first compiles).  Goal: NumPyro at least
1.6x faster per step than plain PyTorch.

``parity``: ``vae``, ``cvae`` and ``hvae`` at their defaults on digits (300 epochs, dynamic binarization), fitted by
``train_run`` with ``backend="pyro"`` and ``"numpyro"``; held-out ELBO and IWAE (k = 1000) by ``evaluate_run`` (both
runs load into the Pyro family).  Goal: within 1 nat.

    python benchmarks/numpyro_vae.py [--only speed|parity] [--repeats 5] [--threads 2] [--out PATH]

Writes benchmarks/results/numpyro_vae.json (or ``--out``; the sections not run are kept from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from svi_overhead import EPOCHS, load_data, ms_per_step, new_vae, paired, plain_loop, timed_epochs, timed_fit

from ppl_dgm.models import get_family
from ppl_dgm.runs import DataSpec, evaluate_run, train_run

OUT = Path(__file__).resolve().parent / "results" / "numpyro_vae.json"


def numpyro_fit(x: np.ndarray, batch_size: int, seed: int) -> dict:
    """Seconds per epoch of the package's NumPyro loop, 2 epochs (the first compiles), as svi_overhead's Times:
    epoch -> (wall, cpu); the cpu figure is the epoch's wall times the whole call's CPU / wall (XLA's threads)."""
    from ppl_dgm.numpyro.inference.svi import fit
    from ppl_dgm.numpyro.models.vae import VAE as TwinVAE

    w0, c0 = time.perf_counter(), time.process_time()
    _, history = fit(TwinVAE(784, latent_dim=20, hidden=(400,), seed=seed), x, epochs=EPOCHS, batch_size=batch_size,
                     lr=1e-3, seed=seed, progress=False)
    share = (time.process_time() - c0) / (time.perf_counter() - w0)
    return {f"epoch{i + 1}": (h["seconds"], h["seconds"] * share) for i, h in enumerate(history)}


def speed(repeats: int, batch_size: int) -> dict:
    x, source = load_data(60_000)
    x_np = x.numpy()
    res = paired({"plain": lambda r: timed_epochs(plain_loop(new_vae(r), x, batch_size, r)),
                  "fit_svi": lambda r: timed_fit(new_vae(r), x, batch_size=batch_size, lr=1e-3, seed=r, progress=False),
                  "numpyro": lambda r: numpyro_fit(x_np, batch_size, r)}, repeats)
    steps = -(-len(x) // batch_size)
    ms = {k: round(v["epoch2"], 3) for k, v in ms_per_step(res, steps).items()}
    speedup = {k: round(1 / v["epoch2"]["wall"], 3) for k, v in res["ratio"].items()}
    return {"data": source, "n": len(x), "batch_size": batch_size, "steps_per_epoch": steps,
            "network": "784-400-20 MLP VAE, Bernoulli, analytic KL", **res,
            "ms_per_step_epoch2": ms, "speedup_over_plain_epoch2_wall": speedup,
            "goal": "numpyro speed-up over plain >= 1.6 (epoch 2: the first NumPyro epoch compiles)"}


def parity() -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vae", "cvae", "hvae"):
            family = get_family(name)
            for backend in ("pyro", "numpyro"):
                t0 = time.perf_counter()
                run = train_run(family, family.config(backend=backend), DataSpec("digits", binarize="dynamic"),
                                out=Path(tmp) / f"{name}-{backend}", progress=False, echo=lambda m: None)
                seconds = time.perf_counter() - t0
                torch.manual_seed(0)
                res = evaluate_run(run, *run.eval_data()[:2], iwae_k=1000)
                rows.append({"family": name, "backend": backend, "epochs": run.history[-1]["epoch"],
                             "fit_seconds": round(seconds, 1), "heldout_elbo": round(res["elbo"], 3),
                             "heldout_iwae_1000": round(res["log_likelihood"], 3)})
                print(rows[-1], flush=True)
    for name in ("vae", "cvae", "hvae"):
        a, b = (next(r for r in rows if r["family"] == name and r["backend"] == k) for k in ("pyro", "numpyro"))
        b["elbo_minus_pyro"] = round(b["heldout_elbo"] - a["heldout_elbo"], 3)
    return {"data": "digits (1,438 train / 359 held out), defaults (300 epochs, dynamic binarization)", "rows": rows,
            "goal": "|ELBO(numpyro) - ELBO(pyro)| < 1 nat"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("speed", "parity"), default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (XLA uses its own pool)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import jax

    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    load0 = os.getloadavg()
    ran = [k for k in ("speed", "parity") if args.only in (None, k)]
    for section in ran:
        result[section] = speed(args.repeats, args.batch_size) if section == "speed" else parity()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    result["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "jax": jax.__version__,
                         "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                         "load_average_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)]}
    result["command"] = ("python benchmarks/numpyro_vae.py" + (f" --only {args.only}" if args.only else "")
                         + f" --repeats {args.repeats} --threads {args.threads}"
                         + (f" --out {args.out}" if args.out != OUT else ""))
    for section in ran:  # each section keeps the run that wrote it (the top level: the last run)
        result[section].update(command=result["command"], machine=result["machine"])
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if "speed" in result:
        s = result["speed"]
        print(f"ms/step (epoch 2) {s['ms_per_step_epoch2']}; speed-up over plain PyTorch "
              f"{s['speedup_over_plain_epoch2_wall']} (goal: numpyro >= 1.6)")


if __name__ == "__main__":
    main()

"""Issue 6 measurements: 2-D toy MMD (DDPM vs a fitted Gaussian, DDIM-50 vs DDPM-1000), HVAE 2 vs 1
layers (held-out log-likelihood), digits DDPM bits/dim and sampling time per image (DDPM vs DDIM).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/diffusion.py [--quick] [--only toy,hvae,digits]

Writes benchmarks/results/diffusion.json (and digits samples to benchmarks/results/ddpm_digits_*.png).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from pyro.infer import Trace_ELBO

from ppl_dgm.data import load_dataset
from ppl_dgm.evaluation import evaluate_model
from ppl_dgm.evaluation.mmd import mmd2
from ppl_dgm.inference import fit_svi
from ppl_dgm.models import DDPM, HVAE
from ppl_dgm.plotting import plot_samples

OUT = Path(__file__).parent / "results"


def toy(name: str, epochs: int) -> dict:
    ds = load_dataset(name)
    torch.manual_seed(0)
    m = DDPM(2)
    t0 = time.perf_counter()
    fit_svi(m, ds.x_train, test=ds.x_test, epochs=epochs, batch_size=128, lr=1e-3, progress=False)
    fit_s = time.perf_counter() - t0
    tr = ds.x_train.numpy()
    gauss = np.random.default_rng(0).multivariate_normal(tr.mean(0), np.cov(tr.T), 4000)
    t0 = time.perf_counter()
    ddpm = m.sample(4000).numpy()
    t_ddpm = time.perf_counter() - t0
    t0 = time.perf_counter()
    ddim = m.sample(4000, sampler="ddim", steps=50, eta=0.0).numpy()
    t_ddim = time.perf_counter() - t0
    plot_samples(ddpm, (2,), OUT / f"ddpm_{name}.png", f"DDPM-1000 on {name}", reference=ds.x_test.numpy())
    plot_samples(ddim, (2,), OUT / f"ddim50_{name}.png", f"DDIM-50 on {name}", reference=ds.x_test.numpy())
    res = {"epochs": epochs, "fit_seconds": fit_s, "mmd2_ddpm1000": mmd2(ddpm, ds.x_test),
           "mmd2_ddim50": mmd2(ddim, ds.x_test), "mmd2_gaussian": mmd2(gauss, ds.x_test),
           "mmd2_test_vs_train": mmd2(tr[:4000], ds.x_test), "sample_seconds_ddpm1000_4000pts": t_ddpm,
           "sample_seconds_ddim50_4000pts": t_ddim, "chain_elbo_nats": m.chain_elbo(ds.x_test[:2000], seed=0).elbo}
    print(name, res, flush=True)
    return res


def hvae(epochs: int) -> dict:
    ds = load_dataset("digits")
    out = {}
    for layers, dims in ((1, (16,)), (2, (16, 16))):
        torch.manual_seed(0)
        m = HVAE(64, layers=layers, latent_dims=dims, hidden=(256,))
        fit_svi(m, ds.x_train, loss=Trace_ELBO(), epochs=epochs, batch_size=128, lr=1e-3, progress=False)
        ev = evaluate_model(m, ds.x_test, iwae_k=500, seed=0)
        out[f"layers_{layers}"] = {"elbo": ev.elbo, "log_likelihood_iwae500": ev.log_likelihood}
        print("hvae", layers, out[f"layers_{layers}"], flush=True)
    out["epochs"] = epochs
    return out


def digits(epochs: int) -> dict:
    ds = load_dataset("digits")
    torch.manual_seed(0)
    m = DDPM(64, image_shape=(8, 8), base_channels=32, t_per_step=4)
    t0 = time.perf_counter()
    fit_svi(m, ds.x_train, epochs=epochs, batch_size=64, lr=2e-4 * 5, progress=False)
    fit_s = time.perf_counter() - t0
    res = {"epochs": epochs, "fit_seconds": fit_s}
    for sampler, kw in (("ddpm", {}), ("ddim", {"steps": 50})):
        t0 = time.perf_counter()
        x = m.sample(64, sampler=sampler, **kw).numpy()
        res[f"seconds_per_image_{sampler}"] = (time.perf_counter() - t0) / 64
        plot_samples(x, (8, 8), OUT / f"ddpm_digits_{sampler}.png", f"digits, {sampler} ({epochs} epochs)")
    ce = m.chain_elbo(ds.x_test, seed=0)
    res.update(elbo_nats=ce.elbo, bits_per_dim=ce.bits_per_dim)
    print("digits", res, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="toy,hvae,digits")
    ap.add_argument("--digits-epochs", type=int, default=400)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "diffusion.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["threads"] = torch.get_num_threads()
    results["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    jobs = a.only.split(",")
    if "toy" in jobs:
        results["toy_checkerboard"] = toy("checkerboard", 5 if a.quick else 50)
    if "hvae" in jobs:
        results["hvae_digits"] = hvae(5 if a.quick else 200)
    if "digits" in jobs:
        results["ddpm_digits"] = digits(2 if a.quick else a.digits_epochs)
    path.write_text(json.dumps(results, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()

"""Issue 11 item 6: fine structure on 2-D toys (five concentric rings, two spirals).

Unbiased RBF-MMD^2 (bandwidth 0.3, ``ppl_dgm.evaluation.mmd.mmd2``) of 4,000 samples to the 4,000 held-out
points (20k points, seeded 80/20 split) for: a Gaussian fitted to the training points; the default
``ppl-dgm fit ddpm`` (through ``ppl_dgm.runs.train_run``); a plain-PyTorch DDPM with the same network, schedule,
optimizer and EMA (a few lines of torch, below), with and without coordinate features.

    OMP_NUM_THREADS=2 python benchmarks/fine_structure.py [--datasets rings,two-spirals] [--quick]
        [--freqs 0,6] [--epochs N]

Writes benchmarks/results/fine_structure.json and fine_structure_<dataset>.png (samples over held-out data).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ppl_dgm.data import load_dataset
from ppl_dgm.evaluation.mmd import mmd2
from ppl_dgm.models.diffusion import DDPMConfig
from ppl_dgm.models.schedule import NoiseSchedule
from ppl_dgm.nn import EpsMLP
from ppl_dgm.plotting import plot_samples
from ppl_dgm.runs import DataSpec, train_run

OUT = Path(__file__).parent / "results"
N_SAMPLES = 4000


def score(samples: np.ndarray, held_out: np.ndarray) -> float:
    return mmd2(samples, held_out, bandwidths=(0.3,), max_n=N_SAMPLES)


def plain_ddpm(x: torch.Tensor, cfg: DDPMConfig, coord_freqs: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """The reference: eps-MSE at one uniform t per example (Ho et al. 2020, Algorithm 1), Adam, cosine lr,
    EMA of the weights, ancestral sampling with sigma_t^2 = beta_t (Algorithm 2).  Returns (samples, seconds)."""
    torch.manual_seed(seed)
    s = NoiseSchedule(cfg.timesteps, cfg.schedule)
    net = EpsMLP(2, cfg.hidden, coord_freqs=coord_freqs)
    ema, decay = copy.deepcopy(net), cfg.ema
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps, n_steps = math.ceil(len(x) / cfg.batch_size), 0
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        opt.param_groups[0]["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        perm = torch.randperm(len(x))
        for i in range(steps):
            x0 = x[perm[i * cfg.batch_size: (i + 1) * cfg.batch_size]]
            t = torch.randint(1, cfg.timesteps + 1, (len(x0),))
            eps = torch.randn_like(x0)
            loss = (net(s.q_sample(x0, t, eps), t) - eps).pow(2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
            with torch.no_grad():  # the bias-corrected EMA: weight (1 - d) / (1 - d^n) on the newest weights
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, (1 - decay) / (1 - decay**n_steps))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        xt = torch.randn(N_SAMPLES, 2)
        for t in range(cfg.timesteps, 0, -1):
            b, a, ab = (s.at(k, t, xt) for k in ("betas", "alphas", "alpha_bars"))
            xt = (xt - b / (1 - ab).sqrt() * ema(xt, torch.tensor(t))) / a.sqrt()
            xt = xt + b.sqrt() * torch.randn_like(xt) if t > 1 else xt
    return xt.numpy(), seconds


def package_ddpm(name: str, cfg: DDPMConfig) -> tuple[np.ndarray, float]:
    """The default ``ppl-dgm fit ddpm --dataset NAME`` (options ``cfg``) into a temporary run directory."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        run = train_run("ddpm", cfg, DataSpec(dataset=name), out=out, progress=False, echo=lambda s: None)
        seconds = time.perf_counter() - t0
        torch.manual_seed(1)
        return run.model.sample(N_SAMPLES).numpy(), seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="rings,two-spirals,checkerboard,moons")
    ap.add_argument("--freqs", default=None, help="coordinate frequencies of the plain reference (default: "
                                                  "0 and the package default)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--no-package", action="store_true", help="only the Gaussian and the plain reference")
    ap.add_argument("--out", default=str(OUT / "fine_structure.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for name in args.datasets.split(","):
        ds = load_dataset(name, seed=0, n_toy=20_000)
        cfg = DDPMConfig(epochs=args.epochs).resolve(ds)
        tr, te = ds.x_train.numpy(), ds.x_test.numpy()
        gauss = np.random.default_rng(0).multivariate_normal(tr.mean(0), np.cov(tr.T), N_SAMPLES)
        res = results.setdefault(name, {})
        res.update({"epochs": cfg.epochs, "mmd2_gaussian": score(gauss, te), "mmd2_train_vs_test": score(tr, te)})
        freqs = [int(f) for f in args.freqs.split(",")] if args.freqs else sorted({0, cfg.coord_freqs})
        for f in freqs:
            x, sec = plain_ddpm(ds.x_train, cfg, f)
            res[f"plain_freqs{f}"] = {"mmd2": score(x, te), "seconds": sec}
            print(name, f"plain torch, {f} coordinate frequencies:", res[f"plain_freqs{f}"], flush=True)
        if not args.no_package:
            x, sec = package_ddpm(name, cfg)
            res["ppl_dgm_default"] = {"mmd2": score(x, te), "seconds": sec, "coord_freqs": cfg.coord_freqs,
                                      "ema": cfg.ema, "lr": cfg.lr, "hidden": list(cfg.hidden)}
            ref = res.get(f"plain_freqs{cfg.coord_freqs}", {}).get("mmd2", math.nan)
            res["ratio_default_to_gaussian"] = res["ppl_dgm_default"]["mmd2"] / res["mmd2_gaussian"]
            res["ratio_default_to_plain"] = res["ppl_dgm_default"]["mmd2"] / ref
            print(name, "ppl-dgm default:", res["ppl_dgm_default"], f"ratio to the Gaussian "
                  f"{res['ratio_default_to_gaussian']:.3f}, to plain torch {res['ratio_default_to_plain']:.3f}",
                  flush=True)
            plot_samples(x, (2,), OUT / f"fine_structure_{name}.png",
                         f"ppl-dgm fit ddpm on {name}: MMD^2 {res['ppl_dgm_default']['mmd2']:.5f} "
                         f"(Gaussian {res['mmd2_gaussian']:.5f})", reference=te)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

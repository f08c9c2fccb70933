"""Issue 11 item 7: a Fashion-MNIST DDPM (UNet, EMA) within about an hour on 2 CPU cores.

Train (the budget: 12 epochs of 60k images, one t per image per step, batch 128 = 5,628 Adam steps):

    OMP_NUM_THREADS=1 ppl-dgm fit ddpm --dataset fashion-mnist --epochs 12 --t-per-step 1 --ema 0.999 \\
        --lr 1e-3 --lr-schedule cosine --checkpoint-every 1 --threads 1 --out runs/fashion-ddpm

then measure it:

    OMP_NUM_THREADS=1 python benchmarks/fashion_ddpm.py runs/fashion-ddpm [--elbo-examples 256] [--ode-examples 32]

Writes benchmarks/results/fashion_ddpm.json and fashion_ddpm_{ddpm1000,ddim50}.png: samples, seconds per image
for DDPM-1000 ancestral sampling and DDIM-50, bits/dim on the test split by the full chain ELBO (every one of
the T steps, a bound on the discrete probability of the 8-bit pixels) and by the probability-flow ODE (a
density at the 256-level grid, Hutchinson with 2 probes; ``ppl_dgm.models.flow_ode``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ppl_dgm.models.flow_ode import ode_log_likelihood
from ppl_dgm.plotting import plot_samples
from ppl_dgm.runs import load_run

OUT = Path(__file__).parent / "results"


def timed_samples(model, n: int, **kw) -> tuple[torch.Tensor, float]:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    x = model.sample(n, **kw)
    return x, (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--elbo-examples", type=int, default=256)
    ap.add_argument("--ode-examples", type=int, default=32)
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    run = load_run(args.run)
    m = run.model
    res: dict = {"run": str(args.run), "threads": torch.get_num_threads(), "config": run.config["train"],
                 "epochs": len(run.history), "fit_seconds_wall": sum(h.get("seconds", 0) for h in run.history),
                 "held_out_elbo_last_epoch": run.history[-1].get("test_elbo")}
    x_test, _, _ = run.eval_data()

    ddpm, res["seconds_per_image_ddpm1000"] = timed_samples(m, args.n)
    ddim, res["seconds_per_image_ddim50"] = timed_samples(m, args.n, sampler="ddim", steps=50)
    res["ddim50_speedup"] = res["seconds_per_image_ddpm1000"] / res["seconds_per_image_ddim50"]
    for name, x in (("ddpm1000", ddpm), ("ddim50", ddim)):
        plot_samples(x.numpy(), run.shape, OUT / f"fashion_ddpm_{name}.png",
                     f"Fashion-MNIST DDPM ({len(run.history)} epochs, EMA): {args.n} samples, "
                     f"{'ancestral, T = 1000' if name == 'ddpm1000' else 'DDIM, 50 steps'}")
    print(f"seconds per image: DDPM-1000 {res['seconds_per_image_ddpm1000']:.3f}, DDIM-50 "
          f"{res['seconds_per_image_ddim50']:.4f} ({res['ddim50_speedup']:.1f}x)", flush=True)

    t0 = time.perf_counter()
    ce = m.chain_elbo(x_test[: args.elbo_examples], seed=0)
    res["chain_elbo"] = {"n": ce.n, "elbo_nats": ce.elbo, "bits_per_dim": ce.bits_per_dim, "L_0": float(ce.L[0]),
                         "L_T": ce.L_T, "seconds": time.perf_counter() - t0}
    print(f"chain ELBO on {ce.n} test images: {ce.bits_per_dim:.4f} bits/dim", flush=True)

    t0 = time.perf_counter()
    ode = ode_log_likelihood(m, x_test[: args.ode_examples], rtol=1e-4, atol=1e-4, probes=2, seed=0)
    res["ode"] = {**ode.as_dict(), "rtol": 1e-4, "atol": 1e-4, "seconds": time.perf_counter() - t0}
    print(f"ODE on {args.ode_examples} test images: {ode.bits_per_dim:.4f} +- {ode.bits_per_dim_se:.4f} bits/dim "
          f"({ode.nfe} drift evaluations)", flush=True)
    (OUT / "fashion_ddpm.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

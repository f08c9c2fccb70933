"""One intra-op thread or torch's default: the time of one SVI step, by model size.

Each model takes ``--steps`` minibatch steps of ``fit_svi`` (batch 128, Adam, the analytic
ELBO, no progress bar) on random binary data of its shape, with 1 and with 2 torch threads
(this machine has 2 cores), alternating, ``--repeats`` times; the best (minimum) milliseconds
per step are reported with the ratio t(2 threads) / t(1 thread) (the JSON also has the ratio of
the medians and every time).  The 1-minute load average before
and after is recorded: a second busy process makes the second thread wait.  A ratio above 1 means the
extra thread costs more than it gives.  ``ppl_dgm.utils.set_threads("auto", n_params)``
takes its parameter-count threshold from this table.

    python benchmarks/threads.py [--repeats 3] [--steps 40]

Prints the table and writes ``benchmarks/results/threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from ppl_dgm import fit_svi
from ppl_dgm.models import DDPM, VAE

# name -> (constructor, data shape)
MODELS = {
    "vae mlp 64-16-2": (lambda: VAE(64, latent_dim=2, hidden=[16]), (64,)),
    "vae mlp 64-64-4": (lambda: VAE(64, latent_dim=4, hidden=[64]), (64,)),
    "ddpm mlp 2 (2-D toys, default net)": (lambda: DDPM(2, timesteps=100), (2,)),
    "vae mlp 64-128-8": (lambda: VAE(64, latent_dim=8, hidden=[128]), (64,)),
    "vae mlp 64-256-8 (digits)": (lambda: VAE(64, latent_dim=8, hidden=[256]), (64,)),
    "vae mlp 64-512-512-16": (lambda: VAE(64, latent_dim=16, hidden=[512, 512]), (64,)),
    "ddpm mlp 64 (digits, default net)": (lambda: DDPM(64, timesteps=100), (64,)),
    "vae mlp 784-256-16": (lambda: VAE(784, latent_dim=16, hidden=[256]), (784,)),
    "vae mlp 784-400-20": (lambda: VAE(784, latent_dim=20, hidden=[400]), (784,)),
    "vae mlp 784-1024-1024-32": (lambda: VAE(784, latent_dim=32, hidden=[1024, 1024]), (784,)),
    "vae conv 28x28": (lambda: VAE(784, latent_dim=16, arch="conv", image_shape=(28, 28)), (784,)),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def time_steps(make, shape, threads: int, steps: int, batch: int, seed: int) -> float:
    """Milliseconds per step of ``steps`` SVI steps with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = make()
    x = torch.bernoulli(torch.full((steps * batch, *shape), 0.3), generator=torch.Generator().manual_seed(seed))
    fit_svi(model, x[:batch], epochs=1, batch_size=batch, progress=False, seed=seed)  # warm-up (allocator, checks)
    t0 = time.perf_counter()
    fit_svi(model, x, epochs=1, batch_size=batch, progress=False, seed=seed)
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads.json"))
    args = ap.parse_args()
    rows, load_before = [], os.getloadavg()
    print(f"{'model':<36} {'params':>10} {'1 thread':>10} {'2 threads':>10} {'2/1':>6}")
    for name, (make, shape) in MODELS.items():
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for threads in (1, 2) if r % 2 == 0 else (2, 1):
                times[threads].append(time_steps(make, shape, threads, args.steps, args.batch_size, r))
        ms = {k: min(v) for k, v in times.items()}
        row = {"model": name, "params": n_params(make()), "ms_per_step_1_thread": ms[1],
               "ms_per_step_2_threads": ms[2], "ratio_2_over_1": ms[2] / ms[1],
               "median_ratio_2_over_1": statistics.median(times[2]) / statistics.median(times[1]), "all_ms": times,
               "load_average": os.getloadavg()[0]}
        rows.append(row)
        print(f"{name:<36} {row['params']:>10,} {ms[1]:>10.2f} {ms[2]:>10.2f} {row['ratio_2_over_1']:>6.2f}")
    result = {"benchmark": "threads", "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
              "cpu_count": os.cpu_count(), "load_average_before": load_before[0], "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

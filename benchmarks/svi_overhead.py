"""Overhead of ``fit_svi`` against a hand-written PyTorch loop.

One epoch of a VAE 784-400-20 (MLP, Bernoulli likelihood, analytic KL), batch
128, Adam(lr=1e-3), on Fashion-MNIST (binarized once) when installed, else on
60,000 random binary vectors.  Both loops use the same networks, batches and
optimizer; runs alternate and the median of ``--repeats`` is reported.

    python benchmarks/svi_overhead.py [--repeats 3] [--n 60000]

Prints the two times and their ratio (goal: <= 1.10) and writes
``benchmarks/results/svi_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ppl_dgm import VAE, fit_svi
from ppl_dgm.errors import InputError


def load_data(n: int) -> tuple[torch.Tensor, str]:
    from ppl_dgm.data import load_dataset

    try:
        ds = load_dataset("fashion-mnist", binarize="static")
        return ds.x_train[:n], "fashion-mnist (static binarization)"
    except InputError:
        g = torch.Generator().manual_seed(0)
        return torch.bernoulli(torch.full((n, 784), 0.3), generator=g), "random binary (Fashion-MNIST absent)"


def plain_epoch(model: VAE, x: torch.Tensor, batch_size: int, seed: int) -> float:
    """The loop a user would write by hand: reparameterize, BCE + analytic KL, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        xb = x[perm[i: i + batch_size]]
        h = model.encoder(xb)
        loc, scale = h[:, :20], F.softplus(h[:, 20:]) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = model.decoder(z)
        rec = -F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
        loss = kl - rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def svi_epoch(model: VAE, x: torch.Tensor, batch_size: int, seed: int, progress: bool) -> float:
    t0 = time.perf_counter()
    fit_svi(model, x, epochs=1, batch_size=batch_size, lr=1e-3, seed=seed, progress=progress)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "svi_overhead.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, source = load_data(args.n)
    times: dict[str, list[float]] = {"plain": [], "fit_svi": [], "fit_svi+progress": []}
    for r in range(args.repeats):
        for name in times:
            torch.manual_seed(r)
            model = VAE(784, latent_dim=20, hidden=[400], likelihood="bernoulli")
            if name == "plain":
                times[name].append(plain_epoch(model, x, args.batch_size, r))
            else:
                times[name].append(svi_epoch(model, x, args.batch_size, r, progress=name.endswith("progress")))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    pair_ratios = [s / p for s, p in zip(times["fit_svi"], times["plain"])]
    steps = -(-len(x) // args.batch_size)
    result = {
        "benchmark": "svi_overhead", "data": source, "n": len(x), "batch_size": args.batch_size,
        "network": "784-400-20 MLP VAE, Bernoulli, analytic KL (TraceMeanField_ELBO)",
        "seconds_per_epoch": med, "ms_per_step": {k: 1000 * v / steps for k, v in med.items()},
        "ratio_fit_svi_over_plain": med["fit_svi"] / med["plain"],
        "median_of_paired_ratios": statistics.median(pair_ratios),
        "seconds_all_repeats": times,
        "ratio_with_progress_bar": med["fit_svi+progress"] / med["plain"],
        "goal": "ratio <= 1.10", "repeats": args.repeats, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    print(f"\n{'loop':<20}{'s/epoch':>10}{'ms/step':>10}")
    for k in med:
        print(f"{k:<20}{med[k]:>10.2f}{result['ms_per_step'][k]:>10.2f}")
    print(f"ratio fit_svi / plain: {result['ratio_fit_svi_over_plain']:.3f} "
          f"(median of paired ratios {result['median_of_paired_ratios']:.3f}) "
          f"(with progress bar {result['ratio_with_progress_bar']:.3f}); goal <= 1.10")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The GMM EM's chunk size: seconds per iteration against the bytes of one chunk's temporaries, torch and JAX.

Both backends process the rows in chunks (``ppl_dgm.models.gmm_em``, ``ppl_dgm.numpyro.inference.em``): small
chunks stay in cache but pay a fixed cost per chunk (a few products, a ``lax.scan`` step, the threads' fork and
join), large ones give the products more columns but spill.  For each shape (N, D, K), full covariances, float64,
random data, this times one E-step + M-step at chunk budgets of 256 KB .. 16 MB (best of 2-3) and at the
backend's default, and prints each time over the default's (< 1: the default leaves speed unused).

    python benchmarks/gmm_chunks.py --threads 2 [--backend torch,jax] [--quick]

Threads are pinned as in ``benchmarks/gmm_grid.py`` (affinity, torch's threads, XLA's Eigen threading off for 1).
Writes ``benchmarks/results/gmm_chunks_{T}thread.json`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
SHAPES = [(100_000, 2, 4), (100_000, 2, 64), (100_000, 20, 4), (100_000, 20, 10), (100_000, 20, 64),
          (100_000, 64, 4), (100_000, 64, 10), (100_000, 64, 64), (1_000_000, 2, 10), (1_000_000, 20, 4),
          (1_000_000, 20, 10), (1_000_000, 64, 4), (1_000_000, 64, 10)]
QUICK = [(20_000, 2, 4), (20_000, 20, 10), (20_000, 64, 4)]
BUDGETS = [1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 22, 1 << 23, 1 << 24]


def family(backend: str, k: int, chunk_size: int | None):
    from ppl_dgm.models.gmm_em import GMMFamily

    fam = GMMFamily(k, init_params="random_from_data", chunk_size=chunk_size)
    if backend == "jax":
        from ppl_dgm.numpyro.inference.em import JaxGMMFamily

        return JaxGMMFamily(fam)
    return fam


def _default_rows(fam, x) -> int:
    """The rows per chunk the backend takes by default for ``x``."""
    data = fam.prepare(x)
    return (data.init_data if hasattr(data, "init_data") else data).chunk_size


def seconds_per_iteration(backend: str, x, k: int, rows: int, repeats: int) -> float:
    """The best of ``repeats`` timed E-step + M-step with chunks of ``rows`` rows (after one untimed)."""
    import torch

    fam = family(backend, k, rows)
    data = fam.prepare(x)
    params = fam.initialize(data, torch.Generator().manual_seed(1))
    fam.m_step(fam.e_step(params, data), data)  # JAX: compiles this shape's step
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fam.m_step(fam.e_step(params, data), data)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="torch,jax")
    ap.add_argument("--quick", action="store_true", help="three small shapes, three budgets")
    args = ap.parse_args()
    from _timing import machine, pin_threads

    pin_threads(args.threads)  # before torch and JAX start their threads
    import torch

    torch.set_num_threads(args.threads)
    shapes, budgets = (QUICK, BUDGETS[1:4]) if args.quick else (SHAPES, BUDGETS)
    result = {"benchmark": "gmm_chunks", "command": f"python benchmarks/gmm_chunks.py --threads {args.threads}"
              + (" --quick" if args.quick else ""), "threads": args.threads, "budgets_bytes": budgets,
              "loadavg_start": os.getloadavg(), "rows": []}
    for backend in args.backend.split(","):
        for n, d, k in shapes:
            x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
            repeats = 2 if n * d * k > 3e8 else 3
            fam = family(backend, k, None)
            default = _default_rows(fam, x)
            base = getattr(fam, "family", fam)
            per_row = x.element_size() * base.numbers_per_row(d)
            direct = base.use_direct(d)
            t_default = seconds_per_iteration(backend, x, k, default, repeats)
            times = {}
            for b in budgets:
                rows = max(256, b // per_row)
                times[b] = t_default if rows == default else seconds_per_iteration(backend, x, k, rows, repeats)
            row = {"backend": backend, "n": n, "d": d, "k": k, "form": "direct" if direct else "features",
                   "bytes_per_row": per_row, "default_rows": default, "default_s": t_default,
                   "budget_s": {str(b): t for b, t in times.items()},
                   "best_over_default": min(times.values()) / t_default}
            result["rows"].append(row)
            print(f"{backend:5s} ({n:>9,}, {d:2d}, {k:2d}) {row['form']:8s} default {default:5d} rows "
                  f"{t_default:.4f} s | " + " ".join(f"{b >> 10}K {t / t_default:.2f}" for b, t in times.items()),
                  flush=True)
    result["machine"] = machine(threads=args.threads)
    result["loadavg_end"] = os.getloadavg()
    out = OUT / f"gmm_chunks_{args.threads}thread{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""EM for a full-covariance GMM: ppl_dgm (torch, chunked matrix products) vs scikit-learn.

N = 100,000, D = 16, K = 16, full covariance, float64, the same initial parameters,
20 iterations (tol = 0).  Reports seconds per iteration (total / 20, so one-off
set-up such as our feature preparation counts against us), total wall time (best
of R), their ratios and both final log-likelihoods; then float32, the JAX
backend, and a 1,000,000 x 64 run whose peak memory is bounded by the
chunk size (peak RSS above the data itself, measured in fresh subprocesses).

Run:  python benchmarks/gmm_em.py            (writes benchmarks/results/gmm_em.json)
      python benchmarks/gmm_em.py --quick    (smaller, for a smoke test)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm_em import GMMFamily

RESULTS = Path(__file__).parent / "results" / "gmm_em.json"


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3.0
    return centers[rng.integers(k, size=n)] + rng.normal(size=(n, d)) + 5.0


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def sklearn_fit(x, init, iters):
    from sklearn.mixture import GaussianMixture

    w, m, p = init
    g = GaussianMixture(w.shape[0], covariance_type="full", max_iter=iters, tol=0.0,
                        weights_init=w, means_init=m, precisions_init=p,
                        init_params="random_from_data", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.fit(x)
    return g.lower_bounds_


def ours_fit(x, init_t, iters, chunk_size=None):
    fam = GMMFamily(init_t.weights.shape[0], "full", chunk_size=chunk_size)
    return fit_em(fam, x, init=init_t, max_iter=iters, tol=0.0, warn=False).history


def per_iter(fit, iters, repeat):
    """Seconds per iteration as total / iters (one-off set-up included on both sides)."""
    tn, hist = timed(lambda: fit(iters), repeat)
    return tn / iters, tn, hist


def memory_probe(n: int, d: int, k: int, iters: int) -> dict:
    """Fresh process: peak RSS during the fit minus the RSS just before it (data loaded)."""
    code = f"""
import resource, time, torch
from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm_em import GMMFamily
g = torch.Generator().manual_seed(0)
x = torch.empty({n}, {d}, dtype=torch.float64)
for i in range(0, {n}, 65536):
    x[i:i+65536] = torch.randn(x[i:i+65536].shape, generator=g, dtype=torch.float64)
x[:, 0] += 4 * (torch.arange({n}) % 4)
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kb()
fam = GMMFamily({k}, "full", init_params="random_from_data", reg_covar=1e-3)
data = fam.prepare(x)
t = time.perf_counter()
res = fit_em(fam, x, max_iter={iters}, tol=0.0, warn=False)
secs = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, data.chunk_size, secs, res.history[-1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, chunk, secs, ll = out.stdout.split()
    return {"n": n, "d": d, "k": k, "iters": iters, "chunk_size": int(chunk),
            "data_mb": n * d * 8 / 2**20, "rss_before_fit_mb": int(before) / 1024,
            "peak_rss_mb": int(after) / 1024, "extra_mb": (int(after) - int(before)) / 1024,
            "seconds_per_iter": float(secs) / iters, "final_loglik": float(ll)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--repeat", type=int, default=2, help="best of R timings")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    n, d, k, iters = (5000, 4, 4, 5) if args.quick else (100_000, 16, 16, 20)
    x = make_data(n, d, k)
    fam = GMMFamily(k, "full", init_params="random_from_data")
    xt = torch.tensor(x)
    init_t = fam.initialize(fam.prepare(xt), torch.Generator().manual_seed(0))
    u = init_t.precisions_cholesky
    init_np = (init_t.weights.numpy(), init_t.means.numpy(), (u @ u.transpose(-1, -2)).numpy())
    rows = []

    sk_it, sk_tot, sk_hist = per_iter(lambda it: sklearn_fit(x, init_np, it), iters, args.repeat)
    rows.append({"name": "scikit-learn float64", "s_per_iter": sk_it, "total_s": sk_tot,
                 "final_loglik": sk_hist[-1]})
    o_it, o_tot, o_hist = per_iter(lambda it: ours_fit(xt, init_t, it), iters, args.repeat)
    rel = max(abs(a / b - 1) for a, b in zip(o_hist, sk_hist, strict=True))
    rows.append({"name": "ppl_dgm torch float64", "s_per_iter": o_it, "total_s": o_tot,
                 "final_loglik": o_hist[-1], "max_rel_diff_vs_sklearn": rel})

    x32 = xt.float()
    init32 = type(init_t)(*(t.float() for t in init_t))
    f_it, f_tot, f_hist = per_iter(lambda it: ours_fit(x32, init32, it), iters, args.repeat)
    rows.append({"name": "ppl_dgm torch float32", "s_per_iter": f_it, "total_s": f_tot,
                 "final_loglik": f_hist[-1],
                 "max_rel_diff_vs_sklearn": max(abs(a / b - 1) for a, b in zip(f_hist, sk_hist,
                                                                                  strict=True))})
    from ppl_dgm.numpyro.inference.em import fit_em_gmm

    def jax_fit(it):
        return fit_em_gmm(x, init_t, covariance_type="full", tol=0.0, max_iter=it, warn=False)

    t_first, _ = timed(lambda: jax_fit(iters))  # includes jit compilation
    j_it, j_tot, j_res = per_iter(jax_fit, iters, args.repeat)
    rows.append({"name": "ppl_dgm JAX float64", "s_per_iter": j_it, "total_s": j_tot,
                 "first_call_total_s": t_first, "final_loglik": j_res.history[-1],
                 "max_rel_diff_vs_sklearn": max(abs(a / b - 1) for a, b in
                                                zip(j_res.history, sk_hist, strict=True))})
    for r in rows:
        r["speedup_per_iter_vs_sklearn"] = sk_it / r["s_per_iter"]
        r["speedup_total_vs_sklearn"] = sk_tot / r["total_s"]

    memory = []
    if not args.skip_memory:
        sizes = [(20_000, 8, 4, 2), (80_000, 8, 4, 2)] if args.quick else \
                [(250_000, 64, 16, 2), (1_000_000, 64, 16, 2)]
        memory = [memory_probe(*s) for s in sizes]

    print(f"\nGMM EM, N={n:,} D={d} K={k} full, {iters} iterations, same init "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'':30s} {'s/iter':>9s} {'total s':>9s} {'x sklearn/iter':>15s} "
          f"{'x total':>8s} {'final loglik':>20s}")
    for r in rows:
        print(f"{r['name']:30s} {r['s_per_iter']:9.4f} {r['total_s']:9.3f} "
              f"{r['speedup_per_iter_vs_sklearn']:15.1f} {r['speedup_total_vs_sklearn']:8.1f} "
              f"{r['final_loglik']:20.12f}")
    print(f"max relative difference of per-iteration log-likelihood, torch float64 vs sklearn: "
          f"{rel:.2e}")
    for m in memory:
        print(f"memory N={m['n']:,} D={m['d']} K={m['k']}: data {m['data_mb']:.0f} MB, "
              f"extra peak RSS during fit {m['extra_mb']:.0f} MB (chunk {m['chunk_size']} rows), "
              f"{m['seconds_per_iter']:.1f} s/iter")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"n": n, "d": d, "k": k, "iters": iters,
                                   "threads": torch.get_num_threads(), "rows": rows,
                                   "memory": memory}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""EM for a full-covariance GMM: ppl_dgm (torch, chunked matrix products) vs scikit-learn, and its memory.

N = 100,000, D = 16, K = 16, full covariance, float64, the same initial parameters,
20 iterations (tol = 0).  Reports seconds per iteration (total / 20, so one-off
set-up such as our feature preparation counts against us), total wall time (best
of R), their ratios and both final log-likelihoods; then float32 and the JAX
backend.  The whole grid of shapes is ``benchmarks/gmm_grid.py``.

Memory: peak resident memory of ``fit_em`` at N = 1,000,000, D = 64 (K = 16 and 64) for several chunk
sizes: the torch backend as it runs by default (``strategy="auto"``, whose screen takes the pruned form on
these blobs), the same forced to its dense form, the JAX backend and the estimator.  Each probe is a fresh
subprocess that loads the data, resets the kernel's high-water mark (``/proc/self/clear_refs``) and reads
``VmHWM`` after two EM iterations (the pruned form keeps moments from one E-step to the next), so the figure is
what the fit adds to the data.  (``getrusage().ru_maxrss`` is not used: a child started by ``subprocess``
inherits the parent's peak through fork, which is what the earlier fixed ~1 GB "peak" was.)

Run:  python benchmarks/gmm_em.py            (writes benchmarks/results/gmm_em.json)
      python benchmarks/gmm_em.py --quick    (smaller, for a smoke test: gmm_em_quick.json)
      python benchmarks/gmm_em.py --memory-only
"""

from __future__ import annotations

import argparse
import json
import os
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
RESULTS_QUICK = Path(__file__).parent / "results" / "gmm_em_quick.json"
MEMORY_ITERS = 2  # the pruned form keeps chunks' sure-row moments from one E-step to the next: two E-steps


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


MEMORY_CHILD = """
import resource, sys, time, torch
torch.set_num_threads(1)
n, d, k, chunk, backend, strategy, iters = {n}, {d}, {k}, {chunk}, {backend!r}, {strategy!r}, {iters}
def status():
    return {{ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in open("/proc/self/status")
            if ln.startswith(("VmRSS", "VmHWM"))}}
from ppl_dgm.inference.em import fit_em
from ppl_dgm.models.gmm_em import GMMFamily
if backend == "jax":  # JAX and its CPU client start before the measurement (their ~200 MB are not the fit's)
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.numpy.zeros(1).block_until_ready()
    from ppl_dgm.numpyro.inference.em import JaxGMMFamily
g = torch.Generator().manual_seed(0)
x = torch.empty(n, d, dtype=torch.float64)
for i in range(0, n, 65536):
    x[i:i+65536] = torch.randn(x[i:i+65536].shape, generator=g, dtype=torch.float64)
x[:, 0] += 4 * (torch.arange(n) % 4)
used = GMMFamily(k, "full", chunk_size=chunk, strategy=strategy).prepare(x).chunk_size
if backend == "estimator":
    from ppl_dgm import GaussianMixture
    x = x.numpy()
before = status()["VmRSS"]
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS: the peak from here on
t = time.perf_counter()
if backend == "estimator":
    GaussianMixture(k, init_params="random_from_data", reg_covar=1e-3, max_iter=iters, tol=0.0,
                    chunk_size=chunk).fit(x)
    form = "auto"
else:
    forms = []
    class Family(GMMFamily):  # notes the form each E-step took
        def e_step(self, params, data):
            out = super().e_step(params, data)
            forms.append(self.last_form)
            return out
    fam = Family(k, "full", init_params="random_from_data", reg_covar=1e-3, chunk_size=chunk, strategy=strategy)
    jax_fam = JaxGMMFamily(fam) if backend == "jax" else None
    fit_em(jax_fam or fam, x, max_iter=iters, tol=0.0, warn=False)
    if jax_fam is not None:  # (its own passes: the dense forms only)
        form = "direct" if jax_fam.family.use_direct(d) else "features"
    else:
        form = "+".join(forms)  # the forms the E-steps took, in order
secs = time.perf_counter() - t
print(before, status()["VmHWM"], used, secs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, form)
"""


def memory_probe(n: int, d: int, k: int, chunk: int | None, backend: str = "torch", strategy: str = "auto",
                 iters: int = MEMORY_ITERS) -> dict:
    """Fresh process: peak RSS during ``iters`` EM iterations minus the RSS with the data loaded; ``form`` is the
    E-step forms the fit took, in order (``pruned+direct``; under ``strategy="auto"`` the torch backend's screen
    picks each)."""
    code = MEMORY_CHILD.format(n=n, d=d, k=k, chunk=chunk, backend=backend, strategy=strategy, iters=iters)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, peak, used, secs, ru, form = out.stdout.split()
    dense = set(form.split("+")) <= {"direct", "features"}  # (the pruned form's chunk is its own)
    temporaries = int(used) * GMMFamily(k, "full", strategy=form.split("+")[-1]).numbers_per_row(d) * 8 / 2**20 \
        if dense else None
    return {"n": n, "d": d, "k": k, "backend": backend, "strategy": strategy, "form": form, "chunk_size": int(used),
            "iterations": iters, "data_mb": n * d * 8 / 2**20, "rss_with_data_mb": float(before),
            "peak_rss_mb": float(peak), "extra_mb": float(peak) - float(before),
            "chunk_temporaries_mb": temporaries,
            "seconds": float(secs),
            "child_ru_maxrss_mb (inherited from the parent by fork)": float(ru)}


MEMORY_NOTE = (
    "extra_mb = peak RSS during two EM iterations minus RSS with the data loaded (VmHWM after clear_refs, fresh "
    "process per setting); form = the forms the fit's E-steps took, in order. torch, dense forms (direct, "
    "features): the data are read in place (no copy); per chunk of c rows the temporaries are the centred columns "
    "(D x c), phi^T (F x c, feature form) or y = U^T x (KD x c, direct form) and the responsibilities (K x c), so "
    "extra_mb grows linearly with the chunk size (slope ~ chunk_temporaries_mb) above a fixed part of a few tens of"
    " MB (torch kernels' workspaces, the allocator's retained pages, initialisation). torch, pruned form (what auto"
    " takes on separated blobs): its per-chunk buffers (augmented rows, bounds, sorted rows; the chunk is "
    "chunk_size rows when given, else ~2^21 numbers' worth) plus the sure rows' moments kept between E-steps, at "
    "most gmm_prune.SURE_CACHE_BYTES = 64 MB in all: bounded by the chunk and that budget, not by N. JAX: prepare()"
    " copies the data once into padded centred columns (n_chunks, D, c), so its extra includes one data-sized copy,"
    " plus the chunk temporaries of its passes (one set per worker) and, with several workers, ~65 MB of glibc's "
    "per-thread malloc arenas. The earlier fixed ~1 GB 'peak' was getrusage(RUSAGE_SELF).ru_maxrss in the child: "
    "Linux carries the parent's peak RSS into a child created by fork (+exec), so it reported the benchmark "
    "process's own size, not the fit's. The estimator (GaussianMixture.fit) reads a float64 C-ordered array in "
    "place too; its finiteness check runs in blocks of rows (before: one N x D boolean array)."
)


def memory_section(quick: bool) -> list[dict]:
    """Peak-RSS probes over chunk sizes, forms and backends: the torch backend as users get it (``auto``: its
    screen takes the pruned form on these blobs) for K = 16 and 64, and forced to its dense form (``direct`` for
    K = 16, ``features`` for K = 64); the JAX backend (dense only); the estimator with its default chunk."""
    n, d = (20_000, 8) if quick else (1_000_000, 64)
    ks = (2, 4) if quick else (16, 64)
    chunks = (256, 4096) if quick else (256, 1024, 4096, 16384)
    dense = {ks[0]: "direct", ks[1]: "features"}
    probes = [(k, c, "torch", "auto") for k in ks for c in (*chunks, None)]
    probes += [(k, c, "torch", dense[k]) for k in ks for c in (chunks[0], chunks[-1])]
    probes += [(k, c, "jax", "auto") for k in ks for c in (256, 4096)]
    probes += [(ks[0], None, "estimator", "auto")]
    out = []
    for k, c, backend, strategy in probes:
        m = memory_probe(n, d, k, c, backend, strategy)
        temps = "" if m["chunk_temporaries_mb"] is None else f", chunk temporaries {m['chunk_temporaries_mb']:6.1f} MB"
        print(f"memory N={n:,} D={d} K={k} {backend:9s} {strategy:8s}-> {m['form']:8s} chunk {m['chunk_size']:>6}: "
              f"extra peak {m['extra_mb']:7.1f} MB (data {m['data_mb']:.0f} MB{temps}), {m['seconds']:.1f} s",
              flush=True)
        out.append(m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--repeat", type=int, default=2, help="best of R timings")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only the memory probes (keeps the timing rows)")
    args = ap.parse_args()
    from gmm_grid import machine

    path = RESULTS_QUICK if args.quick else RESULTS
    result = {"command": "python benchmarks/gmm_em.py " + " ".join(sys.argv[1:]),
              "machine": machine(torch.get_num_threads()), "load_start": os.getloadavg()}
    if args.memory_only and path.exists():
        old = json.loads(path.read_text())
        result.update({k: old[k] for k in ("n", "d", "k", "iters", "threads", "rows") if k in old})
    else:
        result.update(timing_section(args))
    if not args.skip_memory:
        result["memory"] = memory_section(args.quick)
        result["memory_note"] = MEMORY_NOTE
    result["load_end"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def timing_section(args) -> dict:
    """The (100k, 16, 16) comparison: scikit-learn, torch float64/float32, JAX."""
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
    print(f"\nGMM EM, N={n:,} D={d} K={k} full, {iters} iterations, same init "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'':30s} {'s/iter':>9s} {'total s':>9s} {'x sklearn/iter':>15s} "
          f"{'x total':>8s} {'final loglik':>20s}")
    for r in rows:
        print(f"{r['name']:30s} {r['s_per_iter']:9.4f} {r['total_s']:9.3f} "
              f"{r['speedup_per_iter_vs_sklearn']:15.1f} {r['speedup_total_vs_sklearn']:8.1f} "
              f"{r['final_loglik']:20.12f}")
    print(f"max relative difference of per-iteration log-likelihood, torch float64 vs sklearn: {rel:.2e}")
    return {"n": n, "d": d, "k": k, "iters": iters, "threads": torch.get_num_threads(), "rows": rows}


if __name__ == "__main__":
    main()

"""GMM EM against scikit-learn on a grid of shapes: our torch and JAX backends, side by side.

N in {60k, 100k, 1M} x D in {2, 20, 64} x K in {4, 10, 64}, full covariances, float64, the same
initial weights, means and precisions handed to all three (scikit-learn's ``*_init``), ``tol=0`` and a
fixed number of iterations.  An *iteration* is one E-step plus one M-step, timed inside each
implementation (scikit-learn's ``_e_step`` / ``_m_step``, our ``fit_em`` hooks), so set-up (scikit-learn's
parameter checks and initial M-step, our JAX compilation) is left out of the per-iteration figure and
reported beside it as the whole ``fit`` time.  Each repeat runs the three fits one after the other in a
rotated order; the ratios are medians of the per-repeat ratios (paired, so load that changes between
repeats cancels).  A shape whose scikit-learn fits would cost more than ``--sklearn-cap`` seconds gets
fewer repeats, or only the one-iteration probe (said in the table).  The per-iteration log-likelihoods
of all three are compared (they are the same EM).

The *ceiling* bounds what any dense exact float64 EM could reach on this machine: an iteration that forms the
K quadratic forms of every row (E-step) and the K weighted second moments (M-step) does at least
N K D (D + 1) / 2 multiply-adds for each, so ``2 N K D (D + 1)`` flops; run at the machine's dense float64
product peak (the best of MKL and XLA on n x n products, measured at the start) that work takes ``t_min``, and
no dense backend can beat
scikit-learn by more than ``sklearn s/iter / t_min``.  scikit-learn does ``4 N K D^2`` flops (full products in
both steps); the table gives both implementations' share of the peak.  The torch backend's pruned
E-step (``ppl_dgm/models/gmm_prune.py``) is not dense: where components sit on separate clusters it computes
only the pairs whose responsibility a bound cannot put below ``exp(-60)`` (pairs/row, 1 to K) and can pass the
ceiling; with ``--init spread`` (the default: every component starts with the data's covariance, so they
overlap) its screen sends the first iterations to the dense form; ``--init kmeans`` starts where scikit-learn's
default does, with components on clusters.

Threads are pinned: the process is bound to T cores (``sched_setaffinity``, inherited by every thread
the libraries start), ``torch.set_num_threads(T)`` and ``threadpoolctl`` for scikit-learn's BLAS; XLA
sizes its pools by the cores it may use (and with ``--threads 1`` XLA_FLAGS turns Eigen's threading off).
On a shared machine the CPU-time ratios are the robust figure.

    python benchmarks/gmm_grid.py [--threads 2] [--iters 3] [--repeats 3] [--sklearn-cap 120] [--quick] [--tag T]
                                  [--init {spread,kmeans}] [--only N:D:K,...]

Writes ``benchmarks/results/gmm_grid.json`` and ``gmm_grid.md`` (``_quick`` with ``--quick``, ``_T`` with
``--tag``: results of another machine kept beside).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"
GOAL = 8.0


def machine(threads: int) -> dict:
    """CPU model, cores, versions and the thread setting, for the JSON."""
    import sklearn
    import torch
    from _timing import machine as base

    info = base(sklearn=sklearn.__version__, numpy=np.__version__, threads=threads,
                torch_blas="MKL" if torch.backends.mkl.is_available() else "other")
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_threads"] = "one core (affinity, XLA_FLAGS)" if threads == 1 else f"{threads} cores (affinity)"
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["numpy_blas"] = [f"{d.get('internal_api')} {d.get('version')} {d.get('architecture', '')}".strip()
                              for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        pass
    return info


def make_data(n: int, d: int, k: int, seed: int = 0, spread: float = 3.0) -> np.ndarray:
    """K blobs (centres ~ N(0, spread^2 I), by default 9 I; unit noise), shifted by 5."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    return centers[rng.integers(k, size=n)] + rng.normal(size=(n, d)) + 5.0


def initial_params(x: np.ndarray, k: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform weights, K distinct data rows as means, the data's precision for every component."""
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    cov = np.cov(x[rng.choice(len(x), min(len(x), 20000), replace=False)].T).reshape(d, d)
    prec = np.linalg.inv(cov)
    return np.full(k, 1.0 / k), x[rng.choice(len(x), k, replace=False)], np.broadcast_to(prec, (k, d, d)).copy()


def kmeans_params(x: np.ndarray, k: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and precisions of a k-means labelling (scikit-learn's ``KMeans`` fitted on at most 100,000
    rows, one init), as scikit-learn's default ``init_params="kmeans"`` starts: a start where the components
    already sit on clusters, as in the later iterations of any fit."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    sub = x[rng.choice(len(x), min(len(x), 100_000), replace=False)]
    labels = KMeans(k, n_init=1, random_state=seed).fit(sub).predict(x)
    d = x.shape[1]
    counts = np.bincount(labels, minlength=k).astype(float)
    means = np.stack([x[labels == j].mean(0) for j in range(k)])
    prec = np.stack([np.linalg.inv(np.cov(x[labels == j].T).reshape(d, d) + 1e-6 * np.eye(d)) for j in range(k)])
    return counts / counts.sum(), means, prec


def paired_e_steps(fams: dict, params, x, rounds: int, per_round: int) -> tuple[dict, dict]:
    """E-steps of several families on the same rows ``x`` and parameters, alternating: each round runs every family
    once untimed (the first use of its buffers) then ``per_round`` times timed, the order reversed every other
    round (the host drifts +-25 % between runs; paired in one process it cannot favour one).  Returns each
    family's seconds per E-step and its last ``EStep``."""
    data = {name: fam.prepare(x) for name, fam in fams.items()}
    times, out = {name: [] for name in fams}, {}
    for r in range(rounds):
        for name in list(fams)[:: 1 if r % 2 else -1]:
            out[name] = fams[name].e_step(params, data[name])
            for _ in range(per_round):
                t = time.perf_counter()
                fams[name].e_step(params, data[name])
                times[name].append(time.perf_counter() - t)
    return times, out


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall, process CPU) seconds since ``t0``."""
    w, c = _now()
    return w - t0[0], c - t0[1]


class _Timed:
    """Wraps an EM family: records the (wall, CPU) seconds of each (e_step + m_step) pair."""

    def __init__(self, family) -> None:
        self.family, self.seconds, self._t0 = family, [], (0.0, 0.0)

    def __getattr__(self, name):
        return getattr(self.family, name)

    def e_step(self, params, data):
        self._t0 = _now()
        return self.family.e_step(params, data)

    def m_step(self, estep, data):
        out = self.family.m_step(estep, data)
        self.seconds.append(_since(self._t0))
        return out


def sklearn_fit(x, init, iters: int) -> dict:
    """scikit-learn's fit from ``init``; per-iteration seconds from its own ``_e_step``/``_m_step``."""
    from sklearn.mixture import GaussianMixture

    class Timed(GaussianMixture):
        def _e_step(self, X, **kw):
            self._t0 = _now()
            return super()._e_step(X, **kw)

        def _m_step(self, X, log_resp, **kw):
            super()._m_step(X, log_resp, **kw)
            self._iter_seconds.append(_since(self._t0))

    w, m, p = init
    g = Timed(len(w), covariance_type="full", max_iter=iters, tol=0.0, reg_covar=1e-6, weights_init=w,
              means_init=m, precisions_init=p)
    g._iter_seconds = []
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.fit(x)
    return {"fit_s": time.perf_counter() - t, "iter_s": g._iter_seconds, "history": list(g.lower_bounds_)}


def ours_fit(backend: str, x, xt, init, iters: int) -> dict:
    """``fit_em`` with the torch family or the JAX one, from the same ``init``."""
    import torch

    from ppl_dgm.inference.em import fit_em
    from ppl_dgm.models.gmm_em import GMMFamily

    family = GMMFamily(len(init[0]), "full", reg_covar=1e-6)
    params = family.params_from_given(*(torch.as_tensor(a) for a in init))
    if backend == "jax":
        from ppl_dgm.numpyro.inference.em import JaxGMMFamily

        family = JaxGMMFamily(family)
    timed = _Timed(family)
    t = time.perf_counter()
    res = fit_em(timed, xt, init=params, max_iter=iters, tol=0.0, warn=False)
    return {"fit_s": time.perf_counter() - t, "iter_s": timed.seconds, "history": list(res.history),
            "pairs_per_row": getattr(timed.family, "last_pairs_per_row", None)}


def run_shape(n, d, k, args) -> dict:
    """Probe, then paired repeats of the three fits; returns one row of the table."""
    import torch

    x = make_data(n, d, k)
    xt = torch.from_numpy(x)
    init = kmeans_params(x, k) if args.init == "kmeans" else initial_params(x, k)
    row = {"n": n, "d": d, "k": k, "iters": args.iters, "init": args.init, "load_start": os.getloadavg()[0]}
    t = time.perf_counter()
    ours_fit("jax", x, xt, init, 1)  # compiles this shape's step
    row["jax_first_call_s"] = time.perf_counter() - t
    probe = sklearn_fit(x, init, 1)
    row["sklearn_probe_fit_s"], row["sklearn_probe_iter_s"] = probe["fit_s"], probe["iter_s"][0][0]
    sk_cost = probe["fit_s"] + (args.iters - 1) * probe["iter_s"][0][0]
    sk_repeats = min(args.repeats, int(args.sklearn_cap // sk_cost))
    row["sklearn_repeats"] = sk_repeats
    runs = {"sklearn": [], "torch": [], "jax": []}
    fits = {"sklearn": lambda: sklearn_fit(x, init, args.iters),
            "torch": lambda: ours_fit("torch", x, xt, init, args.iters),
            "jax": lambda: ours_fit("jax", x, xt, init, args.iters)}
    for r in range(args.repeats):
        names = list(fits)[r % 3:] + list(fits)[: r % 3]
        for name in names:
            if name == "sklearn" and r >= sk_repeats:
                continue
            runs[name].append(fits[name]())
    if not runs["sklearn"]:  # too costly: the probe's one iteration stands for scikit-learn
        runs["sklearn"] = [{"fit_s": probe["fit_s"], "iter_s": probe["iter_s"], "history": probe["history"]}]
    def per_iter(run, which):  # median over the iterations of one fit; which = 0 wall, 1 CPU
        return statistics.median(t[which] for t in run["iter_s"])

    for name, rs in runs.items():
        row[f"{name}_iter_s"] = statistics.median(per_iter(r, 0) for r in rs)
        row[f"{name}_iter_cpu_s"] = statistics.median(per_iter(r, 1) for r in rs)
        row[f"{name}_fit_s"] = statistics.median(r["fit_s"] for r in rs)
    row["sklearn_total_iter_s"] = row["sklearn_iter_s"] * args.iters
    for name in ("torch", "jax"):
        for which, key in ((0, "x"), (1, "cpu_x")):
            pairs = [per_iter(s, which) / per_iter(o, which) for s, o in zip(runs["sklearn"], runs[name],
                                                                               strict=False)]
            row[f"{name}_{key}"] = statistics.median(pairs)
        row[f"{name}_fit_x"] = statistics.median(s["fit_s"] for s in runs["sklearn"]) / row[f"{name}_fit_s"] \
            if sk_repeats else None
        ref = runs["sklearn"][0]["history"]
        got = runs[name][0]["history"][: len(ref)]
        row[f"{name}_max_rel_diff"] = float(max(abs(a / b - 1) for a, b in zip(got, ref, strict=True)))
    peak = args.peak_gflops * 1e9
    row["min_flops"] = 2 * n * k * d * (d + 1)
    row["ceiling_x"] = row["sklearn_iter_s"] * peak / row["min_flops"]
    row["sklearn_peak_share"] = 4 * n * k * d * d / row["sklearn_iter_s"] / peak
    row["jax_peak_share"] = row["min_flops"] / row["jax_iter_s"] / peak
    row["meets_goal"] = {b: row[f"{b}_x"] >= GOAL for b in ("torch", "jax")} \
        if row["sklearn_total_iter_s"] > 1.0 else None
    row["torch_pairs_per_row"] = runs["torch"][0]["pairs_per_row"]  # the pruned form's last screen (None: dense)
    row["load_end"] = os.getloadavg()[0]
    return row


def table(rows: list[dict]) -> str:
    head = ("| N | D | K | sklearn s/iter | torch s/iter | JAX s/iter | torch x | JAX x | torch x CPU | JAX x CPU "
            f"| sklearn s ({rows[0]['iters']} iters) | >= {GOAL:g}x (torch, JAX) | ceiling x | sklearn % peak "
            "| JAX % peak | max rel diff | torch pairs/row |")
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        goal = "n/a (< 1 s)" if r["meets_goal"] is None else \
            ", ".join("yes" if r["meets_goal"][b] else "no" for b in ("torch", "jax")) \
            + (f" (ceiling < {GOAL:g}x)" if r["ceiling_x"] < GOAL else "")
        probe = "" if r["sklearn_repeats"] else " (1-iteration probe)"
        lines.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['sklearn_iter_s']:.4f}{probe} | "
                     f"{r['torch_iter_s']:.4f} | {r['jax_iter_s']:.4f} | {r['torch_x']:.1f} | {r['jax_x']:.1f} | "
                     f"{r['torch_cpu_x']:.1f} | {r['jax_cpu_x']:.1f} | {r['sklearn_total_iter_s']:.2f} | {goal} | "
                     f"{r['ceiling_x']:.1f} | {100 * r['sklearn_peak_share']:.0f} | {100 * r['jax_peak_share']:.0f} | "
                     f"{max(r['torch_max_rel_diff'], r['jax_max_rel_diff']):.1e} | "
                     f"{'-' if r.get('torch_pairs_per_row') is None else format(r['torch_pairs_per_row'], '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sklearn-cap", type=float, default=120.0,
                    help="seconds of scikit-learn fits allowed per shape (fewer repeats beyond)")
    ap.add_argument("--only", default=None, help="comma-separated N:D:K shapes, e.g. 60000:20:10")
    ap.add_argument("--quick", action="store_true", help="N in {6k, 10k}, D in {2, 20}, K in {4, 10}")
    ap.add_argument("--tag", default=None, help="suffix of the output files (another machine's results)")
    ap.add_argument("--init", choices=("spread", "kmeans"), default="spread",
                    help="the start all three share: 'spread' (uniform weights, K data rows as means, the data's "
                         "precision: components overlap) or 'kmeans' (a k-means labelling's weights, means and "
                         "precisions: components on clusters)")
    args = ap.parse_args()
    from _timing import pin_threads

    pin_threads(args.threads)  # before torch, NumPy's BLAS and JAX start their threads
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    grid = list(itertools.product((6_000, 10_000), (2, 20), (4, 10))) if args.quick else \
        list(itertools.product((60_000, 100_000, 1_000_000), (2, 20, 64), (4, 10, 64)))
    if args.only:
        grid = [tuple(int(v) for v in s.split(":")) for s in args.only.split(",")]
    out = {"command": "python benchmarks/gmm_grid.py " + " ".join(sys.argv[1:]), "machine": machine(args.threads),
           "goal": f">= {GOAL:g}x scikit-learn per iteration where scikit-learn takes > 1 s for the iterations run",
           "load_start": os.getloadavg(), "rows": []}
    from _timing import dense_float64_peaks

    products = dense_float64_peaks()
    args.peak_gflops = max(v for row in products.values() for v in row.values())
    out["dense_peak_gflops"] = {"products": products, "peak": args.peak_gflops}
    print(f"dense float64 product peak: {args.peak_gflops:.0f} GF/s", flush=True)
    c0 = time.process_time()
    with threadpool_limits(args.threads):
        for n, d, k in grid:
            row = run_shape(n, d, k, args)
            out["rows"].append(row)
            print(f"N={n:>9,} D={d:>2} K={k:>2}: sklearn {row['sklearn_iter_s']:.4f} s/iter, torch "
                  f"{row['torch_iter_s']:.4f} (x{row['torch_x']:.1f}), JAX {row['jax_iter_s']:.4f} "
                  f"(x{row['jax_x']:.1f}), load {row['load_end']:.1f}", flush=True)
    out["load_end"] = os.getloadavg()
    out["cpu_minutes"] = (time.process_time() - c0) / 60
    suffix = ("_quick" if args.quick else "") + (f"_{args.threads}thread" if args.threads != 2 else "") \
        + (f"_{args.tag}" if args.tag else "")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"gmm_grid{suffix}.json").write_text(json.dumps(out, indent=2) + "\n")
    m = out["machine"]
    start = {"spread": "the same spread-out init", "kmeans": "the same k-means init"}[args.init]
    md = (f"# GMM EM vs scikit-learn, full covariances, float64, {args.iters} iterations from {start}\n\n"
          f"Machine: {m['cpu']} ({m['widest_simd']}), {m['cores']} cores, {args.threads} threads; torch {m['torch']} "
          f"({m['torch_blas']}), JAX {m.get('jax', '-')}, scikit-learn {m['sklearn']}.  Load average "
          f"{out['load_start'][0]:.2f} at start, {out['load_end'][0]:.2f} at end.  Dense float64 product peak "
          f"{args.peak_gflops:.0f} GF/s (ceiling: module docstring).  x = median over paired "
          f"repeats of scikit-learn's seconds per iteration over ours (E-step + M-step, timed inside each), of "
          f"wall time and of process CPU time (the fairer figure on a shared machine with one thread).  pairs/row: "
          f"the torch backend's pruned E-step (ppl_dgm/models/gmm_prune.py), pairs computed per row at its last "
          f"screen; '-' when the dense form ran.\n\n"
          + table(out["rows"]) + f"\n\nRegenerate with:\n\n    {out['command']}\n")
    (OUT / f"gmm_grid{suffix}.md").write_text(md)
    print("\n" + table(out["rows"]))
    print(f"\nwrote {OUT / f'gmm_grid{suffix}.json'} and .md ({out['cpu_minutes']:.1f} CPU-min)")


if __name__ == "__main__":
    main()

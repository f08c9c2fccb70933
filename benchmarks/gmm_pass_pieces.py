"""Where the JAX EM pass loses speed: the CPU's dense float64 peak against the pieces of one chunked pass.

For the grid's shapes that miss 8x scikit-learn (docs/gmm.md), 8x needs 20-127 GF/s on the minimal work
(2 N K D (D + 1) flops an iteration).  This prints, on this machine:

- the dense float64 product peak (n x n times n x n, n = 1024, 2048) in MKL (torch) and XLA (JAX);
- for (N, D, K) = (60,000, 64, 10) with chunks of c = 1,024 rows (D x c columns, as the backend lays them out),
  the pieces of one chunk of the direct form with full products: the E-step's product R X (R the K D x D stacked
  factors), the same followed by the squared norms (the Mahalanobis distances, an elementwise pass over K D x c
  numbers; as the backend sums them, by pairwise halving, and as ``reshape(K, D, c).sum(1)``), the responsibilities
  (one ``exp`` per entry, as the backend computes them, against ``logsumexp`` then ``exp``), the M-step's weighted
  moments; and the whole pass over all rows (``_direct_pass``: triangle blocks,
  a loop over chunks) at the default chunk size, as one call and as the backend runs it (blocks of chunks at once,
  one thread each), in GF/s of the minimal work;
- the CPU time burnt while idle just after an M-step, with SciPy's OpenBLAS (which XLA's CPU Cholesky calls)
  on every core and on one (its idle threads spin before they sleep).

    python benchmarks/gmm_pass_pieces.py [--threads 2] [--tag TAG]

Writes ``benchmarks/results/gmm_pass_pieces_{T}thread[_TAG].json`` (``--tag``: another machine's figures beside
the committed ones).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _timing import best_seconds, dense_float64_peaks, machine, pin_threads

OUT = Path(__file__).parent / "results"


def _two_exp_softmax(jax, jnp, logp, mask):
    """The responsibilities and log-likelihood as ``logsumexp`` then ``exp(logp - lse)`` (two ``exp`` per entry)."""
    lse = jax.scipy.special.logsumexp(logp, axis=0, keepdims=True)
    return jnp.exp(logp - lse) * mask, (lse[0] * mask).sum()


def chunk_pieces(d: int, k: int, c: int) -> dict:
    """Microseconds and GF/s of each piece of one chunk (full products)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((d, c)))
    r = jnp.asarray(rng.standard_normal((k * d, d)))
    off = jnp.asarray(rng.standard_normal((k * d, 1)))
    resp = jnp.asarray(rng.random((k, c)))
    flops = 2 * k * d * d * c  # one full product
    from ppl_dgm.numpyro.inference import em

    mask = jnp.ones((1, c))
    pieces = {
        "e_product": (jax.jit(lambda r, x: r @ x), (r, x)),
        "e_product_and_squared_norms": (jax.jit(lambda r, x, o: ((r @ x - o) ** 2).reshape(k, d, -1).sum(1)),
                                        (r, x, off)),
        "e_product_and_squared_norms_pairwise": (  # what the backend runs (em._sum_middle)
            jax.jit(lambda r, x, o: em._sum_middle(jnp, ((r @ x - o) ** 2).reshape(k, d, -1))), (r, x, off)),
        "softmax_logsumexp_then_exp": (jax.jit(lambda g: _two_exp_softmax(jax, jnp, g, mask)), (resp,)),
        "softmax_one_exp": (jax.jit(lambda g: em._softmax_columns(jnp, g, mask)), (resp,)),  # the backend's
        "m_weighted_moments": (jax.jit(lambda g, x: (g[:, None, :] * x[None]).reshape(k * d, -1) @ x.T), (resp, x)),
    }
    out = {}
    for name, (f, args) in pieces.items():
        s = best_seconds(lambda f=f, args=args: f(*args), 200)
        out[name] = {"us": s * 1e6, "gflops_full_products": flops / s / 1e9}
    return out


def whole_pass(n: int, d: int, k: int) -> dict:
    """The backend's pass over all rows (E and M statistics, default chunk) as one call and as the default
    number of blocks at once (threads), GF/s of the minimal work; and the CPU seconds the process burns in the
    0.2 s after an M-step whose OpenBLAS (SciPy's, behind XLA's CPU Cholesky) may use every core, against one."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from ppl_dgm.models.gmm_em import GMMFamily, upper_factor
    from ppl_dgm.numpyro.inference import em

    x = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fam = em.JaxGMMFamily(GMMFamily(k, init_params="random_from_data"))
    data = fam.prepare(x)
    params = fam.initialize(data, torch.Generator().manual_seed(1))
    params = params._replace(precisions_cholesky=upper_factor(params.precisions_cholesky))
    jp = tuple(jnp.asarray(p.numpy()) for p in params)
    run = em._make_pass("full", True)
    n_chunks = data.columns.shape[0]

    def blocks(workers: int):
        def one(bounds):
            return jax.block_until_ready(run(jp, data.shift, data.columns, data.mask, np.asarray(bounds, np.int32)))

        return lambda: list(em._thread_pool(workers).map(one, em.chunk_blocks(n_chunks, workers)))

    workers = em.default_workers()
    one_call, at_once = best_seconds(blocks(1), 7), best_seconds(blocks(workers), 7)
    stats, total = run(jp, data.shift, data.columns, data.mask, np.asarray((0, n_chunks), np.int32))
    m_step = em._make_m_step("full", 1e-6, d, n, float(np.finfo(np.float64).eps))

    def idle_cpu_after_m_step(limit: bool) -> float:
        time.sleep(0.3)
        if limit:
            with em._blas_controller().limit(limits=1, user_api="blas"):
                jax.block_until_ready(m_step(stats, total, data.shift))
        else:
            jax.block_until_ready(m_step(stats, total, data.shift))
        c = time.process_time()
        time.sleep(0.2)
        return time.process_time() - c

    em._blas_controller()
    minimal = 2 * n * k * d * (d + 1)
    return {"chunk_rows": data.init_data.chunk_size, "workers": workers,
            "one_call_seconds": one_call, "one_call_gflops_minimal": minimal / one_call / 1e9,
            "blocks_at_once_seconds": at_once, "blocks_at_once_gflops_minimal": minimal / at_once / 1e9,
            "idle_cpu_seconds_in_0.2s_after_m_step": {"blas_all_threads": idle_cpu_after_m_step(False),
                                                      "blas_one_thread": idle_cpu_after_m_step(True)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix of the output file (another machine's results)")
    args = ap.parse_args()
    pin_threads(args.threads)  # before torch and JAX start their threads
    import jax
    import torch

    torch.set_num_threads(args.threads)
    jax.config.update("jax_enable_x64", True)
    n, d, k, c = 60_000, 64, 10, 1024
    tag = f" --tag {args.tag}" if args.tag else ""
    command = f"python benchmarks/gmm_pass_pieces.py --threads {args.threads}{tag}"
    result = {"benchmark": "gmm_pass_pieces", "command": command, "threads": args.threads,
              "loadavg_start": os.getloadavg(),
              "dense_peak": dense_float64_peaks(), "shape": {"n": n, "d": d, "k": k, "chunk_rows_pieces": c},
              "chunk_pieces": chunk_pieces(d, k, c), "whole_pass": whole_pass(n, d, k),
              "machine": machine(threads=args.threads), "loadavg_end": os.getloadavg()}
    for size, r in result["dense_peak"].items():
        print(f"dense {size}^2 float64 product: MKL {r['mkl_gflops']:.0f} GF/s, XLA {r['xla_gflops']:.0f} GF/s")
    for name, r in result["chunk_pieces"].items():
        print(f"chunk of {c} rows, {name}: {r['us']:.0f} us ({r['gflops_full_products']:.0f} GF/s of one full product)")
    w = result["whole_pass"]
    print(f"whole pass ({n:,}, {d}, {k}), chunks of {w['chunk_rows']} rows: one call {w['one_call_seconds'] * 1e3:.1f}"
          f" ms ({w['one_call_gflops_minimal']:.0f} GF/s of the minimal work), {w['workers']} blocks at once "
          f"{w['blocks_at_once_seconds'] * 1e3:.1f} ms ({w['blocks_at_once_gflops_minimal']:.0f} GF/s)")
    idle = w["idle_cpu_seconds_in_0.2s_after_m_step"]
    print(f"CPU burnt in the 0.2 s after an M-step: {idle['blas_all_threads']:.3f} s with OpenBLAS on every core, "
          f"{idle['blas_one_thread']:.3f} s on one")
    out = OUT / f"gmm_pass_pieces_{args.threads}thread{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

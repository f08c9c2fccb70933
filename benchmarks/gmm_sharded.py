"""Sharded EM for the Gaussian mixture: 1 process vs 2 gloo processes, 1 thread each, on this CPU.

Two processes are spawned (gloo, a file store); each holds its block of the rows.  In
every paired repeat rank 0 first runs EM on all the rows alone (rank 1 waits at a
barrier), then both ranks run the sharded EM on their blocks (one all-reduce of
F K + 1 float64 numbers per iteration).  Both start from the same parameters and
run a fixed number of iterations (``tol=0``), so the work is the same; the figure is
the median over repeats of ``T_1 / T_2`` (speed-up) and ``T_1 / (2 T_2)`` (scaling
efficiency), with the time spent inside the all-reduce (communication plus waiting
for the slower rank) and the max relative difference of the final parameters.

Caveat: this machine has 2 cores shared with other jobs; 2 processes with 1 thread
each use both, so any other load lands on the sharded run.  The load average at
start and end is in the JSON.

    python benchmarks/gmm_sharded.py            # (1,000,000, 20, 10) full, 10 iterations, 3 repeats
    python benchmarks/gmm_sharded.py --quick    # (100,000, 20, 10): writes gmm_sharded_quick.json

Writes ``benchmarks/results/gmm_sharded.json`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import machine

OUT = Path(__file__).resolve().parent / "results"
BLOCK = 1 << 16
WORLD = 2



def rows(n: int, d: int, k: int, start: int, stop: int) -> torch.Tensor:
    """Rows ``start .. stop`` of a fixed K-blob data set (N, D), float64; blocks of rows seeded by their index,
    so a rank builds its rows only."""
    centers = 3 * torch.randn(k, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = []
    for b in range(start // BLOCK, -(-stop // BLOCK)):
        g = torch.Generator().manual_seed(1000 + b)
        m = min(BLOCK, n - b * BLOCK)
        x = centers[torch.randint(k, (m,), generator=g)] + torch.randn(m, d, generator=g, dtype=torch.float64)
        lo = max(start - b * BLOCK, 0)
        out.append(x[lo : stop - b * BLOCK])
    return torch.cat(out)


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return res, time.perf_counter() - t0, time.process_time() - c0


def _worker(rank: int, args: argparse.Namespace, store: str, out: str) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch.distributed as dist

    from ppl_dgm.inference.em import fit_em
    from ppl_dgm.models.gmm_em import GMMFamily
    from ppl_dgm.models.shards import Shards, shard_rows

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    block = shard_rows(range(args.n), rank, WORLD)
    x_local = rows(args.n, args.d, args.k, block.start, block.stop)
    x_all = rows(args.n, args.d, args.k, 0, args.n) if rank == 0 else None
    group = Shards.from_process_group()
    reduce_seconds = [0.0]

    def timed_reduce(t):
        t0 = time.perf_counter()
        r = group.reduce(t)
        reduce_seconds[0] += time.perf_counter() - t0
        return r

    shards = Shards(timed_reduce, group.rank, group.world_size)
    sharded = GMMFamily(args.k, args.covariance_type, init_params="random_from_data", shards=shards)
    single = GMMFamily(args.k, args.covariance_type, init_params="random_from_data")
    init = sharded.initialize(sharded.prepare(x_local), torch.Generator().manual_seed(0))
    loop = dict(init=init, tol=0.0, max_iter=args.iters, warn=False)
    reps = []
    for _ in range(args.repeat):
        dist.barrier()
        r1 = {}
        if rank == 0:
            res1, r1["wall"], r1["cpu"] = _timed(lambda: fit_em(single, x_all, **loop))
        _, idle_wall, idle_cpu = _timed(dist.barrier)
        reduce_seconds[0] = 0.0
        res2, wall2, cpu2 = _timed(lambda: fit_em(sharded, x_local, **loop))
        rep = {"sharded_wall": wall2, "sharded_cpu": cpu2, "allreduce_seconds": reduce_seconds[0],
               "idle_cpu_while_other_runs": idle_cpu if rank == 1 else None}
        if rank == 0:
            diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(res2.params, res1.params,
                                                                                   strict=True))
            rep.update(single_wall=r1["wall"], single_cpu=r1["cpu"], speedup=r1["wall"] / wall2,
                       efficiency=r1["wall"] / (WORLD * wall2), max_rel_diff_params=diff,
                       lower_bound_rel_diff=abs(res2.lower_bound - res1.lower_bound) / abs(res1.lower_bound))
        reps.append(rep)
    Path(out, f"rank{rank}.json").write_text(json.dumps(reps))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 100,000 (smoke test); writes *_quick.json")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--covariance-type", default="full")
    ap.add_argument("--iters", type=int, default=10, help="EM iterations per timed fit (tol=0)")
    ap.add_argument("--repeat", type=int, default=3, help="paired repeats (median of the ratios)")
    args = ap.parse_args()
    if args.quick:
        args.n = 100_000
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_worker, args=(args, os.path.join(tmp, "store"), tmp), nprocs=WORLD)
        reps = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(WORLD)]
    r0 = reps[0]

    def med(key):
        return statistics.median(r[key] for r in r0)

    result = {
        "command": "python benchmarks/gmm_sharded.py " + " ".join(sys.argv[1:]),
        "shape": {"n": args.n, "d": args.d, "k": args.k, "covariance_type": args.covariance_type},
        "iters": args.iters, "repeats": args.repeat, "machine": machine(threads_per_process=1, backend="gloo"),
        "loadavg_start": load_start,
        "single_seconds_per_iter": med("single_wall") / args.iters,
        "sharded_seconds_per_iter": med("sharded_wall") / args.iters,
        "speedup_median": med("speedup"), "efficiency_median": med("efficiency"),
        "allreduce_seconds_per_iter_rank0": med("allreduce_seconds") / args.iters,
        "allreduce_numbers": None, "max_rel_diff_params": max(r["max_rel_diff_params"] for r in r0),
        "lower_bound_rel_diff": max(r["lower_bound_rel_diff"] for r in r0),
        "rank1_cpu_seconds_idle_at_barrier": [r["idle_cpu_while_other_runs"] for r in reps[1]],
        "repeats_rank0": r0, "repeats_rank1": reps[1],
        "caveat": "2 cores shared with other jobs: the 2-process run uses both cores (1 thread each), so other "
                  "load slows it more than the 1-process run; efficiency = T1 / (2 T2)",
    }
    from ppl_dgm.models.gmm_em import GMMFamily

    fam = GMMFamily(args.k, args.covariance_type)
    result["allreduce_numbers"] = fam.n_features_phi(args.d) * args.k + 1
    result["loadavg_end"] = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / ("gmm_sharded_quick.json" if args.quick else "gmm_sharded.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    r = result
    print(f"(N, D, K) = ({args.n}, {args.d}, {args.k}) {args.covariance_type}, {args.iters} iterations, "
          f"1 thread per process:\n  1 process {r['single_seconds_per_iter']:.3f} s/iter, 2 processes "
          f"{r['sharded_seconds_per_iter']:.3f} s/iter (all-reduce {r['allreduce_seconds_per_iter_rank0']:.4f} "
          f"s/iter), speed-up {r['speedup_median']:.2f}, efficiency {r['efficiency_median']:.2f}\n"
          f"  max relative difference of the parameters {r['max_rel_diff_params']:.1e}, load "
          f"{load_start[0]:.2f} -> {r['loadavg_end'][0]:.2f}\nwrote {path}")


if __name__ == "__main__":
    main()

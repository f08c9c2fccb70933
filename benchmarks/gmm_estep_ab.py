"""Paired E-step timing: the pruned GMM E-step of this checkout against ``gmm_prune.py`` at another git revision.

On a shared or virtual machine one run's timings drift by +-25 %: a whole-grid run before a change and another
after it cannot resolve a 10 % gain.  Here both versions run in one process on the same prepared data, the
module under ``GMMFamily`` swapped between rounds (``augment``, ``screen``, ``chunk_sums``, ...; ``gmm_em.py``
itself is this checkout's), alternating which goes first; each round times three E-steps of each.  The medians
and quartiles of the two sets are the comparison; the log-likelihoods and statistics of both are printed too (the
same to round-off, or the change is not a speed-up).  Data and start as ``benchmarks/gmm_grid.py --init kmeans``.

    python benchmarks/gmm_estep_ab.py --base 7454e5e --only 60000:64:4,60000:20:64 [--rounds 16] [--threads 2]

Writes ``benchmarks/results/gmm_estep_ab_<base>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAMES = ("augment", "chunk_sums", "make_plan", "row_width", "screen", "sure_log_lik")


def module_at(rev: str):
    """``ppl_dgm/models/gmm_prune.py`` as it was at ``rev``, imported under another name."""
    src = subprocess.run(["git", "show", f"{rev}:ppl_dgm/models/gmm_prune.py"], cwd=HERE.parent, check=True,
                         capture_output=True, text=True).stdout
    if "def row_width" not in src:  # (before the padded rows: D + 2 columns)
        src += "\n\ndef row_width(d, device):\n    return d + 2\n"
    path = Path(tempfile.mkdtemp()) / f"gmm_prune_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"gmm_prune_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--only", default="60000:64:4,100000:64:4,60000:64:10,100000:20:10,60000:20:64")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(HERE))
    from gmm_grid import kmeans_params, machine, make_data

    import ppl_dgm.models.gmm_em as em
    from ppl_dgm.models import gmm_prune

    torch.set_num_threads(args.threads)
    versions = {"base": module_at(args.base), "head": gmm_prune}
    rows = []
    for shape in args.only.split(","):
        n, d, k = map(int, shape.split(":"))
        x = torch.from_numpy(make_data(n, d, k))
        fam = em.GMMFamily(k, "full", reg_covar=1e-6, strategy="pruned")
        params = fam.params_from_given(*(torch.as_tensor(a) for a in kmeans_params(x.numpy(), k)))
        times, out = {v: [] for v in versions}, {}
        for r in range(args.rounds):
            for v in list(versions)[:: 1 if r % 2 else -1]:
                for name in NAMES:
                    setattr(em, name, getattr(versions[v], name))
                data = fam.prepare(x)
                out[v] = fam.e_step(params, data)  # (and the buffers' first use)
                for _ in range(3):
                    t = time.perf_counter()
                    fam.e_step(params, data)
                    times[v].append(time.perf_counter() - t)
        for name in NAMES:
            setattr(em, name, getattr(gmm_prune, name))
        q = {v: np.quantile(t, [0.25, 0.5, 0.75]) * 1e3 for v, t in times.items()}
        row = {"n": n, "d": d, "k": k, "rounds": args.rounds,
               **{f"{v}_ms_q25_median_q75": [round(float(a), 2) for a in q[v]] for v in versions},
               "median_ratio_base_over_head": float(q["base"][1] / q["head"][1]),
               "log_lik_abs_diff": abs(out["base"].log_likelihood - out["head"].log_likelihood),
               "stats_max_rel_diff": float((out["base"].stats - out["head"].stats).abs().max()
                                           / out["base"].stats.abs().max())}
        rows.append(row)
        print(f"N={n:>9,} D={d} K={k:>2}: E-step median {q['base'][1]:.1f} ms ({args.base}) -> {q['head'][1]:.1f} ms "
              f"(x{row['median_ratio_base_over_head']:.2f}); quartiles {q['base'][0]:.1f}-{q['base'][2]:.1f} and "
              f"{q['head'][0]:.1f}-{q['head'][2]:.1f}; log-lik diff {row['log_lik_abs_diff']:.1e}, statistics "
              f"{row['stats_max_rel_diff']:.1e}", flush=True)
    path = HERE / "results" / f"gmm_estep_ab_{args.base}.json"
    path.write_text(json.dumps({"base": args.base, "head": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True).stdout.strip(),
        "machine": machine(args.threads), "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

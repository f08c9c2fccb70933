"""Paired E-step timing: the GMM E-step of this checkout against the one at another git revision.

On a shared or virtual machine one run's timings drift by +-25 %: a whole-grid run before a change and another
after it cannot resolve a 10 % gain.  Here both versions run in one process on the same data: ``gmm_em.py`` and
``gmm_prune.py`` as they were at ``--base`` are imported under other names (the base ``GMMFamily`` calling the base
pruned functions; the other modules are this checkout's), and the two families' E-steps alternate, which goes first
changing every round; each round times three E-steps of each.  The medians and quartiles of the two sets are the
comparison; the log-likelihoods and statistics of both are printed too (the same to round-off, or the change is not
a speed-up).  Data and start as ``benchmarks/gmm_grid.py --init kmeans`` (or ``--init spread``; ``--spread`` the
blobs' centre scale, 3 in the grid, larger for better separated ones); ``--strategy`` the E-step's form (``pruned``
by default; ``features`` and ``direct`` the dense ones).

    python benchmarks/gmm_estep_ab.py --base 7454e5e --only 60000:64:4,60000:20:64 [--rounds 16] [--threads 2]
        [--strategy pruned|features|direct|auto] [--init kmeans|spread] [--spread 3]

Writes ``benchmarks/results/gmm_estep_ab_<base>[_<strategy>_<init>[_spread<s>]].json`` (the suffix when not the
defaults).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def source_at(rev: str, name: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:ppl_dgm/models/{name}.py"], cwd=HERE.parent, check=True,
                          capture_output=True, text=True).stdout


def load(src: str, name: str):
    """``src`` imported as ``ppl_dgm.models.<name>`` (its relative imports: this checkout's modules)."""
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"ppl_dgm.models.{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def family_at(rev: str):
    """``GMMFamily`` of ``gmm_em.py`` at ``rev``, its pruned functions those of ``gmm_prune.py`` at ``rev``."""
    tag = rev.replace("-", "_")
    prune = load(source_at(rev, "gmm_prune"), f"gmm_prune_{tag}")
    em = load(source_at(rev, "gmm_em"), f"gmm_em_{tag}")
    for name in dir(prune):  # the names gmm_em took from this checkout's gmm_prune by its relative import
        if not name.startswith("__") and hasattr(em, name) and callable(getattr(prune, name)):
            setattr(em, name, getattr(prune, name))
    return em.GMMFamily


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the git revision to compare against")
    ap.add_argument("--only", default="60000:64:4,100000:64:4,60000:64:10,100000:20:10,60000:20:64")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--strategy", default="pruned", choices=("pruned", "features", "direct", "auto"))
    ap.add_argument("--init", default="kmeans", choices=("kmeans", "spread"))
    ap.add_argument("--spread", type=float, default=3.0, help="the blobs' centre scale (gmm_grid.make_data)")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(HERE))
    from gmm_grid import initial_params, kmeans_params, machine, make_data, paired_e_steps

    from ppl_dgm.models.gmm_em import GMMFamily

    torch.set_num_threads(args.threads)
    versions = {"base": family_at(args.base), "head": GMMFamily}
    rows = []
    for shape in args.only.split(","):
        n, d, k = map(int, shape.split(":"))
        x = torch.from_numpy(make_data(n, d, k, spread=args.spread))
        fams = {v: cls(k, "full", reg_covar=1e-6, strategy=args.strategy) for v, cls in versions.items()}
        start = (kmeans_params if args.init == "kmeans" else initial_params)(x.numpy(), k)
        params = fams["head"].params_from_given(*(torch.as_tensor(a) for a in start))
        times, out = paired_e_steps(fams, params, x, args.rounds, 3)
        q = {v: np.quantile(t, [0.25, 0.5, 0.75]) * 1e3 for v, t in times.items()}
        row = {"n": n, "d": d, "k": k, "rounds": args.rounds, "strategy": args.strategy, "init": args.init,
               "spread": args.spread,
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
    suffix = "" if (args.strategy, args.init) == ("pruned", "kmeans") else f"_{args.strategy}_{args.init}"
    suffix += "" if args.spread == 3.0 else f"_spread{args.spread:g}"
    path = HERE / "results" / f"gmm_estep_ab_{args.base}{suffix}.json"
    path.write_text(json.dumps({"base": args.base, "head": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True).stdout.strip(),
        "machine": machine(args.threads), "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

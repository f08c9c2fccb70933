"""Which E-step form is faster: pruned against the dense ones, per shape, and what ``GMMFamily.prune_pays`` picks.

For each shape (N, D, K) the grid's blobs (``gmm_grid.make_data``, centre scale ``--spread``) and scikit-learn's
k-means start; the pruned, feature and (for ``2 K <= D``) direct E-steps alternate in one process on the same
parameters, ``--rounds`` rounds of two timed E-steps each (the host drifts +-25 % between runs; see
``gmm_estep_ab.py``).  Printed and written per shape: the pruned screen's pairs per row, each form's median
nanoseconds per row, the faster form, and the cost model's choice (``GMMFamily.prune_pays``, fitted to these
figures: docs/gmm.md, "Which form").

    python benchmarks/gmm_forms.py --only 60000:16:8,60000:20:64 [--spread 3] [--rounds 6] [--threads 2]
        [--tag name]

Writes ``benchmarks/results/gmm_forms_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT = ",".join(f"60000:{d}:{k}" for d in (16, 20, 24, 32) for k in (8, 16, 32, 64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=DEFAULT, help="shapes N:D:K, comma-separated")
    ap.add_argument("--spread", type=float, default=3.0, help="the blobs' centre scale (gmm_grid.make_data)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="latest")
    args = ap.parse_args()

    import torch

    sys.path.insert(0, str(HERE))
    from gmm_grid import kmeans_params, machine, make_data, paired_e_steps

    from ppl_dgm.models.gmm_em import GMMFamily

    torch.set_num_threads(args.threads)
    rows = []
    for shape in args.only.split(","):
        n, d, k = map(int, shape.split(":"))
        x = torch.from_numpy(make_data(n, d, k, spread=args.spread))
        forms = ["pruned", "features"] + (["direct"] if 2 * k <= d else [])
        fams = {f: GMMFamily(k, "full", reg_covar=1e-6, strategy=f) for f in forms}
        params = fams["pruned"].params_from_given(*(torch.as_tensor(a) for a in kmeans_params(x.numpy(), k)))
        times, _ = paired_e_steps(fams, params, x, args.rounds, 2)
        ns = {f: float(np.median(t)) / n * 1e9 for f, t in times.items()}
        pairs = fams["pruned"].last_pairs_per_row
        dense = min((f for f in forms if f != "pruned"), key=ns.get)
        faster = "pruned" if ns["pruned"] < ns[dense] else dense
        picks = "pruned" if GMMFamily(k, "full").prune_pays(pairs, d) else "dense"
        row = {"n": n, "d": d, "k": k, "spread": args.spread, "pairs_per_row": pairs,
               **{f"{f}_ns_per_row": v for f, v in ns.items()}, "faster": faster, "model_picks": picks,
               "model_right": (picks == "pruned") == (faster == "pruned"),
               "loss_if_wrong": max(ns["pruned"], ns[dense]) / min(ns["pruned"], ns[dense])}
        rows.append(row)
        print(f"N={n:,} D={d} K={k}: {pairs:.2f} pairs/row; ns/row " + ", ".join(f"{f} {v:.0f}" for f, v in
              ns.items()) + f"; faster {faster}, model picks {picks}" + ("" if row["model_right"] else
              f" (WRONG: {row['loss_if_wrong']:.2f}x slower)"), flush=True)
    path = HERE / "results" / f"gmm_forms_{args.tag}.json"
    path.write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine(args.threads), "rows": rows},
                               indent=1))
    print(f"model right on {sum(r['model_right'] for r in rows)} of {len(rows)} shapes; wrote {path}")


if __name__ == "__main__":
    main()

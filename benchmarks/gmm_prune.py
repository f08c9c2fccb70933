"""The pruned E-step against the dense form on real data and on separated blobs: whole fits, side by side.

``GMMFamily(strategy="auto")`` (which may take the pruned form, ppl_dgm/models/gmm_prune.py) against the dense
form it would take otherwise (``direct`` for ``4 K <= D``, else ``features``), 20 EM iterations (``tol=0``) from
the same k-means start, full covariances, float64, ``reg_covar=1e-3`` (pixel data has constant columns):

* digits (1,797 x 64, K = 10; too few rows for ``auto`` to prune: the control);
* Fashion-MNIST training images (60,000 x 784) projected on their first 32 and 64 principal components,
  K = 20 and 64 (overlapping components: the screen should send every E-step to the dense form);
* blobs (100,000 x 64, K = 16, benchmarks/gmm_grid.py's generator; separated clusters).

Prints and writes the seconds of each fit, their ratio, the last screen's pairs per row and the final
log-likelihoods (equal to ~1e-12: the pruned form skips only pairs below ``exp(-60)``).  Needs the Debian
package ``dataset-fashion-mnist`` for the Fashion-MNIST rows (skipped without it).

    python benchmarks/gmm_prune.py [--threads 2] [--iters 20] [--out benchmarks/results/gmm_prune.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def datasets() -> dict:
    from gmm_grid import make_data
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    from ppl_dgm.data import load_dataset

    out = {"digits (1,797 x 64), K = 10": (load_digits().data.astype(float), 10)}
    try:
        fashion = load_dataset("fashion-mnist").x_train.numpy().astype(float)  # (60,000, 784), grey levels
    except Exception as e:  # noqa: BLE001 - the package is optional
        print(f"Fashion-MNIST skipped: {e}")
    else:
        for dim, k in ((32, 20), (64, 64)):
            out[f"Fashion-MNIST PCA-{dim} (60,000 x {dim}), K = {k}"] = (
                PCA(dim, random_state=0).fit_transform(fashion), k)
    out["blobs (100,000 x 64), K = 16"] = (make_data(100_000, 64, 16), 16)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default=str(OUT / "gmm_prune.json"))
    args = ap.parse_args()
    from _timing import machine, pin_threads

    pin_threads(args.threads)
    import torch

    from ppl_dgm.inference.em import fit_em
    from ppl_dgm.models.gmm_em import GMMFamily

    torch.set_num_threads(args.threads)
    rows = []
    for name, (x, k) in datasets().items():
        xt = torch.tensor(x)
        start = GMMFamily(k, "full", reg_covar=1e-3)
        init = start.initialize(start.prepare(xt), torch.Generator().manual_seed(0))
        dense = "direct" if 4 * k <= x.shape[1] else "features"
        row = {"data": name, "n": len(x), "d": x.shape[1], "k": k, "dense_form": dense}
        for label, strategy in (("auto", "auto"), ("dense", dense)):
            fam = GMMFamily(k, "full", reg_covar=1e-3, strategy=strategy)
            t = time.perf_counter()
            res = fit_em(fam, xt, init=init, max_iter=args.iters, tol=0.0, warn=False)
            row[f"{label}_s"] = time.perf_counter() - t
            row[f"{label}_log_likelihood"] = res.history[-1]
            if label == "auto":
                row["pruned_allowed"] = fam.use_pruned(x.shape[1], len(x))
                row["pairs_per_row"] = getattr(fam, "last_pairs_per_row", None)
        row["dense_over_auto"] = row["dense_s"] / row["auto_s"]
        row["rel_diff"] = abs(row["auto_log_likelihood"] / row["dense_log_likelihood"] - 1)
        rows.append(row)
        pairs = "-" if row["pairs_per_row"] is None else f"{row['pairs_per_row']:.2f}"
        print(f"{name}: auto {row['auto_s']:.2f} s, {dense} {row['dense_s']:.2f} s, x{row['dense_over_auto']:.2f}; "
              f"pairs/row at the last screen {pairs} of {k}; log-lik rel diff {row['rel_diff']:.1e}", flush=True)
    out = {"command": "python benchmarks/gmm_prune.py " + f"--threads {args.threads} --iters {args.iters}",
           "machine": machine(threads=args.threads), "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

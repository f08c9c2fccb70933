"""Fit a Gaussian mixture by EM, check it against scikit-learn and the other backends, look at the fit.

Run:  python examples/em_gmm.py [--out em_gmm_run]     (a few seconds on a CPU)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ppl_dgm import GaussianMixture, load_run, save_run
from ppl_dgm.inference.em import pyro_elbo
from ppl_dgm.plotting import plot_ellipses, plot_loglik
from ppl_dgm.runs import evaluate_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="em_gmm_run")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--quick", action="store_true", help="a small data set (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.n = 300
    torch.set_num_threads(1)  # 2-D toy data: one thread is fastest (threads cost more than they give)

    rng = np.random.default_rng(0)
    centers, scales = np.array([[0, 0], [3, 3], [-3, 2]]), [1.0, 0.6, 0.8]
    x = np.concatenate([rng.normal(size=(args.n // 3, 2)) * s + c
                        for s, c in zip(scales, centers, strict=True)])

    gmm = GaussianMixture(3, covariance_type="full", n_init=2, tol=1e-6, random_state=0).fit(x)
    print(f"converged={gmm.converged_} after {gmm.n_iter_} iterations; "
          f"mean log-likelihood {gmm.score(x):.6f}, BIC {gmm.bic(x):.1f}")
    print("weights", np.round(gmm.weights_, 3))

    # EM's guide is the exact posterior over c: the ELBO from Pyro's traces is the log-likelihood
    model = gmm.model_
    xt = torch.tensor(x)
    print(f"ELBO/N via TraceEnum_ELBO {pyro_elbo(model.model, model.guide, xt) / len(x):.6f}")

    from sklearn.mixture import GaussianMixture as SkGM

    print(f"scikit-learn              {SkGM(3, n_init=2, tol=1e-6, random_state=0).fit(x).score(x):.6f}")
    for backend in ("jax", "svi"):  # the same EM loop in JAX; MAP by SVI with c summed out
        other = GaussianMixture(3, tol=1e-6, max_iter=200, random_state=0, backend=backend).fit(x)
        print(f"backend={backend:4s}               {other.score(x):.6f}")

    run = save_run(gmm.model_, args.out, history=[{"iteration": i + 1, "log_likelihood": v}
                                                  for i, v in enumerate(gmm.lower_bounds_)])
    plot_loglik(gmm.lower_bounds_, run / "loglik.png")
    plot_ellipses(x, gmm.weights_, gmm.means_, gmm.covariances_, "full", run / "ellipses.png",
                  labels=gmm.predict(x))
    print(f"wrote {run}/loglik.png and {run}/ellipses.png;", evaluate_run(load_run(run), xt))


if __name__ == "__main__":
    main()

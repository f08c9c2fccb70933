"""Run directories for EM fits (GMM and PPCA): fit, save, reload, evaluate.

A run directory holds::

    config.json     {"family": "gmm" | "ppca", constructor arguments, n_features,
                     lower_bounds, converged, n_iter, ...}
    params.pt       dict of tensors (torch.save; read with torch.load(weights_only=True))
    loglik.png      log-likelihood per EM iteration
    ellipses.png    fitted ellipses over the points (2-D GMM data only)

Both files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._facades import PPCA, GaussianMixture, check_array
from .errors import CheckpointError, InputError
from .utils import atomic_write_bytes, atomic_write_json, ensure_writable_dir

Estimator = GaussianMixture | PPCA
GMM_ARGS = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
            "init_params", "random_state", "backend", "dtype")
PPCA_ARGS = ("n_components", "method", "tol", "max_iter", "random_state", "dtype")


def fit_estimator(family: str, x: Any, **kwargs: Any) -> Estimator:
    """Fit ``GaussianMixture`` (``family='gmm'``) or ``PPCA`` (``'ppca'``) on ``x`` (N, D)."""
    if family == "gmm":
        return GaussianMixture(**kwargs).fit(x)
    if family == "ppca":
        return PPCA(**kwargs).fit(x)
    raise InputError(f"expected family 'gmm' or 'ppca'; got {family!r}")


def save_run(estimator: Estimator, run_dir: str | os.PathLike, config: dict | None = None, *,
             x: Any = None) -> Path:
    """Write ``config.json``, ``params.pt`` and the plots (``x`` given) into ``run_dir``."""
    run = ensure_writable_dir(run_dir)
    if isinstance(estimator, GaussianMixture):
        family, args = "gmm", GMM_ARGS
        tensors = {k: torch.as_tensor(getattr(estimator, k)) for k in
                   ("weights_", "means_", "covariances_", "precisions_cholesky_")}
    elif isinstance(estimator, PPCA):
        family, args = "ppca", PPCA_ARGS
        tensors = {"components_": torch.as_tensor(estimator.components_),
                   "mean_": torch.as_tensor(estimator.mean_),
                   "noise_variance_": torch.tensor(estimator.noise_variance_)}
    else:
        raise InputError(f"expected a GaussianMixture or PPCA; got {type(estimator).__name__}")
    if not hasattr(estimator, "n_features_in_"):
        raise InputError(f"expected a fitted {type(estimator).__name__}; got an unfitted one")
    cfg = {**(config or {}), "family": family,
           **{a: getattr(estimator, a) for a in args},
           "n_features": int(estimator.n_features_in_),
           "lower_bounds": [float(v) for v in estimator.lower_bounds_],
           "converged": bool(estimator.converged_), "n_iter": int(estimator.n_iter_)}
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    atomic_write_bytes(run / "params.pt", buf.getvalue())
    atomic_write_json(run / "config.json", cfg)
    if x is not None:
        save_plots(estimator, run, check_array(x))
    return run


def save_plots(estimator: Estimator, run_dir: str | os.PathLike, x: np.ndarray) -> list[Path]:
    """``loglik.png`` always; ``ellipses.png`` for a GMM on 2-D data."""
    from .plots_em import plot_ellipses, plot_loglik

    run = Path(run_dir)
    out = [run / "loglik.png"]
    plot_loglik(estimator.lower_bounds_, out[0])
    if isinstance(estimator, GaussianMixture) and x.shape[1] == 2:
        out.append(run / "ellipses.png")
        plot_ellipses(x, estimator.weights_, estimator.means_, estimator.covariances_,
                      estimator.covariance_type, out[1], labels=estimator.predict(x))
    return out


def load_run(run_dir: str | os.PathLike) -> Estimator:
    """Rebuild the fitted estimator saved by :func:`save_run`."""
    from .models.gmm import GMM, GMMParams
    from .models.ppca import PPCA as PPCAModel
    from .models.ppca import PPCAParams

    run = Path(run_dir)
    try:
        cfg = json.loads((run / "config.json").read_text())
        tensors = torch.load(run / "params.pt", weights_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"expected an EM run directory with config.json and params.pt; "
                              f"got {str(run)!r} ({e})") from None
    family = cfg.get("family")
    if family == "gmm":
        est: Estimator = GaussianMixture(**{a: cfg[a] for a in GMM_ARGS})
        params = GMMParams(*(tensors[k] for k in ("weights_", "means_", "covariances_",
                                                  "precisions_cholesky_")))
        est.model_ = GMM.from_params(params, cfg["covariance_type"])
        for k, v in tensors.items():
            setattr(est, k, v.numpy())
        u = params.precisions_cholesky
        est.precisions_ = (u @ u.transpose(-1, -2) if cfg["covariance_type"] in ("full", "tied")
                           else u**2).numpy()
    elif family == "ppca":
        est = PPCA(**{a: cfg[a] for a in PPCA_ARGS})
        p = PPCAParams(tensors["components_"], tensors["mean_"], tensors["noise_variance_"])
        est.model_ = PPCAModel.from_params(p)
        est.components_, est.mean_ = p.W.numpy(), p.mu.numpy()
        est.noise_variance_ = float(p.sigma2)
    else:
        raise CheckpointError(f"expected config family 'gmm' or 'ppca'; got {family!r}")
    est.n_features_in_ = int(cfg["n_features"])
    est.lower_bounds_ = list(cfg["lower_bounds"])
    est.lower_bound_ = est.lower_bounds_[-1]
    est.converged_, est.n_iter_ = bool(cfg["converged"]), int(cfg["n_iter"])
    return est


def evaluate_run(run_dir: str | os.PathLike, x: Any) -> dict[str, float | int]:
    """``{"log_likelihood": mean per sample, "bic": ..., "n": N}`` of a saved run on ``x``."""
    est = load_run(run_dir)
    arr = check_array(x, n_features=est.n_features_in_)
    return {"log_likelihood": est.score(arr), "bic": est.bic(arr), "n": int(arr.shape[0])}

"""``ppl-dgm fit gmm`` and ``ppl-dgm fit ppca``: the EM families' commands, and their run dirs
for ``evaluate`` and ``sample``.

Registered on the ``fit`` group of :mod:`ppl_dgm.cli` when that module is imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .cli import fit
from .errors import InputError

EM_FAMILIES = ("gmm", "ppca")


def em_family(run_dir) -> str | None:
    """``"gmm"``/``"ppca"`` if ``run_dir`` is an EM run (config.json + params.pt), else None."""
    cfg = Path(run_dir) / "config.json"
    if not (Path(run_dir) / "params.pt").is_file() or not cfg.is_file():
        return None
    try:
        family = json.loads(cfg.read_text()).get("family")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return family if family in EM_FAMILIES else None


def _em_data_options(f):
    f = click.option("--data-dir", type=click.Path(file_okay=False), default=None)(f)
    f = click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
                     help="A .npy array (N, D) or .npz with x [x_test].")(f)
    f = click.option("--dataset", default=None, help="A named dataset (see `ppl-dgm list`); default digits.")(f)
    f = click.option("--out", type=click.Path(), default=None, help="Run directory (default runs/<family>-<data>).")(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)(f)
    f = click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)(f)
    f = click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)(f)
    f = click.option("--tol", type=click.FloatRange(min=0), default=1e-3, show_default=True)(f)
    f = click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True)(f)
    return f


def _load(dataset, data_path, data_dir, seed):
    """Train and held-out arrays (float64, flattened) and the data spec stored in config.json."""
    from .runs import DataSpec

    if dataset and data_path:
        raise InputError(f"expected one of --dataset or --data; got both ({dataset!r} and {data_path!r})")
    spec = DataSpec(dataset if not data_path else None, data_path, data_dir, "none", seed)
    ds = spec.load()
    return ds.x_train.double().numpy(), ds.x_test.double().numpy(), spec, ds


def _finish(family: str, est, x_tr, x_te, spec, ds, out, extra: dict) -> None:
    from .em_runs import save_run
    from .runs import RUN_FORMAT, default_out_dir

    path = Path(out) if out else default_out_dir(family, spec)
    if (path / "params.pt").exists():
        raise InputError(f"{path} already holds a run; choose another --out")
    cfg = {"format": RUN_FORMAT, "data": {**spec.as_dict(), "shape": list(ds.shape), "kind": ds.kind,
                                          "name": ds.name}, **extra}
    save_run(est, path, cfg, x=x_tr)
    click.echo(f"{family}: {ds.summary()}; converged={est.converged_} after {est.n_iter_} iterations\n"
               f"  mean log-likelihood: train {est.score(x_tr):.4f}, held-out {est.score(x_te):.4f} nats; "
               f"BIC (held-out) {est.bic(x_te):.1f}\n  run dir {path}")


@fit.command("gmm")
@_em_data_options
@click.option("--components", "-k", type=click.IntRange(min=1), default=3, show_default=True, help="K.")
@click.option("--covariance", type=click.Choice(["full", "diag", "spherical", "tied"]), default="full",
              show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True, help="Restarts; best kept.")
@click.option("--init", "init_params", type=click.Choice(["kmeans", "k-means++", "random_from_data", "random"]),
              default="kmeans", show_default=True)
@click.option("--reg-covar", type=click.FloatRange(min=0), default=1e-6, show_default=True)
@click.option("--backend", type=click.Choice(["pyro", "numpyro"]), default="pyro", show_default=True)
def fit_gmm(max_iter, tol, dtype, device, seed, out, dataset, data_path, data_dir, components, covariance,
            n_init, init_params, reg_covar, backend):
    """Gaussian mixture by EM: exact E-step (responsibilities), closed-form M-step."""
    from .em_runs import fit_estimator

    x_tr, x_te, spec, ds = _load(dataset, data_path, data_dir, seed)
    est = fit_estimator("gmm", x_tr, n_components=components, covariance_type=covariance, tol=tol,
                        reg_covar=reg_covar, max_iter=max_iter, n_init=n_init, init_params=init_params,
                        random_state=seed, backend=backend, device=device, dtype=dtype)
    _finish("gmm", est, x_tr, x_te, spec, ds, out, {})


@fit.command("ppca")
@_em_data_options
@click.option("--latent-dim", type=click.IntRange(min=1), default=2, show_default=True, help="q, the latent size.")
@click.option("--method", type=click.Choice(["closed_form", "em"]), default="closed_form", show_default=True)
def fit_ppca(max_iter, tol, dtype, device, seed, out, dataset, data_path, data_dir, latent_dim, method):
    """Probabilistic PCA (Tipping & Bishop): closed-form maximum likelihood, or EM."""
    from .em_runs import fit_estimator

    x_tr, x_te, spec, ds = _load(dataset, data_path, data_dir, seed)
    est = fit_estimator("ppca", x_tr, n_components=latent_dim, method=method, tol=tol, max_iter=max_iter,
                        random_state=seed, device=device, dtype=dtype)
    _finish("ppca", est, x_tr, x_te, spec, ds, out, {})


def evaluate_em(run_dir, dataset, data_path, data_dir) -> dict:
    """``log_likelihood`` (mean per sample), ``bic``, ``n`` of an EM run on the chosen data."""
    from .data import load_dataset
    from .data.images import load_array_file
    from .em_runs import evaluate_run

    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    if data_path:
        _, _, x, _, _ = load_array_file(data_path, 0, evaluation=True)
        x, name = x.reshape(len(x), -1).astype(np.float64), str(data_path)
    else:
        d = cfg.get("data", {})
        ds = load_dataset(dataset or d.get("dataset"), path=None if dataset else d.get("path"),
                          data_dir=data_dir or d.get("data_dir"), seed=d.get("seed", 0))
        x, name = ds.x_test.double().numpy(), ds.name
    return {"run": str(run_dir), "family": cfg["family"], "data": name, **evaluate_run(run_dir, x)}


def sample_em(run_dir, n: int, seed: int) -> np.ndarray:
    """n draws from a fitted GMM or PPCA, shape (n, D)."""
    from .em_runs import load_run

    est = load_run(run_dir)
    est.random_state = seed
    out = est.sample(n)
    return out[0] if isinstance(out, tuple) else out

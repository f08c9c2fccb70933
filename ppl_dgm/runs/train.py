"""Train any family into a run directory: the registry says which trainer, the config which options."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import Dataset, check_unit_interval
from ..errors import InputError
from ..inference import fit_svi, make_objective
from ..inference.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ..models import Family, GenerativeModel, get_family
from ..models.options import FitOptions
from ..utils import atomic_write_json, resolve_device, seed_everything
from .store import DataSpec, Run, load_run, prepare_out_dir, read_config, run_config


def check_data(family: Family, ds: Dataset, model_cfg: dict) -> None:
    """Data the model cannot score are refused before anything is written."""
    if model_cfg.get("likelihood") in ("bernoulli", "continuous-bernoulli") and ds.binarize == "none":
        check_unit_interval(ds.x_train, f"{ds.name} (train)")
        check_unit_interval(ds.x_test, f"{ds.name} (test)")
    if family.conditional:
        if ds.y_train is None or ds.y_test is None:
            raise InputError(f"a conditional model needs labelled data (y and y_test); {ds.name} has none")
        lo = int(min(ds.y_train.min(), ds.y_test.min()))
        hi = int(max(ds.y_train.max(), ds.y_test.max()))
        if lo < 0 or hi >= model_cfg["n_classes"]:
            raise InputError(f"expected labels in 0..{model_cfg['n_classes'] - 1}; {ds.name} has labels in {lo}..{hi}")


def objective_for(options: FitOptions, model: GenerativeModel):
    """The training objective named by ``options``' objective fields (None: ``fit_svi``'s default)."""
    o = options.values("objective")
    if not o:
        return None
    return make_objective(o["objective"], o["particles"], o["beta"], o["warmup_epochs"], o["free_bits"],
                          sites=model.latent_sites)


def _resumed(family: Family, out: str | Path | None, epochs: int | None):
    """The stored options, data and model config of the run in ``out`` (only ``epochs`` may change)."""
    if out is None or not (Path(out) / "config.json").exists():
        raise InputError(f"--resume: expected a run directory with config.json at {out}; found none")
    cfg = read_config(out)
    if cfg["family"] != family.name:
        raise InputError(f"--resume: {out} holds a {cfg['family']!r} run; got `fit {family.name}`")
    if family.trainer != "svi":
        raise InputError(f"--resume: {family.name} is fitted by {family.trainer} in one call; fit it into a new --out")
    options = family.config.from_stored(cfg["train"])
    if epochs is not None:
        options = dataclasses.replace(options, epochs=epochs)
    return options, DataSpec.from_config(cfg["data"]), cfg["model"]


def train_run(family: str | Family, options: FitOptions, data: DataSpec, *, out: str | Path | None = None,
              resume: bool = False, device: str = "cpu", progress: bool = True,
              echo: Callable[[str], None] = print) -> Run:
    """Fit ``family`` with ``options`` on ``data`` into a run directory; returns the loaded :class:`Run`.

    With ``resume`` the options, data and model come from the run's ``config.json``; only
    ``options.epochs`` (if set) may raise the number of epochs.
    """
    family = get_family(family) if isinstance(family, str) else family
    model_cfg = None
    if resume:
        options, data, model_cfg = _resumed(family, out, getattr(options, "epochs", None))
    ds = data.load()
    options = options.resolve(ds)
    if family.trainer == "em":
        return _train_em(family, options, data, ds, out, device, echo)
    model_cfg = model_cfg or options.model_kwargs(ds)
    check_data(family, ds, model_cfg)
    seed_everything(data.seed)  # the initial weights follow the seed
    model = family.model(**model_cfg)
    loss = objective_for(options, model)  # built before anything is written: bad combinations are refused
    out_path = prepare_out_dir(out, family.name, data, resume)
    train = {**options.values("train"), **options.values("objective")}
    config = run_config(model, data, ds, train)
    atomic_write_json(out_path / "config.json", config)
    echo(f"{family.name}: {ds.summary()}; writing {out_path}")
    return _fit_svi(family, model, loss, options, ds, data.seed, out_path, config, resume, device, progress, echo)


def _fit_svi(family, model, loss, options, ds, seed, out_path, config, resume, device, progress, echo) -> Run:
    if resolve_device(device).type == "cpu" and ds.kind == "vector":
        torch.set_num_threads(1)  # small MLPs on vectors: intra-op threads cost more than they give
    data = (lambda x, y: (x, y)) if family.conditional else (lambda x, y: x)
    result = fit_svi(model, data(ds.x_train, ds.y_train), test=data(ds.x_test, ds.y_test), loss=loss,
                     resume=resume, device=device, seed=seed, progress=progress, transform=ds.batch_transform(),
                     out_dir=out_path, config=config, **options.values("train"))
    if result.history:
        last = result.history[-1]
        echo(f"done: epoch {last['epoch']}, train objective {last['train_elbo']:.3f}, held-out ELBO "
             f"{last.get('test_elbo', float('nan')):.3f} nats/example; run dir {out_path}")
    return load_run(out_path, device=device)


def _train_em(family: Family, options, data: DataSpec, ds: Dataset, out, device: str, echo) -> Run:
    from ..estimators import ESTIMATORS

    x_tr, x_te = ds.x_train.double().numpy(), ds.x_test.double().numpy()
    est = ESTIMATORS[family.name](**options.estimator_params(), random_state=data.seed, device=device).fit(x_tr)
    model: GenerativeModel = est.model_
    out_path = prepare_out_dir(out, family.name, data, False)
    history = [{"iteration": i + 1, "log_likelihood": v} for i, v in enumerate(est.lower_bounds_)]
    save_checkpoint(out_path / CHECKPOINT_NAME, {"family": family.name, "epoch": int(est.n_iter_),
                                                  "model": model.state_dict(), "history": json.dumps(history)})
    atomic_write_json(out_path / "history.json", history)
    config = run_config(model, data, ds, options.values("train"),
                        result={"converged": bool(est.converged_), "n_iter": int(est.n_iter_)})
    atomic_write_json(out_path / "config.json", config)
    echo(f"{family.name}: {ds.summary()}; converged={est.converged_} after {est.n_iter_} iterations\n"
         f"  mean log-likelihood: train {est.score(x_tr):.4f}, held-out {est.score(x_te):.4f} nats; "
         f"BIC (held-out) {est.bic(x_te):.1f}\n  run dir {out_path}")
    return load_run(out_path, device=device)

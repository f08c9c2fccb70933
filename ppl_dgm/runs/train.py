"""Train any family into a run directory: the registry says which trainer, the config which options."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import Dataset, check_label_range, check_unit_interval
from ..errors import InputError
from ..inference import AdversarialObjective, fit_svi, make_objective
from ..inference.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ..inference.distributed import barrier, data_parallel, launched
from ..models import Family, GenerativeModel, get_family
from ..models.options import FitOptions
from ..numpyro.inference.checkpoint import CHECKPOINT_NPZ as NUMPYRO_CHECKPOINT
from ..utils import atomic_write_json, resolve_device, seed_everything, set_threads
from .store import DataSpec, Run, clear_run, load_run, out_dir_for, read_config, run_config, run_lock


def check_data(model: GenerativeModel, ds: Dataset, model_cfg: dict) -> None:
    """Data the model cannot score are refused before anything is written."""
    if model_cfg.get("likelihood") in ("bernoulli", "continuous-bernoulli") and ds.binarize == "none":
        check_unit_interval(ds.x_train, f"{ds.name} (train)")
        check_unit_interval(ds.x_test, f"{ds.name} (test)")
    if model.conditional:
        if ds.y_train is None or ds.y_test is None:
            raise InputError(f"a conditional model needs labelled data (y and y_test); {ds.name} has none")
        check_label_range(torch.cat([ds.y_train, ds.y_test]), model_cfg["n_classes"], ds.name)


def objective_for(options: FitOptions, model: GenerativeModel):
    """The training objective named by ``options``' objective fields (None: ``fit_svi``'s default); the GAN game
    (:class:`~ppl_dgm.inference.AdversarialObjective`) for a family fitted by the adversarial trainer."""
    o = options.values("objective")
    if get_family(model.family).trainer == "adversarial":
        return AdversarialObjective(**o)
    if not o:
        return None
    return make_objective(o["objective"], o["particles"], o["beta"], o["warmup_epochs"], o["free_bits"],
                          sites=model.latent_sites)


def _resumed(family: Family, out: str | Path | None, epochs: int | None):
    """The stored options, data and model config of the run in ``out`` (only ``epochs`` may grow)."""
    if out is None:
        raise InputError("--resume: expected --out, the run directory to continue (e.g. runs/"
                         f"{family.name}-digits); got none")
    if not (Path(out) / "config.json").exists():
        raise InputError(f"--resume: expected a run directory with config.json at {out}; found none")
    cfg = read_config(out)
    if cfg["family"] != family.name:
        raise InputError(f"--resume: {out} holds a {cfg['family']!r} run; got `fit {family.name}`")
    if family.trainer not in ("svi", "ml", "adversarial"):
        raise InputError(f"--resume: {family.name} is fitted by {family.trainer} in one call; fit it into a new --out")
    name = NUMPYRO_CHECKPOINT if cfg["train"].get("backend") == "numpyro" else CHECKPOINT_NAME
    if not (Path(out) / name).is_file():
        raise InputError(f"--resume: expected {Path(out) / name} to continue from; found none "
                         f"(pass --overwrite to fit again from the start)")
    options = family.config.from_stored(cfg["train"])
    if epochs is not None:
        if epochs < options.epochs:
            raise InputError(f"--resume: --epochs may only grow; the run was set to {options.epochs} epochs; "
                             f"got {epochs}")
        options = dataclasses.replace(options, epochs=epochs)
    return options, DataSpec.from_config(cfg["data"]), cfg["model"]


def train_run(family: str | Family, options: FitOptions, data: DataSpec, *, out: str | Path | None = None,
              resume: bool = False, overwrite: bool = False, device: str = "cpu", progress: bool = True,
              threads: int | str = "auto", echo: Callable[[str], None] = print) -> Run | None:
    """Fit ``family`` with ``options`` on ``data`` into a run directory; returns the loaded :class:`Run`.

    A folder that holds a run is refused unless ``resume`` (the same family; options, data and model
    then come from its ``config.json``, and only ``options.epochs`` may grow) or ``overwrite``.  The
    folder is locked while the fit writes; a fit that fails before its first checkpoint leaves nothing.
    ``threads`` is torch's CPU thread count, or ``"auto"`` (:func:`ppl_dgm.utils.set_threads`).
    Under ``torchrun --nproc-per-node N`` an SVI family is fitted data-parallel and ``gmm`` (torch backend) by
    sharded EM; only rank 0 writes the folder and gets the :class:`Run` (the other ranks get None).
    """
    family = get_family(family) if isinstance(family, str) else family
    if resume and overwrite:
        raise InputError("expected one of resume (continue the run) or overwrite (replace it); got both")
    resolve_device(device)  # refuse a missing CUDA before anything is read or written
    model_cfg = None
    if resume:
        options, data, model_cfg = _resumed(family, out, getattr(options, "epochs", None))
    elif getattr(options, "latent_of", None):
        data = DataSpec(latent_of=options.latent_of, seed=data.seed)  # the encoder run's data, encoded
    elif getattr(options, "codes_of", None):
        data = DataSpec(codes_of=options.codes_of, seed=data.seed)  # the VQ-VAE run's data, as code maps
    ds = data.load()
    options = options.resolve(ds)
    out_path = out_dir_for(out, family.name, data)
    if family.trainer == "em":
        return _train_em(family, options, data, ds, out_path, overwrite, device, echo)
    model_cfg = model_cfg or options.model_kwargs(ds)
    seed_everything(data.seed)  # the initial weights follow the seed
    model = family.model(**model_cfg)
    check_data(model, ds, model_cfg)
    numpyro = getattr(options, "backend", "pyro") == "numpyro"
    if not numpyro and getattr(options, "jax_devices", 1) > 1:
        raise InputError(f"--jax-devices shards the NumPyro backend's minibatches; expected --backend numpyro (the "
                         f"Pyro backend scales out with torchrun, docs/scaling.md); got --jax-devices "
                         f"{options.jax_devices} with --backend pyro")
    twin = numpyro_twin(family.name, model_cfg, data.seed, options) if numpyro else None  # or a one-line refusal
    loss = objective_for(options, model)  # built before anything is written: bad combinations are refused
    set_threads(threads, n_params=sum(p.numel() for p in model.parameters()), device=device)
    if launched():  # torchrun: rank 0 holds the lock and writes the files; the others wait for it, then fit
        return _fit_data_parallel(family, model, loss, options, data, ds, out_path, resume, overwrite, device,
                                  progress, echo, numpyro)
    with run_lock(out_path):
        clear_run(out_path, resume, overwrite)
        config = run_config(model, data, ds, {**options.values("train"), **options.values("objective"),
                                              **options.values("backend")})
        atomic_write_json(out_path / "config.json", config)
        echo(f"{family.name}: {ds.summary()}; writing {out_path}{' (NumPyro backend)' if numpyro else ''}")
        if numpyro:
            return _fit_numpyro(family, twin, options, ds, data.seed, out_path, resume, device, progress, echo)
        return _fit_svi(family, model, loss, options, ds, data.seed, out_path, config, resume, device, progress,
                        echo)


def _fit_data_parallel(family, model, loss, options, data, ds, out_path, resume, overwrite, device, progress, echo,
                       numpyro) -> Run | None:
    """``train_run`` under ``torchrun`` (:mod:`ppl_dgm.inference.distributed`): rank 0 takes the folder's lock,
    clears it and writes ``config.json`` while the other ranks wait at a barrier; every rank then fits its share
    (rank 0 writes the checkpoints, the history and prints).  Returns the :class:`Run` on rank 0, None elsewhere."""
    if numpyro:
        raise InputError("torchrun runs the Pyro backend data-parallel; the NumPyro backend shards over JAX devices "
                         "in one process (--jax-devices): expected no torchrun with --backend numpyro")
    ctx = data_parallel(device)
    fuse = getattr(options, "fuse_step", False)  # checked before anything is written
    ctx.check_fit(options.batch_size, loss, getattr(options, "compile_step", False) or fuse,
                  "fuse_step" if fuse else "compile_step")
    config = run_config(model, data, ds, {**options.values("train"), **options.values("objective"),
                                          **options.values("backend")})
    if ctx.rank:
        barrier()  # rank 0 has cleared the folder and written config.json
        _fit_svi(family, model, loss, options, ds, data.seed, out_path, config, resume, ctx.device, progress=False,
                 echo=lambda m: None, load=False)
        barrier()  # leave with rank 0 (a rank that exits while another still uses the group may abort it)
        return None
    with run_lock(out_path):
        try:
            clear_run(out_path, resume, overwrite)
            atomic_write_json(out_path / "config.json", config)
        finally:
            barrier()
        echo(f"{family.name}: {ds.summary()}; writing {out_path} ({ctx.world_size} processes, torchrun)")
        run = _fit_svi(family, model, loss, options, ds, data.seed, out_path, config, resume, ctx.device, progress,
                       echo)
    barrier()
    return run


def numpyro_twin(family: str, model_cfg: dict, seed: int, options: FitOptions):
    """The NumPyro twin of ``family`` built from the Pyro model's constructor arguments (imports JAX); its
    objective is checked here, before anything is written."""
    from ..numpyro.inference.svi import make_loss
    from ..numpyro.models import twin_class

    twin = twin_class(family)(**model_cfg, seed=seed)
    for flag in ("compile_step", "fuse_step"):
        if getattr(options, flag, False):
            name = "--" + flag.replace("_", "-")
            raise InputError(f"{name} records the Pyro backend's step; the NumPyro step is always jit-compiled: "
                             f"expected no {name} with --backend numpyro")
    if getattr(options, "precision", "fp32") != "fp32":
        raise InputError(f"--precision applies to the Pyro backend; expected --precision fp32 with --backend numpyro; "
                         f"got {options.precision}")
    if getattr(options, "jax_devices", 1) > 1:
        from ..numpyro.inference.svi import data_parallel

        data_parallel(options.jax_devices, options.batch_size)  # refuses more devices than JAX sees
    o = options.values("objective")
    make_loss(o["objective"], o["particles"], twin, o["free_bits"])
    return twin


def load_twin(run: Run):
    """``(twin, params)``: the NumPyro twin of a fitted vae/cvae/hvae run (either backend; MLP networks) with the
    run's weights, for JAX-side work (``twin.sample``, :func:`ppl_dgm.export.svi_to_inference_data`)."""
    cfg = run.config
    twin = numpyro_twin(run.family.name, cfg["model"], cfg["data"]["seed"], run.family.config.from_stored(cfg["train"]))
    return twin, twin.params_from_torch(run.model.state_dict())


def _fit_numpyro(family, twin, options, ds, seed, out_path, resume, device, progress, echo) -> Run:
    """``--backend numpyro``: the twin trained by NumPyro's SVI under jit into the same run directory."""
    from ..numpyro.inference.svi import fit

    if device != "cpu":
        echo("--backend numpyro runs on JAX's default device (CPU here); --device applies to the Pyro backend")
    train, objective = options.values("train"), options.values("objective")
    y = (lambda t: None if t is None else t.numpy()) if twin.conditional else (lambda t: None)
    _, history = fit(twin, ds.x_train.numpy(), y(ds.y_train), ds.x_test.numpy() if len(ds.x_test) else None,
                     y(ds.y_test), **objective, epochs=train["epochs"], batch_size=train["batch_size"], lr=train["lr"],
                     optimizer=train["optimizer"], lr_schedule=train["lr_schedule"], clip_norm=train["clip_norm"],
                     checkpoint_every=train["checkpoint_every"], held_out_examples=train["held_out_examples"],
                     seed=seed, binarize=ds.binarize == "dynamic", out_dir=out_path, resume=resume, progress=progress,
                     devices=options.jax_devices)
    if history:
        last = history[-1]
        echo(f"done: epoch {last['epoch']}, train objective {last['train_elbo']:.3f}, held-out ELBO "
             f"{last.get('test_elbo', float('nan')):.3f} nats/example; run dir {out_path}")
    return load_run(out_path, device=device)


def _fit_svi(family, model, loss, options, ds, seed, out_path, config, resume, device, progress, echo,
             load: bool = True) -> Run | None:
    data = (lambda x, y: (x, y)) if model.conditional else (lambda x, y: x)
    test = data(ds.x_test, ds.y_test) if len(ds.x_test) else None
    result = fit_svi(model, data(ds.x_train, ds.y_train), test=test, loss=loss,
                     resume=resume, device=device, seed=seed, progress=progress, transform=ds.batch_transform(),
                     out_dir=out_path, config=config, **options.values("train"))
    if result.history and family.trainer == "adversarial":
        last = result.history[-1]
        held = f", held-out V(D, G) {last['test_value']:.4f}" if "test_value" in last else ""
        echo(f"done: epoch {last['epoch']}, V(D, G) {last['train_elbo']:.4f} (2 JSD - log 4 = {-math.log(4):.4f} "
             f"when q = p and D is optimal), D(real) {last['d_real']:.3f}, D(fake) {last['d_fake']:.3f}{held}; "
             f"run dir {out_path}")
    elif result.history:
        last = result.history[-1]
        value = last.get("test_elbo", float("nan"))
        held = {"dsm": f"held-out score-matching loss {-value:.4f}",
                "labels": f"held-out log p(y | x) {value:.4f} nats/example",
                "exact": f"held-out log-likelihood {value:.3f} nats/example"}.get(
            family.bound, f"held-out ELBO {value:.3f} nats/example")
        rows = options.held_out_examples
        echo(f"done: epoch {last['epoch']}, train objective {last['train_elbo']:.3f}, {held}"
             f"{f' (first {rows} held-out rows)' if rows and rows < len(ds.x_test) else ''}; run dir {out_path}")
    return load_run(out_path, device=device) if load else None


def _train_em(family: Family, options, data: DataSpec, ds: Dataset, out_path: Path, overwrite: bool, device: str,
              echo) -> Run | None:
    from ..estimators import ESTIMATORS

    x_tr, x_te = ds.x_train.double().numpy(), ds.x_test.double().numpy()
    params, rows, ctx = options.estimator_params(), x_tr, None
    if launched():  # torchrun: sharded EM, each rank its block of rows; rank 0 writes the run
        if family.name != "gmm" or params.get("backend") != "torch":
            what = f"--backend {params['backend']}" if family.name == "gmm" else "a closed-form / one-process fit"
            raise InputError(f"torchrun shards EM for `fit gmm --backend torch`; got `fit {family.name}` with {what}: "
                             f"launch it without torchrun")
        from ..models.shards import shard_rows

        ctx = data_parallel(device)
        params, rows = {**params, "distributed": True}, shard_rows(x_tr, ctx.rank, ctx.world_size)
        device = str(ctx.device)
    est = ESTIMATORS[family.name](**params, random_state=data.seed, device=device).fit(rows)
    if ctx is not None and ctx.rank:
        barrier()  # rank 0 writes the run directory; every rank holds the same parameters
        return None
    model: GenerativeModel = est.model_
    history = [{"iteration": i + 1, "log_likelihood": v} for i, v in enumerate(est.lower_bounds_)]
    with run_lock(out_path):
        clear_run(out_path, False, overwrite)
        save_checkpoint(out_path / CHECKPOINT_NAME, {"family": family.name, "epoch": int(est.n_iter_),
                                                      "model": model.state_dict(), "history": json.dumps(history)})
        atomic_write_json(out_path / "history.json", history)
        atomic_write_json(out_path / "config.json", run_config(
            model, data, ds, options.values("train"), result={"converged": bool(est.converged_),
                                                               "n_iter": int(est.n_iter_)}))
    held_out = (f"held-out {est.score(x_te):.4f} nats; BIC (held-out) {est.bic(x_te):.1f}" if len(x_te)
                else "no held-out rows")
    ranks = f" ({ctx.world_size} processes, torchrun: sharded EM)" if ctx is not None else ""
    echo(f"{family.name}: {ds.summary()}{ranks}; converged={est.converged_} after {est.n_iter_} iterations\n"
         f"  mean log-likelihood: train {est.score(x_tr):.4f}, {held_out}\n  run dir {out_path}")
    if ctx is not None:
        barrier()
    return load_run(out_path, device=device)

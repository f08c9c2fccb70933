"""Run directories: train a family into a folder, and rebuild it from that folder.

A run dir holds ``config.json`` (family, model, data and training options),
``checkpoint.pt`` (tensors only), ``history.json``, and the pictures
``elbo.png``, ``samples.png``, ``reconstructions.png``.  Given only the folder,
:func:`load_run` rebuilds the fitted model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .data import Dataset, apply_binarize_to, check_unit_interval, load_dataset
from .data._dataset import to_tensor_x, to_tensor_y
from .data.images import load_array_file
from .errors import CheckpointError, InputError
from .inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state
from .models import FAMILIES
from .utils import atomic_write_json, ensure_writable_dir, resolve_device, seed_everything

RUN_FORMAT = "ppl_dgm.run/1"


@dataclass
class DataSpec:
    """Where the data come from (stored in ``config.json`` so a run can reload them)."""

    dataset: str | None = None
    path: str | None = None
    data_dir: str | None = None
    binarize: str = "none"
    seed: int = 0

    def load(self) -> Dataset:
        return load_dataset(self.dataset, path=self.path, data_dir=self.data_dir,
                            binarize=self.binarize, seed=self.seed)

    def as_dict(self) -> dict[str, Any]:
        return dict(dataset=self.dataset, path=self.path, data_dir=self.data_dir,
                    binarize=self.binarize, seed=self.seed)


@dataclass
class TrainSpec:
    """Options of :func:`ppl_dgm.inference.fit_svi` that a run records."""

    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    clip_norm: float | None = None
    seed: int = 0
    checkpoint_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                    lr_schedule=self.lr_schedule, clip_norm=self.clip_norm, seed=self.seed,
                    checkpoint_every=self.checkpoint_every, **self.extra)


def default_out_dir(family: str, data: DataSpec, root: str = "runs") -> Path:
    """``runs/<family>-<dataset>``, numbered ``-2``, ``-3``, ... if it already exists."""
    stem = data.dataset or (Path(data.path).stem if data.path else "digits")
    base = Path(root) / f"{family}-{stem}"
    out, i = base, 2
    while out.exists():
        out, i = Path(f"{base}-{i}"), i + 1
    return out


def default_epochs(data: DataSpec) -> int:
    """300 epochs for the small ``digits`` set, 50 otherwise."""
    return 300 if data.path is None and (data.dataset or "digits") == "digits" else 50


def check_data_for_model(ds: Dataset, model_cfg: dict[str, Any]) -> None:
    """Data the model cannot score are refused before anything is written."""
    if model_cfg.get("likelihood") in ("bernoulli", "continuous-bernoulli") and ds.binarize == "none":
        check_unit_interval(ds.x_train, f"{ds.name} (train)")
        check_unit_interval(ds.x_test, f"{ds.name} (test)")
    if model_cfg.get("conditional"):
        if ds.y_train is None or ds.y_test is None:
            raise InputError(f"a conditional model needs labelled data (y and y_test); {ds.name} has none")
        top = int(max(ds.y_train.max(), ds.y_test.max()))
        if int(min(ds.y_train.min(), ds.y_test.min())) < 0 or top >= model_cfg.get("n_classes", top + 1):
            raise InputError(f"expected labels in 0..{model_cfg['n_classes'] - 1}; {ds.name} has labels up to {top}")


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/config.json``, checked to be one of ours."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"expected a run directory; {str(run_dir)!r} is not a directory")
    if not path.is_file():
        raise CheckpointError(f"expected {path} (a ppl_dgm run directory); no such file")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: expected JSON; got {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path}: expected run format {RUN_FORMAT!r}; got "
                              f"{cfg.get('format') if isinstance(cfg, dict) else type(cfg).__name__!r}")
    if cfg.get("family") not in FAMILIES:
        raise CheckpointError(f"{path}: unknown family {cfg.get('family')!r}; expected one of {', '.join(FAMILIES)}")
    return cfg


def write_config(out: Path, family: str, model_cfg: dict, data: DataSpec, train: TrainSpec, ds: Dataset) -> dict:
    cfg = {"format": RUN_FORMAT, "version": __version__, "family": family, "model": model_cfg,
           "data": {**data.as_dict(), "shape": list(ds.shape), "kind": ds.kind, "name": ds.name},
           "train": train.as_dict()}
    atomic_write_json(out / "config.json", cfg)
    return cfg


def load_run(run_dir: str | Path, device: str = "cpu"):
    """Rebuild the fitted model of ``run_dir``; returns ``(model, config)``."""
    cfg = read_config(run_dir)
    cls = FAMILIES[cfg["family"]]
    model = cls.from_config(cfg["model"])
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_NAME, family=cfg["family"])
    load_model_state(model, state["model"], str(Path(run_dir) / CHECKPOINT_NAME))
    model.to(resolve_device(device)).eval()
    return model, cfg


def load_eval_data(cfg: dict, dataset: str | None = None, path: str | None = None,
                   data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The data ``evaluate`` scores: the run's own test split by default, ``--dataset NAME``'s
    test split, or every example of ``--data FILE`` (``x_test`` of an .npz that has one).

    The run's binarization is applied (seeded, so repeated evaluations agree).
    """
    d = cfg["data"]
    if path is not None:
        _, _, x_np, y_np, _ = load_array_file(path, d["seed"], evaluation=True)
        x, y, name = to_tensor_x(x_np), to_tensor_y(y_np), str(path)
    else:
        spec = DataSpec(dataset or d["dataset"], None if dataset else d["path"], data_dir or d["data_dir"],
                        "none", d["seed"])
        ds = spec.load()
        x, y, name = ds.x_test, ds.y_test, ds.name
    x = apply_binarize_to(x, d["binarize"], d["seed"], name)
    expected = cfg["model"].get("x_dim")
    if expected is not None and x.shape[1] != expected:
        raise InputError(f"{name}: the run's model expects examples of {expected} values "
                         f"(shape {tuple(d['shape'])}); got {x.shape[1]}")
    return x, y, name


def prepare_out_dir(out: str | Path | None, family: str, data: DataSpec, resume: bool) -> Path:
    """Choose and check the output directory (created only once the data have been checked)."""
    path = Path(out) if out else default_out_dir(family, data)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: expected a directory; {str(path)!r} is a file")
    if (path / CHECKPOINT_NAME).exists() and not resume:
        raise InputError(f"{path} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (path / "config.json").exists():
        raise InputError(f"--resume: expected a run directory with config.json at {path}; found none")
    return ensure_writable_dir(path)


def write_pictures(model, ds: Dataset, history: list[dict], out: Path, seed: int = 0) -> None:
    """``elbo.png``, ``samples.png`` and ``reconstructions.png`` for a fitted latent-variable model."""
    from .plots import plot_history, plot_reconstructions, plot_samples

    plot_history(history, out / "elbo.png", title=f"{model.family}: ELBO per epoch ({ds.name})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = ds.kind == "image"
        n = 64 if image else 2000
        x = model.sample(n, mean=True) if image else model.sample(n)
        what = getattr(model, "sample_title", None) or ("E[x | z], z ~ p(z)" if image else "x ~ p(x | z), z ~ p(z)")
        plot_samples(x.cpu().numpy(), ds.shape, out / "samples.png", f"{model.family} samples: {what}",
                     reference=None if image else ds.x_test.numpy())
        xs = ds.x_test[:16] if image else ds.x_test[:500]
        if hasattr(model, "reconstruct"):
            ys = (ds.y_test[: len(xs)].to(model.device),) if model.config.get("conditional") else ()
            rec = model.reconstruct(xs.to(model.device), *ys).cpu().numpy()
            plot_reconstructions(xs.numpy(), rec, ds.shape, out / "reconstructions.png", n=len(xs))
        if hasattr(model, "extra_pictures"):  # a family's own figures (ddpm: trajectory, L_t against t)
            model.extra_pictures(ds, out, seed=seed)


def train_run(family: str, model_kwargs: dict[str, Any], data: DataSpec, train: TrainSpec, *,
              out: str | Path | None = None, resume: bool = False, device: str = "cpu",
              progress: bool = True, loss=None, echo=print) -> Path:
    """Train an SVI family into a run directory and write its pictures; returns the directory.

    With ``resume`` the model, data and training options come from the run's
    ``config.json`` (only ``train.epochs`` may be raised to train longer).
    """
    from .inference import fit_svi

    if resume and out is not None and (Path(out) / "config.json").exists():
        cfg = read_config(out)
        if cfg["family"] != family:
            raise InputError(f"--resume: {out} holds a {cfg['family']!r} run; got `fit {family}`")
        model_kwargs = cfg["model"]
        data = DataSpec(**{k: cfg["data"][k] for k in ("dataset", "path", "data_dir", "binarize", "seed")})
        epochs = train.epochs or cfg["train"]["epochs"]
        t = dict(cfg["train"])
        extra = {k: v for k, v in t.items() if k not in TrainSpec.__dataclass_fields__}
        train = TrainSpec(**{k: v for k, v in t.items() if k in TrainSpec.__dataclass_fields__ and k != "extra"},
                          extra=extra)
        train.epochs = epochs
    if not train.epochs:
        train.epochs = default_epochs(data)
    ds = data.load()
    model_kwargs = {**model_kwargs, "x_dim": ds.dim, "image_shape": list(ds.shape)}
    if model_kwargs.get("conditional"):
        check_data_for_model(ds, model_kwargs)
        model_kwargs.setdefault("n_classes", int(ds.y_train.max()) + 1)
    if loss is None and train.extra.get("objective"):
        from .inference.objectives import make_objective

        e = train.extra  # written by `fit ... --objective ...`, so --resume rebuilds the same objective
        loss = make_objective(e["objective"], e.get("particles", 1), e.get("beta", 1.0), e.get("warmup_epochs", 0),
                              e.get("free_bits", 0.0))
    seed_everything(train.seed)  # the initial weights follow the seed too
    model = FAMILIES[family](**model_kwargs)
    check_data_for_model(ds, model.config)
    out_path = prepare_out_dir(out, family, data, resume)
    cfg = write_config(out_path, family, model.config, data, train, ds)
    echo(f"{family}: {ds.summary()}; writing {out_path}")
    result = fit_svi(model, (ds.x_train, ds.y_train) if model_kwargs.get("conditional") else ds.x_train,
                     test=(ds.x_test, ds.y_test) if model_kwargs.get("conditional") else ds.x_test,
                     loss=loss, epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
                     optimizer=train.optimizer, lr_schedule=train.lr_schedule, clip_norm=train.clip_norm,
                     out_dir=out_path, checkpoint_every=train.checkpoint_every, resume=resume, device=device,
                     seed=train.seed, progress=progress,
                     transform=ds.batch_transform(), config=cfg)
    write_pictures(model, ds, result.history, out_path, seed=train.seed)
    if result.history:
        last = result.history[-1]
        echo(f"done: epoch {last['epoch']}, train objective {last['train_elbo']:.3f}, held-out ELBO "
             f"{last.get('test_elbo', float('nan')):.3f} nats/example; run dir {out_path}")
    return out_path

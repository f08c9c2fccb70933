"""The run directory: one format for every family, SVI and EM alike.

A run directory holds

- ``config.json``: ``{"format", "version", "family", "model" (constructor arguments), "data" (where the
  data come from, so the run can reload them), "train" (the fit options), "result" (EM: converged, n_iter)}``;
- ``checkpoint.pt``: tensors only (the model's ``state_dict``; for SVI also the optimizer and RNG
  state, so ``--resume`` is exact), read with ``torch.load(weights_only=True)``, written atomically;
- ``history.json``: one record per epoch (SVI) or EM iteration;
- the family's pictures (its ``figures`` in the registry).

:func:`load_run` rebuilds the fitted model from the folder alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..data import Dataset, apply_binarize_to, load_dataset
from ..data._dataset import to_tensor_x, to_tensor_y
from ..data.images import load_array_file
from ..errors import CheckpointError, InputError
from ..inference.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state, save_checkpoint
from ..models import REGISTRY, Family, GenerativeModel
from ..utils import atomic_write_json, ensure_writable_dir, resolve_device

RUN_FORMAT = "ppl_dgm.run/2"


@dataclass
class DataSpec:
    """Where the data come from (stored in ``config.json`` so a run can reload them)."""

    dataset: str | None = None
    path: str | None = None
    data_dir: str | None = None
    binarize: str = "none"
    seed: int = 0

    def load(self) -> Dataset:
        return load_dataset(self.dataset, path=self.path, data_dir=self.data_dir, binarize=self.binarize,
                            seed=self.seed)

    def as_dict(self) -> dict[str, Any]:
        return dict(dataset=self.dataset, path=self.path, data_dir=self.data_dir, binarize=self.binarize,
                    seed=self.seed)

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> DataSpec:
        return cls(**{k: data.get(k) for k in ("dataset", "path", "data_dir")}, binarize=data.get("binarize", "none"),
                   seed=data.get("seed", 0))


@dataclass
class Run:
    """A fitted run: its folder, its registry entry, the model rebuilt from it, and what it records.

    Attributes
    ----------
    path : Path
    family : Family
        What the family can do (:mod:`ppl_dgm.models.registry`).
    model : GenerativeModel
        In eval mode, on the device asked for.
    config : dict
        ``config.json``.
    history : list of dict
        ``history.json`` (empty if absent).
    """

    path: Path
    family: Family
    model: GenerativeModel
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. (8, 8) or (2,)."""
        return tuple(self.config["data"]["shape"])

    def dataset(self) -> Dataset:
        """The run's own data, loaded as at fit time."""
        return DataSpec.from_config(self.config["data"]).load()

    def eval_data(self, dataset: str | None = None, path: str | None = None, data_dir: str | None = None):
        """``(x, y, name)``: the run's test split, ``dataset``'s test split, or every example of ``path``
        (``x_test`` of an .npz that has one), binarized as the run's data (seeded)."""
        d = self.config["data"]
        if path is not None:
            _, _, x_np, y_np, _ = load_array_file(path, d["seed"], evaluation=True)
            x, y, name = to_tensor_x(x_np), to_tensor_y(y_np), str(path)
        else:
            spec = DataSpec(dataset or d["dataset"], None if dataset else d["path"], data_dir or d["data_dir"],
                            "none", d["seed"])
            ds = spec.load()
            x, y, name = ds.x_test, ds.y_test, ds.name
        x = apply_binarize_to(x, d["binarize"], d["seed"], name)
        expected = int(torch.Size(self.shape).numel())
        if x.shape[1] != expected:
            raise InputError(f"{name}: the run's model expects examples of {expected} values "
                             f"(shape {self.shape}); got {x.shape[1]}")
        return x, y, name


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/config.json``, checked to be a run of a known family."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"expected a run directory; {str(run_dir)!r} is not a directory")
    if not path.is_file():
        raise CheckpointError(f"expected {path} (a ppl_dgm run directory); no such file")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: expected JSON; got {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"{path}: expected run format {RUN_FORMAT!r}; got {got!r}")
    if cfg.get("family") not in REGISTRY:
        raise CheckpointError(f"{path}: unknown family {cfg.get('family')!r}; expected one of {', '.join(REGISTRY)}")
    return cfg


def run_config(model: GenerativeModel, data: DataSpec | None, ds: Dataset | None, train: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of a run of ``model`` fitted on ``ds`` (loaded from ``data``) with options ``train``."""
    data_cfg = {**(data or DataSpec()).as_dict()}
    if ds is not None:
        data_cfg.update(shape=list(ds.shape), kind=ds.kind, name=ds.name)
    return {"format": RUN_FORMAT, "version": __version__, "family": model.family, "model": model.config,
            "data": data_cfg, "train": train, **extra}


def load_run(run_dir: str | Path, device: str = "cpu") -> Run:
    """Rebuild the fitted model of a run directory (any family), like diffusers' ``from_pretrained``.

    >>> run = load_run("runs/vae-digits")            # doctest: +SKIP
    >>> x = run.model.sample(16, mean=True)          # doctest: +SKIP
    """
    cfg = read_config(run_dir)
    family = REGISTRY[cfg["family"]]
    model = family.model.from_config(cfg["model"])
    ckpt = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(ckpt, family=cfg["family"])
    load_model_state(model, state["model"], str(ckpt))
    model.to(resolve_device(device)).eval()
    hist = Path(run_dir) / "history.json"
    history = json.loads(hist.read_text()) if hist.is_file() else []
    return Run(Path(run_dir), family, model, cfg, history)


def save_run(model: GenerativeModel, run_dir: str | Path, *, data: DataSpec | None = None,
             dataset: Dataset | None = None, train: dict[str, Any] | None = None,
             history: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """Write a model fitted in Python (e.g. by ``fit_svi``) as a run directory that :func:`load_run` and the
    ``ppl-dgm`` commands read.  ``data`` says where the data come from (so ``evaluate`` can reload them);
    ``dataset`` gives the example shape (default: a flat vector of the model's ``x_dim``)."""
    out = ensure_writable_dir(run_dir)
    cfg = run_config(model, data, dataset, train or {}, **extra)
    if dataset is None:
        dim = model.config.get("x_dim") or model.config.get("n_features")
        cfg["data"].update(shape=list(model.config.get("image_shape") or [dim]), kind="vector", name="?")
    history = history or []
    save_checkpoint(out / CHECKPOINT_NAME, {"family": model.family, "epoch": len(history),
                                            "model": model.state_dict(), "history": json.dumps(history)})
    atomic_write_json(out / "history.json", history)
    atomic_write_json(out / "config.json", cfg)
    return out


def default_out_dir(family: str, data: DataSpec, root: str = "runs") -> Path:
    """``runs/<family>-<dataset>``, numbered ``-2``, ``-3``, ... if it already exists."""
    stem = data.dataset or (Path(data.path).stem if data.path else "digits")
    base = Path(root) / f"{family}-{stem}"
    out, i = base, 2
    while out.exists():
        out, i = Path(f"{base}-{i}"), i + 1
    return out


def prepare_out_dir(out: str | Path | None, family: str, data: DataSpec, resume: bool) -> Path:
    """Choose and check the output directory (created only once the data have been checked)."""
    path = Path(out) if out else default_out_dir(family, data)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: expected a directory; {str(path)!r} is a file")
    if (path / "config.json").exists() and not resume:
        raise InputError(f"{path} already holds a run; pass --resume to continue it or choose another --out")
    return ensure_writable_dir(path)

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

import functools
import json
import os
import shutil
import socket
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .._version import __version__
from ..data import Dataset, apply_binarize_to, load_dataset
from ..data._dataset import to_tensor_x, to_tensor_y
from ..data.images import load_array_file
from ..errors import CheckpointError, InputError
from ..inference.checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, load_model_state, save_checkpoint
from ..models import REGISTRY, Family, GenerativeModel
from ..numpyro.inference import checkpoint as npz
from ..utils import atomic_write_json, ensure_writable_dir, resolve_device

RUN_FORMAT = "ppl_dgm.run/2"


class DataChangedWarning(UserWarning):
    """A run's data file differs from the one it was fitted on (size or SHA-256)."""


@dataclass
class DataSpec:
    """Where the data come from (stored in ``config.json`` so a run can reload them).

    File paths are stored absolute, with a fingerprint (size and SHA-256) of each file; a run
    whose file has changed since still loads it, with a :class:`DataChangedWarning`.
    ``test_path`` (or an ``.npz``'s own ``x_test``) holds the held-out rows, and then every row of
    ``path`` trains; otherwise ``val_fraction`` of the rows are held out (seeded; 0 allowed).
    ``latent_of``: the data are the posterior means E_q[z | x] of a fitted encoder run's own data and split
    (latent diffusion, notes 004); ``codes_of``: the code maps of a fitted VQ-VAE run's own data and split (the
    data of its prior); the other fields are then unused.
    """

    dataset: str | None = None
    path: str | None = None
    data_dir: str | None = None
    binarize: str = "none"
    seed: int = 0
    test_path: str | None = None
    val_fraction: float = 0.2
    fingerprints: dict[str, dict] = field(default_factory=dict)
    latent_of: str | None = None
    codes_of: str | None = None

    def __post_init__(self) -> None:
        self.path, self.test_path, self.latent_of, self.codes_of = (
            str(Path(p).absolute()) if p else None for p in (self.path, self.test_path, self.latent_of, self.codes_of))

    def load(self) -> Dataset:
        from ..data import fingerprint

        if self.latent_of:
            return encoded_dataset(load_run(self.latent_of))
        if self.codes_of:
            return encoded_dataset(load_run(self.codes_of), codes=True)
        for key in ("path", "test_path"):
            stored, file = self.fingerprints.get(key), getattr(self, key)
            if stored and Path(file).is_file() and fingerprint(file) != stored:
                warnings.warn(f"{file} has changed since the run was fitted (size or SHA-256 differ)",
                              DataChangedWarning, stacklevel=2)
        ds = load_dataset(self.dataset, path=self.path, test_path=self.test_path, data_dir=self.data_dir,
                          binarize=self.binarize, seed=self.seed, val_fraction=self.val_fraction)
        self.fingerprints = self.fingerprints or {k: fingerprint(getattr(self, k)) for k in ("path", "test_path")
                                                  if getattr(self, k)}
        return ds

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> DataSpec:
        spec = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        spec.fingerprints = spec.fingerprints if isinstance(spec.fingerprints, dict) else {}
        return spec


@torch.no_grad()
def encoded_dataset(run: Run, batch: int = 4096, *, codes: bool = False) -> Dataset:
    """The run's own training and held-out data, encoded, with their labels and split.

    ``codes=False``: the posterior means E_q[z | x] (N, K), the data of a latent diffusion model (notes 004); the
    run needs an encoder and no labels.  ``codes=True``: the code maps k(g(x)) of a VQ-VAE run, (N, h w) as
    float32 integers 0..K-1, shape (h, w), kind "image", ``levels`` K: the data of its prior (a PixelCNN); the
    training images of a dynamically binarized run are binarized once (seeded) first, as its held-out ones are.
    """
    from ..models import require
    from ..models.vqvae import VQVAE

    flag = "--codes-of" if codes else "--latent-of"
    require(run.family, "encoder", flag)
    if codes and not isinstance(run.model, VQVAE):
        raise InputError(f"--codes-of: expected a vqvae run (a discrete code map); got a {run.family.name!r} run")
    if run.model.conditional:
        raise InputError(f"{flag}: expected an unconditional encoder run; got a conditional {run.family.name!r}")
    ds = run.dataset()
    x_train = ds.x_train
    if codes and ds.binarize == "dynamic":  # the codes of binary images (one draw, its own seed), as trained on
        x_train = apply_binarize_to(x_train, "dynamic", run.config["data"]["seed"] + 1, ds.name)
    encode = (lambda x: run.model.encode_codes(x).flatten(1)) if codes else run.model.encode_mean
    enc = [torch.cat([encode(part.to(run.model.device)).float().cpu() for part in x.split(batch)]) if len(x) else None
           for x in (x_train, ds.x_test)]
    width = next(e.shape[1] for e in enc if e is not None)  # a split may be empty (val_fraction 0)
    enc = [torch.zeros(0, width) if e is None else e for e in enc]
    if codes:
        return Dataset(f"codes of {run.path.name} ({ds.name})", enc[0], enc[1], ds.y_train, ds.y_test,
                       tuple(run.model.code_shape), "image", "none", ds.held_out, levels=run.model.n_codes)
    return Dataset(f"latents of {run.path.name} ({ds.name})", enc[0], enc[1], ds.y_train, ds.y_test,
                   (enc[0].shape[1],), "vector", "none", ds.held_out)


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
    checkpoint : str
        The file the parameters came from: ``checkpoint.pt`` (the last epoch) or ``best.pt``.
    """

    path: Path
    family: Family
    model: GenerativeModel
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str = CHECKPOINT_NAME

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example the model sees, e.g. (8, 8) or (2,) (a latent diffusion run: (K,))."""
        return tuple(self.config["data"]["shape"])

    @functools.cached_property
    def decoder(self) -> Run | None:
        """The encoder run whose latents (a latent diffusion run) or codes (a VQ-VAE's prior) this run models (it
        decodes the samples); else None."""
        source = self.config["data"].get("latent_of") or self.config["data"].get("codes_of")
        return load_run(source, device=str(self.model.device)) if source else None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample as drawn by ``sample``: decoded through :attr:`decoder` if there is one."""
        return self.decoder.shape if self.decoder is not None else self.shape

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples x (..., D) of the model to examples: E[x | z] of the decoder run for latent diffusion,
        E[x | e_codes] of the VQ-VAE run for code maps (the PixelCNN prior of ``--codes-of``)."""
        if self.decoder is None:
            return x
        if self.config["data"].get("codes_of"):
            flat = x.reshape(-1, x.shape[-1])
            return self.decoder.model.decode_codes(flat.round().long()).reshape(*x.shape[:-1], -1)
        return self.decoder.model.decode_mean(x)

    def dataset(self) -> Dataset:
        """The run's own data, loaded as at fit time."""
        return DataSpec.from_config(self.config["data"]).load()

    def eval_data(self, dataset: str | None = None, path: str | None = None, data_dir: str | None = None):
        """``(x, y, name)``: the run's test split, ``dataset``'s test split, or every example of ``path``
        (``x_test`` of an .npz that has one), binarized as the run's data (seeded)."""
        d = self.config["data"]
        encoded = d.get("latent_of") or d.get("codes_of")
        if encoded and (dataset or path):
            what = "a VQ-VAE prior" if d.get("codes_of") else "a latent diffusion run"
            raise InputError(f"{what} scores its encoder run's own held-out data; expected no --dataset/--data")
        if encoded:
            ds = DataSpec.from_config(d).load()
            return ds.x_test, ds.y_test, ds.name
        if path is not None:
            _, _, x_np, y_np, _ = load_array_file(path, d["seed"], evaluation=True)
            x, y, name = to_tensor_x(x_np), to_tensor_y(y_np), str(path)
        else:
            own = DataSpec.from_config(d)
            spec = DataSpec(dataset or own.dataset, None if dataset else own.path, data_dir or own.data_dir, "none",
                            own.seed, None if dataset else own.test_path, own.val_fraction,
                            {} if dataset else own.fingerprints)
            ds = spec.load()
            x, y, name = ds.x_test, ds.y_test, ds.name
            if not len(x):
                raise InputError(f"{name}: the run holds out no rows (val_fraction 0, no test data); "
                                 f"pass --data FILE or --dataset NAME to choose data")
        x = apply_binarize_to(x, d.get("binarize", "none"), d["seed"], name)
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
    if not isinstance(cfg.get("family"), str) or cfg["family"] not in REGISTRY:  # [] or {} are unhashable
        raise CheckpointError(f"{path}: unknown family {cfg.get('family')!r}; expected one of {', '.join(REGISTRY)}")
    _check_sections(cfg, path)
    return cfg


def _check_sections(cfg: dict[str, Any], path: Path) -> None:
    """The sections every run needs, with the types the commands rely on."""
    for key in ("model", "data", "train"):
        if not isinstance(cfg.get(key), dict):
            raise CheckpointError(f"{path}: expected a {key!r} section (an object); got {cfg.get(key)!r:.60}")
    shape, seed = cfg["data"].get("shape"), cfg["data"].get("seed")
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape)):
        raise CheckpointError(f"{path}: expected data.shape as a list of positive integers; got {shape!r:.60}")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise CheckpointError(f"{path}: expected data.seed as an integer >= 0; got {seed!r:.60}")
    for key in ("dataset", "path", "data_dir", "test_path", "latent_of", "codes_of"):  # names and file paths
        value = cfg["data"].get(key)
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"{path}: expected data.{key} as a string or null; got {value!r:.60}")


def run_config(model: GenerativeModel, data: DataSpec | None, ds: Dataset | None, train: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of a run of ``model`` fitted on ``ds`` (loaded from ``data``) with options ``train``."""
    data_cfg = {**(data or DataSpec()).as_dict()}
    if ds is not None:
        data_cfg.update(shape=list(ds.shape), kind=ds.kind, name=ds.name)
    return {"format": RUN_FORMAT, "version": __version__, "family": model.family, "model": model.config,
            "data": data_cfg, "train": train, **extra}


def load_run(run_dir: str | Path, device: str = "cpu", checkpoint: Literal["last", "best"] = "last") -> Run:
    """Rebuild the fitted model of a run directory (any family), like diffusers' ``from_pretrained``.

    ``checkpoint="best"`` takes the parameters of the epoch with the best held-out ELBO (``best.pt``)
    instead of the last epoch's (``checkpoint.pt``).

    >>> run = load_run("runs/vae-digits")            # doctest: +SKIP
    >>> x = run.model.sample(16, mean=True)          # doctest: +SKIP
    """
    name = {"last": CHECKPOINT_NAME, "best": BEST_NAME}.get(checkpoint)
    if name is None:
        raise InputError(f"checkpoint: expected 'last' or 'best'; got {checkpoint!r}")
    cfg = read_config(run_dir)
    family = REGISTRY[cfg["family"]]
    model = family.model.from_config(cfg["model"])
    if cfg["train"].get("backend") == "numpyro" and family.trainer != "em":  # a NumPyro SVI fit: weights in .npz
        # (gmm --backend numpyro is MAP by NumPyro's TraceEnum_ELBO; its estimator keeps a torch checkpoint)
        name = {CHECKPOINT_NAME: npz.CHECKPOINT_NPZ, BEST_NAME: npz.BEST_NPZ}[name]
    ckpt = Path(run_dir) / name
    if checkpoint == "best" and not ckpt.is_file():
        raise CheckpointError(f"{run_dir} has no {name} (only runs fitted by SVI with held-out data keep one); "
                              f"use the last checkpoint")
    if name.endswith(".npz"):
        state = {"model": {k: torch.from_numpy(v) for k, v in npz.model_state(npz.read(ckpt, cfg["family"])).items()}}
    else:
        state = load_checkpoint(ckpt, family=cfg["family"])
    load_model_state(model, state.get("model", {}), str(ckpt))
    model.to(resolve_device(device)).eval()
    return Run(Path(run_dir), family, model, cfg, _history(Path(run_dir) / "history.json"), name)


def _history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: expected JSON; got {str(e)[:120]}") from None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise CheckpointError(f"{path}: expected a list of records; got {type(history).__name__}")
    return history


def save_run(model: GenerativeModel, run_dir: str | Path, *, data: DataSpec | None = None,
             dataset: Dataset | None = None, train: dict[str, Any] | None = None,
             history: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """Write a model fitted in Python (e.g. by ``fit_svi``) as a run directory that :func:`load_run` and the
    ``ppl-dgm`` commands read.  ``data`` says where the data come from (so ``evaluate`` can reload them);
    ``dataset`` gives the example shape (default: a flat vector of the model's ``x_dim``)."""
    if not isinstance(model, GenerativeModel) or getattr(model, "family", None) not in REGISTRY:
        raise InputError(f"save_run: expected a model of a ppl_dgm family ({', '.join(REGISTRY)}); got "
                         f"{type(model).__name__}")
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


RUN_FILES = ("config.json", CHECKPOINT_NAME, BEST_NAME, npz.CHECKPOINT_NPZ, npz.BEST_NPZ, "history.json",
             "diagnostics.json", "posterior.nc")


def out_dir_for(out: str | Path | None, family: str, data: DataSpec) -> Path:
    """The output directory: ``out``, or ``runs/<family>-<data>`` numbered to be new."""
    path = Path(out) if out else default_out_dir(family, data)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: expected a directory; {str(path)!r} is a file")
    return path


def clear_run(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over a run unless resuming it or told to overwrite (then its files go); drop stale
    temporaries that killed writers left behind (the caller holds the folder's lock)."""
    if (path / "config.json").exists() and not resume:
        if not overwrite:
            raise InputError(f"{path} already holds a run; pass --resume to continue it, --overwrite to replace "
                             f"it, or choose another --out")
        for f in [*RUN_FILES, *(p.name for p in path.glob("*.png"))]:
            (path / f).unlink(missing_ok=True)
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@contextmanager
def run_lock(path: Path):
    """Hold ``path/.lock`` while writing a run: a second fit into the same folder is refused; a lock whose
    process is gone (``kill -9``) is stale and taken over.  Creates ``path`` (and removes it again if the
    fit fails before writing a checkpoint, so a failed start leaves nothing behind)."""
    top = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)  # first folder we create
    ensure_writable_dir(path)
    lock = path / ".lock"
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            if _alive(owner):
                raise InputError(f"{path} is being written by another fit (process {owner}); wait for it or "
                                 f"choose another --out") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise InputError(f"{path}: could not take the lock {lock}")
    with os.fdopen(fd, "w") as f:
        f.write(me)
    try:
        yield path
    except BaseException:
        if top is not None and not any((path / c).exists() for c in (CHECKPOINT_NAME, npz.CHECKPOINT_NPZ)):
            shutil.rmtree(top, ignore_errors=True)
        raise
    finally:
        lock.unlink(missing_ok=True)


def _alive(owner: str) -> bool:
    """Whether the process ``host:pid`` that holds a lock still runs (on another host: assume it does)."""
    host, _, pid = owner.rpartition(":")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

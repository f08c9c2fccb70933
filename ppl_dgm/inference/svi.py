"""``fit_svi``: the one stochastic-variational-inference loop every family uses.

Two layers.  :class:`SVIState` is the small core: a model–guide pair, the tensors it
trains, an optimizer and an objective; :meth:`SVIState.step` takes one gradient step
on a minibatch (-ELBO by default, with analytic KL for Gaussian guides) and
:meth:`SVIState.evaluate` gives held-out ELBO terms.  :class:`SVILoop` is the loop over
epochs and minibatches; checkpoints, held-out evaluation, timing and the progress
bar are callbacks (:mod:`.callbacks`).

The model and guide may be a family (a module with ``.model`` and ``.guide``), or plain
Pyro callables whose parameters are ``pyro.param`` / ``pyro.module`` sites, or a Pyro
autoguide.  Pyro's global param store is cleared at the start of each fit, so fits
never share state; the parameters that ``pyro.param`` sites and autoguides create
lazily are collected after the first traces (:func:`~.guides.check_guide`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn

from ..errors import InputError, NonFiniteError, check_choice, check_number, check_positive_int
from ..utils import ensure_writable_dir, resolve_device, seed_everything
from .callbacks import (
    EMA,
    Callback,
    Checkpoint,
    Clock,
    DivergenceGuard,
    EpochFunction,
    HeldOutELBO,
    ModelEpochEnd,
    ProgressBar,
    StopTraining,
)
from .checkpoint import load_model_state
from .compiled import RecordedLoss
from .devices import Precision, place_training
from .diagnostics import elbo_terms, find_nonfinite
from .distributed import data_parallel, parallel_fit
from .guides import check_guide
from .objectives import AnalyticELBO

OPTIMIZERS = ("adam", "clipped_adam")
LR_SCHEDULES = ("constant", "cosine", "exponential")
RECORD_AFTER = 1000  # compile_step=None records a family's step in fits of at least this many steps (module docstring
                     # of .compiled: recording costs ~0.05-0.4 s, plus ~1.5 s of imports once per process)
__all__ = ["fit_svi", "FitResult", "SVIState", "SVILoop", "StopTraining", "Callback"]


@dataclass
class FitResult:
    """What :func:`fit_svi` returns.

    Attributes
    ----------
    model : torch.nn.Module or callable
        The fitted model (same object as passed in).
    history : list of dict
        One record per epoch: ``epoch``, ``train_elbo`` (mean objective per example,
        nats), ``test_elbo``, ``test_reconstruction``, ``test_kl`` and ``test_kl_sites``
        (KL per latent site; if held-out data were given), ``lr``, ``seconds``.
    checkpoint : Path or None
        The last checkpoint written.
    stopped : str or None
        Why training ended early (``"callback"``, ``"interrupted"``), else None.
    """

    model: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped: str | None = None


@dataclass
class SVIState:
    """The small core of SVI: what one gradient step needs, nothing about epochs, files or progress.

    Attributes
    ----------
    model, guide : callables
        The Pyro programs, called with the minibatch's tensors.
    loss : callable
        ``loss(model, guide, *batch) -> scalar tensor`` (e.g. an ELBO's ``differentiable_loss``).
    params : dict[str, Tensor]
        The trained tensors by name (:func:`collect_params`).
    optimizer : torch.optim.Optimizer
        Over ``params.values()``.
    modules : dict[str, nn.Module]
        ``"model"`` and/or ``"guide"``: the modules holding the parameters (train/eval mode, checkpoints).
    clip_norm : float, optional
        Clip the global gradient norm before each step.
    ema : EMA, optional
        A moving average of ``params`` (:class:`~.callbacks.EMA`): then :meth:`evaluate` and the checkpoint's
        weights (:meth:`state_dict`) are the averaged ones.
    """

    model: Callable
    guide: Callable
    loss: Callable
    params: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    modules: dict[str, nn.Module] = field(default_factory=dict)
    clip_norm: float | None = None
    ema: EMA | None = None
    scaler: Any = None  # a torch.amp.GradScaler for --precision fp16 (.devices)

    def step(self, *batch: torch.Tensor) -> float:
        """One optimizer step on ``loss(model, guide, *batch)``; returns the loss.

        Raises
        ------
        NonFiniteError
            If the loss is not finite, naming the parameters and sites that are not (no step taken).
        """
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.loss(self.model, self.guide, *batch)
            value = self.loss_value(loss)
        except ValueError:  # Pyro's validation refusing NaN parameters of a distribution
            if not self.nonfinite(*batch):
                raise
            value = math.nan
        if not math.isfinite(value):
            sites = self.nonfinite(*batch)
            raise NonFiniteError(f"non-finite loss ({value}) from {', '.join(sites) or 'the objective itself'}",
                                 sites=sites)
        self.backward(loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return value

    def loss_value(self, loss: torch.Tensor) -> float:
        """The step's loss as a float (a data-parallel state sums it over the ranks: :mod:`.distributed`)."""
        return float(loss.detach())

    def backward(self, loss: torch.Tensor) -> None:
        """The gradients of ``loss`` (through the fp16 gradient scaler if there is one)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def epoch_metrics(self) -> dict[str, float]:
        """The state's own per-epoch figures for the history record (none for SVI; the adversarial trainer's
        losses and discriminator outputs)."""
        return {}

    def nonfinite(self, *batch: torch.Tensor) -> list[str]:
        """Non-finite parameters (``param NAME``) and sites (``guide z (value)``, ``model x (log_prob)``)."""
        bad = [f"param {name}" for name, p in self.params.items() if not torch.isfinite(p).all()]
        return bad + find_nonfinite(self.model, self.guide, *batch)

    @torch.no_grad()
    def evaluate(self, *data: torch.Tensor, batch_size: int = 512, particles: int = 1) -> dict[str, Any]:
        """ELBO terms per example on ``data`` (tensors of N rows), in chunks of ``batch_size``.

        Returns
        -------
        dict
            ``elbo``, ``reconstruction``, ``kl`` (nats per example) and ``kl_sites`` (KL per latent site),
            from :func:`~.diagnostics.elbo_terms` with ``particles`` draws of z per example.
        """
        self.train(False)
        n = data[0].shape[0]
        sums = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}
        kl_sites: dict[str, float] = {}
        for i in range(0, n, batch_size):
            terms = elbo_terms(self.model, self.guide, *(t[i: i + batch_size] for t in data), num_particles=particles)
            for key in sums:
                sums[key] += getattr(terms, key) * terms.n
            for site, v in terms.kl_sites.items():
                kl_sites[site] = kl_sites.get(site, 0.0) + v * terms.n
        out: dict[str, Any] = {k: v / n for k, v in sums.items()}
        if kl_sites:
            out["kl_sites"] = {k: v / n for k, v in kl_sites.items()}
        return out

    def train(self, mode: bool = True) -> None:
        """Training (or evaluation) mode of the modules."""
        for m in self.modules.values():
            m.train(mode)

    def averaged(self):
        """A context in which the parameters hold their moving average (a no-op without EMA)."""
        return self.ema.applied(self.params) if self.ema is not None else contextlib.nullcontext()

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint entries: ``model`` (its module's state, {} for a function), ``guide`` (a separate
        guide module's), ``param_store`` (``pyro.param`` values) and ``optimizer``.  With EMA, ``model``,
        ``guide`` and ``param_store`` hold the averaged values, and ``ema`` the number of updates and the
        training values (``train``, by parameter name)."""
        if self.ema is None or not self.ema.updates:
            return self._state_dict()
        with self.averaged():
            state = {k: ({n: v.clone() for n, v in d.items()} if k != "optimizer" else d)
                     for k, d in self._state_dict().items()}
        state["ema"] = {"updates": self.ema.updates, "train": {n: p.detach().clone() for n, p in self.params.items()}}
        return state

    def _state_dict(self) -> dict[str, Any]:
        state = {"model": self.modules["model"].state_dict() if "model" in self.modules else {},
                 "param_store": {k: v.detach() for k, v in pyro.get_param_store().named_parameters()},
                 "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        if "guide" in self.modules:
            state["guide"] = self.modules["guide"].state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], where: str) -> None:
        """Restore what :meth:`state_dict` wrote (after the first traces created every parameter)."""
        for key, module in self.modules.items():
            load_model_state(module, state.get(key, {}), where)
        store = dict(pyro.get_param_store().named_parameters())
        for name, value in state.get("param_store", {}).items():
            if name in store:
                store[name].data.copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None and "ema" in state:  # the values loaded are the average; then the training ones
            self.ema.updates = int(state["ema"]["updates"])
            self.ema.shadow = {n: p.detach().clone() for n, p in self.params.items()}
            with torch.no_grad():
                for name, value in state["ema"]["train"].items():
                    self.params[name].copy_(value)


def collect_params(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Every tensor a fit trains, by name: the model module's parameters, a separate guide module's
    (``guide.`` prefix), then the unconstrained values of trainable ``pyro.param`` sites not among them.

    Call it after the first traces: ``pyro.param`` sites and autoguides create their parameters then.
    """
    named = [(("guide." if key == "guide" else "") + n, p) for key, m in modules.items()
             for n, p in m.named_parameters()]
    named += [(n, p) for n, p in pyro.get_param_store().named_parameters() if p.requires_grad]
    params: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in named:
        if id(p) not in seen:
            params[name] = p
            seen.add(id(p))
    return params


@dataclass
class SVILoop:
    """The SVI loop: epochs of shuffled minibatches through :meth:`SVIState.step`, with callbacks.

    Attributes
    ----------
    state : SVIState
    model : module or callable
        What the user passed as the model (handed to user callbacks).
    data : tuple of Tensor
        Training tensors of N rows; minibatch ``b`` passes ``data[0][b], data[1][b], ...``.
    epochs, batch_size, seed : int
        The minibatch order of epoch e is drawn from (seed, e), so resume is exact.
    lr_at : callable
        ``lr_at(epoch) -> float``, the learning rate of each (0-based) epoch.
    set_epoch : callable, optional
        ``set_epoch(epoch, epochs)`` of the objective (e.g. KL warm-up), at each epoch start.
    kl_weight : callable, optional
        ``kl_weight() -> float or None``: the objective's KL weight (beta times the warm-up factor) in the epoch,
        written to its history record as ``kl_weight`` (as the NumPyro backend does).
    transform : callable, optional
        Applied to each minibatch's first tensor.
    history, start_epoch, epoch, checkpoint, stopped
        The run so far (the checkpoint callback restores them on resume).
    metrics : tuple of str
        The keys of the model's own per-epoch metrics (``end_epoch``), shown by the progress bar.
    """

    state: SVIState
    model: Any
    data: tuple[torch.Tensor, ...]
    epochs: int
    batch_size: int
    seed: int
    lr_at: Callable[[int], float]
    set_epoch: Callable[[int, int], None] | None = None
    kl_weight: Callable[[], float | None] | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    epoch: int = -1
    checkpoint: Path | None = None
    stopped: str | None = None
    metrics: tuple[str, ...] = ()
    stage: Callable[[tuple[torch.Tensor, ...], torch.Tensor], tuple[torch.Tensor, ...]] | None = None

    @property
    def n(self) -> int:
        return self.data[0].shape[0]

    @property
    def steps(self) -> int:
        return math.ceil(self.n / self.batch_size)

    @property
    def device(self) -> torch.device:
        """Where the parameters are (the data may stay in pinned host memory: :mod:`.devices`)."""
        return next(iter(self.state.params.values())).device

    def rows(self, perm: torch.Tensor, step: int) -> torch.Tensor:
        """The rows of minibatch ``step`` that this process trains on (a DDP rank's share: :mod:`.distributed`)."""
        return perm[step * self.batch_size: (step + 1) * self.batch_size]

    def fit(self, callbacks: Sequence[Callback] = ()) -> None:
        """Train from ``start_epoch`` to ``epochs``; a :class:`StopTraining` from a hook ends it early."""

        def hook(name: str, *args) -> None:
            for cb in callbacks:
                getattr(cb, name)(self, *args)

        # the per-step hook calls only the callbacks that override it
        step_hooks = [cb.on_step_end for cb in callbacks if type(cb).on_step_end is not Callback.on_step_end]

        def on_step(step: int, loss: float) -> None:
            for on_step_end in step_hooks:
                on_step_end(self, step, loss)

        try:
            hook("on_fit_start")
            self.epoch = self.start_epoch - 1
            for epoch in range(self.start_epoch, self.epochs):
                self.epoch = epoch
                hook("on_epoch_start")
                record = self.train_epoch(on_step)
                self.history.append(record)
                hook("on_epoch_end", record)
        except StopTraining:
            self.stopped = "callback"
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            raise
        finally:
            hook("on_fit_end")
            self.state.train(False)

    def train_epoch(self, on_step: Callable[[int, float], None]) -> dict[str, Any]:
        """One pass over the data in the order of (seed, epoch); returns the epoch's history record."""
        epoch = self.epoch
        if callable(self.set_epoch):
            self.set_epoch(epoch, self.epochs)
        lr = self.lr_at(epoch)
        for group in self.state.optimizer.param_groups:
            group["lr"] = lr
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        perm = perm.to(self.data[0].device)
        self.state.train(True)
        total = 0.0
        for step in range(self.steps):
            batch = _minibatch(self.data, self.rows(perm, step), self.transform, self.stage)
            try:
                loss = self.state.step(*batch)
            except NonFiniteError as e:
                raise NonFiniteError(f"epoch {epoch + 1}, step {step + 1}: {e}; last good checkpoint: "
                                     f"{self.checkpoint or 'none written'}", step=epoch * self.steps + step,
                                     sites=e.sites) from None
            total += loss
            on_step(step, loss)
        metrics = self.state.epoch_metrics()
        self.metrics = tuple(dict.fromkeys((*self.metrics, *metrics)))
        weight = None if self.kl_weight is None else self.kl_weight()
        schedule = {} if weight is None else {"kl_weight": float(weight)}
        return {"epoch": epoch + 1, "train_elbo": -total / self.n, "lr": lr, **schedule, **metrics}


def _as_tuple(data) -> tuple[torch.Tensor, ...]:
    if data is None:
        return ()
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = (data,)
    if not isinstance(data, (tuple, list)):
        raise InputError(f"expected training data as a tensor (or NumPy array) or a tuple of them; got "
                         f"{type(data).__name__}")
    data = tuple(torch.from_numpy(d) if isinstance(d, np.ndarray) and d.dtype != object else d
                 for d in data if d is not None)
    if not data or not all(isinstance(d, torch.Tensor) for d in data):
        kinds = sorted({type(d).__name__ for d in data if not isinstance(d, torch.Tensor)}) or ["nothing"]
        raise InputError("expected training data as a tensor (or NumPy array) or a tuple of them; got "
                         f"{', '.join(kinds)}")
    n = data[0].shape[0]
    if any(d.shape[0] != n for d in data):
        raise InputError(f"expected tensors with the same first dimension; got {[d.shape[0] for d in data]}")
    return data


def _prepare(data: tuple[torch.Tensor, ...], dev: torch.device | None, dtype: torch.dtype, what: str):
    """The tensors on ``dev`` (None: where they are); floating ones in the parameters' dtype (float64 data for a
    float32 module are cast, not refused) and checked to be finite."""
    out = []
    for t in data:
        if t.is_floating_point() or t.is_complex():
            # a NaN or inf anywhere makes the sum non-finite; a finite sum means finite values (one fast reduction;
            # torch.isfinite(t).all() takes 0.2-0.5 s on 60,000 x 784 floats); an overflowing sum is checked exactly
            if t.is_complex() or (not torch.isfinite(t.sum()) and not torch.isfinite(t).all()):
                bad = "complex values" if t.is_complex() else f"NaN or inf in {int((~torch.isfinite(t)).sum())} values"
                raise InputError(f"expected finite real {what} data; got {bad}")
            t = t.to(dtype)
        out.append(t if dev is None else t.to(dev))
    return tuple(out)


def _minibatch(data: tuple[torch.Tensor, ...], idx, transform, stage=None) -> tuple[torch.Tensor, ...]:
    """The rows ``idx`` (an index tensor or a slice) of every tensor, moved by ``stage`` (host data: onto the
    device); ``transform`` applied to the first."""
    batch = tuple(t[idx] for t in data) if stage is None else stage(data, idx)
    return batch if transform is None else (transform(batch[0]), *batch[1:])


def lr_at(schedule: str, lr: float, epochs: int, gamma: float = 0.99) -> Callable[[int], float]:
    """The learning rate of each (0-based) epoch under ``schedule`` (constant, cosine, exponential)."""
    if schedule == "cosine":
        return lambda epoch: lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "exponential":
        return lambda epoch: lr * gamma**epoch
    return lambda epoch: lr


def _loss_fn(loss) -> Callable:
    if hasattr(loss, "differentiable_loss"):
        return loss.differentiable_loss
    if callable(loss):
        return loss
    raise InputError(f"expected a Pyro ELBO with .differentiable_loss or a callable "
                     f"loss(model, guide, *args); got {type(loss).__name__}")


def _model_guide(model, guide) -> tuple[Callable, Callable, dict[str, nn.Module], str]:
    """(model callable, guide callable, the modules holding parameters, the family name) of what was passed."""
    if callable(getattr(model, "model", None)):  # a family: a module with .model and .guide
        model_fn, guide = model.model, guide if guide is not None else getattr(model, "guide", None)
    elif callable(model):  # a Pyro model function (or a PyroModule whose forward is the model)
        model_fn = model
    else:
        raise InputError(f"expected a module with .model and .guide methods, or a model callable; "
                         f"got {type(model).__name__}")
    if not callable(guide):
        raise InputError(f"expected a guide: a module with .guide, or guide= (a callable or a Pyro autoguide); "
                         f"got {type(guide).__name__}")
    modules = {"model": model} if isinstance(model, nn.Module) else {}
    if isinstance(guide, nn.Module) and not any(guide is m for mod in modules.values() for m in mod.modules()):
        modules["guide"] = guide
    family = getattr(model, "family", None) or getattr(model, "__name__", type(model).__name__)
    return model_fn, guide, modules, family


def _records_by_default(model, guide, loss) -> bool:
    """Whether ``compile_step=None`` records: ``model``'s own class declares ``records_step = True`` (the package's
    families that keep that promise; a subclass may keep Python state a recording would fix, so it does not inherit
    the flag but may declare it again), trained with its own guide and the default objective or one of the
    package's."""
    return (vars(type(model)).get("records_step", False) is True and guide is None
            and (loss is None or type(loss).__module__.startswith("ppl_dgm.")))


def check_fit_options(optimizer: str, lr_schedule: str, lr: float, *, clip_norm: float | None = None, seed: int = 0,
                      held_out_examples: int | None = None, **positive_ints: int) -> None:
    """The loop options both SVI backends share (this loop and :func:`ppl_dgm.numpyro.inference.svi.fit`), checked
    in one line each: the optimizer and schedule by name, ``lr`` and ``clip_norm`` > 0, ``seed`` >= 0, and
    ``positive_ints`` (epochs, batch_size, ...) and ``held_out_examples`` integers >= 1."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    for name, v in positive_ints.items():
        check_positive_int(name, v)
    check_number("lr", lr, min=0, min_open=True)
    if clip_norm is not None:
        check_number("clip_norm", clip_norm, min=0, min_open=True)
    if held_out_examples is not None:
        check_positive_int("held_out_examples", held_out_examples)
    check_number("seed", seed, integer=True, min=0)


def fit_svi(
    model,
    train,
    *,
    test=None,
    loss=None,
    guide: Callable | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: Literal["adam", "clipped_adam"] = "adam",
    lr: float = 1e-3,
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant",
    lr_gamma: float = 0.99,
    clip_norm: float | None = None,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callbacks: Sequence[Callable] = (),
    config: dict[str, Any] | None = None,
    test_particles: int = 1,
    validate: bool = False,
    ema: float | None = None,
    held_out_examples: int | None = None,
    beta1: float = 0.9,
    compile_step: bool | None = None,
    fuse_step: bool = False,
    precision: Literal["fp32", "bf16", "fp16"] = "fp32",
) -> FitResult:
    """Fit a model–guide pair by SVI.

    (Longer than 60 lines only through its signature and this docstring; the work is done by
    :class:`SVIState`, :class:`SVILoop` and the callbacks of :mod:`.callbacks`.)

    Parameters
    ----------
    model : module with ``.model`` and ``.guide``, or a model callable
        A family (``model.model(*batch)``, ``model.guide(*batch)``; its parameters live on it),
        or a Pyro model function (or ``PyroModule``) taking ``*batch``: then pass ``guide=``.
    train : Tensor (N, ...) or tuple of tensors (NumPy arrays are taken as tensors)
        Training data; each minibatch passes ``batch[0], batch[1], ...`` positionally.
    test : Tensor or tuple of tensors, optional
        Held-out data: the ELBO and its terms are recorded every epoch.
    loss : Pyro ELBO or callable, optional
        Anything with ``differentiable_loss(model, guide, *args)`` (every Pyro ELBO
        that supports it) or such a callable.  Default
        :class:`~ppl_dgm.inference.objectives.AnalyticELBO` (analytic KL where available;
        the same value as Pyro's ``TraceMeanField_ELBO``, computed with less overhead).
        If it has ``set_epoch(epoch, epochs)`` (see :mod:`ppl_dgm.inference.objectives`:
        beta warm-up) that is called at each epoch start.  An objective with ``make_state(...)`` brings its own
        step (an :class:`SVIState` subclass) and ``check(model, guide, *batch)`` replaces the guide check: the
        :class:`~ppl_dgm.inference.adversarial.AdversarialObjective` plays the GAN game that way (the model
        records its samples at a site ``"x"`` and has a ``discriminator`` module): the history's ``train_elbo``
        is then the value V(D, G), with ``d_loss``, ``g_loss``, ``d_real``, ``d_fake`` beside it.
    guide : callable, optional
        Default ``model.guide``.  A function whose parameters are ``pyro.param`` /
        ``pyro.module`` sites, a module, or a Pyro autoguide (``AutoNormal(model_fn)``, ...).
        It is checked against the model first (:func:`~ppl_dgm.inference.guides.check_guide`).
    epochs, batch_size, lr : training length, minibatch size, learning rate.
    optimizer : {"adam", "clipped_adam"}
    lr_schedule : {"constant", "cosine", "exponential"}
        Learning rate as a function of the epoch (stateless, so resume is exact).
    clip_norm : float, optional
        Clip the global gradient norm.
    out_dir : path, optional
        Where ``checkpoint.pt`` and ``history.json`` go.
    checkpoint_every : int
        Save every that many epochs (and always at the end).
    resume : bool
        Continue from ``out_dir/checkpoint.pt``: parameters (module, autoguide and ``pyro.param``),
        optimizer, RNG and history are restored, so the resumed run ends where an uninterrupted one would.
    device : {"cpu", "cuda", "auto"} or torch.device
    seed : int
        Seeds torch, NumPy, Pyro; the minibatch order of epoch e is drawn from (seed, e).
    transform : callable, optional
        Applied to each minibatch's first tensor (e.g. dynamic binarization).
    callbacks : sequence of callables ``cb(epoch, record, model)`` or :class:`~.callbacks.Callback`
        Called after each epoch's checkpoint; raise :class:`StopTraining` to stop.
    config : dict, optional
        JSON-able run configuration stored in the checkpoint.
    test_particles : int
        Samples of z per held-out example for the held-out ELBO terms.
    validate : bool
        Keep Pyro's distribution-argument validation on in every step.  The first
        trace is always validated; later steps skip it for speed (non-finite losses
        are still caught and named).
    ema : float in (0, 1), optional
        Decay of a moving average of the parameters (:class:`~.callbacks.EMA`), updated after every step;
        held-out terms, checkpoints (``best.pt`` too) and the returned model use the averaged weights, and
        the checkpoint keeps the training weights as well, so resume is exact.  None or 0: no average.
    held_out_examples : int, optional
        Score only the first that many held-out examples after each epoch (the same ones every epoch, so
        epochs compare paired); None: all of them.  ``evaluate`` scores every row.
    beta1 : float in [0, 1)
        Adam's first-moment decay (0.5 is usual for GANs).
    compile_step : bool, optional
        Record the objective's forward pass as a graph of tensor operations (once per minibatch shape, at its
        second step) and replay it (:mod:`~ppl_dgm.inference.compiled`): the same numbers, bit for bit, without
        re-running the Python of the model, the guide and Pyro's handlers, which is most of the overhead over a
        hand-written loop.  A program that reads tensor values in Python is refused in one line when recorded;
        ``pyro.param`` sites and an objective with its own step are refused at once.  None (the default): record
        the step of one of this package's families whose own class says it records (``records_step``; vae, ae,
        hvae, cvae, ddpm, score, classifier), with its own guide and one of the package's objectives, in a
        single-process fit of at least ``RECORD_AFTER`` (1000) steps; should such a recording fail, warn and
        go on eagerly.  Any other program (your own model or guide, a subclass that does not declare
        ``records_step = True`` itself) runs eagerly unless you pass True.
    fuse_step : bool
        Record the step (as ``compile_step=True``) and compile the recording of the full minibatch at the last
        epoch's KL weight with ``torch.compile`` (inductor) into fused kernels at its first replay
        (:mod:`~ppl_dgm.inference.compiled`): the same objective and random draws, values equal to the eager
        step's up to float rounding; ~10-50 s of compiling on CPU, once (a C++ compiler is needed; without one a
        warning says so and the step runs recorded, unfused).  The last, smaller minibatch of an epoch and the
        epochs of a KL warm-up run recorded, unfused.  A step takes 0.83-1.02 times the plain PyTorch loop's on this
        project's 2-core CPU host, against 0.97-1.19 recorded unfused (benchmarks/ddpm_overhead.py,
        benchmarks/svi_overhead.py); worth it in long fits.  Refused with ``compile_step=False``.
    precision : {"fp32", "bf16", "fp16"}
        The networks' forward passes under ``torch.autocast`` in bf16 / fp16 (fp16 with a gradient scaler); the
        ELBO terms are computed and summed in float32 (:mod:`~ppl_dgm.inference.devices`).

    Under ``torchrun --nproc-per-node N`` (or in a process group of N > 1 processes) the fit is data-parallel
    (:mod:`~ppl_dgm.inference.distributed`): ``batch_size`` is the global minibatch, split over the ranks, with the
    steps of one process; files, the progress bar, held-out terms and ``callbacks`` are rank 0's.

    Returns
    -------
    FitResult

    Raises
    ------
    InputError
        Bad options or data, a guide that does not match the model, a shape problem at a site.
    NonFiniteError
        When the loss stops being finite; names the sites and the step; the last
        good checkpoint is kept.
    """
    model_fn, guide_fn, modules, family = _model_guide(model, guide)
    check_fit_options(optimizer, lr_schedule, lr, clip_norm=clip_norm, seed=seed, held_out_examples=held_out_examples,
                      epochs=epochs, batch_size=batch_size, checkpoint_every=checkpoint_every)
    ddp = data_parallel(device)  # None in a plain run
    dev = ddp.device if ddp is not None else resolve_device(device)
    dtype = next((p.dtype for m in modules.values() for p in m.parameters()), torch.get_default_dtype())
    train_t, stage = place_training(_prepare(_as_tuple(train), None, dtype, "training"), dev)
    test_t = _prepare(_as_tuple(test), dev, dtype, "test")
    if held_out_examples is not None:
        test_t = tuple(t[:held_out_examples] for t in test_t)
    if not train_t or train_t[0].shape[0] == 0:
        raise InputError("expected at least one training example; got none")
    check_data = getattr(model, "check_data", None)  # values a recorded step does not check (a CVAE's labels)
    for data in (train_t, test_t):
        if callable(check_data) and data and len(data[0]):
            check_data(*data)
    user_loss, loss = loss, loss if loss is not None else AnalyticELBO()
    own_state = callable(getattr(loss, "make_state", None))  # an objective with its own step: the GAN game
    objective = None if own_state else _loss_fn(loss)
    if not 0 <= beta1 < 1:
        raise InputError(f"expected beta1 in [0, 1); got {beta1}")
    amp = Precision(precision, dev, modules)
    if fuse_step and compile_step is False:
        raise InputError("fuse_step compiles the recorded step: expected compile_step True or None with fuse_step; "
                         "got compile_step=False")
    compile_step = True if fuse_step else compile_step
    flag = "fuse_step" if fuse_step else "compile_step"  # the option named in refusals
    if ddp is not None:
        ddp.check_fit(batch_size, loss, compile_step, flag)
    if own_state and amp.active:
        raise InputError(f"precision {precision}: {type(loss).__name__} takes its own step; expected fp32")
    averager = EMA(ema) if ema else None
    hooks = [averager] if averager else []
    hooks += [ModelEpochEnd(model.end_epoch)] if callable(getattr(model, "end_epoch", None)) else []
    hooks += [HeldOutELBO(test_t, test_particles)] if test_t and len(test_t[0]) else []
    hooks += [Clock(), DivergenceGuard()]
    if out_dir is not None:
        hooks.append(Checkpoint(ensure_writable_dir(out_dir), family, every=checkpoint_every, resume=resume,
                                config=config))
    hooks += [ProgressBar(f"fit {family}", getattr(loss, "progress_name", "elbo"))] if progress else []
    hooks += [cb if isinstance(cb, Callback) else EpochFunction(cb) for cb in callbacks]
    hooks = ddp.callbacks(hooks) if ddp is not None else hooks

    seed_everything(seed)
    pyro.clear_param_store()
    for m in modules.values():
        m.to(dev)
    first = _minibatch(train_t, slice(0, batch_size), transform, stage)
    (loss.check if own_state else check_guide)(model_fn, guide_fn, *first)  # also creates lazy params
    params = collect_params(modules)
    if not params:
        raise InputError("expected parameters to fit (module parameters, pyro.param / pyro.module sites "
                         "or an autoguide's); got none")
    # Adam's fused kernel (one pass over each tensor instead of ~10 elementwise ops): 0.30 against 0.79 ms per step
    # for the VAE 784-400-20 on one core, the same update up to float rounding
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params.values())
    opt = (torch.optim.Adam(params.values(), lr=lr, betas=(beta1, 0.999), fused=fused) if optimizer == "adam"
           else ClippedAdam(params.values(), lr=lr, betas=(beta1, 0.999), clip_norm=clip_norm or 10.0))
    clip = clip_norm if optimizer == "adam" else None

    def kl_weight():  # the objective's KL weight in the current epoch (None: it has none)
        return getattr(loss, "kl_weight", None)

    strict = compile_step is not None
    if compile_step is None:
        steps = epochs * math.ceil(train_t[0].shape[0] / batch_size)
        compile_step = (not own_state and ddp is None and steps >= RECORD_AFTER
                        and _records_by_default(model, guide, user_loss))
    if compile_step:
        if own_state:
            raise InputError(f"{flag}: {type(loss).__name__} takes its own step; fit without {flag}")
        last_weight = getattr(loss, "kl_weight_at", lambda epoch: kl_weight())(epochs - 1)
        full = [t.shape for t in first]

        def settled(batch):  # fuse_step compiles what serves the rest of the fit: full minibatches, last KL weight
            return [t.shape for t in batch] == full and kl_weight() == last_weight

        objective = RecordedLoss(objective, model_fn, guide_fn, modules, params, key=kl_weight, strict=strict,
                                 fuse=fuse_step, settled=settled)
    state = (loss.make_state(model, model_fn, guide_fn, params, opt, modules, clip, averager) if own_state
             else SVIState(model_fn, guide_fn, amp.loss(objective), params, opt, modules, clip, averager, amp.scaler))
    run = SVILoop(state, model, train_t, epochs, batch_size, seed, lr_at(lr_schedule, lr, epochs, lr_gamma),
                  getattr(loss, "set_epoch", None), kl_weight, transform, stage=stage)
    # The first traces (check_guide) ran with Pyro's argument validation on, catching model bugs early;
    # the loop runs without it (it costs about 5% per step); non-finite values are still caught and named.
    with pyro.validation_enabled(validate), amp, parallel_fit(ddp, state, run, first):
        run.fit(hooks)
    if averager is not None:
        averager.copy_to(params)
    return FitResult(model, run.history, run.checkpoint, run.stopped)

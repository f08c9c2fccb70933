"""``fit_svi``: the one stochastic-variational-inference loop every family uses.

Each step draws a minibatch, evaluates the objective's differentiable loss
(-ELBO by default, with analytic KL for Gaussian guides) and takes an
optimizer step on the module's parameters (plus any ``pyro.param`` sites a
user's guide creates).  Parameters live on the module; Pyro's global param
store is cleared at the start of each fit, so fits never share state.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam

from ..errors import InputError, NonFiniteError, check_choice
from ..utils import atomic_write_json, ensure_writable_dir, resolve_device, seed_everything
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model_state, save_checkpoint
from .diagnostics import elbo_terms, find_nonfinite
from .guides import check_guide
from .objectives import AnalyticELBO

OPTIMIZERS = ("adam", "clipped_adam")
LR_SCHEDULES = ("constant", "cosine", "exponential")


class StopTraining(Exception):
    """Raise from a callback to end training after the current epoch (checkpoint kept)."""


@dataclass
class FitResult:
    """What :func:`fit_svi` returns.

    Attributes
    ----------
    model : torch.nn.Module
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

    model: torch.nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped: str | None = None


def _as_tuple(data) -> tuple[torch.Tensor, ...]:
    if data is None:
        return ()
    if isinstance(data, torch.Tensor):
        return (data,)
    data = tuple(d for d in data if d is not None)
    if not data or not all(isinstance(d, torch.Tensor) for d in data):
        raise InputError("expected training data as a tensor or a tuple of tensors; got "
                         f"{type(data).__name__}")
    n = data[0].shape[0]
    if any(d.shape[0] != n for d in data):
        raise InputError(f"expected tensors with the same first dimension; got {[d.shape[0] for d in data]}")
    return data


def _lr_at(schedule: str, lr: float, epoch: int, epochs: int, gamma: float) -> float:
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "exponential":
        return lr * gamma**epoch
    return lr


def _loss_fn(loss) -> Callable:
    if hasattr(loss, "differentiable_loss"):
        return loss.differentiable_loss
    if callable(loss):
        return loss
    raise InputError(f"expected a Pyro ELBO with .differentiable_loss or a callable "
                     f"loss(model, guide, *args); got {type(loss).__name__}")


def _collect_params(module) -> list[torch.Tensor]:
    """Module parameters plus the unconstrained leaves of ``pyro.param`` sites already created
    (the first-batch traces of :func:`check_guide` create them)."""
    params = list(module.parameters())
    seen = {id(p) for p in params}
    for _, p in pyro.get_param_store().named_parameters():
        if id(p) not in seen and p.requires_grad:
            params.append(p)
            seen.add(id(p))
    return params


def fit_svi(
    model: torch.nn.Module,
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
) -> FitResult:
    """Fit ``model.model`` / ``guide`` (default ``model.guide``) by SVI.

    Parameters
    ----------
    model : torch.nn.Module
        Holds the parameters and defines ``model(*batch)`` (and ``guide(*batch)``).
    train : Tensor (N, ...) or tuple of tensors
        Training data; each minibatch passes ``batch[0], batch[1], ...`` positionally.
    test : Tensor or tuple of tensors, optional
        Held-out data: the ELBO and its terms are recorded every epoch.
    loss : Pyro ELBO or callable, optional
        Anything with ``differentiable_loss(model, guide, *args)`` (every Pyro ELBO
        that supports it) or such a callable.  Default
        :class:`~ppl_dgm.inference.objectives.AnalyticELBO` (analytic KL where available;
        the same value as Pyro's ``TraceMeanField_ELBO``, computed with less overhead).
        If it has ``set_epoch(epoch, epochs)`` (see :mod:`ppl_dgm.inference.objectives`:
        beta warm-up) that is called at each epoch start.
        The guide is checked against the model first (:func:`~ppl_dgm.inference.guides.check_guide`).
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
        Continue from ``out_dir/checkpoint.pt``: parameters, optimizer, RNG and
        history are restored, so the resumed run ends where an uninterrupted one would.
    device : {"cpu", "cuda", "auto"} or torch.device
    seed : int
        Seeds torch, NumPy, Pyro; the minibatch order of epoch e is drawn from (seed, e).
    transform : callable, optional
        Applied to each minibatch's first tensor (e.g. dynamic binarization).
    callbacks : sequence of callables ``cb(epoch, record, model)``
        Called after each epoch's checkpoint; raise :class:`StopTraining` to stop.
    config : dict, optional
        JSON-able run configuration stored in the checkpoint.
    test_particles : int
        Samples of z per held-out example for the held-out ELBO terms.
    validate : bool
        Keep Pyro's distribution-argument validation on in every step.  The first
        trace is always validated; later steps skip it for speed (non-finite losses
        are still caught and named).

    Returns
    -------
    FitResult

    Raises
    ------
    NonFiniteError
        When the loss stops being finite; names the sites and the step; the last
        good checkpoint is kept.
    """
    guide = guide if guide is not None else getattr(model, "guide", None)
    model_fn = getattr(model, "model", None)
    if not callable(model_fn) or not callable(guide):
        raise InputError(f"expected a module with .model and .guide methods; got {type(model).__name__}")
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer; got {v!r}")
    if not lr > 0:
        raise InputError(f"lr must be > 0; got {lr}")
    dev = resolve_device(device)
    train_t = tuple(t.to(dev) for t in _as_tuple(train))
    test_t = tuple(t.to(dev) for t in _as_tuple(test))
    if not train_t or train_t[0].shape[0] == 0:
        raise InputError("expected at least one training example; got none")
    loss_obj = loss if loss is not None else AnalyticELBO()
    objective = _loss_fn(loss_obj)
    set_epoch = getattr(loss_obj, "set_epoch", None)  # e.g. a KL warm-up: a function of the epoch only
    out = ensure_writable_dir(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    family = getattr(model, "family", type(model).__name__)

    seed_everything(seed)
    pyro.clear_param_store()
    model.to(dev)
    n = train_t[0].shape[0]
    steps = math.ceil(n / batch_size)

    first = tuple(t[: min(batch_size, n)] for t in train_t)
    if transform is not None:
        first = (transform(first[0]), *first[1:])
    check_guide(model_fn, guide, *first)  # also runs both programs once, creating any pyro.param sites
    params = _collect_params(model)
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else ClippedAdam(params, lr=lr, clip_norm=clip_norm or 10.0))

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if ckpt_path is not None and ckpt_path.exists() and not resume:
        raise InputError(f"{out} already holds a checkpoint; pass resume=True (--resume) to continue it "
                         f"or choose another output directory")
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, family=family, map_location=dev)
        load_model_state(model, state["model"], str(ckpt_path))
        store = dict(pyro.get_param_store().named_parameters())
        for name, value in state.get("param_store", {}).items():
            if name in store:
                store[name].data.copy_(value)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"].cpu())
        if dev.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), dev)
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])

    def save(epoch: int) -> None:
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, {
            "family": family,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "param_store": {k: v.detach() for k, v in pyro.get_param_store().named_parameters()},
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "history": json.dumps(history),
            "config": json.dumps(config or {}),
        })
        atomic_write_json(out / "history.json", history)

    bar = None
    if progress and start_epoch < epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - start_epoch) * steps, desc=f"fit {family}", unit="step",
                   dynamic_ncols=True, leave=True, mininterval=0.5)
    result = FitResult(model, history, ckpt_path if ckpt_path and ckpt_path.exists() else None)
    # The first trace (above) ran with Pyro's argument validation on, catching model bugs early;
    # the loop runs without it (it costs about 5% per step), and non-finite values are caught below.
    validation = pyro.validation_enabled(validate)
    validation.__enter__()
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            if callable(set_epoch):
                set_epoch(epoch, epochs)
            cur_lr = _lr_at(lr_schedule, lr, epoch, epochs, lr_gamma)
            for group in opt.param_groups:
                group["lr"] = cur_lr
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=g).to(dev)
            model.train()
            total = 0.0
            for step in range(steps):
                idx = perm[step * batch_size: (step + 1) * batch_size]
                batch = tuple(t[idx] for t in train_t)
                if transform is not None:
                    batch = (transform(batch[0]), *batch[1:])
                opt.zero_grad(set_to_none=True)
                try:
                    loss_value = objective(model_fn, guide, *batch)
                    value = float(loss_value.detach())
                except ValueError:  # Pyro's validation refusing NaN parameters of a distribution
                    if not find_nonfinite(model_fn, guide, *batch, module=model):
                        raise
                    value = math.nan
                if not math.isfinite(value):
                    sites = find_nonfinite(model_fn, guide, *batch, module=model)
                    where = ", ".join(sites) or "no site (the objective itself)"
                    raise NonFiniteError(
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {step + 1}: {where}; "
                        f"last good checkpoint: {result.checkpoint or 'none written'}",
                        step=epoch * steps + step, sites=sites)
                loss_value.backward()
                if clip_norm is not None and optimizer == "adam":
                    torch.nn.utils.clip_grad_norm_(params, clip_norm)
                opt.step()
                total += value
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == steps - 1:
                        running = -total / min(n, (step + 1) * batch_size)
                        bar.set_postfix_str(f"epoch {epoch + 1}/{epochs} elbo {running:.3f}", refresh=False)
            record: dict[str, Any] = {"epoch": epoch + 1, "train_elbo": -total / n, "lr": cur_lr}
            if test_t:
                record.update(_held_out(model_fn, guide, test_t, batch_size, seed, epoch, dev, test_particles, model))
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            if bar is not None:
                msg = f"epoch {epoch + 1}/{epochs} elbo {record['train_elbo']:.3f}"
                if "test_elbo" in record:
                    msg += f" test {record['test_elbo']:.3f}"
                bar.set_postfix_str(msg)
            if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                save(epoch + 1)
                result.checkpoint = ckpt_path
            try:
                for cb in callbacks:
                    cb(epoch + 1, record, model)
            except StopTraining:
                if (epoch + 1) % checkpoint_every:
                    save(epoch + 1)
                    result.checkpoint = ckpt_path
                result.stopped = "callback"
                break
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        raise
    finally:
        validation.__exit__(None, None, None)
        if bar is not None:
            bar.close()
        model.eval()
    return result


@torch.no_grad()
def _held_out(model_fn, guide, test_t, batch_size, seed, epoch, dev, particles, module) -> dict[str, Any]:
    """Held-out ELBO terms per example, with an RNG stream of its own (training is not perturbed)."""
    module.eval()
    n = test_t[0].shape[0]
    sums = {"test_elbo": 0.0, "test_reconstruction": 0.0, "test_kl": 0.0}
    kl_sites: dict[str, float] = {}
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed * 7_919 + epoch + 1)
        for i in range(0, n, max(batch_size, 512)):
            batch = tuple(t[i: i + max(batch_size, 512)] for t in test_t)
            terms = elbo_terms(model_fn, guide, *batch, num_particles=particles)
            w = terms.n
            sums["test_elbo"] += terms.elbo * w
            sums["test_reconstruction"] += terms.reconstruction * w
            sums["test_kl"] += terms.kl * w
            for site, v in terms.kl_sites.items():
                kl_sites[site] = kl_sites.get(site, 0.0) + v * w
    out: dict[str, Any] = {k: v / n for k, v in sums.items()}
    if kl_sites:
        out["test_kl_sites"] = {k: v / n for k, v in kl_sites.items()}
    return out

"""Callbacks of the SVI loop: checkpoints (save and resume), held-out ELBO terms, the clock, the progress bar.

:class:`~ppl_dgm.inference.svi.SVILoop` (the loop behind ``fit_svi``) calls these hooks on
each callback, in the order of the list:

``on_fit_start(run)``
    once, after the guide check and before the first epoch (a resumed run restores its state here);
``on_epoch_start(run)``
    before each epoch (``run.epoch`` is the 0-based epoch);
``on_step_end(run, step, loss)``
    after each optimizer step, with the minibatch's loss (a float);
``on_epoch_end(run, record)``
    after each epoch; ``record`` is the epoch's history entry (already in ``run.history``)
    and callbacks may add to it: the held-out terms, the seconds;
``on_fit_end(run)``
    once, also when training stops early or fails (``run.stopped`` says why).

Raise :class:`StopTraining` from any hook to end training after the current epoch.
A plain function ``cb(epoch, record, model)`` (1-based epoch) passed to
``fit_svi(callbacks=...)`` runs as an ``on_epoch_end`` hook (:class:`EpochFunction`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError, DivergenceError, InputError
from ..utils import atomic_write_json
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from .svi import SVILoop


class StopTraining(Exception):
    """Raise from a callback to end training after the current epoch (checkpoint kept)."""


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    def on_fit_start(self, run: SVILoop) -> None: ...

    def on_epoch_start(self, run: SVILoop) -> None: ...

    def on_step_end(self, run: SVILoop, step: int, loss: float) -> None: ...

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, run: SVILoop) -> None: ...


class EpochFunction(Callback):
    """A user's ``cb(epoch, record, model)`` (1-based epoch), called at each epoch end."""

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise InputError(f"callbacks: expected callables cb(epoch, record, model); got {type(fn).__name__}")
        self.fn = fn

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        self.fn(record["epoch"], record, run.model)


class ModelEpochEnd(Callback):
    """The model's own end-of-epoch work (``end_epoch()``, e.g. a VQ-VAE's codebook usage and dead-code restarts),
    first of the epoch-end hooks: its metrics join the epoch's history record (and the progress bar)."""

    def __init__(self, end_epoch: Callable[[], dict[str, Any]]):
        self.end_epoch = end_epoch

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        metrics = self.end_epoch() or {}
        record.update(metrics)
        run.metrics = tuple(metrics)


class DivergenceGuard(Callback):
    """Stop when training explodes: the epoch's train ELBO is more than ``factor`` times further below
    than the first minibatch's was from zero (L_epoch < L_0 - factor (|L_0| + 1), nats per example).

    An untrained model's ELBO is the worst training should see; ``--lr 1e6`` gives -3.9e31 nats against
    L_0 = -44 on digits.  Runs before the checkpoint, so the diverged weights never overwrite it.
    """

    def __init__(self, factor: float = 10.0):
        self.factor, self.first = factor, None

    def on_step_end(self, run: SVILoop, step: int, loss: float) -> None:
        if self.first is None:
            self.first = -loss / min(run.n, run.batch_size)

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        elbo, first = record["train_elbo"], self.first
        if first is not None and elbo < first - self.factor * (abs(first) + 1):
            raise DivergenceError(
                f"training diverged at epoch {record['epoch']}: train ELBO {elbo:.4g} nats/example, more than "
                f"{self.factor:g}x further below zero than at the first step ({first:.4g}); last good checkpoint: "
                f"{run.checkpoint or 'none written'}; lower the learning rate ({record['lr']:g}) or clip gradients")


class EMA(Callback):
    r"""An exponential moving average of the trained tensors, updated after every optimizer step.

    After n steps with weights p_1 .. p_n the average is the bias-corrected EMA (as Adam corrects its moments)

    .. math::  \bar p_n = \frac{1 - d}{1 - d^n} \sum_{k=1}^{n} d^{\,n-k} p_k,

    kept as a running value: :math:`\bar p_n = \bar p_{n-1} + \frac{1 - d}{1 - d^n}(p_n - \bar p_{n-1})`, so
    :math:`\bar p_1 = p_1` and no weight sits on the initialisation.  ``fit_svi(ema=d)`` hands it to the
    :class:`~.svi.SVIState`, which evaluates held-out data with the average (:meth:`applied`), checkpoints it
    as the model's weights (the training weights and n go in the checkpoint too, so resume is exact) and leaves
    it in the model at the end.

    Parameters
    ----------
    decay : float in (0, 1)
        d; the average spans about 1 / (1 - d) steps.
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise InputError(f"ema: expected a decay in (0, 1) (or 0 for none); got {decay}")
        self.decay, self.updates, self.shadow = decay, 0, {}

    def on_step_end(self, run: SVILoop, step: int, loss: float) -> None:
        self.update(run.state.params)

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor]) -> None:
        """One step of the average towards the current ``params`` (name -> tensor)."""
        self.updates += 1
        weight = (1 - self.decay) / (1 - self.decay ** self.updates)
        for name, p in params.items():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), weight)
            else:
                self.shadow[name] = p.detach().clone()

    @contextlib.contextmanager
    def applied(self, params: dict[str, torch.Tensor]):
        """Within the block, ``params`` hold the averaged values; the training values come back after."""
        saved = {name: p.detach().clone() for name, p in params.items() if name in self.shadow}
        self.copy_to(params)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    @torch.no_grad()
    def copy_to(self, params: dict[str, torch.Tensor]) -> None:
        """Write the averaged values into ``params`` (name -> tensor)."""
        for name, value in self.shadow.items():
            params[name].copy_(value)


class Clock(Callback):
    """``record["seconds"]``: wall time of the epoch, held-out evaluation included (put it after that)."""

    def on_epoch_start(self, run: SVILoop) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        record["seconds"] = time.perf_counter() - self.t0


class HeldOutELBO(Callback):
    """``test_elbo``, ``test_reconstruction``, ``test_kl``, ``test_kl_sites`` per example on held-out data.

    Drawn from an RNG stream of its own (seeded by the fit's seed and the epoch), so training
    is not perturbed and a resumed run records the same numbers; with EMA, of the averaged weights.
    """

    def __init__(self, data: tuple[torch.Tensor, ...], particles: int = 1):
        self.data, self.particles = data, particles

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        dev = self.data[0].device
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(run.seed * 7_919 + run.epoch + 1)
            with run.state.averaged():
                terms = run.state.evaluate(*self.data, batch_size=max(run.batch_size, 512), particles=self.particles)
        record.update({f"test_{k}": v for k, v in terms.items()})


class Checkpoint(Callback):
    """``out_dir/checkpoint.pt`` and ``history.json`` every ``every`` epochs and at the end; resume from them.

    The checkpoint holds the fit's state (:meth:`SVIState.state_dict`: module parameters, ``pyro.param``
    values, optimizer), the RNG, the epoch, the history and the config, so a resumed run
    ends where an uninterrupted one would.

    Raises
    ------
    InputError
        At construction, if ``out_dir`` holds a checkpoint and ``resume`` is False.
    """

    def __init__(self, out_dir: Path, family: str, *, every: int = 1, resume: bool = False,
                 config: dict[str, Any] | None = None):
        self.out, self.path, self.best_path = out_dir, out_dir / CHECKPOINT_NAME, out_dir / BEST_NAME
        self.family, self.every, self.config = family, every, config or {}
        self.resume = resume and self.path.exists()
        if self.path.exists() and not resume:
            raise InputError(f"{out_dir} already holds a checkpoint; pass resume=True (--resume) to continue it "
                             f"or choose another output directory")
        self.saved_epoch, self.best = -1, -math.inf
        self.writer = True  # False on the DDP ranks other than 0: they restore from the checkpoint but never write

    def read(self, device: torch.device) -> dict[str, Any]:
        """The checkpoint's contents (under DDP rank 0 reads and sends them to the others: :mod:`.distributed`)."""
        return load_checkpoint(self.path, family=self.family, map_location=device)

    def on_fit_start(self, run: SVILoop) -> None:
        if not self.resume:
            return
        state = self.read(run.device)
        missing = [k for k in ("optimizer", "rng_torch", "history", "epoch") if k not in state]
        if missing:
            raise CheckpointError(f"{self.path}: expected a resumable checkpoint (optimizer and RNG state); "
                                  f"got one without {', '.join(missing)}")
        run.state.load_state_dict(state, str(self.path))
        torch.set_rng_state(state["rng_torch"].cpu())
        if run.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), run.device)
        run.history[:] = json.loads(state["history"])
        run.start_epoch = self.saved_epoch = int(state["epoch"])
        run.checkpoint = self.path
        self.best = max((h["test_elbo"] for h in run.history if "test_elbo" in h), default=-math.inf)

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        if record.get("test_elbo", -math.inf) > self.best:  # best.pt: the parameters of the best held-out ELBO
            self.best = record["test_elbo"]
            if self.writer:
                save_checkpoint(self.best_path, {"family": self.family, "epoch": record["epoch"],
                                                 "model": run.state.state_dict()["model"], "test_elbo": self.best})
        if record["epoch"] % self.every == 0 or record["epoch"] == run.epochs:
            self.save(run, record["epoch"])

    def on_fit_end(self, run: SVILoop) -> None:
        if run.stopped == "callback" and self.saved_epoch != run.epoch + 1:
            self.save(run, run.epoch + 1)

    def save(self, run: SVILoop, epoch: int) -> None:
        self.saved_epoch, run.checkpoint = epoch, self.path
        if not self.writer:
            return
        dev = run.device
        save_checkpoint(self.path, {
            "family": self.family,
            "epoch": epoch,
            **run.state.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "history": json.dumps(run.history),
            "config": json.dumps(self.config),
        })
        atomic_write_json(self.out / "history.json", run.history)


class ProgressBar(Callback):
    """A tqdm bar over all remaining steps, showing the running train ELBO (and the held-out one); ``name`` is what
    the training objective is called (``"V"`` for the adversarial trainer's value)."""

    def __init__(self, desc: str, name: str = "elbo"):
        self.desc, self.name, self.bar = desc, name, None

    def on_fit_start(self, run: SVILoop) -> None:
        if run.start_epoch < run.epochs:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=(run.epochs - run.start_epoch) * run.steps, desc=self.desc, unit="step",
                            dynamic_ncols=True, leave=True, mininterval=0.5)

    def on_epoch_start(self, run: SVILoop) -> None:
        self.total = 0.0

    def on_step_end(self, run: SVILoop, step: int, loss: float) -> None:
        self.total += loss
        if self.bar is None:
            return
        self.bar.update(1)
        if step % 10 == 0 or step == run.steps - 1:
            running = -self.total / min(run.n, (step + 1) * run.batch_size)
            self.bar.set_postfix_str(f"epoch {run.epoch + 1}/{run.epochs} {self.name} {running:.3f}", refresh=False)

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        if self.bar is not None:
            test = f" test {record['test_elbo']:.3f}" if "test_elbo" in record else ""
            test += "".join(f" {k} {record[k]:.4g}" for k in run.metrics if k in record)
            # shown at the bar's next redraw (at most every 0.5 s, and on close): an epoch of a few ms redrawing
            # it each time wrote ~36 KB of bar into a log for 300 digits epochs
            self.bar.set_postfix_str(f"epoch {record['epoch']}/{run.epochs} {self.name} "
                                     f"{record['train_elbo']:.3f}{test}", refresh=False)

    def on_fit_end(self, run: SVILoop) -> None:
        if self.bar is not None:
            self.bar.close()

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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..utils import atomic_write_json
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint

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


class Clock(Callback):
    """``record["seconds"]``: wall time of the epoch, held-out evaluation included (put it after that)."""

    def on_epoch_start(self, run: SVILoop) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        record["seconds"] = time.perf_counter() - self.t0


class HeldOutELBO(Callback):
    """``test_elbo``, ``test_reconstruction``, ``test_kl``, ``test_kl_sites`` per example on held-out data.

    Drawn from an RNG stream of its own (seeded by the fit's seed and the epoch), so training
    is not perturbed and a resumed run records the same numbers.
    """

    def __init__(self, data: tuple[torch.Tensor, ...], particles: int = 1):
        self.data, self.particles = data, particles

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        dev = self.data[0].device
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(run.seed * 7_919 + run.epoch + 1)
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
        self.out, self.path = out_dir, out_dir / CHECKPOINT_NAME
        self.family, self.every, self.config = family, every, config or {}
        self.resume = resume and self.path.exists()
        if self.path.exists() and not resume:
            raise InputError(f"{out_dir} already holds a checkpoint; pass resume=True (--resume) to continue it "
                             f"or choose another output directory")
        self.saved_epoch = -1

    def on_fit_start(self, run: SVILoop) -> None:
        if not self.resume:
            return
        state = load_checkpoint(self.path, family=self.family, map_location=run.device)
        run.state.load_state_dict(state, str(self.path))
        torch.set_rng_state(state["rng_torch"].cpu())
        if run.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), run.device)
        run.history[:] = json.loads(state["history"])
        run.start_epoch = self.saved_epoch = int(state["epoch"])
        run.checkpoint = self.path

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        if record["epoch"] % self.every == 0 or record["epoch"] == run.epochs:
            self.save(run, record["epoch"])

    def on_fit_end(self, run: SVILoop) -> None:
        if run.stopped == "callback" and self.saved_epoch != run.epoch + 1:
            self.save(run, run.epoch + 1)

    def save(self, run: SVILoop, epoch: int) -> None:
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
        self.saved_epoch, run.checkpoint = epoch, self.path


class ProgressBar(Callback):
    """A tqdm bar over all remaining steps, showing the running train ELBO (and the held-out one)."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

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
            self.bar.set_postfix_str(f"epoch {run.epoch + 1}/{run.epochs} elbo {running:.3f}", refresh=False)

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        if self.bar is not None:
            test = f" test {record['test_elbo']:.3f}" if "test_elbo" in record else ""
            self.bar.set_postfix_str(f"epoch {record['epoch']}/{run.epochs} elbo {record['train_elbo']:.3f}{test}")

    def on_fit_end(self, run: SVILoop) -> None:
        if self.bar is not None:
            self.bar.close()

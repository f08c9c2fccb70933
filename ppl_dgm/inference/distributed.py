r"""``fit_svi`` under ``torchrun``: data-parallel SVI with ``torch.distributed`` (DDP), as Pyro's Lightning example.

A plain run never touches this module's machinery.  Launched by ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1
in the environment) or in a process group the caller initialised, :func:`data_parallel` joins the group (gloo on
the CPU, NCCL on CUDA with device ``cuda:LOCAL_RANK``) and ``fit_svi`` then runs the same loop on every rank with:

- **the data split** (:class:`DistributedLoop`): the minibatch order of epoch e is drawn from (seed, e) on every
  rank, as in one process; the global minibatch is ``batch_size`` rows and rank r trains on the r-th of W
  near-equal parts of it (``torch.tensor_split``), so W processes take the same steps as one;
- **the gradient all-reduce** (:class:`DistributedState`): the objective runs as the forward of a small module
  holding the model's and the guide's modules (:class:`~.compiled.ObjectiveProgram`), wrapped in
  ``torch.nn.parallel.DistributedDataParallel``, whose reducer all-reduces the gradients as ``backward`` runs;
  trained tensors outside those modules (``pyro.param`` sites) are all-reduced by hand after it;
- **rank-0-only files**: checkpoints, ``history.json``, the progress bar, the held-out ELBO and the user's
  callbacks run on rank 0 (:class:`OnRankZero`); the epoch's record (held-out terms included) and a
  :class:`~.callbacks.StopTraining` are sent to every rank, so all ranks keep the same history and stop together.

The gradient.  The objective is a *sum* over the minibatch's rows, L = sum_i l_i (nats), so the gradient of one
process on the global minibatch B is :math:`g = \sum_{i \in B} \nabla l_i = \sum_r \nabla L_r` with
:math:`L_r = \sum_{i \in B_r} l_i` over rank r's share.  DDP averages the ranks' gradients, so each rank
back-propagates :math:`W L_r`:

.. math::  \frac{1}{W} \sum_{r=1}^{W} \nabla (W L_r) = \sum_r \nabla L_r = g,

whatever the shares' sizes (the last minibatch of an epoch may split unevenly; a rank whose share is empty trains
on one row with weight 0).  Sites outside the plate ``"data"`` (a global latent, its prior) are not per row: each
rank counts them with weight 1 / W (:class:`_ShareGlobal`), so the ranks' sum counts them once, as one process
does.  The ``pyro.param`` gradients :math:`W \nabla L_r` are summed over the ranks and
divided by W: the same g.  The loss each rank reports is :math:`\sum_r L_r` (one all-reduce of a float64 scalar
per step), so a non-finite loss stops every rank at the same step, and the history holds the global figures.

Every rank starts from rank 0's parameters (DDP broadcasts the modules; the ``pyro.param`` values are broadcast
here) and stays equal to it: the reduced gradients and hence Adam's steps are the same on every rank.  A model's
own epoch-end work (a VQ-VAE's dead-code restarts) and buffers changed in training (batch-norm statistics, EMA
codebooks) would drift apart, so rank 0's parameters and buffers are broadcast after each epoch.

Random numbers.  Rank 0 draws from the fit's stream (seeded by ``seed``, saved in checkpoints); rank r > 0 reseeds
from (seed, epoch, r) at each epoch start.  Hence a stochastic objective on W ranks is not bit-identical to one
process (the rows of a minibatch get other noise draws), but a deterministic one (an exact-likelihood family on
fixed data, a MAP guide) takes the same steps to float32 rounding (the order of the sums differs), and a resumed
run with the same W continues exactly.

Resume across world sizes: the checkpoint holds the full parameters, the optimizer state and rank 0's RNG state,
never anything per rank; any W resumes it (rank 0 reads it and sends it to the others, so the nodes need not share
a file system for it).  A W-process run resumed by W' processes continues where it stopped; it is bit-exact in
the same cases as above.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger
from torch import nn

from ..errors import InputError
from ..utils import resolve_device
from .callbacks import EMA, Callback, Checkpoint, Clock, DivergenceGuard, ModelEpochEnd, StopTraining
from .compiled import ObjectiveProgram

if TYPE_CHECKING:
    from .svi import SVILoop, SVIState

__all__ = ["Distributed", "data_parallel", "leave_group", "launched", "is_rank_zero", "barrier"]


def launched() -> bool:
    """True inside a process group of more than one process, or when ``torchrun`` started W > 1 processes."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def is_rank_zero() -> bool:
    """True unless this is a rank other than 0 of a multi-process launch (a plain run is rank 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a plain run)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@dataclass
class Distributed:
    """This process's place in a data-parallel fit: ``rank`` of ``world_size``, and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def check_batch(self, batch_size: int) -> int:
        """The rows per rank, ``batch_size / world_size``; refused in one line if it does not divide."""
        if batch_size % self.world_size:
            raise InputError(f"batch_size is the global minibatch, split over the {self.world_size} processes: "
                             f"expected a multiple of {self.world_size}; got {batch_size}")
        return batch_size // self.world_size

    def check_fit(self, batch_size: int, loss: Any, compile_step: bool, flag: str = "compile_step") -> None:
        """Refuse in one line what a data-parallel fit cannot do (called by ``fit_svi`` and, before anything is
        written, by the runs layer): a batch size W does not divide, an objective with its own step (the GAN
        game), one that is not a sum over rows (free bits: a batch mean inside), a recorded step (named ``flag``:
        the option that asked for it)."""
        self.check_batch(batch_size)
        name = type(loss).__name__
        for bad, what in ((callable(getattr(loss, "make_state", None)), f"{name}, an objective with its own step"),
                          (compile_step, flag),
                          (not getattr(loss, "rows_additive", True), f"{name}, not a sum over rows (a batch mean "
                                                                       f"inside)")):
            if bad:
                raise InputError(f"expected an objective the ranks can split by rows under torchrun (data-parallel "
                                 f"fit); got {what}: run it in one process")

    def callbacks(self, hooks: Sequence[Callback]) -> list[Callback]:
        """``fit_svi``'s callbacks for this rank: those that keep every rank in step run everywhere (EMA, the
        model's epoch end, the clock, the divergence guard, the checkpoint's restore; the checkpoint writes on rank
        0 only); runs of the others (held-out ELBO, progress bar, the user's) go to rank 0 (:class:`OnRankZero`).
        The list of collectives depends only on the callbacks that run everywhere (the same on every rank), never
        on the rank-0-only ones, which may differ between ranks.
        Rank 0's parameters and buffers are broadcast after the model's epoch end (:class:`SyncModules`)."""
        out: list[Callback] = []
        group: list[Callback] = []
        for cb in hooks:
            if isinstance(cb, (EMA, ModelEpochEnd, Clock, DivergenceGuard, Checkpoint)):
                # a group (maybe empty) before every callback that runs everywhere and one at the end: the ranks'
                # broadcasts then pair up even when their rank-0-only callbacks differ (rank 0's progress bar)
                out.append(OnRankZero(group, self))
                group = []
                if isinstance(cb, Checkpoint):
                    self._checkpoint(cb)
                out.append(cb)
            else:
                group.append(cb)
        out.append(OnRankZero(group, self))
        after = max((i + 1 for i, cb in enumerate(out) if isinstance(cb, (EMA, ModelEpochEnd))), default=0)
        return [*out[:after], SyncModules(self), *out[after:]]

    def _checkpoint(self, cb: Checkpoint) -> None:
        cb.writer = self.rank == 0
        cb.resume = self.broadcast(cb.resume)  # rank 0's file decides
        read = cb.read
        cb.read = lambda device: self.broadcast(read(torch.device("cpu")) if self.rank == 0 else None)


# Modules that bind ``dist.group.WORLD`` as a default argument when they are imported.  DDP's first construction
# imports them; after init_process_group they would hold the default group for good, so destroy_process_group
# could not free it: its gloo worker threads would outlive the interpreter, and one still releasing a finished
# broadcast when Python finalises dies taking the GIL inside a C++ destructor -- std::terminate, the rank exits with
# SIGABRT "terminate called without an active exception" (5 of 196 torchrun runs here, two at once on 2 cores).
# Imported before the group exists, they bind None and the group is freed, its threads joined, at exit.
_BIND_WORLD = ("torch.distributed.nn", "torch.distributed.fsdp.sharded_grad_scaler", "torch.distributed.optim")


def data_parallel(device: str | torch.device = "cpu") -> Distributed | None:
    """Join the process group of a multi-process launch; None in a plain run (nothing is imported or started).

    The group is initialised once (``init_method="env://"``: torchrun's ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
    ``WORLD_SIZE``), with gloo when ``device`` resolves to the CPU and NCCL when it resolves to CUDA; the device is
    then ``cuda:LOCAL_RANK`` (``--device auto`` picks CUDA when torch sees it, as in a plain run), and destroyed at
    exit by :func:`leave_group` (see ``_BIND_WORLD`` for why that needs an import first).  A group the caller
    initialised is used as it is, and left to the caller.
    """
    if not launched():
        return None
    dev = resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        for name in _BIND_WORLD:  # before the group exists: see _BIND_WORLD
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        atexit.register(leave_group)
    return Distributed(dist.get_rank(), dist.get_world_size(), local, dev)


def leave_group() -> None:
    """Destroy the process group :func:`data_parallel` initialised (registered to run at exit): the group is freed
    and its worker threads joined while the interpreter is still whole."""
    if dist.is_initialized():
        dist.destroy_process_group()


# buffers are synchronised once per epoch by SyncModules, not before every forward (torch >= 2.13 renamed the flag)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


class _ShareGlobal(Messenger):
    """Scales the sites outside the plate ``"data"`` (global latents, a prior on a global parameter) by 1 / W,
    so the ranks' losses count them once in total, as one process does; the data-plate sites are each rank's."""

    def __init__(self, world_size: int):
        super().__init__()
        self.factor = 1.0 / world_size

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not any(f.name == "data" for f in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


class DistributedState:
    """Turns an :class:`~.svi.SVIState` data-parallel: its loss runs through DDP, the reported loss is summed over
    the ranks, and each rank back-propagates W times its share (see the module docstring for the maths).

    Built by :meth:`wrap`, which rebinds the state's ``loss``, ``loss_value`` and ``backward``: the same object,
    so the loop, the callbacks and the checkpoints see an ordinary state.
    """

    def __init__(self, ctx: Distributed, state: SVIState, objective: Callable, first: tuple[torch.Tensor, ...]):
        self.ctx, self.state, self.weight, self.objective = ctx, state, 1.0, objective
        share = _ShareGlobal(ctx.world_size)
        program = ObjectiveProgram(objective, share(state.model), share(state.guide), state.modules)
        inside = {id(p) for p in program.parameters() if p.requires_grad}
        for p in state.params.values():  # every rank starts from rank 0's values (DDP does it again for modules)
            dist.broadcast(p.data, src=0)
        self.extras = [p for p in state.params.values() if id(p) not in inside]
        self.ddp = None
        if inside:
            unused = _unused(program, first, state.params)
            self.ddp = nn.parallel.DistributedDataParallel(
                program, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                find_unused_parameters=bool(unused), **_NO_BUFFER_SYNC)
        self.forward = self.ddp if self.ddp is not None else program

    @classmethod
    def wrap(cls, ctx: Distributed, state: SVIState, objective: Callable, first: tuple[torch.Tensor, ...]):
        dp = cls(ctx, state, objective, first)
        state.loss = lambda model, guide, *batch: dp.forward(*batch)
        state.loss_value = dp.loss_value
        state.backward = dp.backward
        return dp

    def loss_value(self, loss: torch.Tensor) -> float:
        """The global minibatch's loss: the ranks' (weighted) shares summed."""
        total = (loss.detach() * self.weight).to(torch.float64).reshape(1)
        dist.all_reduce(total)
        return float(total)

    def backward(self, loss: torch.Tensor) -> None:
        scaled = loss * (self.ctx.world_size * self.weight)
        (scaled if self.state.scaler is None else self.state.scaler.scale(scaled)).backward()
        if self.extras:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.extras]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.ctx.world_size
            for p, g in zip(self.extras, flat.split([q.numel() for q in self.extras])):
                p.grad = g.view_as(p).clone()


def _unused(program: nn.Module, batch: tuple[torch.Tensor, ...], params: dict[str, torch.Tensor]) -> list[str]:
    """Parameters of ``program`` that get no gradient from the loss on ``batch`` (DDP must then look for them every
    step); found by one backward pass whose random draws and gradients are discarded."""
    with torch.random.fork_rng(devices=[batch[0].device] if batch[0].device.type == "cuda" else []):
        program(*batch).backward()
    inside = {id(p) for p in program.parameters()}
    unused = [name for name, p in params.items() if id(p) in inside and p.requires_grad and p.grad is None]
    for p in params.values():
        p.grad = None
    return unused


class DistributedLoop:
    """The data split of :class:`~.svi.SVILoop` for this rank: ``rows`` takes the rank's share of each global
    minibatch, and ranks other than 0 reseed their random stream from (seed, epoch, rank) at each epoch start."""

    def __init__(self, ctx: Distributed, dp: DistributedState):
        self.ctx, self.dp = ctx, dp

    def attach(self, run: SVILoop) -> None:
        train_epoch = run.train_epoch

        def rows(perm: torch.Tensor, step: int) -> torch.Tensor:
            full = perm[step * run.batch_size: (step + 1) * run.batch_size]
            share = torch.tensor_split(full, self.ctx.world_size)[self.ctx.rank]
            self.dp.weight = 1.0 if len(share) else 0.0  # an empty share trains on one row with weight 0
            return share if len(share) else full[:1]

        def epoch(on_step):
            if self.ctx.rank:
                torch.manual_seed((run.seed * 1_000_003 + run.epoch) * 65_537 + self.ctx.rank)
            return train_epoch(on_step)

        run.rows, run.train_epoch = rows, epoch


class OnRankZero(Callback):
    """Callbacks that run on rank 0 only; at each epoch end rank 0's record (which they may have added to) and
    whether one of them raised :class:`~.callbacks.StopTraining` are sent to every rank."""

    def __init__(self, callbacks: Sequence[Callback], ctx: Distributed):
        self.callbacks, self.ctx = list(callbacks), ctx

    def _each(self, name: str, *args) -> None:
        if self.ctx.rank == 0:
            for cb in self.callbacks:
                getattr(cb, name)(*args)

    def on_fit_start(self, run: SVILoop) -> None:
        self._each("on_fit_start", run)

    def on_epoch_start(self, run: SVILoop) -> None:
        self._each("on_epoch_start", run)

    def on_step_end(self, run: SVILoop, step: int, loss: float) -> None:
        self._each("on_step_end", run, step, loss)

    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        stop = False
        try:
            self._each("on_epoch_end", run, record)
        except StopTraining:
            stop = True
        shared, stop = self.ctx.broadcast((record, stop))
        record.update(shared)
        if stop:
            raise StopTraining

    def on_fit_end(self, run: SVILoop) -> None:
        self._each("on_fit_end", run)


class SyncModules(Callback):
    """After each epoch, rank 0's parameters and buffers on every rank (a model's epoch-end work and buffers
    changed in training may differ between ranks; the parameters trained by the reduced gradients do not)."""

    def __init__(self, ctx: Distributed):
        self.ctx = ctx

    @torch.no_grad()
    def on_epoch_end(self, run: SVILoop, record: dict[str, Any]) -> None:
        tensors = {id(t): t for t in run.state.params.values()}
        for m in run.state.modules.values():
            tensors.update({id(b): b for b in m.buffers()})
        for t in tensors.values():
            dist.broadcast(t.data, src=0)


@contextlib.contextmanager
def parallel_fit(ctx: Distributed | None, state: SVIState, run: SVILoop, first: tuple[torch.Tensor, ...]):
    """Within the block the fit is data-parallel (``fit_svi``'s seam; nothing happens for ``ctx`` None): the
    state's step goes through DDP and the loop takes this rank's rows.  On leaving, the state is plain again and
    the DDP module is freed at once (a reducer outliving the process group aborts the process at exit), and the
    ranks leave together."""
    if ctx is None:
        yield
        return
    dp = DistributedState.wrap(ctx, state, state.loss, first)
    DistributedLoop(ctx, dp).attach(run)
    try:
        with warnings.catch_warnings():
            # a 1x1 convolution's weight gradient has other strides on its size-1 dimensions than the weight (the
            # same memory layout): DDP warns that it copies it into its bucket; nothing is wrong (PixelCNN, UNet)
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            yield
    finally:
        state.loss = dp.objective
        for name in ("loss_value", "backward"):
            state.__dict__.pop(name, None)
        dp.ddp = dp.forward = None
    barrier()

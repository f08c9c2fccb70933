"""A recorded training step: the objective's forward pass as a graph of tensor operations, replayed every step.

``fit_svi(..., compile_step=True)`` (``ppl-dgm fit FAMILY --compile-step``) records ``loss(model, guide, *batch)``
as a graph with ``torch.fx``'s ``make_fx`` (a trace on fake tensors: shapes and dtypes, no arithmetic, below
autograd) and then calls the graph instead: the same tensor operations in the same order, hence the same values,
gradients and random draws as the eager step, bit for bit, without re-running the Python of Pyro's handlers, the
distributions, the model and the guide.  The model and guide are unchanged; autograd and the optimizer run as
usual on the graph's output.  Four clean-ups run on a recording: an operation that returns its input unchanged (an
``expand`` to the shape a tensor has, a product with 1) is dropped; an operation computed twice from the same inputs
(the model and the guide both look up the schedule at step t) is computed once, unless it depends on a parameter
(the gradient would then be summed before, not after, and round otherwise); what depends on no parameter, no
data value and no random draw (a noise schedule cast to float32, the schedule at the fixed step T, a network's
embedding frequencies, a zeros_like) is computed once and kept while the buffers it reads are unchanged; and results
nothing uses are dropped.  None touches an operation that draws random numbers or writes into a tensor.

Decisions taken in Python are fixed in a recording, so those on Python values are part of its key: the minibatch
shapes, the train/eval mode of the modules, the objective's KL weight (warm-up records a graph per epoch).  A key's
first call runs eagerly and its second records, so a shape seen once (the last, smaller minibatch of a one-epoch
fit) is never recorded.  What a recording cannot hold:

- a Python decision on a tensor's value (``if x.sum() > 0``, ``.item()``, a data check, a lazily initialised
  codebook): recording fails and the fit is refused in one line naming the file and line;
- a Python side effect of the programs (an attribute set, a counter): it happens once, when recording;
- trained tensors outside modules (``pyro.param`` sites, refused); Pyro's argument validation, which is off inside
  a recording (the first traces of ``fit_svi`` are validated eagerly).

Recording a VAE 784-400-20 step takes ~0.05 s, a DDPM step on 2-D data ~0.15 s and a UNet step ~0.4 s; the first
recording in a process also imports torch's tracing machinery (~1.3 s on CPU).  It pays off when Python is a large
part of the step (small networks, many steps): benchmarks/svi_overhead.py, benchmarks/ddpm_overhead.py.

``fuse=True`` (``fit_svi(..., fuse_step=True)``, ``ppl-dgm fit FAMILY --fuse-step``) goes one step further: each
recording is compiled by ``torch.compile`` (inductor) into fused kernels, forward and backward (C++ with OpenMP on
CPU, which needs a C++ compiler; Triton on CUDA), at its first replay.  The operations are those of the recording, so
the step computes the same objective with the same random draws (inductor's ``fallback_random``: torch's own
generators), but the fused arithmetic rounds otherwise: the values agree with the eager step's to float rounding, not
bit for bit.  The many small elementwise operations of the ELBO's sites (a DDPM's KL terms, the masked decoder term)
become a few loops, which is what a second thread cannot speed up otherwise.  Compiling takes ~10-20 s for an MLP
step and ~50 s for a UNet step on 2 CPU cores (less from torch's on-disk cache in a later process), so only the
recordings that serve the rest of the fit are compiled (``settled``; ``fit_svi``: the full minibatch at the last
epoch's KL weight): the last, smaller minibatch of an epoch and the epochs of a KL warm-up (a recording per weight)
replay their recordings unfused.  A fused recording is keyed by the thread count too (inductor builds it into its
kernels).  Should compiling fail (no compiler, an operation inductor cannot lower), a warning says why and the
recorded step runs unfused.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import nn
from torch.func import functional_call

from ..errors import InputError

__all__ = ["RecordedLoss"]


class ObjectiveProgram(nn.Module):
    """``loss(model, guide, *batch)`` as the forward of a module holding the modules with the parameters (the model
    and guide code unchanged): ``functional_call`` hands a recording its parameters and buffers as inputs, and DDP
    wraps it for a data-parallel fit (:mod:`.distributed`)."""

    def __init__(self, loss: Callable, model: Callable, guide: Callable, modules: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        self.fns = (loss, model, guide)

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        loss, model, guide = self.fns
        return loss(model, guide, *batch)


class RecordedLoss:
    """``loss(model, guide, *batch)`` replayed from graphs recorded per key (see the module docstring).

    Parameters
    ----------
    loss : callable
        ``loss(model, guide, *batch) -> scalar tensor``, e.g. an objective's ``differentiable_loss``.
    model, guide : callables
        The programs the loss runs.
    modules : dict[str, nn.Module]
        The modules holding every tensor the fit trains.
    params : dict[str, Tensor]
        The trained tensors (:func:`~.svi.collect_params`); each must be a parameter of ``modules``.
    key : callable, optional
        ``key() -> hashable``: the objective's Python state that the program reads (e.g. its KL weight).
    strict : bool
        A step that cannot be recorded is refused (:class:`InputError`); False: a warning says why, and this and
        every later step run eagerly (``fit_svi(compile_step=None)``).
    fuse : bool
        Compile recordings with ``torch.compile`` (inductor) at their first replay (see the module docstring).
    settled : callable, optional
        ``settled(batch) -> bool``, asked when a key is recorded: with ``fuse``, whether the recording serves the
        rest of the fit and is worth compiling (``fit_svi``: full minibatches at the last epoch's KL weight, not the
        last, smaller minibatch nor a warm-up epoch's weight, which run recorded, unfused).  Default: every one.

    Raises
    ------
    InputError
        A trained tensor that is not a module parameter (a ``pyro.param`` site).
    """

    def __init__(self, loss: Callable, model: Callable, guide: Callable, modules: dict[str, nn.Module],
                 params: dict[str, torch.Tensor], key: Callable[[], Any] | None = None, strict: bool = True,
                 fuse: bool = False, settled: Callable[[tuple[torch.Tensor, ...]], bool] | None = None):
        self.program, self.strict, self.eager = ObjectiveProgram(loss, model, guide, modules), strict, False
        self.fuse, self.settled = fuse, settled or (lambda batch: True)
        self.flag = flag = "fuse_step" if fuse else "compile_step"  # the fit_svi option named in refusals
        self.modules, self.key, self.graphs = tuple(modules.values()), key or (lambda: None), {}
        named = dict(self.program.named_parameters())
        on_modules = {id(p) for p in named.values()}
        outside = [name for name, p in params.items() if id(p) not in on_modules]
        if outside:
            raise InputError(f"{flag} needs every trained tensor on a module; got pyro.param / autoguide "
                             f"values {', '.join(outside[:5])}; fit without {flag}")
        self.param_names, self.params = list(named), list(named.values())
        self.buffer_slots = [(name, *_owner(self.program, name)) for name, _ in self.program.named_buffers()]

    def tensors(self) -> tuple[list[str], list[torch.Tensor]]:
        """Names and current values of the program's parameters and buffers (buffers looked up each call: a module
        may replace one)."""
        buffers = [module._buffers[attr] for _, module, attr in self.buffer_slots]
        return self.param_names + [name for name, _, _ in self.buffer_slots], self.params + buffers

    def signature(self, batch: tuple[torch.Tensor, ...]) -> tuple:
        """The key of the recording that ``batch`` needs."""
        return (tuple((tuple(t.shape), t.dtype, t.device) for t in batch), tuple(m.training for m in self.modules),
                torch.is_grad_enabled(), self.key(), self.fuse and torch.get_num_threads())  # fused: threads built in

    def __call__(self, model: Callable, guide: Callable, *batch: torch.Tensor) -> torch.Tensor:
        key = self.signature(batch)
        graph = None if self.eager else self.graphs.get(key)
        if graph is False:
            graph = self.graphs[key] = self.record(batch)
        if graph is None:  # a key's first call runs eagerly (the same numbers): one-off shapes are never recorded
            self.graphs.setdefault(key, False)
            return self.program(*batch)
        _, tensors = self.tensors()
        return graph(tensors, batch)

    def record(self, batch: tuple[torch.Tensor, ...]) -> Replay:
        """The graph of one call on tensors shaped like ``batch`` (the RNG state is left as it was)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        names, tensors = self.tensors()
        n = len(names)

        def step(*inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.program, dict(zip(names, inputs[:n])), tuple(inputs[n:]))

        dev = batch[0].device if batch else torch.device("cpu")
        rng = torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])
        try:
            with rng, pyro.validation_enabled(False):
                graph = make_fx(step, tracing_mode="fake")(*tensors, *batch)
        except InputError:
            raise
        except Exception as e:  # a value read in Python, an unsupported operation: say which and where, in one line
            text = str(e).strip()
            what = ("the program reads a tensor's value in Python" if "DataDependent" in type(e).__name__
                    or "data-dependent" in text else f"{type(e).__name__}: {(text.splitlines() or [''])[0][:200]}")
            problem = (f"{self.flag}: the training step could not be recorded as a graph ({what}"
                       f"{_where(e.__traceback__)})")
            if self.strict:
                raise InputError(f"{problem}; fit without {self.flag}") from None
            warnings.warn(f"{problem}; the fit goes on eagerly (the same numbers)", RuntimeWarning, stacklevel=4)
            self.eager = True  # no key records again
            return None
        _drop_identities(graph)
        _merge_repeated(graph, len(self.param_names))
        prelude = _hoist_constant(graph, first_buffer=len(self.param_names), n_tensors=n)
        _drop_unused(graph)
        return Replay(graph, prelude, fuse=self.fuse and self.settled(batch))


class Replay:
    """One recording: ``graph(*tensors, *batch, *kept)``, where ``kept`` are the outputs of ``prelude`` (the
    operations on buffers and constants alone), recomputed when a buffer it reads is replaced or written into."""

    def __init__(self, graph: torch.fx.GraphModule, prelude: tuple[torch.fx.GraphModule, list[int]] | None,
                 fuse: bool = False):
        self.graph, (self.prelude, self.reads) = graph, prelude or (None, [])
        self.kept, self.state = (), None  # the prelude's outputs; the buffers they came from, with their versions
        self.to_fuse = fuse  # compiled at the first call, when inputs to compile on are at hand

    def __call__(self, tensors: list[torch.Tensor], batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.prelude is not None:
            read = [tensors[i] for i in self.reads]
            state = [(t, None if t.is_inference() else t._version) for t in read]
            if self.state is None or any(v is None or t is not u or v != w
                                         for (t, v), (u, w) in zip(state, self.state)):
                with torch.no_grad():
                    self.kept = self.prelude(*read)
                self.state = state
        inputs = (*tensors, *batch, *self.kept)
        if self.to_fuse:
            self.to_fuse, self.graph = False, _fused(self.graph, inputs)
        return self.graph(*inputs)


def _fused(graph: torch.fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> Callable[..., torch.Tensor]:
    """``graph`` compiled by inductor, forward and backward: a trial call on ``inputs`` (under a forked RNG, on copies
    of the inputs the graph writes into, so nothing changes) compiles both now, where a failure can be caught; on
    failure a warning says why and ``graph`` itself is returned."""
    nodes = list(graph.graph.nodes)
    written = _written(nodes)
    copied = [x.detach().clone() if p in written else x
              for p, x in zip([n for n in nodes if n.op == "placeholder"], inputs)]
    trained = [x for x in copied if x.requires_grad]
    dev = next((x.device for x in inputs if x.device.type == "cuda"), None)
    start = time.perf_counter()
    try:
        fused = torch.compile(graph, backend="inductor", fullgraph=True, dynamic=False,
                              options={"fallback_random": True})  # torch's generators: the eager step's draws
        with torch.random.fork_rng(devices=[dev.index or 0] if dev is not None else []):
            out = fused(*copied)
            if trained and out.requires_grad:
                torch.autograd.grad(out, trained, allow_unused=True)
    except Exception as e:  # no C++ compiler, an operation inductor cannot lower: the recording still runs
        text = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"fuse_step: torch.compile could not compile the recorded step ({type(e).__name__}: {text}); "
                      f"the fit goes on with the recorded step unfused", RuntimeWarning, stacklevel=5)
        return graph
    fused.compile_seconds = time.perf_counter() - start
    return fused


def _where(tb) -> str:
    """`` at FILE:LINE`` of the innermost frame of the traceback outside torch, Pyro and this package's inference."""
    import traceback

    frames = [f for f in traceback.extract_tb(tb)
              if not any(part in f.filename.replace("\\", "/") for part in ("/torch/", "/pyro/", "ppl_dgm/inference/"))]
    if not frames:
        return ""
    name = frames[-1].filename.replace("\\", "/")
    return f" at {name[name.find('ppl_dgm/'):] if 'ppl_dgm/' in name else name.rsplit('/', 1)[-1]}:{frames[-1].lineno}"


def _aliased(node):
    """The node whose tensor ``node``'s result shares memory with: followed through views and in-place results."""
    while (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and node.args
           and isinstance(node.args[0], torch.fx.Node) and node.target._schema.returns
           and node.target._schema.returns[0].alias_info is not None):
        node = node.args[0]
    return node


def _written(nodes) -> set:
    """The nodes (through :func:`_aliased`) whose tensors some operation of ``nodes`` writes into."""
    written = set()
    for node in nodes:
        op = node.target
        if node.op == "call_function" and isinstance(op, torch._ops.OpOverload) and op._schema.is_mutable:
            written.update(_aliased(arg) for a, arg in zip(op._schema.arguments, node.args)
                           if a.alias_info is not None and a.alias_info.is_write and isinstance(arg, torch.fx.Node))
    return written


def _pure(node) -> bool:
    """An aten operation that neither writes into a tensor nor draws random numbers nor allocates uninitialised
    memory, and gives the same bits on every call."""
    op = node.target
    return (node.op == "call_function" and isinstance(op, torch._ops.OpOverload) and not op._schema.is_mutable
            and torch.Tag.nondeterministic_seeded not in op.tags and torch.Tag.nondeterministic_bitwise not in op.tags)


def _merge_repeated(graph, n_params: int) -> None:
    """Compute once what the graph computes twice from the same inputs (the model and the guide both look up
    sqrt(abar_t), the weights of step t, ...): a later operation with the same target and arguments as an earlier
    one uses the earlier result.  Left alone: operations that write into a tensor, draw random numbers or allocate
    uninitialised memory, every operation whose result or inputs some operation writes into (through views and
    in-place results too), so values and the RNG stream stay those of the eager step; and every operation that
    depends on a parameter (the first ``n_params`` inputs), whose gradient would arrive summed over the merged uses
    (rounded otherwise than the eager step's accumulation: an encoder run once per particle)."""
    nodes = list(graph.graph.nodes)
    written = _written(nodes)
    on_params = set([n for n in nodes if n.op == "placeholder"][:n_params])
    first = {}
    for node in nodes:
        if any(a in on_params for a in node.all_input_nodes):
            on_params.add(node)
            continue
        if not _pure(node) or _aliased(node) in written or any(_aliased(a) in written for a in node.all_input_nodes):
            continue
        key = (node.target, repr(node.args), repr(sorted(node.kwargs.items())))
        if key in first:
            node.replace_all_uses_with(first[key])
            graph.graph.erase_node(node)
        else:
            first[key] = node


def _drop_identities(graph) -> None:
    """Replace by their input the operations that return it unchanged: an ``expand`` to the shape the tensor already
    has (Pyro's distributions broadcast parameters that already broadcast: ~10 a DDPM step) and a multiplication by
    the number 1 (a plate's or a mask's scale of 1) that changes neither dtype nor shape.  Left alone where an
    operation writes into the result or the input, so values and gradients stay those of the eager step bit for
    bit (an identity expand's gradient sums nothing; multiplying a gradient by 1 changes no bit)."""
    aten = torch.ops.aten
    nodes = list(graph.graph.nodes)
    written = _written(nodes)
    for node in nodes:
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        src, out = node.args[0], node.meta.get("val")
        val = src.meta.get("val")
        if not isinstance(out, torch.Tensor) or not isinstance(val, torch.Tensor):
            continue
        same = (out.shape == val.shape and out.dtype == val.dtype and out.stride() == val.stride()
                and out.device == val.device)
        identity = (node.target is aten.expand.default or (
            node.target is aten.mul.Tensor and len(node.args) == 2 and not node.kwargs
            and type(node.args[1]) in (int, float) and node.args[1] == 1))
        if identity and same and _aliased(node) not in written and _aliased(src) not in written:
            node.replace_all_uses_with(src)
            graph.graph.erase_node(node)


_SHAPE_ONLY = {torch.ops.aten.zeros_like.default: 0, torch.ops.aten.new_zeros.default: 0,
               torch.ops.aten.ones_like.default: 1, torch.ops.aten.new_ones.default: 1}
"""Operations whose result depends on their input's shape, dtype and device only (fixed in a recording)."""


def _hoist_constant(graph, first_buffer: int, n_tensors: int) -> tuple[torch.fx.GraphModule, list[int]] | None:
    """Move out of ``graph`` the operations that depend on no parameter, no data value and no random draw: those
    reading only buffers no operation writes into (placeholders ``first_buffer .. n_tensors - 1``), constants, or
    nothing (``arange``), and the :data:`_SHAPE_ONLY` ones (rewritten as ``full``).  They become a separate graph,
    the prelude, whose outputs enter ``graph`` as placeholders appended after the batch; returns (prelude, indices of
    the buffers it reads), or None if nothing moved.  The operations and their order are unchanged, so the values
    are those of the eager step bit for bit."""
    g = graph.graph
    nodes = list(g.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    written = _written(nodes)
    const = {p for p in placeholders[first_buffer:n_tensors] if p not in written}
    for node in nodes:
        if node.op == "get_attr" and node not in written:
            const.add(node)
        elif _pure(node) and _aliased(node) not in written and (
                (node.target in _SHAPE_ONLY and node.meta["val"].is_contiguous())
                or all(a in const for a in node.all_input_nodes)):
            const.add(node)
    const.difference_update(next(n for n in reversed(nodes) if n.op == "output").all_input_nodes)  # no cached output
    moved = [n for n in nodes if n in const and n.op == "call_function"]
    frontier = [n for n in moved if any(u not in const for u in n.users)]
    if not frontier:
        return None
    pre, env = torch.fx.Graph(), {}
    needed = {a for n in moved if n.target not in _SHAPE_ONLY for a in n.all_input_nodes}
    reads = [i for i, p in enumerate(placeholders) if p in needed]
    for i in reads:
        env[placeholders[i]] = pre.placeholder(placeholders[i].name)
    for node in nodes:
        if node.op == "get_attr" and node in needed:
            env[node] = pre.node_copy(node)
        elif node in const and node.op == "call_function":
            val = node.meta["val"]
            env[node] = (pre.call_function(torch.ops.aten.full.default, (list(val.shape), _SHAPE_ONLY[node.target]),
                                           {"dtype": val.dtype, "device": val.device})
                         if node.target in _SHAPE_ONLY else pre.node_copy(node, env.__getitem__))
    pre.output(tuple(env[n] for n in frontier))
    anchor = placeholders[-1]
    for i, node in enumerate(frontier):
        with g.inserting_after(anchor):
            anchor = g.placeholder(f"kept_{i}")
        node.replace_all_uses_with(anchor)
    for node in reversed(moved):
        g.erase_node(node)
    for node in nodes:
        if node.op == "get_attr" and not node.users:
            g.erase_node(node)
    return torch.fx.GraphModule(graph, pre), reads


def _drop_unused(graph) -> None:
    """Remove operations whose results nothing uses and that neither write into a tensor nor draw random numbers
    (e.g. autograd's ``detach`` of saved values, Pyro's unused plate indices), so the replay does no less work that
    matters and consumes the RNG exactly as the eager step."""
    for node in reversed(list(graph.graph.nodes)):
        op = node.target
        if (node.op == "call_function" and not node.users and isinstance(op, torch._ops.OpOverload)
                and not op._schema.is_mutable and torch.Tag.nondeterministic_seeded not in op.tags):
            graph.graph.erase_node(node)
    graph.recompile()


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module, attribute) of the buffer ``name`` (dotted) under ``root``."""
    path, _, attr = name.rpartition(".")
    return (root.get_submodule(path) if path else root), attr

"""Issue 16 item 6: an estimate of GPU training throughput from the FLOPs of one step, measured here on the CPU.

Nothing here runs on a GPU.  The step is the one ``fit_svi``'s loop takes (:class:`ppl_dgm.inference.SVIState`:
the objective ``ppl-dgm fit`` hands ``fit_svi``, one read of the loss, ``loss.backward()``, Adam; Pyro's
validation off, as in the loop) on a minibatch of 128 Fashion-MNIST images (dynamically binarized for the
Bernoulli VAEs, as ``ppl-dgm fit`` does), EMA off (the family's default on images).  For each model, on this CPU:

- **FLOPs** of forward + backward, by ``torch.utils.flop_counter.FlopCounterMode``: matrix products and
  convolutions only (activations, norms, log-densities and Adam are elementwise and not counted), split into
  convolutions and matrix products;
- **CPU milliseconds** of a step (median of ``--steps`` after warm-up, ``--threads`` threads) and the GFLOP/s
  that makes here: the sanity anchor;
- **kernel launches** of a step, counted with ``torch.profiler`` on the CPU as a proxy for the GPU, as a range:
  low, the outermost aten ops that compute (views, allocations and scalar reads excluded; each launches at least
  one kernel); high, the innermost ones (the CPU's decomposition: a convolution's helpers count one each, as
  cuDNN's several kernels would); Adam counted as CUDA's default runs it (``foreach``: each multi-tensor op one
  launch per 36 tensors, the 4-list worst case); the same again with the loss under ``torch.autocast(bfloat16)``
  (the casts add launches); the **scalar reads** (device-to-host syncs on a GPU: ``.item()``, ``int(t)``); and the
  bytes the elementwise ops move (2 x their inputs, from the profiler's shapes; + 28 B per parameter for Adam):
  memory-bound work that the FLOPs leave out;
- **host milliseconds** of a step: what a GPU run still does on its CPU besides launching kernels (Pyro's traces,
  Python, the autograd engine, views).  Measured at batch 1 on one thread with Adam ``foreach``: the step's CPU
  time less the time inside its computing aten ops (profiled; the profiler's own cost per event taken out).

Then, for each GPU (vendor peak TFLOP/s, dense), the time of one step is put in a range::

    compute(u) = conv FLOPs / (u peak_conv) + matmul FLOPs / (u peak_matmul) + bytes / (b bandwidth)
    issue(c)   = host + (launches + scalar reads) x c
    fast = max(compute(30 %, b = 70 %), issue(5 us, low launch count))  the GPU computes while the CPU issues
    slow = compute(5 %, b = 30 %) + issue(10 us, high launch count)      no overlap

(fast is a sum too when a step reads more than one scalar: each read makes the CPU wait for the GPU), and the
largest term at each end says what binds: FLOPs, memory, launches or host.  fp32: convolutions at the TF32 peak
where the GPU has TF32 (cuDNN's default in PyTorch), matrix products at the fp32 peak (PyTorch's default);
bf16: both at the bf16 tensor-core peak (fp16 on a T4, which has no bf16).

    python benchmarks/gpu_estimate.py [--steps 20] [--threads 2] [--cases vae-conv,...] [--quick]

Prints the tables and writes ``benchmarks/results/gpu_estimate.json`` (``gpu_estimate_quick.json`` with
``--quick``: 3 timed steps, a smoke test).  About 2 minutes on 2 cores; docs/scaling.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from _timing import machine
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from ppl_dgm.data import load_dataset
from ppl_dgm.data._dataset import dynamic_binarize
from ppl_dgm.inference import AnalyticELBO, SVIState, check_guide
from ppl_dgm.inference.svi import collect_params
from ppl_dgm.models import get_family
from ppl_dgm.runs.train import objective_for
from ppl_dgm.utils import seed_everything

OUT = Path(__file__).parent / "results"
BATCH = 128
UTILISATION = {"slow": 0.05, "fast": 0.30}   # fraction of the vendor peak a small model reaches at batch 128
BANDWIDTH_SHARE = {"slow": 0.3, "fast": 0.7}  # fraction of the peak memory bandwidth the elementwise kernels reach
LAUNCH_US = {"slow": 10.0, "fast": 5.0}      # microseconds of host time per kernel launch
ADAM_BYTES_PER_PARAM = 28                    # fp32 Adam: reads param, grad, m, v; writes param, m, v
DTYPE_BYTES = {"float": 4, "double": 8, "long int": 8, "int": 4, "c10::BFloat16": 2, "c10::Half": 2, "bool": 1,
               "unsigned char": 1}
MATMUL_LIKE = ("conv", "linear", "mm", "matmul")   # their memory traffic is inside the FLOPs term
FOREACH_TENSORS = 36                         # tensors per launch of a 4-list multi-tensor-apply op (CUDA)

# Vendor peak TFLOP/s, dense (no sparsity), from NVIDIA's data sheets; None: not supported.
GPUS = {
    "T4": {"fp32": 8.1, "tf32": None, "bf16": None, "fp16": 65.0, "memory_GBps": 320,
           "note": "Turing: no TF32, no bf16 (fp16 tensor cores)"},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0, "memory_GBps": 600, "note": "Ampere"},
    "A100 40GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "memory_GBps": 1555, "note": "Ampere"},
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.0, "fp16": 989.0, "memory_GBps": 3350, "note": "Hopper"},
}

# aten ops that launch no kernel of their own: views, metadata, allocations, scalar reads (counted apart), and
# composites whose work is done by a computing child (clone -> copy_, zeros -> zero_, to -> copy_)
NO_KERNEL = frozenset("""
view _unsafe_view as_strided_ reshape _reshape_alias as_strided expand expand_as t transpose permute select
slice unsqueeze squeeze unsqueeze_ squeeze_ detach detach_ alias lift lift_fresh empty empty_like empty_strided
resize_ resolve_conj resolve_neg unbind split split_with_sizes chunk narrow view_as flatten unflatten contiguous
result_type size stride numel is_nonzero to _to_copy type_as item _local_scalar_dense set_ requires_grad_
broadcast_tensors movedim diagonal real imag is_same_size zeros_like ones_like full_like zeros ones full
scalar_tensor clone new_empty new_empty_strided new_zeros new_ones new_full dim
_has_compatible_shallow_copy_type
""".split())


@dataclass
class Case:
    key: str
    family: str
    title: str
    options: dict = field(default_factory=dict)
    probe_batch: int = BATCH         # < BATCH: counted at this batch and scaled (FLOPs are linear in it), not timed


CASES = [
    Case("vae-conv", "vae", "VAE, the package's defaults on Fashion-MNIST (conv, K = 8, hidden 256, Bernoulli)"),
    Case("vae-mlp-400-20", "vae", "VAE 784-400-20, MLP (reference)",
         {"arch": "mlp", "hidden": (400,), "latent_dim": 20}),
    Case("ddpm-unet-t1", "ddpm", "DDPM, UNet base 32, t_per_step 1 (as benchmarks/fashion_ddpm.py trained it)",
         {"t_per_step": 1}),
    Case("ddpm-unet-t8", "ddpm", "DDPM, UNet base 32, t_per_step 8 (the family's default)", {"t_per_step": 8},
         probe_batch=16),
]



def build(case: Case, ds, foreach: bool = False, seed: int = 0):
    """(SVIState, transform) of one case: the model, objective, parameters and Adam that ``fit_svi`` would use
    (``foreach``: Adam's update as CUDA runs it by default; False: as on the CPU)."""
    fam = get_family(case.family)
    options = fam.config(**case.options).resolve(ds)
    seed_everything(seed)
    model = fam.model(**options.model_kwargs(ds))
    loss = objective_for(options, model) or AnalyticELBO()   # what ``ppl-dgm fit`` hands fit_svi (None: its default)
    transform = dynamic_binarize if options.binarize(None, ds.kind == "image") == "dynamic" else None
    pyro.clear_param_store()
    check_guide(model.model, model.guide, *batch_of(ds, 0, 2, transform))
    params = collect_params({"model": model})
    opt = torch.optim.Adam(params.values(), lr=options.lr, foreach=foreach)
    state = SVIState(model.model, model.guide, loss.differentiable_loss, params, opt, {"model": model})
    state.train(True)
    return state, transform


def batch_of(ds, step: int, size: int, transform) -> tuple[torch.Tensor, ...]:
    i = (step * size) % (len(ds.x_train) - size)
    x = ds.x_train[i: i + size]
    return (transform(x) if transform else x,)


def flops(state: SVIState, batch) -> dict:
    """FLOPs of the forward pass (the loss) and of forward + backward, by class of op."""
    out = {}
    with pyro.validation_enabled(False):
        with FlopCounterMode(display=False) as fwd:
            state.loss(state.model, state.guide, *batch)
        with FlopCounterMode(display=False) as both:
            state.loss(state.model, state.guide, *batch).backward()
    state.optimizer.zero_grad(set_to_none=True)
    for name, counter in (("forward", fwd), ("forward_backward", both)):
        by_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
        total = int(counter.get_total_flops())
        conv = sum(n for op, n in by_op.items() if "convolution" in op)
        out[name] = {"total": total, "conv": conv, "matmul": total - conv, "by_op": by_op}
    return out


def _computes(e) -> bool:
    return e.name.startswith("aten::") and e.name[6:] not in NO_KERNEL


def _foreach(e) -> bool:
    return e.name.startswith("aten::_foreach")


def _under(e, pred) -> bool:
    """Whether an ancestor of profiler event ``e`` satisfies ``pred``."""
    e = e.cpu_parent
    while e is not None:
        if pred(e):
            return True
        e = e.cpu_parent
    return False


def _phase(e) -> str:
    while e is not None:
        if e.name.startswith("phase:"):
            return e.name[6:]
        e = e.cpu_parent
    return "setup"


def kernels(state: SVIState, batch, autocast: bool = False) -> dict:
    """Kernel launches of one step on a GPU, counted on the CPU (module docstring), by phase."""
    n_tensors = len(state.params)
    with pyro.validation_enabled(False), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("phase:forward"), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            loss = state.loss(state.model, state.guide, *batch)
        with record_function("phase:read"):
            float(loss.detach())                 # the loop reads the loss once per step
        with record_function("phase:backward"):
            loss.backward()
        with record_function("phase:setup"):
            foreach = _foreach_adam(state)
        with record_function("phase:optimizer"):
            state.optimizer.step()
        with record_function("phase:foreach"):   # the same update as CUDA's default runs it, on copies
            foreach.step()
    state.optimizer.zero_grad(set_to_none=True)
    phases = ("forward", "read", "backward", "optimizer", "foreach", "setup")
    top, leaf, reads, traffic = (dict.fromkeys(phases, 0) for _ in range(4))
    below: dict[int, bool] = {}

    def computes_below(e) -> bool:
        if id(e) not in below:
            below[id(e)] = any(_computes(c) or computes_below(c) for c in e.cpu_children)
        return below[id(e)]

    for e in prof.events():
        p = _phase(e)
        if e.name == "aten::_local_scalar_dense":
            reads[p] += 1
        elif not _computes(e):
            continue
        elif p == "foreach":
            top[p] += _foreach(e) and not _under(e, _foreach)
        else:
            outermost = not _under(e, _computes)
            top[p] += outermost
            if outermost and not any(w in e.name for w in MATMUL_LIKE):
                traffic[p] += _bytes_moved(e)
            leaf[p] += not computes_below(e)
    foreach = top["foreach"] * math.ceil(n_tensors / FOREACH_TENSORS)
    step = ("forward", "read", "backward")
    return {"forward": {"top": top["forward"], "leaf": leaf["forward"]},
            "backward": {"top": top["backward"], "leaf": leaf["backward"]},
            "optimizer_foreach_ops": top["foreach"], "optimizer_foreach_launches": foreach,
            "optimizer_cpu_loop_ops": top["optimizer"], "param_tensors": n_tensors,
            "gpu_launches": {"low": sum(top[p] for p in step) + foreach, "high": sum(leaf[p] for p in step) + foreach},
            "scalar_reads": sum(reads[p] for p in step),
            "elementwise_bytes": sum(traffic[p] for p in ("forward", "backward"))}


def _bytes_moved(e) -> int:
    """Bytes an elementwise (or norm, or reduction) op moves, roughly: it reads its tensor inputs and writes an
    output as large as them (2 x the inputs' bytes)."""
    n = 0
    for shape, dtype in zip(e.input_shapes, e.input_dtypes):
        if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape):
            n += math.prod(shape) * DTYPE_BYTES.get(dtype, 4)
    return 2 * n


def _foreach_adam(state: SVIState) -> torch.optim.Adam:
    """Adam with ``foreach=True`` on copies of the parameters and gradients (the real step is not taken twice),
    after one step that creates its state."""
    copies = [p.detach().clone().requires_grad_() for p in state.params.values()]
    for c, p in zip(copies, state.params.values()):
        c.grad = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    opt = torch.optim.Adam(copies, lr=1e-3, foreach=True)
    opt.step()
    return opt


def timed_steps(state: SVIState, ds, transform, size: int, steps: int, warmup: int) -> dict:
    """Median wall and process-CPU milliseconds of ``state.step`` (the loop's step) on batches of ``size``."""
    wall, cpu = [], []
    with pyro.validation_enabled(False):
        for s in range(warmup + steps):
            batch = batch_of(ds, s, size, transform)
            w0, c0 = time.perf_counter(), time.process_time()
            state.step(*batch)
            if s >= warmup:
                wall.append(1e3 * (time.perf_counter() - w0))
                cpu.append(1e3 * (time.process_time() - c0))
    return {"wall_ms": statistics.median(wall), "cpu_ms": statistics.median(cpu),
            "wall_ms_all": [round(t, 2) for t in wall], "cpu_ms_all": [round(t, 2) for t in cpu]}


def host_time(case: Case, ds, repeats: int = 15, warmup: int = 3) -> dict:
    """Host milliseconds of a step (module docstring): batch 1, one thread, Adam ``foreach``.

    With w the wall time of a profiled step, c the wall time inside its outermost computing aten ops, n its
    profiler events (m of them outside those ops) and w0 the unprofiled step's wall time, the host share of the
    step is (w - c - m (w - w0) / n) / w0; times the unprofiled step's CPU time (the machine may be shared: wall
    time then runs longer than CPU time), the host milliseconds.  Median of ``repeats`` profiled steps."""
    torch.set_num_threads(1)
    state, transform = build(case, ds, foreach=True)
    plain = timed_steps(state, ds, transform, 1, repeats, warmup)
    rows = []
    with pyro.validation_enabled(False):
        for s in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                w0 = time.perf_counter()
                state.step(*batch_of(ds, s, 1, transform))
                wall = 1e3 * (time.perf_counter() - w0)
            events = prof.events()
            outside = sum(1 for e in events if not (_computes(e) or _under(e, _computes)))
            in_ops = sum(e.cpu_time_total for e in events if _computes(e) and not _under(e, _computes)) / 1e3
            per_event = max(0.0, wall - plain["wall_ms"]) / len(events)     # the profiler's own cost
            share = (wall - in_ops - outside * per_event) / plain["wall_ms"]
            rows.append({"share": share, "in_ops_ms": in_ops, "wall_ms": wall, "events": len(events),
                         "aten_calls": sum(e.name.startswith("aten::") for e in events)})
    mid = sorted(rows, key=lambda r: r["share"])[len(rows) // 2]
    return {"host_ms": max(0.0, mid["share"]) * plain["cpu_ms"], "host_share": mid["share"],
            "batch1_step_cpu_ms": plain["cpu_ms"], "batch1_step_wall_ms": plain["wall_ms"],
            "profiled_step_wall_ms": mid["wall_ms"], "in_computing_ops_wall_ms": mid["in_ops_ms"],
            "profiler_events": mid["events"], "aten_calls": mid["aten_calls"],
            "host_share_all": [round(r["share"], 3) for r in rows]}


def measure(case: Case, ds, steps: int, warmup: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    state, transform = build(case, ds)
    batch = batch_of(ds, 0, case.probe_batch, transform)
    fl = flops(state, batch)
    scale = BATCH // case.probe_batch
    kern = {name: kernels(state, batch, autocast=bf16) for name, bf16 in (("fp32", False), ("bf16", True))}
    for k in kern.values():
        k["elementwise_bytes"] *= scale
    for part in fl.values():
        part.update({k: scale * part[k] for k in ("total", "conv", "matmul")},
                    by_op={op: scale * n for op, n in part["by_op"].items()})
    res = {"title": case.title, "family": case.family,
           "options": {k: list(v) if isinstance(v, tuple) else v for k, v in case.options.items()},
           "parameters": sum(p.numel() for p in state.params.values()), "batch_size": BATCH,
           "probe_batch": case.probe_batch, "flops": fl, "kernels": kern["fp32"],
           "kernels_bf16_autocast": kern["bf16"], "timing": None}
    if case.probe_batch == BATCH:
        res["timing"] = timed_steps(state, ds, transform, BATCH, steps, warmup)
        f = fl["forward_backward"]["total"]
        res["gflops_per_wall_second"] = f / res["timing"]["wall_ms"] / 1e6
        res["gflops_per_cpu_second"] = f / res["timing"]["cpu_ms"] / 1e6
    res["host"] = host_time(case, ds)
    torch.set_num_threads(threads)
    res["gpu"] = estimate(res)
    return res


def estimate(res: dict) -> dict:
    """Per GPU and precision: the terms (ms), the step-time range, steps/s and examples/s, and what binds."""
    f, host = res["flops"]["forward_backward"], res["host"]["host_ms"]
    out = {}
    for gpu, spec in GPUS.items():
        for precision in ("fp32", "bf16"):
            k = res["kernels" if precision == "fp32" else "kernels_bf16_autocast"]
            reads = k["scalar_reads"]
            n = {"fast": k["gpu_launches"]["low"] + reads, "slow": k["gpu_launches"]["high"] + reads}
            serial = reads > 1                                                       # the CPU waits at each read
            traffic = k["elementwise_bytes"] + ADAM_BYTES_PER_PARAM * res["parameters"]
            bandwidth = spec["memory_GBps"] * 1e6                                   # bytes per ms
            conv_peak, mm_peak = ((spec["tf32"] or spec["fp32"], spec["fp32"]) if precision == "fp32"
                                  else (spec["bf16"] or spec["fp16"],) * 2)
            at_peak = (f["conv"] / conv_peak + f["matmul"] / mm_peak) / 1e9      # ms at 100 % of peak
            row = {"peak_tflops_conv": conv_peak, "peak_tflops_matmul": mm_peak, "launches_and_reads": n,
                   "memory_GB": round(traffic / 1e9, 4),
                   "overlap": not serial,
                   "ms_at_full_peak": round(at_peak, 5)}
            for end in ("fast", "slow"):
                terms = {"flops": at_peak / UTILISATION[end], "memory": traffic / (BANDWIDTH_SHARE[end] * bandwidth),
                         "launches": n[end] * LAUNCH_US[end] / 1e3, "host": host}
                compute, issue = terms["flops"] + terms["memory"], terms["launches"] + terms["host"]
                ms = max(compute, issue) if end == "fast" and not serial else compute + issue
                row[end] = {"terms_ms": {name: round(v, 3) for name, v in terms.items()}, "step_ms": round(ms, 3),
                            "binds": max(terms, key=terms.get), "steps_per_s": round(1e3 / ms, 1),
                            "examples_per_s": round(1e3 / ms * res["batch_size"])}
                if end == "fast" and serial:   # what the fast end would be without the scalar reads
                    row["fast_if_no_reads_ms"] = round(max(compute, issue - reads * LAUNCH_US[end] / 1e3), 3)
            out[f"{gpu} {precision}"] = row
    return out


def _launches(k: dict) -> str:
    return f"{k['gpu_launches']['low']}-{k['gpu_launches']['high']}"


def report(results: dict) -> None:
    print(f"\n{'model':15s} {'params':>8s} {'GFLOP/step':>10s} {'conv %':>6s} {'wall ms':>7s} {'CPU ms':>7s} "
          f"{'GFLOP/s':>7s} {'launches':>9s} {'bf16':>9s} {'host ms':>7s}")
    for key, r in results.items():
        f = r["flops"]["forward_backward"]
        here = (f"{r['timing']['wall_ms']:7.1f} {r['timing']['cpu_ms']:7.1f} {r['gflops_per_wall_second']:7.1f}"
                if r["timing"] else f"{'-':>7s} {'-':>7s} {'-':>7s}")
        print(f"{key:15s} {r['parameters']:8d} {f['total'] / 1e9:10.2f} {100 * f['conv'] / max(1, f['total']):6.0f} "
              f"{here} {_launches(r['kernels']):>9s} {_launches(r['kernels_bf16_autocast']):>9s} "
              f"{r['host']['host_ms']:7.2f}")
    print(f"\n{'model':15s} {'GPU, precision':15s} {'step ms fast-slow':>18s} {'examples/s slow-fast':>22s}  binds "
          "(fast / slow)")
    for key, r in results.items():
        for name, e in r["gpu"].items():
            print(f"{key:15s} {name:15s} {e['fast']['step_ms']:8.2f}-{e['slow']['step_ms']:<9.2f} "
                  f"{e['slow']['examples_per_s']:10d}-{e['fast']['examples_per_s']:<11d}  "
                  f"{e['fast']['binds']} / {e['slow']['binds']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model after --warmup (a quarter for "
                                                           "ddpm-unet-t8)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the batch-128 timing")
    ap.add_argument("--cases", default=",".join(c.key for c in CASES))
    ap.add_argument("--quick", action="store_true", help="3 timed steps, 1 warm-up; writes gpu_estimate_quick.json")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1
    chosen = [c for c in CASES if c.key in args.cases.split(",")]
    load0 = os.getloadavg()
    ds = load_dataset("fashion-mnist")
    results = {}
    for case in chosen:
        t0 = time.perf_counter()
        results[case.key] = r = measure(case, ds, args.steps, args.warmup, args.threads)
        here = f"{r['timing']['wall_ms']:.1f} ms/step here, " if r["timing"] else ""
        print(f"{case.key}: {r['flops']['forward_backward']['total'] / 1e9:.2f} GFLOP/step, {here}"
              f"{_launches(r['kernels'])} launches, {r['kernels']['scalar_reads']} scalar reads, host "
              f"{r['host']['host_ms']:.2f} ms ({time.perf_counter() - t0:.0f} s)", flush=True)
    report(results)
    out = {"machine": machine(), "command": "python " + " ".join(sys.argv), "threads": args.threads,
           "steps": args.steps, "warmup": args.warmup, "load_average_start": load0, "load_average_end": os.getloadavg(),
           "dataset": ds.name, "note": "an estimate: nothing ran on a GPU (docs/scaling.md)",
           "assumptions": {"utilisation_of_peak": UTILISATION, "launch_us": LAUNCH_US,
                           "foreach_tensors_per_launch": FOREACH_TENSORS,
                           "step_ms": "fast = max(compute(u_fast), host + launches x c_fast); "
                                      "slow = compute(u_slow) + host + launches x c_slow",
                           "fp32": "convolutions at the TF32 peak where the GPU has TF32 (cuDNN's default in PyTorch), "
                                   "matrix products at the fp32 peak (PyTorch's default)",
                           "bf16": "convolutions and matrix products at the bf16 tensor-core peak (fp16 on a T4)",
                           "flops": "FlopCounterMode: matrix products and convolutions of forward + backward; "
                                    "elementwise ops and Adam not counted",
                           "memory": "elementwise ops' bytes (2 x their inputs, from the profiler's shapes) + Adam's "
                                     f"{ADAM_BYTES_PER_PARAM} B/parameter, at {BANDWIDTH_SHARE} of the peak bandwidth; "
                                     "bf16: the bytes counted under CPU autocast",
                           "bandwidth_share": BANDWIDTH_SHARE,
                           "gpus_vendor_peak_tflops_dense": GPUS},
           "results": results}
    OUT.mkdir(exist_ok=True)
    path = OUT / ("gpu_estimate_quick.json" if args.quick else "gpu_estimate.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

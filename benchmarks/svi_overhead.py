"""Overhead of ``fit_svi`` (the Pyro path) against a hand-written PyTorch loop, epoch by epoch, side by side.

A VAE 784-400-20 (MLP, Bernoulli likelihood, analytic KL), batch 128, Adam(lr=1e-3), on Fashion-MNIST (binarized
once) when installed, else on 60,000 random binary vectors.  Every loop uses the same networks (same initial
weights), the same minibatch order (the one fit_svi draws from the seed) and the same optimizer:

- ``plain``: the loop a user writes by hand (reparameterize, BCE + closed-form KL, Adam, the loss read back);
- ``plain+fused_adam``: the same with Adam's fused kernel (``fused=True``), the optimizer fit_svi uses, so that
  ``fit_svi / plain+fused_adam`` is the Pyro path's own overhead, like for like;
- ``fit_svi``: ``fit_svi(vae, x, epochs=2, progress=False, compile_step=False)``, the eager step;
- ``fit_svi+progress``: the same with the progress bar (what ``ppl-dgm fit`` shows);
- ``fit_svi+compile_step``: the same with the step recorded as a graph and replayed
  (``fit_svi(..., compile_step=True)``, :mod:`ppl_dgm.inference.compiled`; the same numbers, bit for bit).  This is
  what ``fit_svi`` and ``ppl-dgm fit vae`` do by default in a fit of 1,000 steps or more (``RECORD_AFTER``; every
  default CLI fit); the two epochs here are 938 steps, so each row says which step it times;
- ``fit_svi+fuse_step``: the recording compiled by ``torch.compile`` (inductor) into fused kernels
  (``fit_svi(..., fuse_step=True)``; the same draws, values to float rounding); its ``epoch1`` includes the compile
  (~10-20 s here; less from torch's on-disk cache in later repeats).  ``--no-fuse`` leaves it out.

Two measurements, both printed and written:

- *whole fits* (``--repeats``): each run trains two epochs and times them apart: ``epoch1`` includes fit_svi's setup
  (data checks, the validated first traces, the recording of the step), ``epoch2`` is a later epoch.  Each repeat
  runs every loop once, in an order rotated between repeats; the figures are the medians of the per-repeat ratios
  to ``plain`` (paired, so load that changes between repeats cancels), of wall and of process-CPU seconds.
- *steady epochs* (``--rounds``, the goal's figure): every loop is built once (fit_svi's by a one-epoch fit, whose
  training loop is then driven epoch by epoch: ``SVILoop.train_epoch``, the per-epoch body of every fit), then
  their epochs run interleaved, ``--steady-steps`` steps each, the order rotated every round; the ratio is the
  median over rounds of each loop's epoch seconds to ``plain``'s in the same round.  Whole fits change by +-25 %
  between runs on a shared 2-core host (epochs of 2.3-3.5 s for the same loop); epochs a second apart share the
  host's state, so the ratio of the steps themselves shows through.

Goal: fit_svi / plain <= 1.05 per step (like for like: against ``plain+fused_adam``).

    python benchmarks/svi_overhead.py [--threads 1,2] [--repeats 5] [--rounds 30] [--n 60000] [--no-fuse] [--quick]

Prints the tables and writes ``benchmarks/results/svi_overhead.json`` (the machine, the load average at start and
end, every repeat's seconds, the seconds to record one step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from _timing import machine

from ppl_dgm import VAE, fit_svi
from ppl_dgm.errors import InputError
from ppl_dgm.inference import Callback

OUT = Path(__file__).parent / "results"
EPOCHS = 2
Times = dict[str, tuple[float, float]]   # "epoch1", "epoch2" -> (wall seconds, process-CPU seconds)



def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def epoch_times(marks: list[tuple[float, float]]) -> Times:
    """Seconds between consecutive (wall, cpu) marks: the start, then the end of each epoch."""
    return {f"epoch{i + 1}": (b[0] - a[0], b[1] - a[1]) for i, (a, b) in enumerate(zip(marks, marks[1:]))}


class EpochClock(Callback):
    """(wall, cpu) at the end of every epoch (the fit's start is marked by the caller)."""

    def __init__(self, marks: list):
        self.marks = marks

    def on_epoch_end(self, run, record) -> None:
        self.marks.append(clock())


def timed_fit(model, x, **kw) -> Times:
    marks = [clock()]
    fit_svi(model, x, epochs=EPOCHS, callbacks=[EpochClock(marks)], **kw)
    return epoch_times(marks)


def epoch_order(n: int, seed: int, epoch: int = 0) -> torch.Tensor:
    """The minibatch order fit_svi draws for ``epoch`` of seed ``seed`` (so every loop sees the same batches)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def paired(variants: dict[str, Callable[[int], Times]], repeats: int, reference: str = "plain",
           warmup: int = 1) -> dict:
    """Run ``variants[name](repeat)`` once per repeat (each returns its seconds per epoch), the order rotated between
    repeats, after ``warmup`` unrecorded rounds.  Returns every repeat's seconds, their medians and the medians of
    the per-repeat ratios to ``reference``, per epoch and per clock (wall, cpu)."""
    names = list(variants)
    runs: dict[str, list[Times]] = {k: [] for k in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t = variants[name](r)
            if r >= warmup:
                runs[name].append(t)
        if r >= warmup:
            print(f"repeat {r - warmup + 1}: " + ", ".join(
                f"{k} {' + '.join(f'{w:.2f}' for w, _ in v[-1].values())} s" for k, v in runs.items()), flush=True)
    epochs = list(runs[reference][0])
    clocks = {"wall": 0, "cpu": 1}
    return {
        "seconds": {k: {e: {c: [round(t[e][i], 4) for t in v] for c, i in clocks.items()} for e in epochs}
                    for k, v in runs.items()},
        "median_seconds": {k: {e: {c: statistics.median(t[e][i] for t in v) for c, i in clocks.items()}
                               for e in epochs} for k, v in runs.items()},
        "ratio": {k: {e: {c: statistics.median(a[e][i] / b[e][i] for a, b in zip(v, runs[reference]))
                          for c, i in clocks.items()} for e in epochs}
                  for k, v in runs.items() if k != reference},
    }


def ratios_to(res: dict, reference: str) -> dict:
    """The medians of the per-repeat ratios of every variant of a :func:`paired` result to ``reference``."""
    secs, ref = res["seconds"], res["seconds"][reference]
    return {k: {e: {c: statistics.median(a / b for a, b in zip(v[e][c], ref[e][c])) for c in v[e]} for e in v}
            for k, v in secs.items() if k != reference and k.startswith("fit_svi")}


def ms_per_step(res: dict, steps: int) -> dict:
    """Median wall milliseconds per step of every variant and epoch of a :func:`paired` result."""
    return {k: {e: 1000 * s["wall"] / steps for e, s in v.items()} for k, v in res["median_seconds"].items()}


def write_result(result: dict, out: str | Path) -> None:
    """``result`` with the load average at the end, as JSON at ``out``."""
    result["loadavg_end"] = os.getloadavg()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def print_table(res: dict, steps: int) -> None:
    print(f"\n{'loop':<22}{'epoch':>7}{'ms/step':>9}{'ratio wall':>12}{'ratio cpu':>11}")
    for k, by_epoch in res["median_seconds"].items():
        for e, s in by_epoch.items():
            r = res["ratio"].get(k, {}).get(e, {"wall": 1.0, "cpu": 1.0})
            print(f"{k:<22}{e[-1]:>7}{1000 * s['wall'] / steps:>9.2f}{r['wall']:>12.3f}{r['cpu']:>11.3f}")


def load_data(n: int) -> tuple[torch.Tensor, str]:
    from ppl_dgm.data import load_dataset

    try:
        ds = load_dataset("fashion-mnist", binarize="static")
        return ds.x_train[:n], "fashion-mnist (static binarization)"
    except InputError:
        g = torch.Generator().manual_seed(0)
        return torch.bernoulli(torch.full((n, 784), 0.3), generator=g), "random binary (Fashion-MNIST absent)"


def new_vae(seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(784, latent_dim=20, hidden=[400], likelihood="bernoulli")


def plain_loop(model: VAE, x: torch.Tensor, batch_size: int, seed: int,
               fused: bool = False) -> Callable[[int], None]:
    """The loop a user would write by hand: reparameterize, BCE + analytic KL, Adam (torch's default
    implementation, or its fused kernel as fit_svi uses: ``fused``); returns ``epoch(e)``, which trains epoch e."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    k = model.latent_dim

    def epoch(e: int) -> None:
        perm = epoch_order(len(x), seed, e)
        for i in range(0, len(x), batch_size):
            xb = x[perm[i: i + batch_size]]
            h = model.encoder(xb)
            loc, scale = h[:, :k], F.softplus(h[:, k:]) + 1e-4
            z = loc + scale * torch.randn_like(loc)
            logits = model.decoder(z)
            rec = -F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum()
            loss = kl - rec
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach())   # what a loop that logs its loss reads back

    return epoch


def timed_epochs(epoch: Callable[[int], None]) -> Times:
    """Seconds of ``EPOCHS`` calls ``epoch(0), epoch(1), ...`` (a hand-written loop, timed as :func:`timed_fit`)."""
    marks = [clock()]
    for e in range(EPOCHS):
        epoch(e)
        marks.append(clock())
    return epoch_times(marks)


class _GrabLoop(Callback):
    def on_fit_start(self, run) -> None:
        self.run = run


def svi_loop(model, x: torch.Tensor, **fit_kw) -> Callable[[int], None]:
    """fit_svi's training loop for ``model`` on ``x``, set up by a one-epoch fit (its setup, validated first traces
    and, with ``compile_step``, the recording), returned as ``epoch(e)``: ``SVILoop.train_epoch`` for epoch e, what
    every fit runs each epoch (without the per-epoch callbacks: no held-out data, no progress bar here)."""
    grab = _GrabLoop()
    fit_svi(model, x, epochs=1, callbacks=[grab], **{"progress": False, **fit_kw})
    run = grab.run

    def epoch(e: int) -> None:
        run.epoch = e   # the minibatch order of epoch e, as the hand-written loops draw it
        run.state.train(True)
        with pyro.validation_enabled(False):   # as in fit_svi's loop
            run.train_epoch(lambda step, loss: None)

    return epoch


def steady_epochs(loops: dict[str, Callable[[], Callable[[int], None]]], rounds: int, steps: int,
                  reference: str = "plain", warmup: int = 2) -> dict:
    """Build every loop once (``loops[name]()`` returns its ``epoch(e)``), then run their epochs interleaved: each
    round runs every loop's next epoch, in an order rotated between rounds, after ``warmup`` unrecorded rounds.
    Returns the wall and process-CPU milliseconds per step of every epoch, their medians and the medians over
    rounds of each loop's ratio to ``reference`` in the same round."""
    built = {name: make() for name, make in loops.items()}
    names = list(built)
    ms: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    for r in range(warmup + rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = clock()
            built[name](r)
            t1 = clock()
            if r >= warmup:
                ms[name].append(((t1[0] - t0[0]) * 1e3 / steps, (t1[1] - t0[1]) * 1e3 / steps))
        if r >= warmup and (r - warmup + 1) % 10 == 0:
            print(f"round {r - warmup + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f}" for k, v in ms.items())
                  + " ms/step", flush=True)
    clocks = {"wall": 0, "cpu": 1}
    return {
        "rounds": rounds, "steps_per_epoch": steps,
        "ms_per_step": {k: {c: [round(t[i], 4) for t in v] for c, i in clocks.items()} for k, v in ms.items()},
        "median_ms_per_step": {k: {c: statistics.median(t[i] for t in v) for c, i in clocks.items()}
                               for k, v in ms.items()},
        "ratio": {k: {c: statistics.median(a[i] / b[i] for a, b in zip(v, ms[reference])) for c, i in clocks.items()}
                  for k, v in ms.items() if k != reference},
    }


def steady_epochs_ratio(res: dict, reference: str) -> dict:
    """The medians over rounds of every fit_svi loop's ratio to ``reference`` in a :func:`steady_epochs` result."""
    ms, ref = res["ms_per_step"], res["ms_per_step"][reference]
    return {k: {c: statistics.median(a / b for a, b in zip(v[c], ref[c])) for c in v}
            for k, v in ms.items() if k.startswith("fit_svi")}


def print_steady(res: dict) -> None:
    print(f"\nsteady epochs, {res['rounds']} rounds of {res['steps_per_epoch']} steps:")
    print(f"{'loop':<22}{'ms/step':>9}{'ratio wall':>12}{'ratio cpu':>11}")
    for k, m in res["median_ms_per_step"].items():
        r = res["ratio"].get(k, {"wall": 1.0, "cpu": 1.0})
        print(f"{k:<22}{m['wall']:>9.2f}{r['wall']:>12.3f}{r['cpu']:>11.3f}")


def variants(x: torch.Tensor, batch_size: int, fuse: bool = True) -> dict[str, Callable[[int], Times]]:
    def fit(**kw) -> Callable[[int], Times]:
        return lambda seed: timed_fit(new_vae(seed), x, batch_size=batch_size, lr=1e-3, seed=seed,
                                      **{"progress": False, **kw})

    return {"plain": lambda seed: timed_epochs(plain_loop(new_vae(seed), x, batch_size, seed)),
            "plain+fused_adam": lambda seed: timed_epochs(plain_loop(new_vae(seed), x, batch_size, seed, fused=True)),
            "fit_svi": fit(compile_step=False), "fit_svi+progress": fit(progress=True, compile_step=False),
            "fit_svi+compile_step": fit(compile_step=True),
            **({"fit_svi+fuse_step": fit(fuse_step=True)} if fuse else {})}


def steady_loops(x: torch.Tensor, batch_size: int, fuse: bool = True) -> dict[str, Callable[[], Callable[[int], None]]]:
    """The loops of :func:`variants` for :func:`steady_epochs` (the progress bar left out: a per-epoch view)."""
    def fit(**kw):
        return lambda: svi_loop(new_vae(0), x, batch_size=batch_size, lr=1e-3, seed=0, **kw)

    return {"plain": lambda: plain_loop(new_vae(0), x, batch_size, 0),
            "plain+fused_adam": lambda: plain_loop(new_vae(0), x, batch_size, 0, fused=True),
            "fit_svi": fit(compile_step=False), "fit_svi+compile_step": fit(compile_step=True),
            **({"fit_svi+fuse_step": fit(fuse_step=True)} if fuse else {})}


def record_seconds(program: Callable, modules: dict, batch: tuple) -> float:
    """Seconds to record one step of ``program`` (a model-guide module) as a graph (paid once per minibatch shape)."""
    from ppl_dgm.inference.compiled import RecordedLoss
    from ppl_dgm.inference.objectives import AnalyticELBO
    from ppl_dgm.inference.svi import collect_params

    rec = RecordedLoss(AnalyticELBO(), program.model, program.guide, modules, collect_params(modules))
    t0 = time.perf_counter()
    rec.record(batch)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (a table each)")
    ap.add_argument("--repeats", type=int, default=5, help="whole two-epoch fits per loop (0: none)")
    ap.add_argument("--rounds", type=int, default=30, help="steady epochs per loop, interleaved (0: none)")
    ap.add_argument("--steady-n", type=int, default=12_800, help="examples of a steady epoch (100 steps)")
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-fuse", dest="fuse", action="store_false",
                    help="leave out fit_svi+fuse_step (torch.compile; needs a C++ compiler, ~10-50 s per compile)")
    ap.add_argument("--quick", action="store_true", help="12,800 examples, one thread, 3 repeats (a smoke run)")
    ap.add_argument("--out", default=None, help="default results/svi_overhead.json (--quick: svi_overhead_quick.json)")
    args = ap.parse_args()
    args.out = args.out or str(OUT / ("svi_overhead_quick.json" if args.quick else "svi_overhead.json"))
    if args.quick:
        args.n, args.repeats, args.rounds, args.threads = 12_800, 3, 5, "1"
    x, source = load_data(args.n)
    steps = -(-len(x) // args.batch_size)
    vae = new_vae(0)
    first_record = record_seconds(vae, {"model": vae}, (x[:args.batch_size],))  # the first in the process
    result = {"benchmark": "svi_overhead", "command": "python benchmarks/svi_overhead.py"
              + (" --quick" if args.quick else f" --threads {args.threads} --repeats {args.repeats} --n {args.n}"
                 f" --rounds {args.rounds} --steady-n {args.steady_n}") + ("" if args.fuse else " --no-fuse"),
              "data": source, "n": len(x), "batch_size": args.batch_size, "steps_per_epoch": steps,
              "network": "784-400-20 MLP VAE, Bernoulli likelihood, analytic KL (AnalyticELBO)",
              "goal": "fit_svi / plain <= 1.05 per step (like for like: fit_svi / plain+fused_adam; steady epochs)",
              "repeats": args.repeats, "rounds": args.rounds, "machine": machine(),
              "record_seconds_first_in_process": first_record, "loadavg_start": os.getloadavg(), "by_threads": {}}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        print(f"-- {threads} thread(s), {steps} steps per epoch", flush=True)
        res = {}
        if args.repeats:
            res = paired(variants(x, args.batch_size, args.fuse), args.repeats)
            res["ms_per_step"] = ms_per_step(res, steps)
            res["ratio_vs_plain_fused_adam"] = ratios_to(res, "plain+fused_adam")
            print_table(res, steps)
            for k, by_epoch in res["ratio_vs_plain_fused_adam"].items():
                print(f"{k} / plain+fused_adam: " + ", ".join(
                    f"epoch {e[-1]} {r['wall']:.3f} wall, {r['cpu']:.3f} cpu" for e, r in by_epoch.items()))
        if args.rounds:
            xs = x[:args.steady_n]
            steady = steady_epochs(steady_loops(xs, args.batch_size, args.fuse), args.rounds,
                                   -(-len(xs) // args.batch_size))
            steady["ratio_vs_plain_fused_adam"] = steady_epochs_ratio(steady, "plain+fused_adam")
            res["steady"] = steady
            print_steady(steady)
            for k, r in steady["ratio_vs_plain_fused_adam"].items():
                print(f"{k} / plain+fused_adam (steady): {r['wall']:.3f} wall, {r['cpu']:.3f} cpu")
        res["record_seconds"] = record_seconds(vae, {"model": vae}, (x[:args.batch_size],))
        result["by_threads"][str(threads)] = res
        print(f"recording one step as a graph: {res['record_seconds']:.3f} s "
              f"(the first in the process: {first_record:.2f} s)", flush=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()

"""Overhead of a DDPM training step through ``fit_svi`` against a plain PyTorch loop, side by side.

The same eps-network (the one ``ppl-dgm fit ddpm`` builds for the data), the same minibatches, the same number of
(x, t) pairs per step (k steps t for each of the 128 examples of a minibatch) and Adam(lr=1e-3) with torch's fused
kernel (the optimizer fit_svi builds):

- ``plain``: draw k steps t, eps ~ N(0, I), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with abar from the
  float64 schedule, loss (T / k) sum ||eps - eps_theta(x_t, t)||^2 / 2, Adam (Ho et al.'s "simple" loop);
- ``fit_svi``: ``fit_svi(ddpm, x, epochs=2, progress=False, compile_step=False)``: the chain model-guide pair
  (subsampled plate of k steps, "simple" weighting) under the analytic-KL ELBO, the eager step;
- ``fit_svi+compile_step``: the same with the step recorded as a graph (``ppl_dgm.inference.compiled``), what
  ``fit_svi`` and ``ppl-dgm fit ddpm`` do by default in a fit of 1,000 steps or more (every default CLI fit);
- ``fit_svi+fuse_step``: the recording compiled by ``torch.compile`` (inductor) into fused kernels
  (``fit_svi(..., fuse_step=True)``, ``ppl-dgm fit ddpm --fuse-step``; the same draws, values to float rounding); its
  ``epoch1`` includes the compile (~10-20 s for the MLP, ~50 s for a UNet here).  ``--no-fuse`` leaves it out.

Two measurements, as in ``svi_overhead.py``: *whole fits* (``--repeats``; each trains two epochs, timed apart:
``epoch1`` includes fit_svi's setup and the recording of the step, ``epoch2`` a later epoch) and *steady epochs*
(``--rounds``; every loop built once, then their epochs interleaved round by round, the ratio the median over rounds
of each loop's epoch to ``plain``'s in the same round: the per-step figure the goal is about, with the drift of a
shared host between whole fits paired out).

Three configurations: the 2-D checkerboard (MLP 3 x 128 with coordinate features, k = 8), 8x8 digits (UNet,
k = 8) and a slice of Fashion-MNIST (UNet, k = 1, as in benchmarks/fashion_ddpm.py).  Each repeat runs every loop
once, in an order rotated between repeats; the figures are medians of per-repeat ratios to ``plain`` (wall and
process CPU seconds).  Goal: fit_svi / plain <= 1.15 per training step.

    OMP_NUM_THREADS=1 python benchmarks/ddpm_overhead.py [--threads 1] [--repeats 5] [--rounds 20]
                                                         [--only checkerboard,digits] [--fashion-n 1280]
                                                         [--no-fuse] [--quick]

Writes ``benchmarks/results/ddpm_overhead.json`` (the machine, the load average at start and end, every repeat).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from svi_overhead import (
    OUT,
    epoch_order,
    machine,
    ms_per_step,
    paired,
    print_steady,
    print_table,
    record_seconds,
    steady_epochs,
    svi_loop,
    timed_epochs,
    timed_fit,
    write_result,
)

from ppl_dgm.data import load_dataset
from ppl_dgm.models import DDPM
from ppl_dgm.models.diffusion import DDPMConfig

# steady_n: the examples of a steady epoch (the UNet steps take ~0.3-1 s on one thread: a few steps an epoch)
CONFIGS = {"checkerboard": {"t_per_step": 8, "n": None, "steady_n": 12_800},
           "digits": {"t_per_step": 8, "n": None, "steady_n": 640},
           "fashion-mnist": {"t_per_step": 1, "n": 1280, "steady_n": 384}}


def new_ddpm(ds, t_per_step: int, seed: int) -> DDPM:
    """The DDPM ``ppl-dgm fit ddpm`` builds for ``ds``, with ``t_per_step`` steps per minibatch."""
    kw = DDPMConfig(t_per_step=t_per_step).resolve(ds).model_kwargs(ds)
    torch.manual_seed(seed)
    return DDPM(**kw)


def plain_loop(m: DDPM, x: torch.Tensor, batch_size: int, seed: int) -> Callable[[int], None]:
    """Ho et al.'s loop by hand, on the same network and the same (x, t) pairs per step; ``epoch(e)`` trains epoch e."""
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)  # the optimizer fit_svi builds: like for like
    T, k, abar = m.timesteps, m.t_per_step, m.schedule.alpha_bars   # float64 table, t = 0..T

    def epoch(e: int) -> None:
        perm = epoch_order(len(x), seed, e)
        for i in range(0, len(x), batch_size):
            x0 = m.to_model_space(x[perm[i: i + batch_size]])
            t = (torch.randperm(T)[:k] + 1).reshape(-1, 1)           # k distinct steps in 1..T, (k, 1)
            a = abar[t].unsqueeze(-1).to(x0.dtype)                   # (k, 1, 1)
            eps = torch.randn((k, *x0.shape))
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            loss = ((eps - m.net(x_t, t)) ** 2).sum() * (T / k / 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach())

    return epoch


def variants(ds, x: torch.Tensor, t_per_step: int, batch_size: int, fuse: bool = True):
    def fit(**kw):
        return lambda seed: timed_fit(new_ddpm(ds, t_per_step, seed), x, batch_size=batch_size, lr=1e-3, seed=seed,
                                      progress=False, **kw)

    return {"plain": lambda seed: timed_epochs(plain_loop(new_ddpm(ds, t_per_step, seed), x, batch_size, seed)),
            "fit_svi": fit(compile_step=False), "fit_svi+compile_step": fit(compile_step=True),
            **({"fit_svi+fuse_step": fit(fuse_step=True)} if fuse else {})}


def steady_loops(ds, x: torch.Tensor, t_per_step: int, batch_size: int, fuse: bool = True):
    """The loops of :func:`variants`, built once each, for :func:`~svi_overhead.steady_epochs`."""
    def fit(**kw):
        return lambda: svi_loop(new_ddpm(ds, t_per_step, 0), x, batch_size=batch_size, lr=1e-3, seed=0, **kw)

    return {"plain": lambda: plain_loop(new_ddpm(ds, t_per_step, 0), x, batch_size, 0),
            "fit_svi": fit(compile_step=False), "fit_svi+compile_step": fit(compile_step=True),
            **({"fit_svi+fuse_step": fit(fuse_step=True)} if fuse else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="whole two-epoch fits per loop (0: none)")
    ap.add_argument("--rounds", type=int, default=20, help="steady epochs per loop, interleaved (0: none)")
    ap.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    ap.add_argument("--fashion-n", type=int, default=CONFIGS["fashion-mnist"]["n"],
                    help="Fashion-MNIST examples per epoch (the UNet step takes ~1 s on one thread)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--no-fuse", dest="fuse", action="store_false",
                    help="leave out fit_svi+fuse_step (torch.compile; needs a C++ compiler, ~10-50 s per compile)")
    ap.add_argument("--quick", action="store_true", help="checkerboard only, 2,560 points, 3 repeats (a smoke run)")
    ap.add_argument("--out", default=None, help="default results/ddpm_overhead.json (--quick: *_quick.json)")
    args = ap.parse_args()
    args.out = args.out or str(OUT / ("ddpm_overhead_quick.json" if args.quick else "ddpm_overhead.json"))
    torch.set_num_threads(args.threads)
    only = ["checkerboard"] if args.quick else args.only.split(",")
    repeats, rounds = (3, 5) if args.quick else (args.repeats, args.rounds)
    m0 = new_ddpm(load_dataset(only[0]), CONFIGS[only[0]]["t_per_step"], 0)
    first_record = record_seconds(m0, {"model": m0}, (load_dataset(only[0]).x_train[:args.batch_size],))
    command = "python benchmarks/ddpm_overhead.py" + (
        " --quick" if args.quick
        else f" --threads {args.threads} --repeats {repeats} --rounds {rounds} --only {','.join(only)}") + (
        "" if args.fuse else " --no-fuse")
    result = {"benchmark": "ddpm_overhead", "command": command,
              "goal": "fit_svi / plain <= 1.15 per training step", "threads": args.threads, "repeats": repeats,
              "rounds": rounds,
              "batch_size": args.batch_size, "machine": machine(), "record_seconds_first_in_process": first_record,
              "loadavg_start": os.getloadavg(), "configs": {}}
    for name in only:
        ds = load_dataset(name)
        n = 2560 if args.quick else (args.fashion_n if name == "fashion-mnist" else CONFIGS[name]["n"])
        x = ds.x_train[:n] if n else ds.x_train
        k = CONFIGS[name]["t_per_step"]
        m = new_ddpm(ds, k, 0)
        steps = -(-len(x) // args.batch_size)
        print(f"-- {name}: {len(x)} examples, {steps} steps of {args.batch_size} x {k} (x, t) pairs; "
              f"{m.arch} with {sum(p.numel() for p in m.parameters()):,} parameters", flush=True)
        res = {}
        if repeats:
            res = paired(variants(ds, x, k, args.batch_size, args.fuse), repeats)
            res["ms_per_step"] = ms_per_step(res, steps)
            print_table(res, steps)
        if rounds:
            xs = x[:min(len(x), CONFIGS[name]["steady_n"])]
            res["steady"] = steady_epochs(steady_loops(ds, xs, k, args.batch_size, args.fuse), rounds,
                                          -(-len(xs) // args.batch_size))
            print_steady(res["steady"])
        res.update(n=len(x), steps_per_epoch=steps, t_per_step=k, network=m.arch,
                   parameters=sum(p.numel() for p in m.parameters()),
                   record_seconds=record_seconds(m, {"model": m}, (x[:args.batch_size],)))
        result["configs"][name] = res
        print(f"recording one step as a graph: {res['record_seconds']:.2f} s", flush=True)
    write_result(result, args.out)


if __name__ == "__main__":
    main()

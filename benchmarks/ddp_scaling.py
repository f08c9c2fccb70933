"""Scaling of ``fit_svi`` from 1 to 2 processes on this CPU: 1 process x 1 thread, 1 x 2 threads, torchrun 2 x 1.

    python benchmarks/ddp_scaling.py                 # ~3-4 minutes: 3 paired repeats per model
    python benchmarks/ddp_scaling.py --quick         # 1 repeat, smaller epochs; writes ddp_scaling_quick.json

Two models at the same global minibatch (128 rows), both through ``fit_svi`` exactly as ``ppl-dgm fit`` builds them:

- ``vae-fashion-784-400-20``: the MLP VAE 784-400-20 (Bernoulli, analytic-KL ELBO) on statically binarized
  Fashion-MNIST (the first ``--rows`` training images; digits if the IDX files are missing);
- ``ddpm-digits``: ``ppl-dgm fit ddpm`` defaults on digits (8x8, the family's UNet / MLP and t_per_step).

Each configuration runs in fresh processes (``--worker``): 1 process with ``torch.set_num_threads(1)`` or ``(2)``,
or ``python -m torch.distributed.run --standalone --nproc-per-node 2`` with one thread each (gloo all-reduce).  A
worker fits 2 epochs and reports the examples per second of the second (the first pays the warm-up); the
configurations take turns (paired repeats, the order rotated) and the figures are medians of per-repeat ratios:

- ``efficiency`` = (examples/s with 2 processes) / (2 x examples/s with 1 process x 1 thread): the classic scaling
  efficiency (1.0 = perfect linear scaling from one core to two);
- ``vs_threads`` = (examples/s with 2 processes) / (examples/s with 1 process x 2 threads): above 1 the processes
  beat intra-op threads on the same two cores.

Caveat: the machine has 2 cores, shared with other work; both configurations use both cores, so this compares
data parallelism by processes with intra-op threads on the same 2 cores, not 1 core against 2.  The load average
at the start and end is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import machine

OUT = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]



def worker(name: str, rows: int, threads: int, out: str) -> None:
    """Fit ``name`` for 2 epochs in this process (a torchrun rank or the only process); rank 0 writes the
    second epoch's examples/s to ``out``."""
    from ppl_dgm.data import load_dataset
    from ppl_dgm.inference import Callback, fit_svi
    from ppl_dgm.models import get_family
    from ppl_dgm.runs.train import objective_for
    from ppl_dgm.utils import seed_everything

    torch.set_num_threads(threads)
    if name.startswith("vae"):
        fashion = Path("/usr/share/datasets/fashion-mnist").is_dir()
        ds = load_dataset("fashion-mnist" if fashion else "digits", binarize="static", seed=0)
        family, options = get_family("vae"), {"hidden": (400,), "latent_dim": 20, "arch": "mlp"}
    else:
        ds, family, options = load_dataset("digits"), get_family("ddpm"), {}
    options = family.config(**{k: v for k, v in options.items() if k in family.config.__dataclass_fields__})
    options = options.resolve(ds)
    seed_everything(0)
    model = family.model(**options.model_kwargs(ds))
    x = ds.x_train[:rows]

    class Seconds(Callback):
        def __init__(self):
            self.seconds = []

        def on_epoch_start(self, run):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, run, record):
            self.seconds.append(time.perf_counter() - self.t0)

    clock = Seconds()
    fit_svi(model, x, loss=objective_for(options, model), epochs=2, batch_size=128, progress=False, callbacks=[clock],
            transform=ds.batch_transform())
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps({"examples_per_s": len(x) / clock.seconds[-1], "seconds": clock.seconds,
                                         "rows": len(x), "parameters": sum(p.numel() for p in model.parameters())}))


def allreduce_worker(numbers: int, out: str, repeats: int = 50) -> None:
    """Seconds of one gloo all-reduce of ``numbers`` float32 (a model's gradients) and of one float64 scalar (the
    step's loss) between the ranks of this launch; rank 0 writes them to ``out``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    timed = {}
    for key, t in (("gradients", torch.randn(numbers)), ("scalar", torch.zeros(1, dtype=torch.float64))):
        for _ in range(5):
            dist.all_reduce(t)
        t0 = time.perf_counter()
        for _ in range(repeats):
            dist.all_reduce(t)
        timed[f"{key}_ms"] = 1000 * (time.perf_counter() - t0) / repeats
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"numbers": numbers, **timed}))
    dist.destroy_process_group()


def launch(name: str, rows: int, processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(k, None)
        args = [__file__, "--worker", name, "--rows", str(rows), "--threads", str(threads), "--out", str(out)]
        cmd = ([sys.executable, *args] if processes == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *args])
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None, help="internal: a model name, or 'allreduce' (--rows numbers)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.worker == "allreduce":
        return allreduce_worker(args.rows, args.out)
    if args.worker:
        return worker(args.worker, args.rows, args.threads, args.out)
    repeats = 1 if args.quick else args.repeats
    models = {"vae-fashion-784-400-20": 2048 if args.quick else 8192, "ddpm-digits": 512 if args.quick else 1437}
    result = {"machine": machine(), "load_start": os.getloadavg(), "global_batch": 128, "repeats": repeats,
              "caveat": "2 cores, shared with other work; efficiency = 2-process examples/s over twice the "
                        "1-process 1-thread examples/s; vs_threads = 2 processes x 1 thread against 1 process x 2 "
                        "threads on the same 2 cores", "models": {}}
    configs = {"one_process_1_thread": (1, 1), "one_process_2_threads": (1, 2), "two_processes_1_thread": (2, 1)}
    for name, rows in models.items():
        runs = []
        for r in range(repeats):
            order = list(configs)[r % 3:] + list(configs)[: r % 3]
            got = {c: launch(name, rows, *configs[c]) for c in order}
            runs.append({c: got[c]["examples_per_s"] for c in configs})
            print(name, runs[-1], flush=True)
        two = "two_processes_1_thread"
        eff = statistics.median(r[two] / (2 * r["one_process_1_thread"]) for r in runs)
        vs = statistics.median(r[two] / r["one_process_2_threads"] for r in runs)
        comm = launch("allreduce", got[two]["parameters"], 2, 1)  # what DDP sends per step, alone
        result["models"][name] = {"rows": rows, "parameters": got[two]["parameters"], "runs": runs,
                                  "efficiency_median": eff, "vs_threads_median": vs, "allreduce_alone": comm}
        print(f"{name}: one gloo all-reduce of the {comm['numbers']:,} gradients {comm['gradients_ms']:.2f} ms, of "
              f"the loss scalar {comm['scalar_ms']:.3f} ms")
        print(f"{name}: efficiency {eff:.2f} (2 processes / 2 x 1 process 1 thread), 2 processes / 1 process x 2 "
              f"threads {vs:.2f} (medians of {repeats})")
    result["load_end"] = os.getloadavg()
    OUT.mkdir(exist_ok=True)
    path = OUT / ("ddp_scaling_quick.json" if args.quick else "ddp_scaling.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

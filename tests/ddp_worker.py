"""A fit that tests/test_distributed.py runs under ``torchrun`` (and in one process, for the comparison).

``python tests/ddp_worker.py OUT EPOCHS [--resume] [--family vae]``: fits a deterministic model (p(x | y) with an MLP,
a MAP (AutoDelta) guide and a ``pyro.param`` noise scale, so no random draws: 1 and N processes take the same
steps) on the first 256 digits rows, batch 64, and rank 0 saves the parameters to ``OUT/params.pt``.  Every rank
saves its own to ``OUT/params-rankR.pt`` so the test can check that they agree.  Under torchrun each rank then
leaves the process group as it does at exit and writes how many gloo threads are left to ``OUT/threads-rankR.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDelta
from torch import nn

from ppl_dgm.data import load_dataset
from ppl_dgm.inference import fit_svi
from ppl_dgm.inference.distributed import launched, leave_group


class Density(nn.Module):
    """x ~ Normal(f(onehot(y)) + w, sigma) per row: f an MLP (module parameters), w a global latent (its MAP by
    an AutoDelta guide), sigma a ``pyro.param`` site (trained outside the modules)."""

    def __init__(self, d: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, d))
        self.d = d

    def model(self, x, y):  # noqa: D102
        sigma = pyro.param("sigma", torch.tensor(0.5), constraint=dist.constraints.positive)
        w = pyro.sample("w", dist.Normal(torch.zeros(self.d), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            loc = self.net(nn.functional.one_hot(y, 10).float()) + w
            pyro.sample("x", dist.Normal(loc, sigma).to_event(1), obs=x)


def fit(out: str, epochs: int, resume: bool = False, family: str = "density") -> None:
    """The fit (see the module docstring); in the test's own process it is the 1-process reference."""
    args = argparse.Namespace(out=out, epochs=epochs, resume=resume, family=family)
    ds = load_dataset("digits")
    x, y = ds.x_train[:256], ds.y_train[:256]
    torch.manual_seed(0)
    if args.family == "density":
        model = Density(x.shape[1])
        guide = AutoDelta(model.model, init_loc_fn=lambda site: torch.zeros(site["fn"].shape()))
        result = fit_svi(model, (x, y), guide=guide, epochs=args.epochs, batch_size=64, lr=1e-2, out_dir=args.out,
                         resume=args.resume, progress=False, checkpoint_every=1)
        params = {**{f"net.{k}": v for k, v in model.state_dict().items()},
                  **{k: v.detach() for k, v in pyro.get_param_store().items()}}
    else:
        from ppl_dgm.models import get_family

        model = get_family(args.family).model(x_dim=x.shape[1], hidden=(16,), latent_dim=2)
        result = fit_svi(model, x, test=x[:64], epochs=args.epochs, batch_size=64, out_dir=args.out,
                         resume=args.resume, progress=False)
        params = dict(model.state_dict())
    rank = int(os.environ.get("RANK", "0"))
    torch.save({k: v.clone() for k, v in params.items()}, Path(args.out) / f"params-rank{rank}.pt")
    if rank == 0:
        torch.save({"params": params, "history": result.history}, Path(args.out) / "params.pt")
    if launched():  # what exit does, then the gloo threads left (0: the group was freed before the interpreter)
        leave_group()
        (Path(args.out) / f"threads-rank{rank}.json").write_text(json.dumps(gloo_threads()))


def gloo_threads() -> int:
    """How many of this process's threads belong to gloo (Linux: their names in /proc)."""
    tasks = Path("/proc/self/task")
    return sum("gloo" in (t / "comm").read_text() for t in tasks.iterdir()) if tasks.exists() else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("epochs", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--family", default="density")
    torch.set_num_threads(1)
    fit(**vars(ap.parse_args()))

"""Issue 14 item 3: mode coverage on 2-D mixtures of known modes, GAN (minimax and non-saturating losses) vs DDPM
vs VAE on the same data and budget.

    OMP_NUM_THREADS=1 python benchmarks/mode_coverage.py [--families gan,ddpm,vae] [--epochs 100] [--quick] \\
        [--datasets grid-25,eight-gaussians] [--runs DIR]

Data: ``grid-25`` (25 Gaussians on {-4, -2, 0, 2, 4}^2, std 0.05) and ``eight-gaussians`` (8 on the circle of
radius 2.8, std 0.2), 20,000 points each, seeded 80/20 split (``DataSpec(dataset, seed=0)``): every family trains
on the same 16,000 points.

Budget (the same for every family): ``--epochs`` epochs (default 100, the DDPM's default for vector data) of
minibatches of 128 over those 16,000 points (12,500 optimizer steps; a GAN step is one generator step after
``d_steps`` = 1 discriminator step), through ``ppl_dgm.runs.train_run`` (one loop, the registry); every other
option at the family's default, except the VAE's likelihood (``gaussian-learned``: the default Bernoulli refuses
data outside [0, 1]) and its latent size (2, the data's).  ``gan`` is fitted twice, with ``--loss minimax`` and
``--loss non-saturating``.  The whole benchmark took 863 CPU s (14.4 CPU min) on one thread.

Each run draws 2,500 samples (``ppl_dgm.runs.use.sample_run``, seed 1; DDPM: its default ancestral sampler,
1,000 steps; VAE: x ~ p(x | z), and its means E[x | z] as an extra row ``vae-mean``) scored by
``ppl_dgm.evaluation.mode_coverage``: modes covered (>= ceil(0.2 * 2500 / K) high-quality samples: 20 on the grid,
63 on the ring), the fraction of high-quality samples (within 3 std of the nearest centre; 1 - exp(-4.5) = 0.98889
for the true mixture), and the KL of their per-mode histogram from the uniform one.  2,500 held-out data points are
scored as the yardstick.
Fit times are wall and process-CPU seconds (one thread).

Writes benchmarks/results/mode_coverage.{json,md,png} (``_quick`` before the suffix with --quick: 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import Clock  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from ppl_dgm.data import TOY_MIXTURES  # noqa: E402
from ppl_dgm.evaluation import mode_coverage  # noqa: E402
from ppl_dgm.models import get_family  # noqa: E402
from ppl_dgm.runs import DataSpec, load_run, read_config, train_run  # noqa: E402
from ppl_dgm.runs.use import sample_run  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
N_SAMPLES = 2500
SEED = 0
BATCH = 128
EPOCHS, QUICK_EPOCHS = 100, 2
# label -> (family, options beyond the shared budget); "gan" on the command line means both losses
METHODS = {
    "gan-minimax": ("gan", {"loss": "minimax"}),
    "gan-non-saturating": ("gan", {"loss": "non-saturating"}),
    "ddpm": ("ddpm", {}),
    "vae": ("vae", {"likelihood": "gaussian-learned", "latent_dim": 2}),
}
LIMITS = {"grid-25": 5.2, "eight-gaussians": 4.0}


def fit(label: str, dataset: str, epochs: int, runs: Path, threads: int):
    """Train ``label`` on ``dataset`` into ``runs/label-dataset`` (a finished run there is reused with its recorded
    fit times); returns (run, {"wall_seconds", "cpu_seconds"})."""
    family, extra = METHODS[label]
    out = runs / f"{label}-{dataset}"
    times = out / "bench_fit_seconds.json"
    if times.exists() and read_config(out)["train"]["epochs"] == epochs:
        return load_run(out), json.loads(times.read_text())
    options = get_family(family).config(epochs=epochs, batch_size=BATCH, **extra)
    with Clock() as clock:
        run = train_run(family, options, DataSpec(dataset=dataset, seed=SEED), out=out, progress=False,
                        threads=threads, overwrite=True, echo=lambda s: None)
    times.write_text(json.dumps(clock.as_dict()))
    return run, clock.as_dict()


def score(x: np.ndarray, dataset: str) -> dict:
    centres, std = TOY_MIXTURES[dataset]
    r = mode_coverage(x, centres, std).as_dict()
    return {k: r[k] for k in ("modes_covered", "n_modes", "high_quality", "kl_uniform", "min_count", "counts")}


def run_dataset(dataset: str, labels: list[str], epochs: int, runs: Path, threads: int):
    """Scores (label -> dict) and samples (label -> (2500, 2)) of the held-out data and of every method."""
    data = DataSpec(dataset=dataset, seed=SEED).load()
    held_out = data.x_test[:N_SAMPLES].numpy()
    results, samples = {"data (held-out)": score(held_out, dataset)}, {"data (held-out)": held_out}
    for label in labels:
        run, fit_times = fit(label, dataset, epochs, runs, threads)
        cfg = run.config
        draws = {label: {}} if label != "vae" else {"vae": {}, "vae-mean": {"mean": True}}
        for name, kw in draws.items():
            with Clock() as smp:
                x = sample_run(run, N_SAMPLES, seed=1, **kw)
            results[name] = {**score(x, dataset), "fit": fit_times, "sample_seconds": round(smp.wall, 2),
                             "family": METHODS[label][0], "options": {**cfg["train"], **cfg["model"]}}
            samples[name] = x
            r = results[name]
            print(f"{dataset:15s} {name:20s} modes {r['modes_covered']:2d}/{r['n_modes']}  "
                  f"HQ {r['high_quality']:.3f}  KL {r['kl_uniform']:.3f}  fit {fit_times['cpu_seconds']:.0f} CPU s",
                  flush=True)
    return results, samples


def picture(all_samples: dict, results: dict, path: Path) -> None:
    """Rows = datasets, columns = the data and the methods: samples as dots over the centres' 3-std circles."""
    rows = list(all_samples)
    cols = list(dict.fromkeys(c for r in rows for c in all_samples[r]))
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.6 * len(cols), 2.8 * len(rows)), squeeze=False)
    for i, dataset in enumerate(rows):
        centres, std = TOY_MIXTURES[dataset]
        lim = LIMITS.get(dataset, 5.0)
        for j, label in enumerate(cols):
            ax = axes[i, j]
            ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
            ax.set_xticks([]), ax.set_yticks([])
            if label not in all_samples[dataset]:
                ax.axis("off")
                continue
            x = all_samples[dataset][label]
            for mu in centres:
                ax.add_patch(Circle(mu, 3 * std, fill=False, lw=0.6, color="C0"))
            ax.scatter(x[:, 0], x[:, 1], s=0.6, c="C3", lw=0, alpha=0.6)
            r = results[dataset][label]
            ax.set_title(f"{label}\nmodes {r['modes_covered']}/{r['n_modes']}  HQ {r['high_quality']:.2f}  "
                         f"KL {r['kl_uniform']:.2f}", fontsize=7.5)
            if j == 0:
                ax.set_ylabel(dataset, fontsize=9)
    fig.suptitle(f"{N_SAMPLES} samples (red) over the true centres' 3-std circles (blue)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def table(results: dict, command: str, epochs: int) -> str:
    lines = [f"# Mode coverage on 2-D mixtures ({N_SAMPLES} samples per method)", "",
             f"Same data (16,000 training points, seed {SEED}) and budget for every family: {epochs} epochs, "
             f"minibatches of {BATCH}, one CPU thread. Modes covered: >= ceil(0.2 x {N_SAMPLES} / K) samples "
             "within 3 std of the mode (20 on grid-25, 63 on eight-gaussians). HQ: fraction of samples within 3 std "
             "of their nearest centre (0.98889 for the true mixture). KL: of the per-mode histogram of HQ samples "
             "from the uniform one (nats).", "",
             "| dataset | method | modes covered | HQ fraction | KL | fit s (CPU) | fit s (wall) | sample s |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, methods in results.items():
        for label, r in methods.items():
            fit = r.get("fit", {})
            lines.append(f"| {dataset} | {label} | {r['modes_covered']}/{r['n_modes']} | {r['high_quality']:.3f} | "
                         f"{r['kl_uniform']:.3f} | {fit.get('cpu_seconds', '')} | {fit.get('wall_seconds', '')} | "
                         f"{r.get('sample_seconds', '')} |")
    lines += ["", "Regenerate with:", "", f"    {command}", ""]
    return "\n".join(lines)


def _labels(families: str) -> list[str]:
    out = []
    for name in families.split(","):
        picked = [k for k, (fam, _) in METHODS.items() if name in (k, fam)]
        if not picked:
            sys.exit(f"--families: expected names among {', '.join(METHODS)} or gan; got {name!r}")
        out += picked
    return list(dict.fromkeys(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="gan,ddpm,vae", help="families (gan = both losses) or method labels")
    ap.add_argument("--datasets", default="grid-25,eight-gaussians")
    ap.add_argument("--epochs", type=int, default=None, help=f"the budget of every family (default {EPOCHS})")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs; writes *_quick.* files")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=None, help="keep the runs in RUNS/LABEL-DATASET (finished ones are reused); "
                                                 "default: a temporary folder")
    args = ap.parse_args()
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    labels, datasets = _labels(args.families), [d for d in args.datasets.split(",") if d]
    torch.set_num_threads(args.threads)
    argv = [a for i, a in enumerate(sys.argv[1:]) if not (a.startswith("--runs") or sys.argv[i] == "--runs")]
    command = "OMP_NUM_THREADS=1 python benchmarks/mode_coverage.py " + " ".join(map(shlex.quote, argv))  # no cache
    suffix = "_quick" if args.quick else ""
    results, samples = {}, {}
    with Clock() as total, tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs) if args.runs else Path(tmp)
        runs.mkdir(parents=True, exist_ok=True)
        for dataset in datasets:
            results[dataset], samples[dataset] = run_dataset(dataset, labels, epochs, runs, args.threads)
    OUT.mkdir(exist_ok=True)
    report = {"title": "Mode coverage on 2-D mixtures of known modes (issue 14 item 3)", "command": command.strip(),
              "budget": {"epochs": epochs, "batch_size": BATCH, "n_train": 16_000, "seed": SEED,
                         "threads": args.threads},
              "n_samples": N_SAMPLES, "n_sigma": 3.0,
              "mixtures": {d: {"centres": TOY_MIXTURES[d].centres.tolist(), "std": TOY_MIXTURES[d].std}
                           for d in datasets},
              "expected_high_quality_of_true_mixture": 1 - math.exp(-4.5),
              "total_seconds": total.as_dict(),  # this invocation's (runs reused from --runs are not refitted)
              "fit_cpu_seconds_total": round(sum(r["fit"]["cpu_seconds"] for m in results.values()
                                                 for label, r in m.items() if label in METHODS), 1),
              "results": results}
    (OUT / f"mode_coverage{suffix}.json").write_text(json.dumps(report, indent=1))
    (OUT / f"mode_coverage{suffix}.md").write_text(table(results, command.strip(), epochs))
    picture(samples, results, OUT / f"mode_coverage{suffix}.png")
    print(table(results, command.strip(), epochs))
    print(f"total: {total.cpu:.0f} CPU s, {total.wall:.0f} wall s")


if __name__ == "__main__":
    main()

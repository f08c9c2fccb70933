"""Issue 14 item 5: the sample-quality table, FD, KID, precision, recall and class confidence of every family that
samples, in the features of the package's own scorer classifier, beside samples per second and training time.

    OMP_NUM_THREADS=1 python benchmarks/sample_quality.py [--dataset digits|fashion-mnist] [--samples N] \\
        [--reuse LABEL=RUN_DIR ...] [--only LABEL,...] [--quick]

Every method (a label of BUDGETS) is fitted through ``ppl_dgm.runs.train_run`` into
``benchmarks/runs_quality/<dataset>/<label>`` at its family's defaults except where BUDGETS says otherwise (and why),
on ``DataSpec(dataset, binarize=<the family's default or the budget's>, seed=0)``; a finished run already there is
reused (one copied there too, if it trained all its epochs), and ``--reuse LABEL=RUN_DIR`` takes a run fitted
elsewhere (a reused run's training time comes from its ``bench_fit_seconds.json`` if it has one, else from the
wall seconds of its history).  Each run is scored by
``ppl_dgm.runs.sample_quality_run`` (the figures of ``ppl-dgm evaluate RUN --samples N --json``): N samples drawn
with the sampler of the budget (DDPM: DDIM-50) against N held-out examples binarized as the run's data were, and the
floor (N held-out against N training examples).  The scorer is the package's (``scorer_for``), cached under
``$PPL_DGM_HOME/scorers`` (set ``PPL_DGM_HOME`` to reuse a scorer trained elsewhere; the command written
beside the table says which).  Scores are cached in the method's folder, so ``--only`` processes can run side by side
and a last call without ``--only`` writes the table.  ``--quick``: one epoch per method (EM: as budgeted), N = 50,
runs in ``runs_quality/<dataset>_quick``, an estimate of the full table's CPU cost.

Writes benchmarks/results/sample_quality_<dataset>.{json,md,png} (``_quick`` before the suffix with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from _timing import Clock

from ppl_dgm.models import get_family
from ppl_dgm.plotting import plot_rows
from ppl_dgm.runs import DataSpec, load_run, read_config, sample_quality_run, train_run
from ppl_dgm.runs.use import sample_run

HERE = Path(__file__).resolve().parent
OUT, RUNS = HERE / "results", HERE / "runs_quality"
SEED, N_DEFAULT, N_QUICK, GRID = 0, 1000, 50, 16
DDIM50 = {"sampler": "ddim", "steps": 50}
FIGURES = ("fd", "kid", "kid_se", "precision", "recall", "confidence")


def m(family: str, note: str, options: dict | None = None, *, binarize: str | None = None, sample: dict | None = None,
      of: str | None = None) -> dict:
    """One method: its family, fit options beyond the defaults, binarization (None: the family's default), sampler
    options, the label of the encoder run it is fitted on (``latent_of`` / ``codes_of``), and why (the md says it)."""
    return {"family": family, "options": options or {}, "binarize": binarize, "sample": sample or {}, "of": of,
            "note": note}


# Budgets: label -> method.  Families at their defaults unless the note says otherwise (a ddpm with --latent-of: the
# vector defaults, MLP, 100 epochs, lr 2e-3 cosine, EMA 0.999).
BUDGETS = {
    "digits": {
        "vae": m("vae", "defaults: MLP 256, K = 8, Bernoulli, dynamic binarization, 300 epochs"),
        "ae": m("ae", "the VAE's model with a point-mass guide, z ~ N(0, I) at sampling: no KL, no prior fit"),
        "hvae": m("hvae", "defaults: 2 layers of 16 latents, dynamic binarization, 300 epochs"),
        "cvae": m("cvae", "defaults; samples cycle the labels 0..9 (balanced classes)"),
        "ddpm": m("ddpm", "UNet 32, 100 epochs, 4 t per image per step, EMA 0.995, cosine lr (the guidance "
                  "benchmark's digits recipe, unconditional; the default 300 epochs x 8 t cost ~52 CPU min); "
                  "DDIM-50", dict(epochs=100, t_per_step=4, ema=0.995, lr_schedule="cosine", held_out_examples=32),
                  sample=DDIM50),
        "ldm": m("ddpm", "ddpm --latent-of the vae run (vector defaults), ancestral 1000 steps (an MLP on 8 numbers: "
                 "cheap); decoded means E[x | z]", of="vae"),
        "score": m("score", "UNet 32, 100 epochs, EMA 0.995, cosine lr (the ddpm's budget); predictor-corrector "
                   "sampler at its defaults", dict(epochs=100, ema=0.995, lr_schedule="cosine",
                                                    held_out_examples=32), sample={"sampler": "pc"}),
        "gan": m("gan", "defaults: MLPs 256-256, non-saturating loss, 300 epochs"),
        "gan-r1": m("gan", "the gan with the R1 penalty gamma = 1 on the discriminator (docs/gan.md: the "
                    "unpenalized one collapses on 1,438 digits)", dict(gradient_penalty=1.0)),
        "flow": m("flow", "defaults: RealNVP, 8 couplings, uniform dequantization of the 17 grey levels, 20 epochs"),
        "fvsbn": m("fvsbn", "defaults, static binarization, 300 epochs", binarize="static"),
        "pixelcnn": m("pixelcnn", "defaults (16 channels, 100 epochs), static binarization", binarize="static"),
        "vqvae": m("vqvae", "defaults (MLP, 2x2 code map of K = 64), samples from its uniform prior over codes"),
        "vqvae+pixelcnn": m("pixelcnn", "pixelcnn --codes-of the vqvae run (defaults): the learnt prior, decoded",
                            of="vqvae"),
        "ppca": m("ppca", "closed form, q = 16 (the default q = 2 draws blurs)", dict(latent_dim=16)),
        "gmm": m("gmm", "K = 10 full covariances, EM (k-means init)", dict(n_components=10)),
    },
    "fashion-mnist": {
        "vae": m("vae", "conv VAE, K = 8, 30 epochs (benchmarks/latent_diffusion.py's)", dict(epochs=30)),
        "ae": m("ae", "conv, K = 8, 30 epochs (the vae's)", dict(epochs=30)),
        "hvae": m("hvae", "defaults: MLP, 2 layers of 16 latents, dynamic binarization, 50 epochs"),
        "cvae": m("cvae", "defaults: MLP, 50 epochs"),
        "ddpm": m("ddpm", "UNet 32, 12 epochs, 1 t per image per step, EMA 0.999, cosine lr (benchmarks/"
                  "fashion_ddpm.py's recipe); DDIM-50", dict(epochs=12, t_per_step=1, ema=0.999, lr_schedule="cosine",
                                                           checkpoint_every=1), sample=DDIM50),
        "ldm": m("ddpm", "ddpm --latent-of the vae run (vector defaults), ancestral 1000 steps", of="vae"),
        "score": m("score", "UNet 32, 12 epochs, 1 sigma per image per step, EMA 0.999, cosine lr (the ddpm's "
                   "budget); predictor-corrector sampler at its defaults", dict(
                       epochs=12, sigmas_per_step=1, ema=0.999, lr_schedule="cosine", checkpoint_every=1),
                   sample={"sampler": "pc"}),
        "gan": m("gan", "DCGAN-style conv networks, non-saturating loss, 10 epochs (docs/gan.md's command)",
                 dict(epochs=10)),
        "gan-r1": m("gan", "the gan's budget with the R1 penalty gamma = 1", dict(epochs=10, gradient_penalty=1.0)),
        "flow": m("flow", "defaults: RealNVP, 8 couplings, uniform dequantization, 10 epochs"),
        "fvsbn": m("fvsbn", "defaults, static binarization, 50 epochs", binarize="static"),
        "pixelcnn": m("pixelcnn", "defaults (32 channels, 5 epochs), static binarization", binarize="static"),
        "vqvae": m("vqvae", "defaults (conv, 7x7 code map of K = 64, 15 epochs), uniform prior over codes"),
        "vqvae+pixelcnn": m("pixelcnn", "pixelcnn --codes-of the vqvae run (defaults: 5 epochs, 32 channels)",
                            of="vqvae"),
        "ppca": m("ppca", "closed form, q = 16", dict(latent_dim=16)),
        "gmm": m("gmm", "K = 10 diagonal covariances (full ones cost ~3.5 CPU min per EM iteration on 60,000 x "
                 "784, ~75 CPU min in all; diagonal: ~40 CPU s)", dict(n_components=10, covariance_type="diag")),
    },
}


def finished(folder: Path) -> bool:
    """A run copied into ``folder`` that trained all its epochs (a fit interrupted there is refitted)."""
    if not (folder / "config.json").exists() or not (folder / "history.json").exists():
        return False
    history = json.loads((folder / "history.json").read_text())
    return bool(history) and history[-1].get("epoch") == read_config(folder)["train"].get("epochs")


def fit(label: str, spec: dict, dataset: str, folder: Path, reuse: Path | None, runs: dict, quick: bool) -> tuple:
    """The run of ``label`` (fitted into ``folder`` unless reused) and its training seconds."""
    times = folder / "bench_fit_seconds.json"
    if reuse is not None or times.exists() and (folder / "config.json").exists() or finished(folder):
        run = load_run(reuse or folder)
        own = run.path / "bench_fit_seconds.json"
        if own.exists():
            return run, {**json.loads(own.read_text()), "reused": True}
        return run, {"wall_seconds": round(sum(h.get("seconds", 0) for h in run.history), 1), "cpu_seconds": None,
                     "reused": True, "source": "the wall seconds of history.json"}
    family = get_family(spec["family"])
    options = dict(spec["options"])
    if spec["of"]:
        options["latent_of" if spec["family"] == "ddpm" else "codes_of"] = str(runs[spec["of"]].path)
    if quick and family.trainer != "em":
        options["epochs"] = 1
    config = family.config(**options)
    data = DataSpec(dataset, binarize=config.binarize(spec["binarize"], True), seed=SEED)
    with Clock() as c:
        run = train_run(family, config, data, out=folder, progress=False, overwrite=True, threads=1,
                        echo=lambda s: print(s, flush=True))
    times.write_text(json.dumps(c.as_dict()))
    return run, c.as_dict()


def score(run, n: int, sample: dict, cache_dir: Path) -> dict:
    """``sample_quality_run``'s figures and its CPU/wall seconds, cached in ``cache_dir`` by N and sampler."""
    stamp = (run.path / run.checkpoint).stat().st_mtime_ns  # a run refitted in the same folder is scored again
    key = hashlib.sha256(json.dumps([n, SEED, sample, str(run.path), stamp]).encode()).hexdigest()[:12]
    cache = cache_dir / f"bench_quality_{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    with Clock() as c:
        res = sample_quality_run(run, n, seed=SEED, threads=1, echo=lambda s: print(s, flush=True), **sample)
    res["score_seconds"] = c.as_dict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(res, default=float))
    return res


def reference(run) -> str:
    """What the samples are compared with: the held-out images, grey or binarized as the run's data were (decoded
    means E[x | z] of a latent diffusion run or a VQ-VAE prior: grey)."""
    b = "none" if run.decoder is not None else run.config["data"].get("binarize", "none")
    return "grey" if b == "none" else f"binary ({b})"


def estimate(rows: list, budgets: dict, dataset: str, n_full: int) -> dict:
    """CPU seconds of the full table from the quick one: the last epoch's seconds (wall, scaled by the fit's CPU /
    wall) x the budget's epochs (EM: the quick fit's CPU, EM is not shortened), plus the scoring CPU per sample x
    the full N (sampling dominates; the k-NN and KID of N = 1,000 cost a few CPU s)."""
    ds, per = DataSpec(dataset).load(), {}
    for r in rows:
        spec, t = budgets[r["label"]], r["train_seconds"]
        run = load_run(HERE.parent / r["run"])
        if run.family.trainer == "em":
            fit_s = t["cpu_seconds"]
        else:
            epochs = run.family.config(**spec["options"]).resolve(run.dataset() if spec["of"] else ds).epochs
            ratio = t["cpu_seconds"] / t["wall_seconds"] if t["wall_seconds"] >= 1 else 1.0  # Clock rounds to 0.1 s
            fit_s = run.history[-1]["seconds"] * ratio * epochs
        sample_s = r["score_seconds"]["cpu_seconds"] / r["n"] * n_full
        per[r["label"]] = {"fit": round(fit_s), "score": round(sample_s), "total": round(fit_s + sample_s)}
    return {"per_method_cpu_seconds": per, "total_cpu_hours": sum(v["total"] for v in per.values()) / 3600}


def markdown(res: dict) -> str:
    def f(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    head = ("| method | family | compared with | FD | KID +- se | precision | recall | confidence | samples/s "
            "| train CPU s | train wall s | epochs |")
    out = ["# " + res["title"], "", "Regenerate (one torch thread; finished runs are reused):", "", "```",
           res["command"], "```", "", res["data"], "", head, "|" + "---|" * 12]
    for r in res["rows"]:
        t = r["train_seconds"]
        out.append(f"| {r['label']} | {r['family']} | {r['reference']} | {r['fd']:.2f} | {r['kid']:.2f} +- "
                   f"{r['kid_se']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {f(r['confidence'])} "
                   f"| {r['samples_per_second']:.1f} | {f(t['cpu_seconds'], '.1f')} | {t['wall_seconds']:.1f} "
                   f"| {r['epochs']} |")
    for ref, fl in res["floors"].items():
        out.append(f"| **floor** | held-out vs training | {ref} | {fl['fd']:.2f} | {fl['kid']:.2f} +- "
                   f"{fl['kid_se']:.2f} | {fl['precision']:.3f} | {fl['recall']:.3f} | {f(fl['confidence'])} "
                   "| - | - | - | - |")
    out += ["", *[f"- {n}" for n in res["notes"]], "", "Budgets (label: family, what differs from its defaults):", ""]
    out += [f"- **{k}** ({b['family']}): {b['note']}" for k, b in res["budgets"].items()]
    out += [f"- not in this table: **{k}**: {why}" for k, why in res.get("skipped", {}).items()]
    if "full_estimate" in res:
        e = res["full_estimate"]
        out += ["", f"Estimated CPU cost of the full table from this quick run: {e['total_cpu_hours']:.2f} CPU hours; "
                "per method (fit + scoring, CPU s): " + ", ".join(f"{k} {v['fit']} + {v['score']}"
                                                                 for k, v in e["per_method_cpu_seconds"].items())]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(BUDGETS), default="digits")
    ap.add_argument("--samples", type=int, default=None,
                    help=f"N (default {N_DEFAULT}, or every held-out example if fewer; {N_QUICK} with --quick)")
    ap.add_argument("--reuse", action="append", default=[], metavar="LABEL=RUN_DIR", help="score this run as LABEL")
    ap.add_argument("--only", default=None, help="comma-separated labels: fit and score these, write no table")
    ap.add_argument("--quick", action="store_true", help=f"1 epoch per method, N = {N_QUICK}, *_quick files")
    ap.add_argument("--skip", action="append", default=[], metavar="LABEL=REASON",
                    help="leave LABEL out of the table (the reason is written beside it)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    budgets, suffix = BUDGETS[args.dataset], "_quick" if args.quick else ""
    n_test = len(DataSpec(args.dataset, seed=SEED).load().x_test)  # digits: 359 held-out images
    n = args.samples or min(N_QUICK if args.quick else N_DEFAULT, n_test)
    reuse = dict(r.split("=", 1) for r in args.reuse)
    if bad := set(reuse) - set(budgets):
        ap.error(f"--reuse: unknown labels {sorted(bad)}; expected among {sorted(budgets)}")
    skipped = dict(r.split("=", 1) if "=" in r else (r, "not run") for r in args.skip)
    if bad := set(skipped) - set(budgets):
        ap.error(f"--skip: unknown labels {sorted(bad)}; expected among {sorted(budgets)}")
    only = set(args.only.split(",")) if args.only else set(budgets) - set(skipped)
    only |= {budgets[k]["of"] for k in only if budgets[k]["of"]}  # an encoder run before what is fitted on it
    runs_dir, runs, rows = RUNS / (args.dataset + suffix), {}, []
    for label, spec in budgets.items():
        if label not in only:
            continue
        run, times = fit(label, spec, args.dataset, runs_dir / label, Path(reuse[label]) if label in reuse else None,
                         runs, args.quick)
        runs[label] = run
        res = score(run, n, spec["sample"], runs_dir / label)
        path = run.path.resolve()
        rows.append({"label": label, "family": run.family.name, "reference": reference(run),
                     "run": str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path),
                     "epochs": run.history[-1].get("epoch", run.history[-1].get("iteration")) if run.history else None,
                     "sample_options": spec["sample"], "train_seconds": times, **res})
        print(label, {k: round(res[k], 3) for k in FIGURES if res.get(k) is not None},
              f"{res['samples_per_second']:.1f} samples/s", flush=True)
    if args.only:
        return
    home = f"PPL_DGM_HOME={shlex.quote(os.environ['PPL_DGM_HOME'])} " if os.environ.get("PPL_DGM_HOME") else ""
    cmd = f"{home}OMP_NUM_THREADS=1 " + shlex.join(["python", "benchmarks/sample_quality.py", *sys.argv[1:]])
    floors = {}
    for r in rows:  # one floor per reference set (grey or binarized held-out images): the same for every run of it
        floors.setdefault(r["reference"], {**r["floor"], "confidence": r.get("confidence_real")})
    ds = DataSpec(args.dataset).load()
    res = {"title": f"Sample quality on {args.dataset}, N = {n}" + (" (quick: 1 epoch each)" if args.quick else ""),
           "command": cmd, "n": n, "seed": SEED, "threads": 1, "quick": args.quick, "rows": rows, "floors": floors,
           "budgets": {k: budgets[k] for k in (r["label"] for r in rows)}, "skipped": skipped,
           "scorer": rows[0]["scorer"] if rows else None, "scorer_test_accuracy": rows[0]["scorer_test_accuracy"],
           "data": f"{ds.summary()}; every figure from `ppl_dgm.runs.sample_quality_run` (`ppl-dgm evaluate RUN "
                   f"--samples {n} --json`): {n} samples against {n} held-out examples (seed {SEED}), in the "
                   f"penultimate features of the scorer classifier (held-out accuracy "
                   f"{rows[0]['scorer_test_accuracy'] if rows else float('nan'):.4f}).",
           "notes": [
               "FD is biased (it grows as N shrinks): compare it at equal N and against the floor of the same "
               "reference, not 0. KID is unbiased (0 in expectation for samples of the data distribution).",
               "Families with a Bernoulli likelihood (vae, ae, hvae, cvae, vqvae), and fvsbn and pixelcnn, are fitted "
               "on binarized images: their samples are binary draws and are compared with held-out images binarized "
               "the same way (the `binary` floor); ldm and vqvae+pixelcnn decode grey means E[x | z] and are "
               "compared with the grey held-out images, as the others are.",
               "confidence: the mean over samples of max_y p(y | x) under the scorer (the floor row: the held-out "
               "examples'). samples/s: wall seconds of drawing N samples (one thread, shared machine).",
               "Train CPU s: process CPU seconds of the whole fit (with its held-out pass per epoch); '-' for runs "
               "reused from elsewhere without a timing file (their wall seconds come from history.json)."]}
    if args.quick:
        res["full_estimate"] = estimate(rows, budgets, args.dataset, N_DEFAULT)
    grid = np.stack([ds.x_test[:GRID].numpy()] + [sample_run(runs[r["label"]], GRID, seed=SEED, **r["sample_options"])
                                                  .reshape(GRID, -1) for r in rows]).clip(0, 1)
    plot_rows(grid, ds.shape, OUT / f"sample_quality_{args.dataset}{suffix}.png",
              f"{args.dataset}: {GRID} samples per method (seed {SEED}); top row: held-out images",
              row_labels=["held-out", *(r["label"] for r in rows)])
    (OUT / f"sample_quality_{args.dataset}{suffix}.json").write_text(json.dumps(res, indent=1, default=float))
    md = markdown(res)
    (OUT / f"sample_quality_{args.dataset}{suffix}.md").write_text(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()

"""Issue 13 item 5: test NLL in nats of exact likelihoods (FVSBN, PixelCNN) beside bounds (VAE and HVAE IWAE-5000,
DDPM chain ELBO) on statically binarized images, and the flow on grey levels (bits/dim) in a second table.

    OMP_NUM_THREADS=1 python benchmarks/exact_likelihood.py [--dataset digits|fashion-mnist] [--quick] \\
        [--test-examples N]

Every family is fitted (or reused, when its folder already holds a finished run) through ``train_run`` into
``benchmarks/runs_exact/<dataset>/<family>`` at its defaults, except where BUDGETS says otherwise (and why), on
``DataSpec(dataset, binarize="static", seed=0)``: every model sees the same binary test images (asserted).
Numbers come from ``evaluate_run`` (those of ``ppl-dgm evaluate``) on the official test split (digits: its
held-out 0.2 of the rows, seed 0); NLL = -log p(x) for the exact families, minus the bound for the others.
``--quick``: one epoch of each family (the timed epoch of the Fashion-MNIST estimate), 200 test images.

Writes benchmarks/results/exact_likelihood_<dataset>.{json,md} and exact_likelihood_samples_<dataset>.png
(``_quick`` before the suffix with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import Clock  # noqa: E402

from ppl_dgm.models import get_family  # noqa: E402
from ppl_dgm.models.discretized import DiscretizedGaussian  # noqa: E402
from ppl_dgm.runs import DataSpec, evaluate_run, load_run, train_run  # noqa: E402
from ppl_dgm.runs.use import sample_run  # noqa: E402
from ppl_dgm.utils import LN2  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
RUNS = HERE / "runs_exact"
IWAE_K = 5000
SEED = 0
ANCHORS = {"note": "published test NLLs (nats) on binarized MNIST (28x28, 784 pixels): FVSBN and NADE (Larochelle & "
                   "Murray 2011), VAE and 2-layer IWAE (Burda et al. 2016), PixelCNN (van den Oord et al. 2016). "
                   "The 8x8 digits (64 pixels) are not MNIST: no gap is computed on them; on a 784-pixel data set "
                   "(Fashion-MNIST) the gap is computed, against MNIST's figures, so it is indicative only.",
           "nats": {"fvsbn": 97.45, "nade": 88.33, "vae": 86.76, "iwae_2layer": 82.90, "pixelcnn": 81.30}}
ANCHOR_OF = {"fvsbn": "fvsbn", "pixelcnn": "pixelcnn", "vae": "vae", "hvae": "iwae_2layer"}
BOUND = {"exact": "exact", "iwae": f"IWAE k={IWAE_K}", "chain": "chain ELBO"}
# Budgets: the families' defaults, except
# - the VAE, which is the MLP of the anchor (Burda et al. 2016: 784-200-200-50) rather than the default conv VAE with
#   8 latents, whose IWAE-5000 costs 2.6 CPU s an image on 28x28 (0.13 for the MLP);
# - the Fashion-MNIST DDPM, whose defaults (50 epochs, 8 timesteps per image per step) would take about two CPU
#   days: 4 epochs, 1 t per step, EMA, cosine lr (~30 CPU min), and its chain ELBO (T = 1000 UNet calls per image,
#   ~5 CPU s each) on the first 200 test images;
# - on Fashion-MNIST every family is scored on the first 2,000 of the 10,000 test images (the IWAE-5000 of the two
#   VAEs is the cost), the DDPM on the first 200.
# The grey-level table has the flow only: a grey-level DDPM (~1 CPU hour on digits at its defaults) is not cheap;
# GREY_DDPM points to the figures measured elsewhere on the same splits.
MLP_VAE = dict(arch="mlp", hidden=(200, 200), latent_dim=50)
BUDGETS = {
    "digits": {"binary": {"fvsbn": {}, "pixelcnn": {}, "vae": {}, "hvae": {}, "ddpm": {}},
               "grey": {"flow": {}}, "ddpm_test_examples": None, "test_examples": None},
    "fashion-mnist": {"binary": {"fvsbn": {}, "pixelcnn": {}, "vae": MLP_VAE, "hvae": {},
                                 "ddpm": dict(epochs=4, t_per_step=1, ema=0.999, lr_schedule="cosine",
                                              checkpoint_every=1)},
                      "grey": {"flow": {}}, "ddpm_test_examples": 200, "test_examples": 2000},
}
BUDGET_NOTES = {
    "digits": ["Budgets: every family at its defaults; scored on all 359 held-out images."],
    "fashion-mnist": [
        "Budgets: fvsbn (50 epochs), pixelcnn (5 epochs, 32 channels, 5 gated blocks), hvae (2 layers of 16 "
        "latents, MLP 256) and flow at their defaults; the vae is the MLP of the anchor (784-200-200-50, Burda et "
        "al. 2016) rather than the default conv VAE with 8 latents, whose IWAE-5000 costs 2.6 CPU s an image; the "
        "ddpm 4 epochs, 1 t per image per step, EMA 0.999, cosine lr (its defaults would take about two CPU days).",
        "Scored on the first 2,000 of the 10,000 official test images (the IWAE-5000 of the two VAEs is the cost: "
        "0.13 CPU s an image), the ddpm's chain ELBO (1,000 UNet calls an image, 5 CPU s) on the first 200.",
        "No binarized MNIST is on this machine (no download at run time): the anchors are MNIST's and the gaps "
        "below compare two data sets, so they only place the numbers.",
        "At this budget the PixelCNN (5 epochs) is behind both VAEs: it is the exact likelihood of an undertrained "
        "model, while the VAE numbers are bounds on better-trained ones; the ordering FVSBN > PixelCNN holds.",
    ],
}
QUICK_TEST, QUICK_DDPM_TEST = 200, 32
GREY_DDPM = {"digits": "benchmarks/results/diffusion.json (ddpm_digits: 400 epochs, -219.90 nats, 4.96 bits/dim on "
                       "the 359 held-out digits)",
             "fashion-mnist": "benchmarks/results/fashion_ddpm.json (12 epochs: 3.78 bits/dim on the first 128 "
                              "test images)"}


def fit(family: str, options: dict, data: DataSpec, out: Path) -> tuple:
    """Train ``family`` into ``out``, or load the finished run there; returns (run, fit times)."""
    times = out / "bench_fit_seconds.json"
    if (out / "config.json").exists() and times.exists():
        return load_run(out), {**json.loads(times.read_text()), "reused": True}
    with Clock() as c:
        run = train_run(family, get_family(family).config(**options), data, out=out, progress=False,
                        overwrite=True, threads=1, echo=lambda s: print(s, flush=True))
    times.write_text(json.dumps(c.as_dict()))
    return run, c.as_dict()


@torch.no_grad()
def ddpm_two_level_gain(model, x: torch.Tensor, seed: int = SEED) -> float:
    """E_q(x_1|x_0)[log p2(x_0 | x_1) - log p256(x_0 | x_1)] per example: what the chain ELBO of binary images gains
    when the decoder's 256 bins (Ho eq. 13) are merged into two, [-inf, 0) for x_0 = -1 and [0, inf) for +1 (the same
    network, mean and width; the other terms unchanged).  The 256-bin decoder spends mass on 254 levels that binary
    data never take."""
    torch.manual_seed(seed)
    x0 = model.to_model_space(x)
    d256 = model.decoder(model.q_t(x0, 1).sample())
    d2 = DiscretizedGaussian(d256.base_dist.loc, d256.base_dist.scale, bins=2).to_event(1)
    return float((d2.log_prob(x0) - d256.log_prob(x0)).double().mean())


def score(run, x: torch.Tensor) -> dict:
    """evaluate_run's numbers, with NLL = -(log p or its bound) in nats, and the evaluation's seconds; cached in the
    run's folder by the images' hash (so that the table can be rebuilt from runs fitted by parallel processes)."""
    key = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
    cache = run.path / f"bench_eval_{key}_k{IWAE_K}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    with Clock() as c:
        r = evaluate_run(run, x, iwae_k=IWAE_K, seed=SEED)
    value = r["elbo"] if run.family.bound == "chain" else r["log_likelihood"]
    r.pop("L_t", None)  # the T per-step terms: in the run's own `ppl-dgm evaluate --json`
    out = {"nll": -value, "bits_per_dim": -value / (x.shape[1] * LN2), "evaluate": r,
           "eval_seconds": c.as_dict()}
    cache.write_text(json.dumps(out, default=float))
    return out


def row(name: str, run, times: dict, ev: dict, bound: str) -> dict:
    params = getattr(run.model, "n_parameters", None) or sum(p.numel() for p in run.model.parameters())
    return {"family": name, "bound": bound, "run": str(run.path.relative_to(HERE.parent)), "parameters": params,
            "epochs": run.history[-1]["epoch"] if run.history else None, "train_seconds": times, **ev}


def same_images(run, x: torch.Tensor, what: str) -> None:
    own = run.dataset().x_test[: len(x)]
    assert torch.equal(own, x), f"{run.path}: its test images differ from the shared {what} ones"


def mosaic(ax, x: np.ndarray, shape: tuple[int, ...], title: str, cols: int = 8) -> None:
    h, w = shape[-2:]
    rows = len(x) // cols
    img = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1)) * 0.5
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        img[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = x[i].reshape(h, w)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def sample_figure(runs: dict, x_test: torch.Tensor, shape: tuple[int, ...], path: Path, label: str) -> None:
    """64 samples of each exact family ``runs[name] = (run, nll)`` and 64 test images, side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax, fam in zip(axes, ("pixelcnn", "fvsbn")):
        run, nll = runs[fam]
        mosaic(ax, sample_run(run, 64, seed=SEED), shape, f"{fam}: 64 samples (test NLL {nll:.2f} nats)")
    mosaic(axes[2], x_test[:64].numpy(), shape, "64 binarized test images")
    fig.suptitle(f"{label}: PixelCNN and FVSBN samples (ancestral, pixel by pixel), seed {SEED}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(res: dict) -> str:
    head = ("| family | bound | test NLL (nats) | bits/dim | parameters | epochs | train CPU s | train wall s "
            "| eval CPU s |")
    sep = "|" + "---|" * 9

    def line(r: dict) -> str:
        t = r["train_seconds"]
        return (f"| {r['family']} | {r['bound']} | {r['nll']:.2f} | {r['bits_per_dim']:.3f} | {r['parameters']:,} "
                f"| {r['epochs']} | {t['cpu_seconds']:.1f} | {t['wall_seconds']:.1f} "
                f"| {r['eval_seconds']['cpu_seconds']:.1f} |")
    out = ["# " + res["title"], "", "Regenerate (one torch thread; runs are reused when their folders hold them):", "",
           "```", *res["commands"], "```", "", res["data"], "", head, sep, *map(line, res["binary"]), ""]
    out += [f"- {n}" for n in res["notes"]] + ["", "Grey levels (dequantized or discretized bounds, bits/dim):", "",
                                               head, sep, *map(line, res["grey"]), ""]
    out += [f"- {n}" for n in res["grey_notes"]]
    if "gap_nats" in res:
        out += ["", "Gap to the published binarized-MNIST anchors (nats; indicative only, see the JSON): "
                + ", ".join(f"{k} {v:+.2f}" for k, v in res["gap_nats"].items())]
    if "full_estimate" in res:
        e = res["full_estimate"]
        per = ", ".join(f"{k} {v['total']:.0f}" for k, v in e["per_run"].items())
        out += ["", f"Estimated CPU time of the full table (from one timed epoch each): {e['total_cpu_hours']:.1f} "
                f"CPU hours; per run (CPU s): {per}"]
    return "\n".join(out) + "\n"


def estimate(res: dict, budgets: dict, datasets: dict, n_full: int) -> dict:
    """CPU seconds of the full (non-quick) table: the last epoch's seconds (history, scaled by the fit's CPU / wall)
    x the budget's epochs, plus the evaluation's CPU per image x the test images it scores."""
    per = {}
    for table in ("binary", "grey"):
        for r in res[table]:
            if "decoder_gain_nats" in r:  # the DDPM's row again, re-scored
                continue
            fam = r["family"]
            epochs = get_family(fam).config(**budgets[table][fam]).resolve(datasets[table]).epochs
            n_eval = min(n_full, budgets["ddpm_test_examples"] or n_full) if fam == "ddpm" else n_full
            t, last = r["train_seconds"], load_run(HERE.parent / r["run"]).history[-1]
            fit_s = last["seconds"] * t["cpu_seconds"] / max(t["wall_seconds"], 1e-9) * epochs
            eval_s = r["eval_seconds"]["cpu_seconds"] / r["evaluate"]["n"] * n_eval
            per[r["family"]] = {"epochs": epochs, "fit": fit_s, "eval_images": n_eval, "eval": eval_s,
                                "total": fit_s + eval_s}
    return {"per_run": per, "total_cpu_hours": sum(v["total"] for v in per.values()) / 3600,
            "note": "one epoch's CPU seconds (with its held-out pass) times the budget's epochs, plus evaluation "
                    "CPU per image times the images scored; one torch thread on a shared machine"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(BUDGETS), default="digits")
    ap.add_argument("--quick", action="store_true", help="one epoch per family, 200 test images")
    ap.add_argument("--test-examples", type=int, default=None,
                    help="score the first N test images (default: the budget's, else all)")
    ap.add_argument("--only", default=None,
                    help="comma-separated families: fit and score only these, and write no table (for parallel "
                         "processes; a later run without --only reuses their runs and scores)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    budgets, suffix = BUDGETS[args.dataset], "_quick" if args.quick else ""
    runs_dir = RUNS / (args.dataset + suffix)
    binary_spec, grey_spec = DataSpec(args.dataset, binarize="static", seed=SEED), DataSpec(args.dataset, seed=SEED)
    ds_bin, ds_grey = binary_spec.load(), grey_spec.load()
    n = args.test_examples or (QUICK_TEST if args.quick else budgets["test_examples"] or len(ds_bin.x_test))
    only = set(args.only.split(",")) if args.only else None
    x_bin, x_grey = ds_bin.x_test[:n], ds_grey.x_test[:n]
    assert set(x_bin.unique().tolist()) <= {0.0, 1.0} and ((x_bin == 1) <= (x_grey > 0)).all(), \
        "the binary test images are not one Bernoulli draw of the grey ones"
    n_ddpm = min(n, QUICK_DDPM_TEST if args.quick else budgets["ddpm_test_examples"] or n)
    quick = dict(epochs=1) if args.quick else {}
    cmd = f"OMP_NUM_THREADS=1 python benchmarks/exact_likelihood.py --dataset {args.dataset}" + \
        (" --quick" if args.quick else "") + (f" --test-examples {args.test_examples}" if args.test_examples else "")
    # the fits can run in parallel processes (--only), then this command (without --only) reuses their runs and
    # cached scores and writes the table; the commands used for the committed table:
    parallel = {"fashion-mnist": [f"{cmd} --only {fams}" for fams in ("fvsbn,pixelcnn,vae,hvae,flow", "ddpm",
                                                                         "vae,flow")]}.get(args.dataset, [])
    res = {"title": f"Exact likelihoods and bounds on binarized {args.dataset}" + (" (quick)" if args.quick else ""),
           "commands": [*parallel, cmd], "threads": 1, "iwae_k": IWAE_K,
           "data": f"{ds_bin.summary()}; scored: the first {n} test images (DDPM: {n_ddpm}), the same for every "
                   f"family (asserted); sha256 of the binary test images "
                   f"{hashlib.sha256(x_bin.numpy().tobytes()).hexdigest()[:16]}",
           "budgets": {t: budgets[t] for t in ("binary", "grey")}, "quick": args.quick, "binary": [], "grey": [],
           "anchors": ANCHORS}
    runs: dict = {}
    for fam, opts in budgets["binary"].items():
        if only is not None and fam not in only:
            continue
        run, times = fit(fam, {**opts, **quick}, binary_spec, runs_dir / fam)
        same_images(run, x_bin, "binary")
        x = x_bin[:n_ddpm] if fam == "ddpm" else x_bin
        r = row(fam, run, times, score(run, x), BOUND[run.family.bound])
        res["binary"].append(r)
        runs[fam] = (run, r["nll"])
        print(r["family"], f"{r['nll']:.3f} nats", r["train_seconds"], r["eval_seconds"], flush=True)
        if fam == "ddpm":
            gain = ddpm_two_level_gain(run.model, x)
            two = {**r, "family": "ddpm (2-level decoder)", "bound": "chain ELBO, L_0 of 2 bins",
                   "nll": r["nll"] - gain, "bits_per_dim": (r["nll"] - gain) / (x.shape[1] * LN2),
                   "decoder_gain_nats": gain}
            res["binary"].append(two)
            print(two["family"], f"{two['nll']:.3f} nats", flush=True)
    for fam, opts in budgets["grey"].items():
        if only is not None and fam not in only:
            continue
        run, times = fit(fam, {**opts, **quick}, grey_spec, runs_dir / f"{fam}-grey")
        same_images(run, x_grey, "grey-level")
        x = x_grey
        res["grey"].append(row(fam, run, times, score(run, x), "dequantized (uniform, 1 draw)"))
        print(fam, "grey", f"{res['grey'][-1]['bits_per_dim']:.3f} bits/dim", flush=True)
    if only is not None:
        return
    res["notes"] = [*BUDGET_NOTES.get(args.dataset, []),
        "NLL = -log p(x): exact for fvsbn and pixelcnn; for the others an upper bound on the NLL (minus the IWAE "
        "estimate, a lower bound on log p(x) in expectation; minus the chain ELBO).",
        "ddpm: `ppl-dgm fit ddpm --binarize static` is refused (a diffusion model takes grey levels); the script "
        "fits it on the binary images through train_run.  Its decoder p(x_0 | x_1) is the 256-level discretized "
        "Gaussian of Ho et al. (eq. 13): binary pixels (-1 and +1 on its grid) fall in the two outer bins, and the "
        "254 inner levels, which binary data never take, get mass too. The chain ELBO is then still a lower bound "
        "on the probability of a distribution over 256-level images, i.e. -ELBO bounds the NLL of the DDPM "
        "restricted (and renormalized) to binary images from above, but loosely: with sigma_1 = sqrt(beta_1) = "
        "0.01 and a bin half-width of 1/255 a mean at exactly +-1 keeps only Phi(0.39) = 0.65 of its mass in its "
        "bin, ~0.43 nats a pixel. The row `ddpm (2-level decoder)` re-scores L_0 with the same network's Gaussian "
        "split at 0 into two bins (a proper binary decoder: a valid ELBO of that model); it is not "
        "`ppl-dgm evaluate`'s number.",
        "vae and hvae: the IWAE estimate with k = 5000 (evaluate_run batches k x examples in passes of at most "
        "65,536 rows); hvae is the 2-layer Markovian HVAE (two stochastic layers, as the IWAE 2-layer anchor).",
        "Parameters: the model's own (the VAE's and HVAE's include the encoder, i.e. the guide; the flow's exclude "
        "its dequantizer); training seconds are of the whole fit (with its held-out pass per epoch).",
    ]
    res["grey_notes"] = [
        "flow: evaluate's bound with one draw of uniform dequantization noise per image: an upper bound on the code "
        f"length of the {'17' if args.dataset == 'digits' else '256'}-level test images.",
        "ddpm on grey levels is not refitted here (not cheap); its chain ELBO (256-level discretized decoder, so a "
        f"bound for 256-level images, loose on data with fewer levels) is in {GREY_DDPM[args.dataset]}.",
    ]
    if ds_bin.dim == 784:
        res["gap_nats"] = {f: next(r["nll"] for r in res["binary"] if r["family"] == f) - ANCHORS["nats"][a]
                           for f, a in ANCHOR_OF.items()}
    if args.quick:
        res["full_estimate"] = estimate(res, budgets, {"binary": ds_bin, "grey": ds_grey}, len(ds_bin.x_test))
    label = f"binarized {args.dataset}" + (" (quick: 1 epoch)" if args.quick else "")
    sample_figure(runs, x_bin, ds_bin.shape, OUT / f"exact_likelihood_samples_{args.dataset}{suffix}.png", label)
    (OUT / f"exact_likelihood_{args.dataset}{suffix}.json").write_text(json.dumps(res, indent=1, default=float))
    md = markdown(res)
    (OUT / f"exact_likelihood_{args.dataset}{suffix}.md").write_text(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()

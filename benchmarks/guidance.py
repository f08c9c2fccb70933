"""Issue 12 item 4 (digits): guidance strength (classifier-free and classifier guidance) and restoration by DPS.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/guidance.py [--quick] [--dataset fashion-mnist]

1. Trains, or reuses when the run folder already holds a run, into ``benchmarks/runs_guidance/<dataset>/``:
   a conditional DDPM (``ppl-dgm fit ddpm --conditional``, label dropout 0.1), a noise-conditional classifier on
   the DDPM's schedule (T = 1000, linear) for classifier guidance, and an independent classifier on clean
   examples, used only to score samples (its accuracy, and its penultimate features for a Fréchet distance).
2. Guidance strength: for W in {0, 1, 3, 7}, 100 samples per label (1,000 on digits) by DDIM-50 (eta = 0) with
   classifier-free guidance, (1 + W) eps(x_t, y) - W eps(x_t), and with classifier guidance,
   eps(x_t) - W sqrt(1 - abar_t) grad log p_phi(y | x_t).  W = 0 is conditional sampling for CFG but
   *unconditional* sampling for classifier guidance (the classifier term vanishes).  Reported: the independent
   classifier's accuracy on the samples, and the Fréchet distance between its features of the samples and of
   the held-out test examples (floor: held-out vs training examples).
3. Restoration by DPS (1000 ancestral steps) on 100 held-out test images: inpainting of the centre 4x4 block,
   denoising at sigma_y = 0.2, 2x super-resolution (2x2 average pooling), against the measurement-only
   baselines (masked input, noisy input, bicubic upsampling).  zeta is chosen per task on 20 other held-out
   images (validation) by PSNR; the sweep is reported.

Writes benchmarks/results/guidance.json, guidance_tradeoff.png, guidance_samples_w{0,3}.png and
restore_{inpaint,denoise,superres}.png (Fashion-MNIST: the same names with a ``_fashion-mnist`` suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import Clock  # noqa: E402

from ppl_dgm.data import load_dataset  # noqa: E402
from ppl_dgm.evaluation import frechet_distance, precision_recall, sample_quality  # noqa: E402
from ppl_dgm.models import get_family  # noqa: E402
from ppl_dgm.runs import DataSpec, load_run, scorer_for, train_run  # noqa: E402
from ppl_dgm.runs.restore import psnr, restore_run  # noqa: E402

HERE = Path(__file__).parent
OUT = HERE / "results"
RUNS = HERE / "runs_guidance"
WS = (0.0, 1.0, 3.0, 7.0)
PR_K = 3
ZETAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
TASKS = {"inpaint": {"sigma_y": 0.01}, "denoise": {"sigma_y": 0.2}, "superres": {"sigma_y": 0.01, "scale": 2}}

# Training budgets.  Digits DDPM: 100 epochs of 1,438 images, batch 128, 4 timesteps per image per step
# (1,200 Adam steps), lr 1e-3 with a cosine decay, EMA 0.995: about 7 min wall (5.5 min CPU) on one thread with
# the other core busy.
BUDGETS = {
    "digits": {
        "ddpm": dict(conditional=True, p_uncond=0.1, epochs=100, batch_size=128, t_per_step=4, lr=1e-3,
                     lr_schedule="cosine", ema=0.995, held_out_examples=32, checkpoint_every=50),
        "guide_classifier": dict(noise_conditional=True, timesteps=1000, schedule="linear", epochs=300,
                                 lr_schedule="cosine"),
        "score_classifier": dict(noise_conditional=False, epochs=100),
        "per_label": 100, "n_test": 100, "n_val": 20,
    },
    # Fashion-MNIST, on one thread per job: the conditional DDPM 8 epochs of 60k (3,752 Adam steps, one t per
    # image per step; about 60 CPU-minutes); the two MLP classifiers 20 epochs each (minutes).  Restoration uses
    # --restore-run, the 12-epoch unconditional DDPM of benchmarks/fashion_ddpm.py, when given.
    "fashion-mnist": {
        "ddpm": dict(conditional=True, p_uncond=0.1, epochs=8, batch_size=128, t_per_step=1, lr=1e-3,
                     lr_schedule="cosine", ema=0.999, checkpoint_every=1),
        "guide_classifier": dict(noise_conditional=True, timesteps=1000, schedule="linear", epochs=20,
                                 lr_schedule="cosine"),
        "score_classifier": dict(noise_conditional=False, epochs=20),
        "per_label": 100, "n_test": 100, "n_val": 10,
    },
}
QUICK = {"ddpm": dict(epochs=2), "guide_classifier": dict(epochs=2), "score_classifier": dict(epochs=2),
         "per_label": 5, "n_test": 8, "n_val": 4}


def fit(family: str, options: dict, dataset: str, out: Path, timings: dict):
    """Train ``family`` into ``out``, or load the run there (with its recorded fit times)."""
    name = out.name
    times = out / "bench_fit_seconds.json"
    if (out / "config.json").exists() and times.exists():
        timings[name] = {**json.loads(times.read_text()), "reused": True}
        return load_run(out)
    fam = get_family(family)
    with Clock() as c:
        run = train_run(family, fam.config(**options), DataSpec(dataset=dataset), out=out, progress=False,
                        overwrite=True, threads=1, echo=lambda s: print(s, flush=True))
    times.write_text(json.dumps(c.as_dict()))
    timings[name] = c.as_dict()
    return run


def grid(ax, x: np.ndarray, rows: int, cols: int, shape: tuple[int, ...], title: str,
         row_labels: list[str] | None = None) -> None:
    """x (rows * cols, D) in [0, 1] (NaN: not shown) as one mosaic, row-major, with blue separators."""
    h, w = shape[-2:]
    img = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(rows):
        for j in range(cols):
            img[i * (h + 1): i * (h + 1) + h, j * (w + 1): j * (w + 1) + w] = x[i * cols + j].reshape(h, w)
    cmap = matplotlib.colormaps["gray"].copy()
    cmap.set_bad("#3b6fb6")
    ax.imshow(np.clip(img, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([] if row_labels is None else [i * (h + 1) + (h - 1) / 2 for i in range(rows)])
    if row_labels is not None:
        ax.set_yticklabels(row_labels, fontsize=8)


def guidance_strength(ddpm, guide, scorer, ds, per_label: int, suffix: str, fd_floor: float) -> dict:
    n_classes = ddpm.model.n_classes
    labels = torch.arange(n_classes).repeat_interleave(per_label)
    test_feats = scorer.model.features(ds.x_test).numpy()
    out = {}
    samples = {}
    for kind in ("cfg", "classifier"):
        out[kind] = {}
        for w in WS:
            kw = {"classifier": guide.model} if kind == "classifier" else {}
            torch.manual_seed(1)
            with Clock() as c:
                x = ddpm.model.sample(len(labels), y=labels, guidance=w, sampler="ddim", steps=50, eta=0.0, **kw)
            x = x.float().clamp(0, 1)
            acc = scorer.model.accuracy(x, labels)
            feats = scorer.model.features(x).numpy()
            fd = frechet_distance(feats, test_feats)
            pr = precision_recall(test_feats[: len(labels)], feats, k=PR_K)
            out[kind][f"w{w:g}"] = {"w": w, "accuracy": acc["accuracy"], "log_p_y": acc["log_likelihood"],
                                    "frechet_distance": fd, "precision": pr["precision"], "recall": pr["recall"],
                                    "pr_n_real": pr["n_real"],
                                    "n": len(labels), **c.as_dict()}
            samples[(kind, w)] = x.numpy()
            print(kind, w, out[kind][f"w{w:g}"], flush=True)
    np.savez_compressed(RUNS / f"samples{suffix}.npz", labels=labels.numpy(),
                        **{f"{k}_w{w:g}": v for (k, w), v in samples.items()})
    shape = ddpm.shape
    tradeoff_figure(out, fd_floor, OUT / f"guidance_tradeoff{suffix}.png",
                    f"guidance strength on {ds.name}: DDIM-50, {per_label} samples per label")
    cols = min(per_label, 10)
    pick = (np.arange(n_classes)[:, None] * per_label + np.arange(cols)[None]).ravel()
    for w in (0.0, 3.0):
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
        grid(axes[0], samples[("cfg", w)][pick], n_classes, cols, shape, f"classifier-free, W={w:g}",
             [f"y={c}" for c in range(n_classes)])
        grid(axes[1], samples[("classifier", w)][pick], n_classes, cols, shape,
             f"classifier guidance, W={w:g}" + (" (= unconditional)" if w == 0 else ""))
        fig.tight_layout()
        fig.savefig(OUT / f"guidance_samples_w{w:g}{suffix}.png", dpi=120)
        plt.close(fig)
    return out


def tradeoff_figure(out: dict, fd_floor: float, path: Path, title: str, what: str = "the independent classifier's"):
    """Accuracy against the Fréchet distance (left) and against recall (right), one curve per guidance kind."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    names = {"cfg": "classifier-free guidance", "classifier": "classifier guidance (W=0: unconditional)"}
    for ax, key, xlabel in ((axes[0], "frechet_distance", f"Fréchet distance to held-out test examples ({what} "
                             "features)"),
                            (axes[1], "recall", f"recall (k-NN manifolds, k={PR_K}): the test set covered")):
        for kind, marker in (("cfg", "o-"), ("classifier", "s--")):
            pts = [(out[kind][f"w{w:g}"][key], out[kind][f"w{w:g}"]["accuracy"]) for w in WS]
            ax.plot(*zip(*pts), marker, label=names[kind])
            for w, (fx, fy) in zip(WS, pts):
                ax.annotate(f"W={w:g}", (fx, fy), textcoords="offset points", xytext=(5, -10), fontsize=8)
        ax.set_xlabel(xlabel, fontsize=9)
    axes[0].axvline(fd_floor, color="grey", lw=0.8, ls=":", label="FD floor (held-out vs training)")
    axes[0].set_ylabel(f"accuracy of {what[:-2]}" if what.endswith("'s") else "accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rescore(dataset: str, ds, suffix: str) -> dict:
    """The saved guided samples scored in the features of the package's sample-quality scorer
    (``ppl_dgm.runs.scorer_for``: a conv classifier on 28x28 images, trained once per dataset): its accuracy on
    the samples' labels, FD, KID, precision, recall against as many held-out examples (a seeded random subset),
    with the floor (held-out against training examples); accuracy on every sample, the others on as many samples
    (a seeded random subset) as held-out examples."""
    saved = np.load(RUNS / f"samples{suffix}.npz")
    labels = torch.as_tensor(saved["labels"])
    scorer = scorer_for(DataSpec(dataset=dataset))
    n = min(len(labels), len(ds.x_test))  # equal numbers of real and generated examples (digits: 359 < 1,000)
    pick = torch.as_tensor(np.random.default_rng(0).permutation(len(ds.x_test))[:n])
    pick_fake = torch.as_tensor(np.random.default_rng(1).permutation(len(labels))[:n])
    out: dict = {"scorer": str(scorer.path), "scorer_recipe": json.loads((scorer.path / "recipe.json").read_text()),
                 "n": n}
    for kind in ("cfg", "classifier"):
        out[kind] = {}
        for w in WS:
            x = torch.as_tensor(saved[f"{kind}_w{w:g}"]).float()
            q = sample_quality(scorer.model, ds.x_test[pick], x[pick_fake], ds.x_train, k=PR_K, seed=0)
            out["floor"] = q.pop("floor")
            acc = scorer.model.accuracy(x, labels)
            out[kind][f"w{w:g}"] = {"w": w, "accuracy": acc["accuracy"], "frechet_distance": q.pop("fd"), **q}
            print("rescore", kind, w, out[kind][f"w{w:g}"], flush=True)
    tradeoff_figure(out, out["floor"]["fd"], OUT / f"guidance_tradeoff_scorer{suffix}.png",
                    f"guidance strength on {ds.name}, scored by the package scorer ({out['scorer_recipe']['name']}): "
                    f"DDIM-50, accuracy on {len(labels)} samples per setting, the rest on {n}", "the package scorer's")
    return out


def measure(task: str, x_clean: np.ndarray, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, dict]:
    """y = A(x) + sigma_y n on the data scale, and restore_run's keyword arguments."""
    o = TASKS[task]
    rng = np.random.default_rng(seed)
    imgs = x_clean.reshape(-1, *shape)
    if task == "superres":
        s = o["scale"]
        h, w = shape[-2:]
        low = imgs.reshape(*imgs.shape[:-2], h // s, s, w // s, s).mean((-3, -1))
        return (low + o["sigma_y"] * rng.standard_normal(low.shape)).astype(np.float32), dict(o)
    y = (imgs + o["sigma_y"] * rng.standard_normal(imgs.shape)).astype(np.float32)
    if task == "inpaint":
        mask = np.ones(shape, np.float32)
        h, w = shape[-2:]
        mask[..., h // 4: h - h // 4, w // 4: w - w // 4] = 0      # the centre block (4x4 of 8x8)
        return y, {**o, "mask": mask}
    return y, dict(o)


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}


def restoration(ddpm, ds, n_test: int, n_val: int, suffix: str) -> dict:
    shape = ddpm.shape
    xt = ds.x_test.numpy()
    test, val = xt[:n_test], xt[n_test: n_test + n_val]
    out = {}
    for task in TASKS:
        y_val, kw = measure(task, val, shape, seed=2)
        sweep = {}
        for zeta in ZETAS:
            with Clock() as c:
                r = restore_run(ddpm, y_val, task, zeta=zeta, seed=0, reference=val.reshape(-1, *shape), **kw)
            sweep[f"{zeta:g}"] = {**strip(r), **c.as_dict()}
            print(task, "val zeta", zeta, r["psnr"], r["ssim"], r["consistency"], flush=True)
        best = max(ZETAS, key=lambda z: sweep[f"{z:g}"]["psnr"]["dps"])
        y, kw = measure(task, test, shape, seed=1)
        with Clock() as c:
            r = restore_run(ddpm, y, task, zeta=best, seed=0, reference=test.reshape(-1, *shape), **kw)
        res = {**strip(r), **c.as_dict()}
        res["dps_beats_baseline"] = {"psnr": res["psnr"]["dps"] > res["psnr"]["baseline"],
                                     "ssim": res["ssim"]["dps"] > res["ssim"]["baseline"]}
        # per-image PSNR wins, so the mean is not carried by a few images
        ref = torch.as_tensor(test).reshape(len(test), -1)
        p_d = psnr(torch.as_tensor(r["x"]).reshape(len(test), -1), ref)
        p_b = psnr(torch.as_tensor(r["baseline"]).reshape(len(test), -1), ref)
        res["fraction_images_dps_psnr_higher"] = float((p_d > p_b).double().mean())
        res["psnr_sem"] = {"dps": float(p_d.std() / len(p_d) ** 0.5), "baseline": float(p_b.std() / len(p_b) ** 0.5)}
        out[task] = {"zeta": best, "validation_sweep": sweep, "test": res}
        print(task, "test zeta", best, res["psnr"], res["ssim"], res["consistency"], flush=True)
        np.savez_compressed(RUNS / f"restore_{task}{suffix}.npz", clean=test, x=r["x"], baseline=r["baseline"],
                            measurement=r["measurement"])
        k = min(12, len(test))
        shown = np.asarray(r["measurement"][:k], np.float64).reshape(k, -1)
        if task == "inpaint":
            shown = np.where(kw["mask"].reshape(1, -1) > 0, shown, np.nan)      # missing pixels in blue
        rows = (("clean", test[:k]), ("measurement", shown),
                ({"inpaint": "masked input", "denoise": "noisy input", "superres": "bicubic"}[task],
                 r["baseline"][:k]), (f"DPS (zeta={best:g})", r["x"][:k]))
        fig, ax = plt.subplots(figsize=(k * 0.55 + 1.2, 3.2))
        grid(ax, np.concatenate([np.asarray(v, np.float64).reshape(k, -1) for _, v in rows]), 4, k, shape,
             f"{task} ({', '.join(f'{a}={b}' for a, b in TASKS[task].items())}); test PSNR DPS "
             f"{res['psnr']['dps']:.1f} vs baseline {res['psnr']['baseline']:.1f} dB", [n for n, _ in rows])
        fig.tight_layout()
        fig.savefig(OUT / f"restore_{task}{suffix}.png", dpi=120)
        plt.close(fig)
    return out


def cli_of(family: str, dataset: str, options: dict) -> str:
    """The ``ppl-dgm fit`` command that trains ``family`` with ``options`` (the budget of ``fit``)."""
    flags = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            flags += [flag] if v else []
        else:
            flags += [flag, str(v)]
    return " ".join(["ppl-dgm fit", family, "--dataset", dataset, *flags, "--threads 1"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits", choices=sorted(BUDGETS))
    ap.add_argument("--quick", action="store_true", help="tiny budgets, results to *_quick files")
    ap.add_argument("--only", default="guidance,restore",
                    help="comma-separated jobs among ddpm, classifiers (train only), guidance, rescore (the saved "
                         "samples in the package scorer's features), restore; the results of a job replace its part "
                         "of an existing JSON, so jobs can run in parallel processes")
    ap.add_argument("--restore-run", type=Path, default=None,
                    help="the DDPM run restoration uses (default: the conditional DDPM trained here)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the fits always use one)")
    ap.add_argument("--per-label", type=int, default=None, help="guided samples per label (default: the budget's)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    budget = {k: (dict(v, **QUICK[k]) if isinstance(v, dict) else QUICK[k]) if a.quick else v
              for k, v in BUDGETS[a.dataset].items()}
    budget["per_label"] = a.per_label or budget["per_label"]
    suffix = ("" if a.dataset == "digits" else f"_{a.dataset}") + ("_quick" if a.quick else "")
    runs = RUNS / (a.dataset + ("_quick" if a.quick else ""))
    jobs = set(a.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"guidance{suffix}.json"
    with Clock() as total:
        ds = load_dataset(a.dataset)
        fits: dict = {}
        if jobs & {"ddpm", "guidance"} or ("restore" in jobs and a.restore_run is None):
            ddpm = fit("ddpm", budget["ddpm"], a.dataset, runs / "ddpm", fits)
        if jobs & {"classifiers", "guidance"}:
            guide = fit("classifier", budget["guide_classifier"], a.dataset, runs / "guide_classifier", fits)
            scorer = fit("classifier", budget["score_classifier"], a.dataset, runs / "score_classifier", fits)
        results = {}
        results.update({
            "dataset": a.dataset, "quick": a.quick,
            "commands": {",".join(sorted(jobs)): f"OMP_NUM_THREADS={a.threads} python benchmarks/guidance.py"
                         + (f" --dataset {a.dataset}" if a.dataset != "digits" else "")
                         + (" --quick" if a.quick else "") + f" --only {a.only}"
                         + (f" --restore-run {a.restore_run}" if a.restore_run else "")
                         + (f" --threads {a.threads}" if a.threads != 1 else "")
                         + (f" --per-label {a.per_label}" if a.per_label else "")},
            "equivalent_cli": {
                "ddpm": cli_of("ddpm", a.dataset, budget["ddpm"]),
                "guide_classifier": cli_of("classifier", a.dataset, budget["guide_classifier"]),
                "score_classifier": cli_of("classifier", a.dataset, budget["score_classifier"]),
                "sample": "ppl-dgm sample RUN --label L --guidance W [--classifier GUIDE_RUN] (DDIM-50 here)",
                "restore": "ppl-dgm restore RUN --task inpaint|denoise|superres --input Y.npy [--mask M.npy] "
                           "--sigma-y S --zeta Z --out X.npy",
            },
            "budgets": {**budget, "sampler": "DDIM-50, eta=0", "guidance_w": list(WS),
                        "dps": "1000 ancestral steps, one DPS sample per measurement", "zeta_grid": list(ZETAS),
                        "tasks": {k: dict(v) for k, v in TASKS.items()},
                        "inpaint_mask": "the centre block of half the height and width missing (1/4 of the pixels)",
                        "test_images": f"held-out test rows 0..{budget['n_test'] - 1}",
                        "validation_images": f"held-out test rows {budget['n_test']}.."
                                             f"{budget['n_test'] + budget['n_val'] - 1}"},
            "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": sys.version.split()[0], "torch": torch.__version__,
        })
        results["fit"] = fits
        if jobs & {"classifiers", "guidance"}:
            train_feats = scorer.model.features(ds.x_train).numpy()
            test_feats = scorer.model.features(ds.x_test).numpy()
            half = np.random.default_rng(0).permutation(len(test_feats))
            results.update({
                "score_classifier_test": scorer.model.accuracy(ds.x_test, ds.y_test),
                "guide_classifier_test_t": {str(t): guide.model.accuracy(ds.x_test, ds.y_test, t=t)
                                            for t in (0, 100, 300, 500, 800)},
                "frechet_floor_test_vs_train": frechet_distance(train_feats, test_feats),
                "frechet_test_split_halves": frechet_distance(test_feats[half[: len(half) // 2]],
                                                              test_feats[half[len(half) // 2:]]),
                "frechet_note": "features: the independent (clean) classifier's penultimate activations (width "
                                "256); reference: all held-out test examples. Both floors are biased upwards: "
                                "small-sample bias with few rows for 256 features, and a scorer fitted close to "
                                "zero training loss has more extreme features on training examples than on "
                                "held-out ones (or on new samples).",
            })
            print("fits", fits, "floor", results["frechet_floor_test_vs_train"], results["score_classifier_test"],
                  flush=True)
        if "guidance" in jobs:
            with Clock() as c:
                results["guidance"] = guidance_strength(ddpm, guide, scorer, ds, budget["per_label"], suffix,
                                                        results["frechet_floor_test_vs_train"])
            results["guidance_seconds"] = c.as_dict()
        if "rescore" in jobs:
            results["guidance_package_scorer"] = rescore(a.dataset, ds, suffix)
        if "restore" in jobs:
            prior = ddpm if a.restore_run is None else load_run(a.restore_run)
            with Clock() as c:
                results["restore"] = restoration(prior, ds, budget["n_test"], budget["n_val"], suffix)
            results["restore_seconds"] = c.as_dict()
            results["restore_prior"] = ("the conditional DDPM above, unconditional (null label)"
                                        if a.restore_run is None else
                                        {"run": str(a.restore_run), "config": json.loads(
                                            (a.restore_run / "config.json").read_text()).get("train")})
    results["total_seconds"] = {",".join(sorted(jobs)): total.as_dict()}
    old = json.loads(path.read_text()) if path.exists() else {}     # other jobs' parts, read at the end
    for key in ("fit", "total_seconds", "commands"):
        results[key] = {**old.get(key, {}), **results[key]}
    results = {**old, **results}
    path.write_text(json.dumps(results, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()

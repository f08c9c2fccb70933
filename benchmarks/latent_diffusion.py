"""Issue 12 item 4, last bullet: latent diffusion against the VAE's own prior, on digits and Fashion-MNIST (notes 004).

A VAE (the `ppl-dgm fit vae` defaults, dynamic binarization, K = 8; Fashion-MNIST: the conv VAE for 30 epochs)
and a DDPM on its posterior means (`ppl-dgm fit ddpm --latent-of`, the vector defaults). 1,000 samples of each
decoder mean E[x | z], with z ~ N(0, I) (the VAE's prior) or z ~ the latent DDPM; scored by the independent
clean-data classifier of `benchmarks/guidance.py` (run that first): Fréchet distance of its features to the
held-out examples, the mean
confidence max_y p(y | x), and the entropy of the predicted-label histogram (log 10 = 2.303 when every digit
is drawn equally often). Also the same figures for the decoded training posterior means (what a perfect model of
the latents would give) and the MMD^2 of the latents themselves to the training posterior means.

    OMP_NUM_THREADS=1 python benchmarks/latent_diffusion.py [--dataset fashion-mnist]

Writes benchmarks/results/latent_diffusion.json and latent_diffusion_samples.png (Fashion-MNIST: with a
``_fashion-mnist`` suffix).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _timing import Clock
from torch.nn import functional as F

from ppl_dgm.data import load_dataset
from ppl_dgm.evaluation import frechet_distance
from ppl_dgm.evaluation.mmd import mmd2
from ppl_dgm.models.diffusion import DDPMConfig
from ppl_dgm.models.vae import VAEConfig
from ppl_dgm.plotting import plot_rows
from ppl_dgm.runs import DataSpec, load_run, train_run

HERE = Path(__file__).parent
OUT = HERE / "results"
VAE_OPTIONS = {"digits": {}, "fashion-mnist": {"epochs": 30}}


def fit(family: str, options, data: DataSpec, out: Path) -> tuple:
    with Clock() as clock:
        run = train_run(family, options, data, out=out, progress=False, overwrite=True, threads=1, echo=print)
    return run, clock.as_dict()


@torch.no_grad()
def scores(scorer, x: torch.Tensor, test_feats: np.ndarray) -> dict:
    p = F.softmax(scorer.model.logits(scorer.model.to_model_space(x)), -1)
    hist = torch.bincount(p.argmax(-1), minlength=p.shape[-1]).double() / len(x)
    entropy = float(-(hist[hist > 0] * hist[hist > 0].log()).sum())
    return {"frechet": frechet_distance(scorer.model.features(x).numpy(), test_feats),
            "confidence": float(p.max(-1).values.mean()), "label_entropy": entropy,
            "label_histogram": hist.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits", choices=sorted(VAE_OPTIONS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = HERE / "runs_guidance" / a.dataset
    suffix = "" if a.dataset == "digits" else f"_{a.dataset}"
    scorer = load_run(runs / "score_classifier")
    ds = load_dataset(a.dataset)
    test_feats = scorer.model.features(ds.x_test).numpy()
    vae, t_vae = fit("vae", VAEConfig(**VAE_OPTIONS[a.dataset]), DataSpec(a.dataset, binarize="dynamic"),
                     runs / "vae")
    ldm, t_ldm = fit("ddpm", DDPMConfig(latent_of=str(runs / "vae")), DataSpec(), runs / "ldm")
    torch.manual_seed(0)
    prior = vae.model.sample(1000, mean=True)
    torch.manual_seed(0)
    latent = ldm.decode(ldm.model.sample(1000))
    with torch.no_grad():
        keep = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(0))[:5000]
        z_train = vae.model.encode_mean(ds.x_train[keep])          # (at most 5,000 rows: the MMD is quadratic)
        target = vae.model.decode_mean(z_train)                     # what a perfect latent model would decode to
    torch.manual_seed(0)
    z_ldm = ldm.model.sample(1000)
    res = {"budget": {"vae": {**t_vae, "options": vae.config["train"]},
                      "ldm": {**t_ldm, "options": ldm.config["train"]}},
           "vae_prior": scores(scorer, prior, test_feats), "latent_diffusion": scores(scorer, latent, test_feats),
           "held_out_vs_training_frechet": frechet_distance(test_feats, scorer.model.features(ds.x_train).numpy()),
           "decoded_training_posterior_means": scores(scorer, target, test_feats),
           "latent_mmd2_to_training_posterior_means": {
               "latent_ddpm": mmd2(z_ldm.numpy(), z_train.numpy(), bandwidths=(0.5, 1.0, 2.0)),
               "prior_N(0,I)": mmd2(torch.randn(1000, z_train.shape[1]).numpy(), z_train.numpy(),
                                    bandwidths=(0.5, 1.0, 2.0))},
           "dataset": a.dataset,
           "command": "OMP_NUM_THREADS=1 python benchmarks/latent_diffusion.py"
                      + (f" --dataset {a.dataset}" if a.dataset != "digits" else ""),
           "note": "E[x | z] of the same decoder for both; z ~ N(0, I) vs z ~ the DDPM on posterior means"}
    for k in ("vae_prior", "latent_diffusion", "decoded_training_posterior_means"):
        r = res[k]
        print(f"{k:33s} FD {r['frechet']:7.1f}  confidence {r['confidence']:.3f}  "
              f"label entropy {r['label_entropy']:.3f}")
    plot_rows(torch.stack([prior[:12], latent[:12]]).numpy(), ds.shape, OUT / f"latent_diffusion_samples{suffix}.png",
              "E[x | z] of one VAE decoder: z ~ N(0, I) (top) vs z ~ latent DDPM (bottom)",
              row_labels=["VAE prior", "latent DDPM"])
    path = OUT / f"latent_diffusion{suffix}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**{k: old[k] for k in ("tuning", "verdict") if k in old}, **res}, indent=1))


if __name__ == "__main__":
    main()

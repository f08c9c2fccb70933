"""VAE variants on Fashion-MNIST: IWAE training, a flow guide, CVAE class fidelity, AE vs VAE samples.

    nice -n 5 python benchmarks/vae_variants.py [--n-train 10000] [--epochs 8] [--n-iwae 500] [--k-eval 5000]

Writes ``benchmarks/results/vae_variants.json`` and ``benchmarks/results/ae_vs_vae.png``.
Every model: MLP encoder/decoder (784-256-2K / K-256-784), K = 16, Bernoulli likelihood on
dynamically binarized images, Adam 1e-3, batch 128, seed 0, the same epochs.  The scale is reduced
for a shared CPU (a subset of the training set, few epochs); the JSON records it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from ppl_dgm import load_dataset
from ppl_dgm.evaluation.likelihood import iwae_log_likelihood
from ppl_dgm.inference import elbo_terms, fit_svi, make_objective
from ppl_dgm.models import AE, CVAE, VAE
from ppl_dgm.plotting.core import image_grid, plt, save

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"


def flow_guide_class():
    spec = importlib.util.spec_from_file_location("custom_flow_guide", ROOT / "examples" / "custom_flow_guide.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FlowGuide


def held_out_elbo(model_fn, guide, x, *rest, particles=10):
    pyro.set_rng_seed(0)
    with torch.no_grad():
        t = elbo_terms(model_fn, guide, x, *rest, num_particles=particles)
    return {"elbo": t.elbo, "reconstruction": t.reconstruction, "kl": t.kl}


def held_out_iwae(model, x, k):
    pyro.set_rng_seed(0)
    return float(iwae_log_likelihood(model.model, model.guide, x, k=k, max_rows=200_000).mean())


def mmd_rbf(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased squared MMD with an RBF kernel, bandwidth = median pairwise distance of the pooled set."""
    xy = torch.cat([a, b]).double()
    d2 = torch.cdist(xy, xy).pow(2)
    h = d2[d2 > 0].median()
    k = torch.exp(-d2 / h)
    n, m = len(a), len(b)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                 - 2 * kxy.mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--n-iwae", type=int, default=500, help="test examples scored by the k-sample IWAE")
    ap.add_argument("--k-eval", type=int, default=5000)
    ap.add_argument("--k-train", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()

    ds = load_dataset("fashion-mnist", binarize="dynamic", seed=0)
    grey = load_dataset("fashion-mnist", binarize="none", seed=0)
    x_tr, y_tr = ds.x_train[: args.n_train], ds.y_train[: args.n_train]
    x_te, y_te = ds.x_test, ds.y_test
    x_iw = x_te[: args.n_iwae]
    common = dict(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0, progress=False,
                  transform=ds.batch_transform())
    res: dict = {"setup": {"dataset": "fashion-mnist", "n_train": len(x_tr), "n_test": len(x_te),
                           "epochs": args.epochs, "latent_dim": 16, "hidden": [256], "likelihood": "bernoulli",
                           "binarize": "dynamic", "iwae_eval_k": args.k_eval, "iwae_eval_examples": len(x_iw)}}

    def vae():
        torch.manual_seed(0)
        return VAE(784, latent_dim=16, hidden=[256], image_shape=(28, 28))

    # 1. IWAE (k = k_train) vs k = 1 training, same nets and epochs; held-out IWAE with k_eval samples
    iw = {}
    for k in (1, args.k_train):
        t0 = time.time()
        m = vae()
        fit_svi(m, x_tr, loss=make_objective("iwae", particles=k), **common)
        iw[f"k{k}"] = {"train_seconds": time.time() - t0, "heldout_iwae": held_out_iwae(m, x_iw, args.k_eval),
                       **held_out_elbo(m.model, m.guide, x_te)}
        print("iwae", k, iw[f"k{k}"], flush=True)
    res["iwae_training"] = iw

    # 2. flow guide vs mean-field guide, same decoder architecture
    FlowGuide = flow_guide_class()
    fl = {}
    mean_field = vae()
    fit_svi(mean_field, x_tr, **common)
    fl["mean_field"] = held_out_elbo(mean_field.model, mean_field.guide, x_te)
    m = vae()
    torch.manual_seed(0)
    guide = FlowGuide(784, 16, [256], n_flows=2, flow="iaf")
    fit_svi(m, x_tr, guide=guide, **common)
    fl["iaf_2_layers"] = held_out_elbo(m.model, guide, x_te)
    print("flow", fl, flush=True)
    res["flow_guide"] = fl

    # a classifier trained on the real (grey) training set judges generated images
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=200, C=0.5)
    clf.fit(grey.x_train[:10_000].numpy(), grey.y_train[:10_000].numpy())
    clf_acc = float(clf.score(grey.x_test.numpy(), grey.y_test.numpy()))
    res["classifier"] = {"kind": "sklearn LogisticRegression(C=0.5) on 10000 real grey training images",
                         "test_accuracy": clf_acc}

    # 3. CVAE class fidelity: accuracy of the classifier on samples generated per label
    torch.manual_seed(0)
    cvae = CVAE(784, n_classes=10, latent_dim=16, hidden=[256], image_shape=(28, 28))
    fit_svi(cvae, (x_tr, y_tr), test=None, **common)
    torch.manual_seed(1)
    labels = torch.arange(10).repeat_interleave(100)
    xs = cvae.sample(1000, y=labels, mean=True)
    pred = clf.predict(xs.numpy())
    per = [float((pred[labels.numpy() == c] == c).mean()) for c in range(10)]
    res["cvae_class_fidelity"] = {"accuracy": float((pred == labels.numpy()).mean()), "per_label": per,
                                  "samples_per_label": 100, **held_out_elbo(cvae.model, cvae.guide, x_te, y_te)}
    print("cvae", res["cvae_class_fidelity"], flush=True)

    # 4. AE vs VAE: decode z ~ N(0, I) with each decoder.  "ae" is the notes' deterministic
    #    autoencoder (beta = 0: reconstruction only); "ae_prior_term" keeps log p(z) (MAP codes).
    torch.manual_seed(0)
    ae = AE(784, latent_dim=16, hidden=[256], image_shape=(28, 28))
    fit_svi(ae, x_tr, loss=make_objective("elbo", beta=0.0), **common)
    torch.manual_seed(0)
    ae_map = AE(784, latent_dim=16, hidden=[256], image_shape=(28, 28))
    fit_svi(ae_map, x_tr, loss=make_objective("elbo"), **common)
    comp = {}
    grids = {}
    ref = grey.x_test[:1000]
    for name, m in (("vae", mean_field), ("ae", ae), ("ae_prior_term", ae_map)):
        torch.manual_seed(2)
        xs = m.sample(1000, mean=True)
        prob = clf.predict_proba(xs.numpy())
        codes = m.encode(x_te[:2000])[0].detach()
        comp[name] = {"classifier_confidence": float(prob.max(1).mean()),
                      "mmd2_to_test": mmd_rbf(xs, ref),
                      "code_mean_norm": float(codes.mean(0).norm()), "code_std_mean": float(codes.std(0).mean()),
                      "reconstruction_bce": float(torch.nn.functional.binary_cross_entropy(
                          m.reconstruct(x_te[:2000]), x_te[:2000], reduction="sum") / 2000)}
        grids[name] = xs[:64].numpy().reshape(64, 28, 28)
    comp["real_test_reference"] = {"classifier_confidence": float(clf.predict_proba(ref.numpy()).max(1).mean()),
                                   "mmd2_to_test": mmd_rbf(grey.x_test[1000:2000], ref)}
    res["ae_vs_vae_prior_samples"] = comp
    print("ae/vae", comp, flush=True)
    fig, axes = plt().subplots(1, 3, figsize=(15, 5.4))
    for ax, name in zip(axes, ("vae", "ae", "ae_prior_term")):
        ax.imshow(image_grid(grids[name], nrow=8), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name.upper()}: E[x | z], z ~ N(0, I)\nconfidence {comp[name]['classifier_confidence']:.2f}, "
                     f"MMD² {comp[name]['mmd2_to_test']:.4f}")
        ax.axis("off")
    save(fig, OUT / "ae_vs_vae.png")

    res["total_seconds"] = time.time() - t_start
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vae_variants.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()

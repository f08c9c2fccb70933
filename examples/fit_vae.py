"""Fit a VAE with a short SVI script, then evaluate and sample it.

    python examples/fit_vae.py [--dataset digits] [--epochs 100] [--quick]
"""

import argparse

import torch

from ppl_dgm import VAE, fit_svi, load_dataset
from ppl_dgm.evaluation import evaluate_model
from ppl_dgm.plotting import plot_samples

ap = argparse.ArgumentParser()
ap.add_argument("--dataset", default="digits")
ap.add_argument("--epochs", type=int, default=100)
ap.add_argument("--quick", action="store_true", help="one epoch, small k (smoke test)")
args = ap.parse_args()
epochs, k = (1, 10) if args.quick else (args.epochs, 1000)

ds = load_dataset(args.dataset, binarize="dynamic", seed=0)
torch.manual_seed(0)
vae = VAE(ds.dim, latent_dim=8, hidden=[256], image_shape=ds.shape)
fit = fit_svi(vae, ds.x_train, test=ds.x_test, epochs=epochs, batch_size=128,
              transform=ds.batch_transform(), seed=0, progress=not args.quick)
ev = evaluate_model(vae, ds.x_test, iwae_k=k)
print(f"held-out ELBO {ev.elbo:.2f} nats (reconstruction {ev.reconstruction:.2f}, KL {ev.kl:.2f}); "
      f"IWAE k={k}: {ev.log_likelihood:.2f} nats, {ev.bits_per_dim:.4f} bits/dim")
plot_samples(vae.sample(64, mean=True).numpy(), ds.shape, "vae_samples.png", "VAE samples E[x|z]")

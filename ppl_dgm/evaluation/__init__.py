"""Evaluation: held-out ELBO, IWAE log-likelihood, bits per dimension; sample quality (MMD, Fréchet distance,
KID, k-NN precision and recall, PSNR/SSIM; mode coverage on mixtures)."""

from .frechet import frechet_distance
from .likelihood import Evaluation, evaluate_model, iwae_log_likelihood
from .manifold import precision_recall
from .modes import ModeCoverage, mode_coverage
from .quality import kernel_inception_distance, psnr, reconstruction_quality, sample_quality, ssim

__all__ = ["Evaluation", "evaluate_model", "iwae_log_likelihood", "frechet_distance", "precision_recall",
           "ModeCoverage", "mode_coverage", "kernel_inception_distance", "sample_quality", "psnr", "ssim",
           "reconstruction_quality"]

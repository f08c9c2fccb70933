"""Evaluation: held-out ELBO, IWAE log-likelihood, bits per dimension; sample quality (MMD, Fréchet distance,
k-NN precision and recall)."""

from .frechet import frechet_distance
from .likelihood import Evaluation, evaluate_model, iwae_log_likelihood
from .manifold import precision_recall

__all__ = ["Evaluation", "evaluate_model", "iwae_log_likelihood", "frechet_distance", "precision_recall"]

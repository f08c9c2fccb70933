"""Evaluation: held-out ELBO, IWAE log-likelihood, bits per dimension; sample quality (MMD, Fréchet distance)."""

from .frechet import frechet_distance
from .likelihood import Evaluation, evaluate_model, iwae_log_likelihood

__all__ = ["Evaluation", "evaluate_model", "iwae_log_likelihood", "frechet_distance"]

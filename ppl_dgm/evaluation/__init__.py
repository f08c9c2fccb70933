"""Evaluation: held-out ELBO, IWAE log-likelihood, bits per dimension."""

from .likelihood import Evaluation, evaluate_model, iwae_log_likelihood

__all__ = ["Evaluation", "evaluate_model", "iwae_log_likelihood"]

"""Shared inference: the SVI fit loop, objectives, diagnostics, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .diagnostics import ElboTerms, elbo_terms, find_nonfinite
from .svi import FitResult, StopTraining, fit_svi

__all__ = ["fit_svi", "FitResult", "StopTraining", "elbo_terms", "ElboTerms", "find_nonfinite",
           "load_checkpoint", "save_checkpoint"]

"""Shared inference: the SVI fit loop, objectives, diagnostics, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .diagnostics import ElboTerms, elbo_terms, find_nonfinite
from .diagnostics_derived import (
    PosteriorCollapseWarning,
    active_units,
    collapse_warnings,
    convergence,
    elbo_iwae_gap,
    gradient_snr,
)
from .guides import check_guide
from .objectives import IWAE, AnalyticELBO, FreeBitsELBO, KLWarmup, MonteCarloELBO, make_objective, scale_sites
from .svi import FitResult, StopTraining, fit_svi

__all__ = ["fit_svi", "FitResult", "StopTraining", "elbo_terms", "ElboTerms", "find_nonfinite",
           "load_checkpoint", "save_checkpoint", "check_guide", "make_objective", "MonteCarloELBO", "AnalyticELBO",
           "IWAE", "FreeBitsELBO", "KLWarmup", "scale_sites", "active_units", "collapse_warnings", "convergence",
           "elbo_iwae_gap", "gradient_snr", "PosteriorCollapseWarning", "to_inference_data",
           "numpyro_to_inference_data"]


def __getattr__(name):  # the ArviZ export imports arviz lazily, so it is loaded on first use
    if name in ("to_inference_data", "numpyro_to_inference_data"):
        from . import arviz as _arviz

        return getattr(_arviz, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Shared inference: the SVI fit loop, objectives, diagnostics, checkpoints.

The ArviZ export lives in :mod:`ppl_dgm.export`; the evaluation estimators in :mod:`ppl_dgm.evaluation`.
"""

from .adversarial import AdversarialObjective, AdversarialState
from .callbacks import Callback, StopTraining
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
from .svi import FitResult, SVIState, fit_svi
from .traces import importance_log_weights, trace_pair

__all__ = ["fit_svi", "FitResult", "SVIState", "Callback", "StopTraining", "elbo_terms", "ElboTerms",
           "find_nonfinite", "load_checkpoint", "save_checkpoint", "check_guide", "make_objective",
           "MonteCarloELBO", "AnalyticELBO", "IWAE", "FreeBitsELBO", "KLWarmup", "scale_sites", "active_units",
           "collapse_warnings", "convergence", "elbo_iwae_gap", "gradient_snr", "PosteriorCollapseWarning",
           "trace_pair", "importance_log_weights", "AdversarialObjective", "AdversarialState"]

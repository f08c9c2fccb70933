"""DDPM's samplers now live in :mod:`ppl_dgm.models.samplers` (shared with the score models); re-exported here."""

from .samplers import Trajectory, ddim_sample, ddpm_sample

__all__ = ["Trajectory", "ddpm_sample", "ddim_sample"]

"""The families, one module each, and the registry of what each can do (:mod:`.registry`).

The registry is imported at once (it names every family without importing torch); the
model classes are imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports
from .registry import REGISTRY, Family, families_with, get_family, require

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from .ae import AE
    from .base import EStep, GenerativeModel
    from .classifier import Classifier
    from .cvae import CVAE
    from .diffusion import DDPM
    from .flow import Flow
    from .gmm import GMM
    from .hvae import HVAE
    from .ppca import PPCA
    from .score import ScoreModel
    from .vae import VAE
    from .vqvae import VQVAE

__all__ = ["GenerativeModel", "EStep", "VAE", "CVAE", "AE", "DDPM", "HVAE", "GMM", "PPCA", "ScoreModel", "Classifier",
           "Flow", "VQVAE", "REGISTRY", "Family", "get_family", "families_with", "require"]

# public name -> its module (relative to this package)
_LAZY = {"GenerativeModel": ".base", "EStep": ".base", "VAE": ".vae", "CVAE": ".cvae", "AE": ".ae",
         "DDPM": ".diffusion", "HVAE": ".hvae", "GMM": ".gmm", "PPCA": ".ppca", "ScoreModel": ".score",
         "Flow": ".flow", "Classifier": ".classifier", "VQVAE": ".vqvae"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

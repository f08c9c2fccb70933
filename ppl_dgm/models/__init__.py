"""The families, one module each, and the registry of what each can do (:mod:`.registry`)."""

from .ae import AE
from .base import EStep, GenerativeModel
from .cvae import CVAE
from .diffusion import DDPM
from .gmm import GMM
from .hvae import HVAE
from .ppca import PPCA
from .registry import REGISTRY, Family, families_with, get_family, require
from .vae import VAE

__all__ = ["GenerativeModel", "EStep", "VAE", "CVAE", "AE", "DDPM", "HVAE", "GMM", "PPCA", "REGISTRY", "Family",
           "get_family", "families_with", "require"]

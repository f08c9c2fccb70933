"""The families: one module each.  ``FAMILIES`` maps a family name to its class."""

from .base import GenerativeModel
from .vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {"vae": VAE}

__all__ = ["GenerativeModel", "VAE", "FAMILIES"]

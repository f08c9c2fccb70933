"""The families: one module each.  ``FAMILIES`` maps a family name to its class."""

from .ae import AE
from .base import GenerativeModel
from .cvae import CVAE
from .diffusion import DDPM
from .hvae import HVAE
from .vae import VAE

FAMILIES: dict[str, type[GenerativeModel]] = {"vae": VAE, "cvae": CVAE, "ae": AE, "ddpm": DDPM, "hvae": HVAE}

__all__ = ["GenerativeModel", "VAE", "CVAE", "AE", "DDPM", "HVAE", "FAMILIES"]

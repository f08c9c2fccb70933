"""ppl_dgm: deep generative models written as probabilistic programs.

The few names most users need are re-exported here; everything else lives in
``ppl_dgm.models``, ``ppl_dgm.inference``, ``ppl_dgm.data`` and ``ppl_dgm.evaluation``.
"""

from ._facades import PPCA, GaussianMixture
from .data import load_dataset
from .errors import InputError
from .inference import elbo_terms, fit_svi
from .models import VAE

__version__ = "0.1.0"

__all__ = ["VAE", "GaussianMixture", "PPCA", "fit_svi", "elbo_terms", "load_dataset", "InputError",
           "__version__"]

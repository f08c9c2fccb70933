"""ppl_dgm: deep generative models written as probabilistic programs.

The few names most users need are re-exported here; everything else lives in
``ppl_dgm.models`` (the families and their registry), ``ppl_dgm.inference`` (fit loops,
objectives, diagnostics), ``ppl_dgm.evaluation``, ``ppl_dgm.export`` (ArviZ),
``ppl_dgm.runs`` (run directories) and ``ppl_dgm.data``.
"""

from ._version import __version__
from .data import load_dataset
from .errors import InputError
from .estimators import PPCA, GaussianMixture
from .inference import elbo_terms, fit_svi
from .models import REGISTRY, VAE
from .runs import load_run, save_run, train_run

__all__ = ["VAE", "GaussianMixture", "PPCA", "fit_svi", "elbo_terms", "load_dataset", "load_run", "save_run",
           "train_run", "REGISTRY", "InputError", "__version__"]

"""ppl_dgm: deep generative models written as probabilistic programs.

The few names most users need are re-exported here; everything else lives in
``ppl_dgm.models`` (the families and their registry), ``ppl_dgm.inference`` (fit loops,
objectives, diagnostics), ``ppl_dgm.evaluation``, ``ppl_dgm.export`` (ArviZ),
``ppl_dgm.runs`` (run directories) and ``ppl_dgm.data``.

The re-exports are imported on first use (PEP 562), so ``import ppl_dgm`` (and the
``ppl-dgm`` command's help) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import InputError
from .utils import lazy_exports

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from .data import load_dataset
    from .estimators import PPCA, GaussianMixture
    from .inference import elbo_terms, fit_svi
    from .models import VAE
    from .models.registry import REGISTRY
    from .runs import load_run, save_run, train_run

__all__ = ["VAE", "GaussianMixture", "PPCA", "fit_svi", "elbo_terms", "load_dataset", "load_run", "save_run",
           "train_run", "REGISTRY", "InputError", "__version__"]

# public name -> the module it comes from (relative to this package)
_LAZY = {"VAE": ".models", "GaussianMixture": ".estimators", "PPCA": ".estimators", "fit_svi": ".inference",
         "elbo_terms": ".inference", "load_dataset": ".data", "load_run": ".runs", "save_run": ".runs",
         "train_run": ".runs", "REGISTRY": ".models.registry"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

"""Export: posterior draws as ArviZ ``InferenceData`` (Pyro guides, Pyro MCMC, NumPyro).

ArviZ and xarray are imported only when a function is called.
"""

from .arviz import numpyro_to_inference_data, to_inference_data
from .numpyro_svi import svi_to_inference_data

__all__ = ["to_inference_data", "numpyro_to_inference_data", "svi_to_inference_data"]

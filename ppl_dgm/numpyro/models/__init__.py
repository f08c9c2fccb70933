"""NumPyro models (JAX twins of :mod:`ppl_dgm.models`)."""

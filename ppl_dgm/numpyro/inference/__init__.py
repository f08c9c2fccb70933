"""JAX inference twins (EM) of :mod:`ppl_dgm.inference`."""

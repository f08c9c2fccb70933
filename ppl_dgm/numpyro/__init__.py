"""NumPyro/JAX twins of the Pyro families (same module and function names).

Nothing here is imported by ``import ppl_dgm``; JAX is imported lazily when a
twin is used.  Float64 twins switch on ``jax_enable_x64`` (a process-wide JAX
flag) inside the function that needs it.
"""

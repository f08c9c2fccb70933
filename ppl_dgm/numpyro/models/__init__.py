"""NumPyro models (JAX twins of :mod:`ppl_dgm.models`).

:data:`TWINS` names the families with a NumPyro model-guide pair that ``ppl-dgm fit FAMILY --backend numpyro``
trains; importing a twin imports JAX, NumPyro and equinox.
"""

TWINS = {"vae": ".vae:VAE", "cvae": ".vae:CVAE", "hvae": ".hvae:HVAE"}


def twin_class(family: str) -> type:
    """The NumPyro twin class of ``family`` (imported on first use)."""
    import importlib

    from ...errors import InputError

    if family not in TWINS:
        raise InputError(f"--backend numpyro: expected a family with a NumPyro twin ({', '.join(TWINS)}); "
                         f"got {family!r}")
    module, name = TWINS[family].split(":")
    return getattr(importlib.import_module(module, __package__), name)

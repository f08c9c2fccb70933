"""Argument checks shared by the Pyro families and their NumPyro twins (no torch here: the twins import it).

Each returns the checked values or raises :class:`~ppl_dgm.errors.InputError` on one line.
"""

from __future__ import annotations

from ..errors import InputError, check_positive_int


def check_width(t, width: int, what: str, lead: str = "N") -> None:
    """Refuse a tensor ``t`` whose last dimension is not ``width`` in one line (a Python comparison: cheap on every
    call), rather than with the matrix-product error from inside a network; ``lead`` names the leading dims."""
    if t.dim() == 0 or t.shape[-1] != width:
        raise InputError(f"expected {what} of shape ({lead}, {width}); got shape {tuple(t.shape)}")


def check_vae_sizes(x_dim, latent_dim, hidden, x_scale) -> tuple[int, int, tuple[int, ...]]:
    """``(x_dim, latent_dim, hidden)`` checked to be positive sizes and ``x_scale`` > 0 (the VAE's arguments)."""
    x_dim, latent_dim = check_positive_int("x_dim", x_dim), check_positive_int("latent_dim", latent_dim)
    hidden = tuple(check_positive_int("each hidden width", h) for h in hidden)
    if not x_scale > 0:
        raise InputError(f"x_scale must be > 0; got {x_scale}")
    return x_dim, latent_dim, hidden


def check_layers(layers, latent_dims) -> tuple[int, list[int]]:
    """``layers`` >= 1 and one positive latent size per layer (one size given: every layer's), checked (the HVAE's
    arguments); returns ``(layers, sizes)``."""
    layers = check_positive_int("layers", layers)
    dims = [check_positive_int("each latent size", d) for d in latent_dims]
    if len(dims) == 1 and layers > 1:
        dims = dims * layers  # one size for every layer
    if len(dims) != layers:
        raise InputError(f"expected one positive latent size per layer (or one for all); "
                         f"got layers={layers}, latent_dims={dims}")
    return layers, dims


def check_n_classes(n_classes) -> int:
    """The number of labels C, checked to be an integer >= 2 (the CVAE's argument)."""
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise InputError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    return n_classes

"""Equinox networks of the NumPyro twins, laid out as their torch counterparts in :mod:`ppl_dgm.nn`.

An :class:`MLP` here has the same layers, initialisation law (uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights
and biases, as ``torch.nn.Linear``) and weight layout (``weight`` of shape (out, in)) as ``ppl_dgm.nn.MLP``, so the
weights of one backend load into the other: :func:`mlp_state` names them as a torch ``state_dict`` does
(``<prefix>.0.weight``, ``<prefix>.2.weight``, ...: the ReLUs take the odd indices of the ``nn.Sequential``) and
:func:`mlp_from_state` reads them back.  Inside a NumPyro model a network is registered with
``numpyro.contrib.module.eqx_module(name, net)``; its parameters are then the site ``name + "$params"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

PARAMS = "$params"
"""The suffix ``eqx_module`` gives a network's parameter site."""


class MLP(eqx.Module):
    """``in_dim -> hidden[0] -> ... -> out_dim`` with a ReLU between layers; acts on (..., in_dim) arrays.

    Parameters
    ----------
    in_dim, out_dim : int
    hidden : sequence of int
        Widths of the hidden layers (may be empty: a linear map).
    key : jax.Array
        PRNG key of the initialisation.
    """

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *, key: jax.Array):
        dims = [in_dim, *hidden, out_dim]
        keys = jax.random.split(key, len(dims) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(dims[:-1], dims[1:], keys))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Shape (..., in_dim) -> (..., out_dim): a batched matmul per layer (no vmap needed)."""
        for i, layer in enumerate(self.layers):
            x = x @ layer.weight.T + layer.bias
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


def mlp_state(prefix: str, net: MLP) -> dict[str, np.ndarray]:
    """The weights of ``net`` under the names of a torch ``state_dict`` of ``ppl_dgm.nn.MLP`` at ``prefix``."""
    out = {}
    for i, layer in enumerate(net.layers):
        out[f"{prefix}.{2 * i}.weight"] = np.asarray(layer.weight)
        out[f"{prefix}.{2 * i}.bias"] = np.asarray(layer.bias)
    return out


def mlp_from_state(net: MLP, prefix: str, state: Mapping[str, np.ndarray]) -> MLP:
    """``net`` with the weights ``state[<prefix>.<2i>.weight|bias]`` (a torch ``state_dict``, as arrays)."""
    leaves = []
    for i, layer in enumerate(net.layers):
        for part in ("weight", "bias"):
            value = np.asarray(state[f"{prefix}.{2 * i}.{part}"])
            if value.shape != getattr(layer, part).shape:
                raise ValueError(f"{prefix}.{2 * i}.{part}: expected shape {getattr(layer, part).shape}; "
                                 f"got {value.shape}")
            leaves.append(jnp.asarray(value, dtype=getattr(layer, part).dtype))
    where = lambda m: [getattr(layer, p) for layer in m.layers for p in ("weight", "bias")]
    return eqx.tree_at(where, net, leaves)


def trainable(net: eqx.Module) -> eqx.Module:
    """The floating-point leaves of ``net`` (what ``eqx_module`` registers as its parameter site)."""
    return eqx.partition(net, eqx.is_inexact_array)[0]

"""What every NumPyro model–guide twin shares: its networks, its parameters, and the weight exchange with torch.

A twin is built from the same constructor arguments as its Pyro family (a run's ``config.json`` ``model``
section), holds its equinox networks under the *torch* module names (``"encoder"``, ``"q_layers.0.net"``, ...)
and registers each in ``model``/``guide`` with ``eqx_module(name, net)``, so NumPyro's parameter site of a network
is ``name + "$params"``.  :meth:`Twin.torch_state` / :meth:`Twin.params_from_torch` turn NumPyro parameters into a
torch ``state_dict`` (as NumPy arrays) and back: the run directory of a NumPyro fit stores the former, so every
``ppl-dgm`` command loads it into the Pyro family, and the parity tests copy weights across in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.contrib.module import eqx_module

from ...errors import InputError
from ..nn import MLP, PARAMS, mlp_from_state, mlp_state, trainable


class Twin:
    """Base class of the NumPyro twins.

    Attributes
    ----------
    family : str
        The registry name of the Pyro family this twins.
    nets : dict of str -> MLP
        The networks at initialisation, by torch module name.
    extra : dict of str -> array
        Plain parameters (``numpyro.param`` sites named as the torch parameters), at initialisation.
    config : dict
        The constructor arguments (the run's ``config.json`` ``model`` section).
    """

    family = ""
    conditional = False
    latent_sites: tuple[str, ...] = ("z",)

    def __init__(self, config: dict[str, Any]):
        self.config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
        self.nets: dict[str, MLP] = {}
        self.extra: dict[str, jax.Array] = {}

    def net(self, name: str) -> MLP:
        """The network ``name`` registered as the parameter site ``name$params`` (call inside model/guide)."""
        return eqx_module(name, self.nets[name])

    def init_params(self) -> dict[str, Any]:
        """NumPyro's parameter dict at initialisation (what ``SVI.get_params`` returns)."""
        return {**{n + PARAMS: trainable(m) for n, m in self.nets.items()}, **self.extra}

    def with_params(self, params: Mapping[str, Any]) -> dict[str, MLP]:
        """The networks with the weights of ``params`` (for calling them outside a model)."""
        import equinox as eqx

        return {n: eqx.combine(params[n + PARAMS], m) for n, m in self.nets.items()}

    def torch_state(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``params`` as the ``state_dict`` of the Pyro family (NumPy arrays, torch names and layouts)."""
        out: dict[str, np.ndarray] = {}
        for name, net in self.with_params(params).items():
            out.update(mlp_state(name, net))
        out.update({k: np.asarray(params[k]) for k in self.extra})
        return out

    def params_from_torch(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """NumPyro parameters from the Pyro family's ``state_dict`` (tensors or arrays); names must match."""
        state = {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state.items()}
        expected = set(self.torch_state(self.init_params()))
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise InputError(f"expected the weights of a {self.family} with this config; missing {missing[:3]}, "
                             f"unexpected {extra[:3]}")
        out = {n + PARAMS: trainable(mlp_from_state(m, n, state)) for n, m in self.nets.items()}
        out.update({k: jnp.asarray(state[k], dtype=v.dtype) for k, v in self.extra.items()})
        return out

    @staticmethod
    def keys(seed: int, n: int) -> list[jax.Array]:
        """``n`` PRNG keys for the initial weights of ``n`` networks."""
        return list(jax.random.split(jax.random.PRNGKey(seed), n))

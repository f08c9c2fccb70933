"""The base class of every family: a torch module with a Pyro ``model`` and ``guide``.

Parameters live on the module (never in Pyro's global param store), so two
fits in one process never share state.  ``config`` holds the constructor
arguments as JSON, which is all a run directory needs to rebuild the model.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import CheckpointError


class GenerativeModel(nn.Module):
    """A model–guide pair.

    Subclasses define ``model(x, y=None)``, ``guide(x, y=None)`` and
    ``sample(n)``, and call ``self._store_config(locals())`` in ``__init__``.
    """

    family: ClassVar[str] = ""

    def _store_config(self, local_vars: dict[str, Any]) -> None:
        # names missing from local_vars belong to a subclass, which stores its config after super().__init__
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self" and p in local_vars]
        cfg = {}
        for k in names:
            v = local_vars[k]
            cfg[k] = list(v) if isinstance(v, tuple) else v
        self.config = cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GenerativeModel:
        """Rebuild a model from its ``config`` (as stored in ``config.json``)."""
        try:
            return cls(**config)
        except TypeError as e:
            raise CheckpointError(f"model config for family {cls.family!r} does not fit its constructor: {e}") from None

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

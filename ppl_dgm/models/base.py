"""The contract every family keeps: a torch module with a Pyro ``model``, a ``guide`` and ``sample``.

Parameters live on the module (never in Pyro's global param store), so two fits in
one process never share state.  ``config`` holds the constructor arguments as JSON,
which is all a run directory needs to rebuild the model (:meth:`GenerativeModel.from_config`).

What a family can do beyond the contract is declared once, in its registry entry
(:mod:`ppl_dgm.models.registry`), never discovered with ``hasattr``:

- ``encoder=True``: :meth:`encode_mean` and :meth:`decode_mean` (latent tools, reconstructions);
- ``bound="exact"``: :meth:`log_prob` and :attr:`n_parameters`;
- ``bound="chain"``: ``chain_elbo(x)`` (the diffusion families);
- ``samplers``: the ``sampler=`` values :meth:`sample` accepts.
"""

from __future__ import annotations

import inspect
from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from ..data import check_class_labels
from ..errors import CheckpointError, InputError


class EStep(NamedTuple):
    """What an EM family's E-step returns to :func:`ppl_dgm.inference.em.fit_em` (course notes, EM section).

    Attributes
    ----------
    log_likelihood : float
        ``(1/N) sum_n log p(x_n | theta)`` under the parameters of this E-step.
    stats : Any
        Expected complete-data sufficient statistics (family-specific).
    """

    log_likelihood: float
    stats: Any


def recording() -> bool:
    """Whether a training step is being recorded as a graph (:mod:`ppl_dgm.inference.compiled`): its tensors are
    placeholders, so no value can be read (a check on values belongs in :meth:`GenerativeModel.check_data`) and no
    real tensor kept from an earlier call can enter the graph."""
    return get_proxy_mode() is not None


class GenerativeModel(nn.Module, metaclass=ABCMeta):
    """A model–guide pair (the DESIGN contract: site names ``z``, ``z_1..z_L``, ``x_1..x_T``, ``c``, ``x``, ``y``).

    Subclasses define :meth:`model`, :meth:`guide` and :meth:`sample`, and call
    ``self._store_config(locals())`` in ``__init__``.
    """

    family: ClassVar[str] = ""
    latent_sites: ClassVar[tuple[str, ...]] = ("z",)
    """The latent sites a KL weight (beta, warm-up, free bits) applies to."""
    conditional: bool = False
    """Takes labels y (training data need them; ``sample(n, y=...)``); ``n_classes`` labels 0..C-1."""
    records_step: ClassVar[bool] = False
    """Its SVI step can be recorded as a graph and replayed (:mod:`ppl_dgm.inference.compiled`: no Python decision
    on a tensor's value, no Python state that changes during a fit), so ``fit_svi`` does so by default in long fits.
    Read from the class itself, never inherited: a subclass that keeps that promise declares it again."""
    point_mass_guide: ClassVar[bool] = False
    """The guide is a point mass (every draw of z is the same): the IWAE estimate equals the ELBO for every k, so
    ``evaluate`` computes it with k = 1."""

    # -- the contract ----------------------------------------------------------------
    @abstractmethod
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x, latents): data in ``pyro.plate("data", N)``, observed site ``"x"``; x of shape (N, D)."""

    @abstractmethod
    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(latents | x) with the model's latent site names; x of shape (N, D)."""

    @abstractmethod
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n new examples, shape (n, D)."""

    def check_data(self, *data: torch.Tensor) -> None:
        """Refuse in one line training or held-out data (``x``, and ``y`` for a conditional family, whole) that no
        step could use; ``fit_svi`` calls it once before fitting, so a recorded step need not check each minibatch's
        values.  Here: a conditional family's labels ``data[1]`` are integers in 0..C-1 (C = ``n_classes``)."""
        if self.conditional:
            if len(data) < 2 or data[1] is None:
                raise InputError(f"a conditional {self.family} needs labels y (integers 0..C-1): fit it on (x, y); "
                                 f"got x alone")
            check_class_labels(data[1], self.n_classes)

    # -- declared by capability (see the module docstring) ------------------------------
    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean of the latent code, shape (N, K) (families with ``encoder=True``)."""
        raise NotImplementedError(f"family {self.family!r} has no encoder")

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z], shape (N, D) (families with ``encoder=True``)."""
        raise NotImplementedError(f"family {self.family!r} has no decoder")

    # -- the training loop's hook ----------------------------------------------------------
    def end_epoch(self) -> dict[str, float]:
        """Called by ``fit_svi`` at the end of each training epoch, before the held-out evaluation and the
        checkpoint: a family's per-epoch work (e.g. the VQ-VAE's codebook usage and dead-code restarts).
        Returns metrics for the epoch's history record (default: none)."""
        return {}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z = E q(z | x)], shape (N, D)."""
        return self.decode_mean(self.encode_mean(x, y), y)

    # -- configuration -----------------------------------------------------------------
    def _store_config(self, local_vars: dict[str, Any]) -> None:
        # names missing from local_vars belong to a subclass, which stores its config after super().__init__
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self" and p in local_vars]
        self.config = {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, local_vars[k]) for k in names)}

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

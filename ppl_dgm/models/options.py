"""Fit options: the dataclasses whose fields are the ``ppl-dgm fit FAMILY`` options.

Every family has one config dataclass (in its own module) built from these
bases; it is the only place its defaults live.  The CLI turns each field into an
option (``latent_dim`` -> ``--latent-dim``, ``Literal`` -> a choice, ``tuple[int, ...]``
-> comma-separated integers), and a run directory stores the fields in
``config.json``.  Each field says where its value goes (``metadata["role"]``):

- ``"model"``: a constructor argument of the family's model;
- ``"train"``: an option of the trainer (``fit_svi``, or the EM estimator);
- ``"objective"``: an argument of :func:`ppl_dgm.inference.make_objective`.

:meth:`FitOptions.resolve` fills the defaults that depend on the data (``None`` fields).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..data import Dataset


def option(default: Any, help: str, *, role: str = "model", flags: tuple[str, ...] = (),
           min: float | None = None, min_open: bool = False) -> Any:
    """A dataclass field of a config: its default, its help line, where its value goes, and its CLI flags."""
    meta = {"help": help, "role": role, "flags": flags, "min": min, "min_open": min_open}
    return field(default=default, metadata=meta)


@dataclass
class FitOptions:
    """Options every family has; subclasses add theirs (and may redefine a field to change its default)."""

    def values(self, role: str) -> dict[str, Any]:
        """The fields with ``metadata["role"] == role``, as a dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("role") == role}

    def resolve(self, ds: Dataset) -> FitOptions:
        """A copy with the data-dependent defaults (``None`` fields) filled in for ``ds``."""
        return dataclasses.replace(self)

    def binarize(self, requested: str | None, image: bool) -> str:
        """The binarization of the training data: ``requested``, or the default: dynamic binarization of
        images for a Bernoulli likelihood (a fresh x ~ Bernoulli(grey level) every minibatch), else none."""
        return requested or ("dynamic" if image and getattr(self, "likelihood", None) == "bernoulli" else "none")

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        """Constructor arguments of the model for data ``ds``: the ``"model"`` fields plus the data's shape."""
        return {**self.values("model"), "x_dim": ds.dim, "image_shape": list(ds.shape)}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> FitOptions:
        """Rebuild from the ``train`` section of a ``config.json`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in names})


@dataclass
class SVIOptions(FitOptions):
    """Options of the SVI loop, :func:`ppl_dgm.inference.fit_svi`."""

    epochs: int | None = option(None, "Training epochs (default: 300 for digits, 50 otherwise).", role="train",
                                min=1)
    batch_size: int = option(128, "Examples per minibatch.", role="train", min=1)
    lr: float = option(1e-3, "Learning rate.", role="train", min=0, min_open=True)
    optimizer: Literal["adam", "clipped_adam"] = option("adam", "Optimizer.", role="train")
    lr_schedule: Literal["constant", "cosine", "exponential"] = option(
        "constant", "Learning rate against the epoch.", role="train")
    clip_norm: float | None = option(None, "Clip the global gradient norm.", role="train", min=0, min_open=True)
    checkpoint_every: int = option(10, "Save a checkpoint every N epochs (and at the end).", role="train", min=1)

    def resolve(self, ds: Dataset) -> SVIOptions:
        return dataclasses.replace(self, epochs=self.epochs or (300 if ds.name == "digits" else 50))


@dataclass
class ObjectiveOptions(FitOptions):
    """The ELBO variant trained (:func:`ppl_dgm.inference.make_objective`; notes 000 "Beta-VAE", notes 002 eq. (*))."""

    objective: Literal["analytic", "elbo", "iwae"] = option(
        "analytic", "Analytic-KL ELBO, Monte Carlo ELBO, or IWAE with --particles samples.", role="objective")
    particles: int = option(1, "Samples of the latents per example (k of IWAE).", role="objective", min=1)
    beta: float = option(1.0, "Weight of the KL term (beta-VAE); 0 is a deterministic-AE loss.", role="objective",
                         min=0)
    warmup_epochs: int = option(0, "Ramp the KL weight from 0 to beta over N epochs.", role="objective", min=0)
    free_bits: float = option(0.0, "Floor (nats) on each latent dimension's batch-mean KL (ELBO objectives).",
                              role="objective", min=0)


@dataclass
class EMOptions(FitOptions):
    """Options of EM (course notes, EM section): stopping rule and precision."""

    max_iter: int = option(100, "EM iterations at most (per restart).", role="train", min=1)
    tol: float = option(1e-3, "Stop when the mean log-likelihood changes by less than this.", role="train", min=0)
    dtype: Literal["float64", "float32"] = option("float64", "Floating point precision.", role="train")

    def estimator_params(self) -> dict[str, Any]:
        """Keyword arguments of the family's scikit-learn estimator."""
        return self.values("train")

"""The family registry: every family, what it can do, and its fit options.

A family is one module (its model class and its config dataclass) plus one
:class:`Family` entry below.  Every command asks the registry what a family can
do; a command a family cannot do is refused by :func:`require` in one line that
names the families that can.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

from ..errors import InputError
from .ae import AE
from .base import GenerativeModel
from .cvae import CVAE, CVAEConfig
from .diffusion import DDPM, DDPMConfig
from .gmm import GMM, GMMConfig
from .hvae import HVAE, HVAEConfig
from .options import FitOptions
from .ppca import PPCA, PPCAConfig
from .vae import VAE, VAEConfig

Trainer = Literal["svi", "em", "adversarial", "ml"]
Bound = Literal["iwae", "chain", "exact"]


@dataclass(frozen=True)
class Family:
    """A family and its capabilities.

    Attributes
    ----------
    name : str
        As typed after ``ppl-dgm fit``.
    model : type of GenerativeModel
    config : type of FitOptions
        Its fit options and their defaults.
    trainer : {"svi", "em", "adversarial", "ml"}
        How it is fitted: ``fit_svi``, EM through its scikit-learn estimator, ...
    bound : {"iwae", "chain", "exact"} or None
        What ``evaluate`` reports: ELBO and IWAE log p(x); the diffusion chain ELBO; the exact
        log-likelihood.  None: no likelihood bound (a point-mass guide).
    encoder : bool
        Has ``encode_mean`` / ``decode_mean``: latent tools, reconstructions, ``sample --mean``.
    conditional : bool
        Takes labels ``y`` (training data need them; ``sample --label``).
    samplers : tuple of str
        The ``sample --sampler`` choices (first = default); empty if there is one way to sample.
    figures : tuple of str
        The pictures written into its run directory (see :mod:`ppl_dgm.plotting`).
    """

    name: str
    model: type[GenerativeModel]
    config: type[FitOptions]
    trainer: Trainer
    bound: Bound | None
    encoder: bool = False
    conditional: bool = False
    samplers: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()

    @property
    def exact_likelihood(self) -> bool:
        return self.bound == "exact"

    @property
    def summary(self) -> str:
        return (self.model.__doc__ or "").strip().splitlines()[0]

    def capabilities(self) -> dict:
        """JSON-able capabilities (``ppl-dgm list --json``)."""
        caps = {k: v for k, v in asdict(self).items() if k not in ("name", "model", "config")}
        return {**caps, "exact_likelihood": self.exact_likelihood, "summary": self.summary,
                "options": [f.name for f in fields(self.config)]}


_SVI_FIGURES = ("elbo", "samples", "reconstructions")
REGISTRY: dict[str, Family] = {f.name: f for f in (
    Family("vae", VAE, VAEConfig, "svi", "iwae", encoder=True, figures=_SVI_FIGURES),
    Family("cvae", CVAE, CVAEConfig, "svi", "iwae", encoder=True, conditional=True, figures=_SVI_FIGURES),
    Family("ae", AE, VAEConfig, "svi", None, encoder=True, figures=_SVI_FIGURES),
    Family("hvae", HVAE, HVAEConfig, "svi", "iwae", encoder=True, figures=_SVI_FIGURES),
    Family("ddpm", DDPM, DDPMConfig, "svi", "chain", samplers=("ddpm", "ddim"),
           figures=("elbo", "samples", "trajectory", "loss_per_t")),
    Family("gmm", GMM, GMMConfig, "em", "exact", figures=("loglik", "samples", "ellipses")),
    Family("ppca", PPCA, PPCAConfig, "em", "exact", encoder=True, figures=("loglik", "samples", "reconstructions")),
)}

# what each capability means in a refusal: "<command> needs <phrase>"
_PHRASES = {
    "encoder": "a family with an encoder",
    "conditional": "a conditional family",
    "samplers": "a family with a choice of samplers",
    "bound": "a family with a likelihood bound",
    "svi": "a family fitted by SVI",
}


def get_family(name: str) -> Family:
    """The registry entry of ``name``; unknown names are refused with the list of known ones."""
    if name not in REGISTRY:
        raise InputError(f"unknown family {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def families_with(capability: str) -> list[str]:
    """Names of the families that have ``capability`` (a key of the refusal phrases)."""
    if capability == "svi":
        return [n for n, f in REGISTRY.items() if f.trainer == "svi"]
    return [n for n, f in REGISTRY.items() if getattr(f, capability)]


def require(family: Family, capability: str, what: str) -> None:
    """Refuse ``what`` (e.g. ``"ppl-dgm latent"``) for a family that lacks ``capability``, in one line."""
    have = family.trainer == "svi" if capability == "svi" else bool(getattr(family, capability))
    if not have:
        raise InputError(f"{what} needs {_PHRASES[capability]} ({', '.join(families_with(capability))}); "
                         f"got {family.name!r}")

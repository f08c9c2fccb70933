"""The family registry: every family, what it can do, and its fit options.

A family is one module (its model class and its config dataclass) plus one
:class:`Family` entry below.  Every command asks the registry what a family can
do; a command a family cannot do is refused by :func:`require` in one line that
names the families that can.

The table below names each family's model class and config dataclass by module path
(``".vae:VAE"``), with its one-line summary, so the registry (and ``ppl-dgm fit --help``)
needs no torch; :attr:`Family.model` and :attr:`Family.config` import the family's module
on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

from ..errors import InputError

if TYPE_CHECKING:
    from .base import GenerativeModel
    from .options import FitOptions

Trainer = Literal["svi", "em", "adversarial", "ml"]
Bound = Literal["iwae", "chain", "exact", "dsm", "labels"]


@dataclass(frozen=True)
class Family:
    """A family and its capabilities.

    Attributes
    ----------
    name : str
        As typed after ``ppl-dgm fit``.
    model_ref, config_ref : str or type
        The model class (a :class:`GenerativeModel`) and its config dataclass (a :class:`FitOptions`:
        its fit options and their defaults), as ``"module:Name"`` (relative to ``ppl_dgm.models``)
        or the classes themselves; :attr:`model` and :attr:`config` are the classes.
    trainer : {"svi", "em", "adversarial", "ml"}
        How it is fitted: ``fit_svi`` (svi); EM through its scikit-learn estimator (em); ``fit_svi`` with an
        empty guide, so the ELBO is the exact log-likelihood and SVI is maximum likelihood (ml: no latents,
        hence no ``diagnose``); the GAN game of :mod:`ppl_dgm.inference.adversarial` on the same loop
        (adversarial: an implicit model, no likelihood, no ``evaluate`` bound).
    bound : {"iwae", "chain", "exact", "dsm"} or None
        What ``evaluate`` reports: ELBO and IWAE log p(x); the diffusion chain ELBO; the exact
        log-likelihood; the held-out denoising score-matching loss (not a bound: ``evaluate --exact`` gives
        log p(x) by the probability-flow ODE); a classifier's accuracy and log p(y | x).  None: nothing to score (a
        point-mass guide).
    encoder : bool
        Has ``encode_mean`` / ``decode_mean``: latent tools, reconstructions, ``sample --mean``.
    conditional : bool
        Can take labels ``y`` (training data need them; ``sample --label``): always (cvae), or when fitted so
        (``ddpm --conditional``); the model's ``conditional`` says which.
    samplers : tuple of str
        The ``sample --sampler`` choices (first = default); empty if there is one way to sample.
    figures : tuple of str
        The pictures written into its run directory (see :mod:`ppl_dgm.plotting`).
    generative : bool
        Draws examples (``sample``) and has latents or a chain to diagnose; False for a classifier.
    summary : str, optional
        One line: the first line of the model's docstring (read from the class when not given;
        ``tests/test_cli_help.py`` checks that the two agree).
    """

    name: str
    model_ref: str | type[GenerativeModel]
    config_ref: str | type[FitOptions]
    trainer: Trainer
    bound: Bound | None
    encoder: bool = False
    conditional: bool = False
    samplers: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    generative: bool = True
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.summary:
            object.__setattr__(self, "summary", (self.model.__doc__ or "").strip().splitlines()[0])

    @property
    def model(self) -> type[GenerativeModel]:
        """The model class (its module is imported on first use)."""
        return _resolve(self.model_ref)

    @property
    def config(self) -> type[FitOptions]:
        """The config dataclass: the fit options and their defaults."""
        return _resolve(self.config_ref)

    @property
    def exact_likelihood(self) -> bool:
        return self.bound == "exact"

    @property
    def ode(self) -> bool:
        """Has a probability-flow ODE: ``sample --sampler ode`` and ``evaluate --exact``."""
        return "ode" in self.samplers

    def capabilities(self) -> dict:
        """JSON-able capabilities (``ppl-dgm list --json``)."""
        caps = {k: getattr(self, k) for k in ("trainer", "bound", "encoder", "conditional", "samplers", "figures",
                                              "generative")}
        return {**caps, "exact_likelihood": self.exact_likelihood, "ode_likelihood": self.ode, "summary": self.summary,
                "options": [f.name for f in fields(self.config)]}


def _resolve(ref: str | type) -> type:
    """A class from ``"module:Name"`` (module relative to this package), or the class itself."""
    if not isinstance(ref, str):
        return ref
    module, name = ref.split(":")
    return getattr(importlib.import_module(module, __package__), name)


_SVI_FIGURES = ("elbo", "samples", "reconstructions")
REGISTRY: dict[str, Family] = {f.name: f for f in (
    Family("vae", ".vae:VAE", ".vae:VAEConfig", "svi", "iwae", encoder=True, figures=_SVI_FIGURES,
           summary="Variational autoencoder with a standard-normal prior and an amortized Gaussian guide."),
    Family("cvae", ".cvae:CVAE", ".cvae:CVAEConfig", "svi", "iwae", encoder=True, conditional=True,
           figures=_SVI_FIGURES,
           summary="Conditional VAE with MLP encoder q(z | x, y) and decoder p(x | z, y)."),
    Family("ae", ".ae:AE", ".vae:VAEConfig", "svi", None, encoder=True, figures=_SVI_FIGURES,
           summary="Autoencoder: the VAE's model with a point-mass amortized guide q(z | x) = delta(z - g_mu(x))."),
    Family("hvae", ".hvae:HVAE", ".hvae:HVAEConfig", "svi", "iwae", encoder=True, figures=_SVI_FIGURES,
           summary="Markovian HVAE with L stochastic layers z_1 (next to x) ... z_L (top)."),
    Family("vqvae", ".vqvae:VQVAE", ".vqvae:VQVAEConfig", "svi", "iwae", encoder=True, figures=_SVI_FIGURES,
           summary="Vector-quantized VAE: z_ij ~ Uniform{e_1..e_K} per position, a nearest-code point-mass guide."),
    Family("ddpm", ".diffusion:DDPM", ".diffusion:DDPMConfig", "svi", "chain", conditional=True,
           samplers=("ddpm", "ddim", "langevin", "pc", "ode"),
           figures=("elbo", "samples", "trajectory", "loss_per_t"),
           summary="Denoising diffusion probabilistic model with an epsilon-prediction network."),
    Family("score", ".score:ScoreModel", ".score:ScoreConfig", "svi", "dsm", samplers=("langevin", "pc", "ode"),
           figures=("elbo", "samples", "trajectory", "loss_per_sigma"),
           summary="Noise-conditional score network s_theta(x, sigma) trained by denoising score matching."),
    Family("classifier", ".classifier:Classifier", ".classifier:ClassifierConfig", "svi", "labels",
           figures=("elbo",), generative=False,
           summary="Classifier p_phi(y | x_t, t) of noisy (or clean) examples, for classifier guidance and sample "
                   "scores."),
    Family("gmm", ".gmm:GMM", ".gmm:GMMConfig", "em", "exact", figures=("loglik", "samples", "ellipses"),
           summary="Gaussian mixture fitted by EM: c ~ Categorical(pi), x | c ~ N(mu_c, Sigma_c); exact posterior "
                   "guide."),
    Family("ppca", ".ppca:PPCA", ".ppca:PPCAConfig", "em", "exact", encoder=True,
           figures=("loglik", "samples", "reconstructions"),
           summary="Probabilistic PCA: z ~ N(0, I), x | z ~ N(W z + mu, sigma^2 I); exact posterior guide."),
    Family("flow", ".flow:Flow", ".flow:FlowConfig", "ml", "exact", figures=("elbo", "samples"),
           summary="Normalizing flow (RealNVP or neural spline couplings) with an exact or dequantized "
                   "log-likelihood."),
    Family("fvsbn", ".fvsbn:FVSBN", ".fvsbn:FVSBNConfig", "ml", "exact", figures=("elbo", "samples"),
           summary="Fully visible sigmoid belief network: p(x) = prod_i Bernoulli(x_i | sigmoid(a_i + sum_{j<i} "
                   "W_ij x_j))."),
    Family("gan", ".gan:GAN", ".gan:GANConfig", "adversarial", None, encoder=True,
           figures=("game", "samples", "reconstructions"),
           summary="Generative adversarial network: z ~ N(0, I), x = G_theta(z) (an implicit model), with a "
                   "discriminator."),
    Family("pixelcnn", ".pixelcnn:PixelCNN", ".pixelcnn:PixelCNNConfig", "ml", "exact", figures=("elbo", "samples"),
           summary="PixelCNN (gated, no blind spot): p(x) = prod_i Categorical(x_i | softmax f_theta(x_<i)_i) over "
                   "the pixels."),
)}

# what each capability means in a refusal: "<command> needs <phrase>"
_PHRASES = {
    "encoder": "a family with an encoder",
    "conditional": "a conditional family",
    "samplers": "a family with a choice of samplers",
    "bound": "a family with a likelihood bound",
    "ode": "a family with a probability-flow ODE",
    "generative": "a generative family",
    "svi": "a family with latent variables and a guide, fitted by SVI",
}


def get_family(name: str) -> Family:
    """The registry entry of ``name``; unknown names are refused with the list of known ones."""
    if name not in REGISTRY:
        raise InputError(f"unknown family {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _has(family: Family, capability: str) -> bool:
    return family.trainer == "svi" if capability == "svi" else bool(getattr(family, capability))


def families_with(*capabilities: str) -> list[str]:
    """Names of the families that have every one of ``capabilities`` (keys of the refusal phrases)."""
    return [n for n, f in REGISTRY.items() if all(_has(f, c) for c in capabilities)]


def require(family: Family, capability: str | tuple[str, ...], what: str, hint: str = "") -> None:
    """Refuse ``what`` (e.g. ``"ppl-dgm latent"``) for a family that lacks ``capability`` (or any of a tuple of
    them), in one line naming the families that have them all (ending in ``hint``, if given: what to do instead)."""
    caps = (capability,) if isinstance(capability, str) else capability
    if not all(_has(family, c) for c in caps):
        needs = _PHRASES[caps[0]]  # "a generative family" + "with latent variables ..." reads as one phrase
        for c in caps[1:]:
            rest = _PHRASES[c].removeprefix("a family ")
            needs += f" {rest}" if rest != _PHRASES[c] else f" and {rest}"
        raise InputError(f"{what} needs {needs} ({', '.join(families_with(*caps))}); "
                         f"got {family.name!r}{'; ' + hint if hint else ''}")

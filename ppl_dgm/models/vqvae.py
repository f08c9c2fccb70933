"""The vector-quantized VAE (van den Oord et al. 2017; course notes 001, "K-means + VAE").

Notes 001 describe the VQ-VAE as "a combination of K-Means + VAE": the latent space is discrete.  An encoder
g maps x to a map of P = h w vectors z_e = g(x) in R^d; each is replaced by the nearest of K codes e_1..e_K
(K-means' assignment step), and the decoder reads the code map.  As a probabilistic program
(plate ``"data"``; :class:`~ppl_dgm.nn.quantize.VectorQuantizer` holds the codebook):

.. math::  z_{ij} \\sim \\mathrm{Categorical}(1/K, \\dots, 1/K), \\qquad
           x \\mid z \\sim p_\\theta(x \\mid e_{z_{11}}, \\dots, e_{z_{hw}})

with the likelihoods of the VAE (Bernoulli for data in [0, 1]).  The latent site ``"z"`` holds the code
*vectors* e_{z_ij} (flattened to (N, P d)), so the decoder can be fed the straight-through value.  The guide
is a point mass on the nearest codes:

.. math::  q(z \\mid x) = \\delta\\big(z_{ij} = k(g(x)_{ij})\\big), \\qquad
           k(v) = \\arg\\min_k \\lVert v - e_k \\rVert^2,

so KL(q || p) = sum_ij log K = h w log K, a constant, and the ELBO of notes 001,
E_q[log p(x | z)] - KL(q || p) = log p(x | e_{k(g(x))}) - h w log K, is a valid lower bound on log p(x)
(``evaluate`` reports it; a point mass makes the IWAE estimate equal to it for every k).

Training maximises that ELBO through the shared ``fit_svi`` loop, with the two terms of van den Oord et al.
that are *not* ELBO terms added as ``pyro.factor`` sites of the guide, in training only:

- ``"codebook_loss"``: sum_ij ||sg[z_e] - e_k||^2 (gives the codebook its only gradient; absent with EMA);
- ``"commitment_loss"``: beta sum_ij ||z_e - sg[e_k]||^2 (gradient to the encoder only).

A factor in the guide adds to log q(z | x), so the ELBO log p - log q loses it: the training loss -ELBO gains
both terms.  The decoder is fed z_e + sg[z_q - z_e] (straight-through).  The training forward pass also
counts code usage, and (``ema``) moves the codebook by moving averages; :meth:`VQVAE.end_epoch` reports the
epoch's codebook perplexity and dead codes, and restarts the dead codes at random encoder outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from ..data import Dataset
from ..errors import InputError, check_choice, check_positive_int
from ..nn import MLP, ConvMapDecoder28, ConvMapEncoder28, VectorQuantizer
from .base import GenerativeModel
from .options import SVIOptions, option
from .vae import LIKELIHOODS, VAE, Likelihood


@dataclass
class VQVAEConfig(SVIOptions):
    """Fit options of ``vqvae``."""

    epochs: int | None = option(None, "Training epochs (default: 300 for digits, 15 otherwise).", role="train", min=1)
    n_codes: int = option(64, "K, the number of codes in the codebook.", min=1)
    code_dim: int = option(16, "d, the size of a code vector.", min=1)
    code_shape: tuple[int, ...] | None = option(None, "h,w of the code map (default 7,7 for 28x28 images, the conv "
                                                "arch's only map; else 2,2).")
    arch: Literal["auto", "mlp", "conv"] = option("auto", "Encoder/decoder: auto is conv for 28x28 images, else mlp.")
    hidden: tuple[int, ...] = option((256,), "Hidden widths of the mlp encoder and (mirrored) decoder.")
    channels: int = option(16, "conv: channels of the first layer (2x in the others).", min=1)
    likelihood: Likelihood = option("bernoulli", "p(x | z); Bernoulli and continuous Bernoulli take data in [0, 1].")
    x_scale: float = option(0.1, "sigma of the Gaussian likelihood (initial value for gaussian-learned).", min=0,
                            min_open=True)
    beta: float = option(0.25, "Weight of the commitment loss ||z_e - sg[e]||^2.", min=0)
    ema: bool = option(False, "Update the codebook by moving averages of its assignments (no codebook loss).")
    ema_decay: float = option(0.99, "gamma of the EMA codebook updates.", min=0, min_open=True, max=1, max_open=True)
    restarts: bool = option(True, "Move the codes unused over an epoch to random encoder outputs at its end (on).",
                            flags=("--restarts/--no-restarts",))

    def resolve(self, ds: Dataset) -> VQVAEConfig:
        out = super().resolve(ds)
        out.epochs = self.epochs or (300 if ds.name == "digits" else 15)
        image28 = tuple(ds.shape) in ((28, 28), (1, 28, 28))
        if out.arch == "auto":
            out.arch = "conv" if image28 else "mlp"
        if out.code_shape is None:
            out.code_shape = (7, 7) if out.arch == "conv" else (2, 2)
        return out


class UniformCodes(dist.TorchDistribution):
    """p(z): P positions, each one of the K code vectors with probability 1/K; values flattened to (..., P d).

    ``log_prob`` is -P log K for a value made of code vectors (each within a rounding error of its nearest
    code, as the guide's straight-through draws are) and -inf otherwise.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, codebook: torch.Tensor, positions: int, batch_shape=(), validate_args=None):
        self.codebook, self.positions = codebook, positions
        super().__init__(torch.Size(batch_shape), torch.Size((positions * codebook.shape[1],)), validate_args)

    def expand(self, batch_shape, _instance=None):
        return UniformCodes(self.codebook, self.positions, batch_shape)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        k = torch.randint(self.codebook.shape[0], shape + (self.positions,), device=self.codebook.device)
        return self.codebook.detach()[k].reshape(shape + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k, d = self.codebook.shape
        e = self.codebook.detach().to(value.dtype)
        v = value.detach().reshape(-1, d)
        gap = (v.pow(2).sum(1, keepdim=True) - 2 * v @ e.T + e.pow(2).sum(1)[None]).min(1).values
        on_code = gap <= 1e-4 * (1 + v.pow(2).sum(1))
        ok = on_code.reshape(value.shape[:-1] + (self.positions,)).all(-1)
        lp = torch.where(ok, value.new_tensor(-self.positions * math.log(k)), value.new_tensor(-math.inf))
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))


class VQVAE(GenerativeModel):
    """Vector-quantized VAE: z_ij ~ Uniform{e_1..e_K} per position, a nearest-code point-mass guide.

    Parameters
    ----------
    x_dim : int
        D, the size of a flattened example.
    n_codes : int
        K, the codebook size.
    code_dim : int
        d, the size of a code vector.
    code_shape : sequence of two int
        (h, w) of the code map; ``arch="conv"`` needs (7, 7).
    arch : {"mlp", "conv"}
        ``conv`` (28x28 images): a code per 4x4 patch (:class:`~ppl_dgm.nn.ConvMapEncoder28`); ``mlp``: an MLP
        from x to the P d numbers of the map and back.
    hidden : sequence of int
        Hidden widths of the mlp encoder and (mirrored) decoder.
    channels : int
        Channels of the conv encoder/decoder.
    likelihood : {"bernoulli", "gaussian", "gaussian-learned", "continuous-bernoulli"}
        p(x | z), as the VAE's.
    x_scale : float
        sigma of the Gaussian likelihoods.
    beta : float
        Weight of the commitment loss.
    ema : bool
        Codebook by moving averages (decay ``ema_decay``) instead of the codebook loss.
    restarts : bool
        Dead-code restarts at each epoch end (:meth:`end_epoch`).
    image_shape : sequence of int, optional
        The shape of one example.
    """

    family = "vqvae"
    point_mass_guide = True
    # the VAE's likelihoods p(x | decoder output) and their means, shared rather than copied
    _out_dist = VAE._out_dist
    _mean = VAE._mean

    def __init__(self, x_dim: int, n_codes: int = VQVAEConfig.n_codes, code_dim: int = VQVAEConfig.code_dim,
                 code_shape: Sequence[int] = (2, 2), arch: Literal["mlp", "conv"] = "mlp",
                 hidden: Sequence[int] = VQVAEConfig.hidden, channels: int = VQVAEConfig.channels,
                 likelihood: Likelihood = VQVAEConfig.likelihood, x_scale: float = VQVAEConfig.x_scale,
                 beta: float = VQVAEConfig.beta, ema: bool = VQVAEConfig.ema,
                 ema_decay: float = VQVAEConfig.ema_decay, restarts: bool = VQVAEConfig.restarts,
                 image_shape: Sequence[int] | None = None):
        super().__init__()
        check_choice("likelihood", likelihood, LIKELIHOODS)
        check_choice("arch", arch, ("mlp", "conv"))
        x_dim, channels = check_positive_int("x_dim", x_dim), check_positive_int("channels", channels)
        code_shape = tuple(check_positive_int("each code_shape entry", s) for s in code_shape)
        hidden = tuple(check_positive_int("each hidden width", h) for h in hidden)
        if len(code_shape) != 2:
            raise InputError(f"expected code_shape as two sizes h,w; got {code_shape}")
        if arch == "conv" and (x_dim != 784 or code_shape != (7, 7)):
            raise InputError(f"arch 'conv' maps 28x28 images (x_dim 784) to a 7x7 code map; got x_dim {x_dim} and "
                             f"code_shape {code_shape}")
        if not (x_scale > 0 and beta >= 0):
            raise InputError(f"expected x_scale > 0 and beta >= 0; got {x_scale} and {beta}")
        self._store_config(locals())
        self.x_dim, self.likelihood, self.x_scale, self.beta, self.restarts = x_dim, likelihood, x_scale, beta, restarts
        self.code_shape: tuple[int, int] = code_shape
        self.image_shape = tuple(image_shape) if image_shape else None
        self.quantizer = VectorQuantizer(n_codes, code_dim, ema_decay if ema else None)
        p, d = self.positions, code_dim
        if arch == "conv":
            self.encoder: nn.Module = ConvMapEncoder28(d, channels)
            self.decoder: nn.Module = ConvMapDecoder28(d, channels)
        else:
            self.encoder = MLP(x_dim, hidden, p * d)
            self.decoder = MLP(p * d, hidden[::-1], x_dim)
        self.arch = arch
        if likelihood == "gaussian-learned":
            self.x_log_scale = nn.Parameter(torch.full((x_dim,), math.log(x_scale)))

    @property
    def n_codes(self) -> int:
        """K."""
        return self.quantizer.n_codes

    @property
    def positions(self) -> int:
        """P = h w, the positions of the code map."""
        return self.code_shape[0] * self.code_shape[1]

    # -- networks ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e = g(x): (N, D) -> (N, P, d), positions in raster order."""
        h = self.encoder(x)
        if self.arch == "conv":  # (N, d, 7, 7) -> (N, 49, d)
            return h.flatten(2).transpose(1, 2)
        return h.reshape(x.shape[0], self.positions, self.quantizer.code_dim)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output (logits or means) for code vectors z (N, P d) -> (N, D)."""
        if self.arch == "conv":
            return self.decoder(z.reshape(-1, *self.code_shape, self.quantizer.code_dim).permute(0, 3, 1, 2))
        return self.decoder(z)

    def likelihood_dist(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z) for code vectors z (N, P d), event shape (D,)."""
        return self._out_dist(self._decode(z))

    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z_e = g(x) before quantization, flattened: (N, P d) (latent tools interpolate here)."""
        return self.encode(x).reshape(x.shape[0], -1)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | e_k(z)]: quantize z (..., P d) to its nearest codes, then decode -> (..., D).  A path of z_e thus
        decodes as a path in code space."""
        q = self.quantizer(z.reshape(-1, self.positions, self.quantizer.code_dim))
        return self._mean(self._decode(q.z_q.flatten(1))).reshape(*z.shape[:-1], -1)

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """k(g(x)): the code map, LongTensor (N, h, w)."""
        return self.quantizer.assign(self.encode(x)).reshape(x.shape[0], *self.code_shape)

    def _codes_to_z(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes, device=self.device)
        if codes.is_floating_point():
            if not torch.equal(codes, codes.round()):
                raise InputError("expected integer code indices; got fractional values")
            codes = codes.long()
        if codes.ndim < 2 or codes[0].numel() != self.positions:
            raise InputError(f"expected code maps of shape (N, {self.code_shape[0]}, {self.code_shape[1]}) or "
                             f"(N, {self.positions}); got {tuple(codes.shape)}")
        return self.quantizer.lookup(codes.reshape(codes.shape[0], -1)).reshape(codes.shape[0], -1)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """E[x | e_codes] for code maps (N, h, w) or (N, P) of indices 0..K-1 -> (N, D)."""
        return self._mean(self._decode(self._codes_to_z(codes)))

    def code_log_likelihood(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """log p(x | e_codes) per example, (N,), for x (N, D) and code maps (N, h, w) or (N, P)."""
        return self.likelihood_dist(self._codes_to_z(codes)).log_prob(x)

    # -- the model-guide pair ---------------------------------------------------------
    def prior(self, n: int) -> UniformCodes:
        """p(z): each of the P positions uniform over the K code vectors; batch shape (n,)."""
        return UniformCodes(self.quantizer.codebook, self.positions, (n,))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(x, z) = p(z) p_theta(x | z), z the code vectors (N, P d); x of shape (N, D)."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x.shape[0]))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(z | x) = delta(z - e_{k(g(x))}), drawn as z_e + sg[z_q - z_e]; in a training step (training mode,
        gradients on) also the loss factors, the usage counts and the EMA update (module docstring)."""
        z_e = self.encode(x)
        training = self.training and torch.is_grad_enabled()
        if training and not self.quantizer.initialized:
            self.quantizer.init_from(z_e)  # the codes start at K random encoder outputs (K-means' Forgy start)
        codes = self.quantizer.assign(z_e)
        if training:  # counts, restart candidates, and (EMA) the codebook moved before z_q is read from it
            self.quantizer.update(z_e, codes)
        q = self.quantizer(z_e, codes)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(q.z_st.reshape(x.shape[0], -1), event_dim=1))
            if training:  # in the guide, a factor enters log q: the ELBO loses it
                if not self.quantizer.ema:
                    pyro.factor("codebook_loss", q.codebook_loss.sum(-1), has_rsample=True)
                pyro.factor("commitment_loss", self.beta * q.commitment_loss.sum(-1), has_rsample=True)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, y=None) -> torch.Tensor:
        """n examples (n, D) from the uniform prior over code maps (the prior the ELBO uses): x ~ p(x | z) (or
        E[x | z] if ``mean``).  Samples of a fitted prior: ``ppl-dgm fit pixelcnn --codes-of RUN``."""
        z = self.prior(check_positive_int("n", n)).sample()
        return self.decode_mean(z) if mean else self.likelihood_dist(z).sample()

    @torch.no_grad()
    def end_epoch(self) -> dict[str, float]:
        """The epoch's codebook usage (perplexity exp H(p) of the average assignment, dead codes), then the dead
        codes restarted at random encoder outputs of the epoch's last minibatch (``restarts``); counts reset."""
        usage = self.quantizer.usage()
        dead = (usage.counts == 0).to(self.quantizer.counts.device)
        moved = self.quantizer.restart(dead) if self.restarts and usage.counts.sum() > 0 else 0
        self.quantizer.reset_usage()
        return {"codebook_perplexity": usage.perplexity, "dead_codes": usage.dead, "restarted_codes": moved}

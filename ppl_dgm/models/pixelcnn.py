"""PixelCNN with gated blocks, vertical and horizontal stacks (course notes 002 §1, "PixelCNN", "Masked
Convolution" & "BlindSpot"; van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

An image x of H x W pixels, each one of ``levels`` values (2 for binarized images, K for the code maps of a
VQ-VAE), is modelled in raster order by the chain rule of notes 002 §1:

.. math::  p(x) = \\prod_{i=1}^{HW} \\mathrm{Categorical}\\big(x_i \\mid \\mathrm{softmax}\\, f_\\theta(x_{<i})_i\\big),

where f_theta (:class:`~ppl_dgm.nn.GatedPixelCNN`) gives all HW conditionals in one pass because its
convolutions are masked: the first layer of type A (pixel i does not see x_i), the later ones of type B.  A
stack of plain masked convolutions misses the pixels above and to the right (the *blind spot*); the gated
blocks split the receptive field into a vertical stack (every pixel of the rows above) and a horizontal stack
(the pixels to the left, in the row), which reaches every earlier pixel within the receptive field.  The
input is the one-hot code of each pixel's value (zero padding then means "no pixel", distinct from every value).

There is no latent variable: the model observes ``x`` (event dimension: the HW pixels) in
``pyro.plate("data", N)``, the guide is empty, the ELBO is the exact log p(x), and ``fit_svi`` is maximum
likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..data import Dataset
from ..errors import InputError, check_positive_int
from ..nn import GatedPixelCNN, free_parameters
from .base import GenerativeModel
from .fvsbn import DiscreteOptions, check_levels
from .options import option

SMALL = 10_000  # training images: below, the small defaults (digits)
CHANNELS = 32  # the width of the stacks for larger data sets (28x28 images: 458 CPU s per epoch of 60,000)


@dataclass
class PixelCNNConfig(DiscreteOptions):
    """Fit options of ``pixelcnn``."""

    epochs: int | None = option(None, f"Training epochs (default: 100 for fewer than {SMALL:,} training images, as "
                                "digits, else 5).", role="train", min=1)
    channels: int | None = option(None, f"C, the width of the vertical and horizontal stacks (default: 16 for fewer "
                                  f"than {SMALL:,} training images, else {CHANNELS}).", min=1)
    layers: int = option(5, "Gated blocks after the first (type A) layer.", min=0)
    kernel_size: int = option(3, "Kernel k of the gated blocks (odd; reach k // 2 per block).", min=3)
    first_kernel_size: int = option(7, "Kernel of the first, type-A layer (odd).", min=3)
    codes_of: str | None = option(None, "A fitted vqvae run: model its code maps (a prior for the VQ-VAE)",
                                  role="data")

    def resolve(self, ds: Dataset) -> PixelCNNConfig:
        out = super().resolve(ds)
        small = len(ds.x_train) < SMALL  # digits (1,438 images) overfit 32 channels after ~50 epochs; 16 do not
        out.epochs = self.epochs or (100 if small else 5)
        out.channels = self.channels or (16 if small else CHANNELS)
        return out

    def binarize(self, requested: str | None, image: bool) -> str:
        if self.codes_of and requested not in (None, "none"):
            raise InputError(f"binarize: the code maps of --codes-of are discrete already; expected 'none'; got "
                             f"{requested!r}")
        return "none" if self.codes_of else super().binarize(requested, image)

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        image_hw(ds.shape)  # images first: data of another shape are refused for that, not for their values
        return {**super().model_kwargs(ds), "levels": self.levels_of(ds)}


def image_hw(shape: Sequence[int]) -> tuple[int, int]:
    """(H, W) of an example shape (H, W) or (1, H, W); other shapes are refused in one line."""
    hw = tuple(check_positive_int("each image_shape entry", s) for s in shape)
    hw = hw[1:] if len(hw) == 3 and hw[0] == 1 else hw
    if len(hw) != 2:
        raise InputError(f"pixelcnn models images of shape (H, W) or (1, H, W); got example shape {tuple(shape)} "
                         f"(fit fvsbn for vectors)")
    return hw


class PixelCNN(GenerativeModel):
    """PixelCNN (gated, no blind spot): p(x) = prod_i Categorical(x_i | softmax f_theta(x_<i)_i) over the pixels.

    Parameters
    ----------
    x_dim : int
        D = H W.
    image_shape : sequence of int
        (H, W), or (1, H, W) for a single channel.
    levels : int
        The values a pixel takes, 0 .. levels - 1 (2: binary images; K: a VQ-VAE's code maps).
    channels, layers, kernel_size, first_kernel_size : int
        The network (:class:`~ppl_dgm.nn.GatedPixelCNN`): width C, gated blocks, their kernel, the first
        (type-A) kernel.
    """

    family = "pixelcnn"
    latent_sites = ()

    def __init__(self, x_dim: int, image_shape: Sequence[int], levels: int = 2,
                 channels: int = CHANNELS, layers: int = PixelCNNConfig.layers,
                 kernel_size: int = PixelCNNConfig.kernel_size,
                 first_kernel_size: int = PixelCNNConfig.first_kernel_size):
        super().__init__()
        x_dim = check_positive_int("x_dim", x_dim)
        shape = image_hw(image_shape or ())
        if shape[0] * shape[1] != x_dim:
            raise InputError(f"image_shape {tuple(image_shape)} does not hold x_dim={x_dim} values")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise InputError(f"expected levels as an integer >= 2; got {levels!r}")
        self._store_config(locals())
        self.x_dim, self.image_shape, self.levels = x_dim, shape, levels
        self.net = GatedPixelCNN(levels, levels, channels, layers, kernel_size, first_kernel_size)

    @property
    def n_parameters(self) -> int:
        """Free parameters (masked-out kernel entries are not counted)."""
        return free_parameters(self)

    def _one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values (N, H, W) -> one-hot inputs (N, levels, H, W) in the network's dtype."""
        return F.one_hot(x.long(), self.levels).permute(0, 3, 1, 2).to(self.net.head[-1].weight.dtype)

    def _check(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise InputError(f"{what}: expected examples of shape (N, {self.x_dim}); got {tuple(x.shape)}")
        check_levels(x, self.levels, what)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """f_theta(x_<i)_i for every pixel i at once: x (N, D) -> (N, D, levels)."""
        out = self.net(self._one_hot(x.reshape(-1, *self.image_shape)))  # (N, levels, H, W)
        return out.flatten(2).transpose(1, 2)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """x_i | x_<i ~ Categorical(softmax f_theta(x_<i)_i), observed, for x (N, D) in the data plate."""
        x = self._check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Categorical(logits=self.logits(x)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """No latent: the ELBO is log p(x), and SVI is maximum likelihood."""

    def log_prob(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Exact log p(x) in nats, (N,), for x (N, D) with values in 0 .. levels - 1 (in chunks of rows)."""
        x = self._check(x)
        return torch.cat([dist.Categorical(logits=self.logits(part)).log_prob(part).sum(-1)
                          for part in x.split(batch_size)]) if len(x) else x.new_zeros(0)

    # -- sampling, pixel by pixel ----------------------------------------------------------
    def _row_terms(self, x: torch.Tensor, i: int) -> list[torch.Tensor]:
        """The vertical stack's terms of row i, each (N, 2C, 1, W), from x (N, H, W): computed on the rows
        ``i - reach .. i`` only (row i's terms read rows < i; rows further up are beyond the receptive field)."""
        top = max(0, i - self.net.reach)
        return [t[:, :, -1:] for t in self.net.vertical_terms(self._one_hot(x[:, top: i + 1]))]

    def _pixel_logits(self, x: torch.Tensor, terms: list[torch.Tensor], i: int, j: int) -> torch.Tensor:
        """Logits (N, levels) of pixel (i, j): the horizontal stack on row i, columns 0..j only."""
        row = self._one_hot(x[:, i: i + 1, : j + 1])
        return self.net.horizontal(row, [t[..., : j + 1] for t in terms])[:, :, 0, j]

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        """n images (n, D) of pixel values, drawn pixel by pixel in raster order.

        What is cached and what is recomputed: the vertical stack is run once per row, on the rows within its
        reach above (``net.reach``; the rows below are never computed), and its terms for that row are kept; for
        each pixel of the row only the horizontal stack (and the 1x1 head) is run, on that row up to the pixel.
        A pixel thus costs one row of horizontal convolutions instead of a pass over the whole image.
        """
        if kwargs:
            raise InputError(f"pixelcnn sample takes no options; got {sorted(kwargs)}")
        n = check_positive_int("n", n)
        h, w = self.image_shape
        x = torch.zeros(n, h, w, dtype=torch.long, device=self.device)
        for i in range(h):
            terms = self._row_terms(x, i)
            for j in range(w):
                x[:, i, j] = dist.Categorical(logits=self._pixel_logits(x, terms, i, j)).sample()
        return x.reshape(n, self.x_dim).to(self.net.head[-1].weight.dtype)

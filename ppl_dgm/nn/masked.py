"""Masked layers of autoregressive models (course notes 002 §1, "Masked Convolution" & "BlindSpot").

An autoregressive model p(x) = prod_i p(x_i | x_<i) (notes 002 §1, "Principle") needs networks whose output at
position i reads the inputs before i only.  The layers here get that by multiplying their weights by a fixed
0/1 mask:

- :class:`MaskedLinear`: ``y = x (W * M)^T + b``; with :func:`autoregressive_mask` (M_ij = 1 iff j < i) output i
  reads x_<i: the "entire logistic regression per pixel" of the FVSBN (notes 002 §1, "Entire Linear Regression").
- :class:`MaskedConv2d`: a convolution whose k x k kernel is masked around its centre, in raster order (rows top
  to bottom, each row left to right).  Type ``"A"`` hides the centre pixel (the first layer: output i must not
  see x_i); type ``"B"`` keeps it (later layers: feature i already depends on x_<i only).  ``stack="full"`` is
  the mask of the original PixelCNN (the rows above, and the pixels left of the centre); stacked, such layers
  leave a *blind spot*: pixels above and to the right of the current one that no number of layers reaches.
- :class:`GatedBlock`: the gated layer of van den Oord et al. (2016, "Conditional Image Generation with
  PixelCNN Decoders") that removes the blind spot by splitting the receptive field in two stacks: a
  *vertical* stack (every pixel of the rows above, ``stack="vertical"``) and a *horizontal* stack (the pixels
  left of the current one in its row, ``stack="horizontal"``) that also reads the vertical one.  Activations
  are gated, ``tanh(W_f * v) * sigmoid(W_g * v)``; the horizontal stack is residual.
- :class:`GatedPixelCNN`: the network: a type-A vertical and horizontal layer, ``layers`` gated blocks, and a
  1x1 head to ``out_channels`` logits per pixel.

A masked convolution keeps only the bounding box of its mask as its kernel (and pads the input asymmetrically to
keep the output centred), so the rows or columns that the mask zeroes cost nothing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, check_choice, check_positive_int

MaskType = Literal["A", "B"]
Stack = Literal["full", "vertical", "horizontal"]


def autoregressive_mask(d: int, strict: bool = True) -> torch.Tensor:
    """The (d, d) mask M of an autoregressive linear map: M_ij = 1 iff j < i (``strict``) or j <= i."""
    return torch.ones(d, d).tril(-1 if strict else 0)


class MaskedLinear(nn.Linear):
    """A linear layer y = x (W * M)^T + b whose weights are multiplied by a fixed 0/1 mask M.

    Parameters
    ----------
    mask : Tensor, shape (out_features, in_features)
        M; e.g. :func:`autoregressive_mask` (D, D) for output i reading inputs j < i.
    bias : bool
    """

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    @property
    def masked_weight(self) -> torch.Tensor:
        """W * M, shape (out_features, in_features)."""
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight, self.bias)


def conv_mask(kernel_size: int, mask_type: MaskType = "B", stack: Stack = "full") -> torch.Tensor:
    """The (k, k) 0/1 mask of a masked convolution around the centre (c, c), c = k // 2, in raster order.

    ``full``: the rows above the centre, and in the centre row the columns left of it (plus the centre for
    type B).  ``vertical``: every column of the rows above (type A) or of the rows above and the centre row
    (type B).  ``horizontal``: the centre row only, columns left of the centre (type A) or up to it (type B).
    """
    k = kernel_size
    if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
        raise InputError(f"expected the kernel size of a masked convolution as an odd integer >= 3; got {k!r}")
    check_choice("mask_type", mask_type, ("A", "B"))
    check_choice("stack", stack, ("full", "vertical", "horizontal"))
    c, centre = k // 2, int(mask_type == "B")
    m = torch.zeros(k, k)
    if stack == "vertical":
        m[: c + centre] = 1
    else:
        m[c, : c + centre] = 1
        if stack == "full":
            m[:c] = 1
    return m


class MaskedConv2d(nn.Conv2d):
    """A 2-D convolution with a masked k x k kernel (:func:`conv_mask`); output (N, C_out, H, W) as the input.

    Only the bounding box of the mask is stored as the kernel (a vertical type-B 3x3 kernel is 2x3, a
    horizontal type-A one 1x1) and the input is padded asymmetrically (zeros) so that output (i, j) is centred
    on input (i, j); F.pad's negative padding crops (a vertical type-A kernel ends a row above the centre).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        k, odd, >= 3.
    mask_type : {"A", "B"}
        A hides the centre pixel (first layer), B keeps it.
    stack : {"full", "vertical", "horizontal"}
    bias : bool
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: MaskType = "B",
                 stack: Stack = "full", bias: bool = True):
        full = conv_mask(kernel_size, mask_type, stack)
        rows, cols = full.sum(1).nonzero().flatten(), full.sum(0).nonzero().flatten()
        (r0, r1), (c0, c1), c = (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1])), kernel_size // 2
        super().__init__(in_channels, out_channels, (r1 - r0 + 1, c1 - c0 + 1), bias=bias)
        self.register_buffer("mask", full[r0: r1 + 1, c0: c1 + 1].clone())
        self.pad = (c - c0, c1 - c, c - r0, r1 - c)  # (left, right, top, bottom) for F.pad
        self.mask_type, self.stack = mask_type, stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type}, stack={self.stack}"


def gate(h: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) of the two halves (a, b) of the channels of h (N, 2C, ...) -> (N, C, ...)."""
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """One gated layer with a vertical and a horizontal stack (van den Oord et al. 2016, figure 2).

    .. math::  v' = \\tanh(W_{v,f} * v) \\odot \\sigma(W_{v,g} * v), \\qquad
               h' = h + W_o\\, \\mathrm{gate}(W_h * h + W_{vh} (W_v * v))

    ``W_v`` is a vertical type-B masked convolution (rows above and the current row of v, whose features already
    read only the rows above the pixel), ``W_h`` a horizontal type-B one (the current row up to the pixel), and
    ``W_vh``, ``W_o`` are 1x1 convolutions.  Split in :meth:`vertical` and :meth:`horizontal` so that a sampler
    can run the vertical stack once per row.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        c = channels
        self.v_conv = MaskedConv2d(c, 2 * c, kernel_size, "B", "vertical")
        self.h_conv = MaskedConv2d(c, 2 * c, kernel_size, "B", "horizontal")
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)

    def vertical(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(v', W_vh (W_v * v)): the next vertical stack and its term for the horizontal stack, (N, C|2C, H, W)."""
        f = self.v_conv(v)
        return gate(f), self.v_to_h(f)

    def horizontal(self, h: torch.Tensor, from_v: torch.Tensor) -> torch.Tensor:
        """h' = h + W_o gate(W_h * h + from_v), shape (N, C, H, W) (any width: a row, or part of one)."""
        return h + self.h_out(gate(self.h_conv(h) + from_v))

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_next, from_v = self.vertical(v)
        return v_next, self.horizontal(h, from_v)


class GatedPixelCNN(nn.Module):
    """The gated PixelCNN network: inputs (N, C_in, H, W) -> logits (N, C_out, H, W), output (i, j) reading the
    inputs before (i, j) in raster order only, all of them within its receptive field (no blind spot).

    Layers: a vertical and a horizontal masked convolution of type A (``first_kernel_size``), ``layers``
    :class:`GatedBlock` (``kernel_size``), then ELU, 1x1 (``channels``), ELU, 1x1 (``out_channels``) on the
    horizontal stack.  Output row i reads input rows ``i - reach .. i`` (:attr:`reach`), and columns up to
    ``first_kernel_size // 2 + layers * (kernel_size // 2)`` away; a 7x7 image is covered whole by a 7x7 first
    layer and 3 blocks of 3x3.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels (one-hot levels) and logits per pixel.
    channels : int
        C, the width of both stacks.
    layers : int
        Gated blocks (>= 0).
    kernel_size, first_kernel_size : int
        Odd, >= 3.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32, layers: int = 5,
                 kernel_size: int = 3, first_kernel_size: int = 7):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("channels", channels)):
            check_positive_int(name, v)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise InputError(f"expected layers as an integer >= 0; got {layers!r}")
        c = channels
        self.v_first = MaskedConv2d(in_channels, c, first_kernel_size, "A", "vertical")
        self.h_first = MaskedConv2d(in_channels, c, first_kernel_size, "A", "horizontal")
        self.blocks = nn.ModuleList(GatedBlock(c, kernel_size) for _ in range(layers))
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(c, c, 1), nn.ELU(), nn.Conv2d(c, out_channels, 1))
        self.reach = first_kernel_size // 2 + layers * (kernel_size // 2)

    def vertical_terms(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What each block's horizontal stack reads from the vertical one, each (N, 2C, H, W); reads rows < i."""
        v, terms = self.v_first(x), []
        for block in self.blocks:
            v, from_v = block.vertical(v)
            terms.append(from_v)
        return terms

    def horizontal(self, x: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
        """Logits (N, C_out, H', W') from inputs x (N, C_in, H', W') and the vertical terms of the same pixels
        (H' = 1: one row; W' may stop at the pixel being sampled)."""
        h = self.h_first(x)
        for block, from_v in zip(self.blocks, terms):
            h = block.horizontal(h, from_v)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(x, self.vertical_terms(x))


def free_parameters(module: nn.Module) -> int:
    """The number of free parameters of ``module``: masked weights count their unmasked entries only."""
    total = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, (MaskedLinear, MaskedConv2d)):
            per_entry = m.weight.numel() // m.mask.numel()
            total -= int(m.mask.numel() - m.mask.count_nonzero()) * per_entry
    return total

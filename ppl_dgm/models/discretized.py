"""The discretized Gaussian decoder p(x_0 | x_1) of Ho et al. 2020, eq. 13.

Pixels with 256 grey levels are mapped to the grid {-1, -1 + 2/255, ..., 1}; the
probability of a level is the Gaussian mass of its bin (the outer bins extend to
+-infinity), so the log-likelihood of images is a discrete one and the ELBO is a
bound in bits per dimension.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.special import log_ndtr


def to_grid(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Data in [0, 1] -> nearest of ``bins`` levels, rescaled to [-1, 1]."""
    return torch.round(x.clamp(0, 1) * (bins - 1)) * (2.0 / (bins - 1)) - 1.0


def _log_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails (reflect the upper tail to the lower one)."""
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    lb, la = log_ndtr(b), log_ndtr(a)
    return lb + torch.log(-torch.expm1((la - lb).clamp(max=-1e-12)))


class DiscretizedGaussian(dist.TorchDistribution):
    """Per-dimension Gaussian mass of the bin around each grid level (Ho eq. 13); event shape ().

    Parameters
    ----------
    loc, scale : Tensor
        Mean and standard deviation of the underlying Gaussian, in the [-1, 1] data space.
    bins : int
        Number of levels (256 for 8-bit images).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.interval(-1.0, 1.0)

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, bins: int = 256, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.bins = bins
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return DiscretizedGaussian(self.loc.expand(shape), self.scale.expand(shape), self.bins)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half = 1.0 / (self.bins - 1)
        inf = torch.full_like(self.loc, float("inf"))
        hi = torch.where(value > 1 - half, inf, (value + half - self.loc) / self.scale)
        lo = torch.where(value < -1 + half, -inf, (value - half - self.loc) / self.scale)
        return _log_mass(lo, hi)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(torch.Size(sample_shape))
            x = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, device=self.loc.device,
                                                                                dtype=self.loc.dtype)
            return to_grid((x + 1) / 2, self.bins)

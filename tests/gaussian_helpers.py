"""The exact eps networks of a DDPM for Gaussian data x_0 ~ N(mu, Sigma), shared by the diffusion tests.

E[eps | x_t] = sqrt(1 - abar_t) C_t^{-1} (x_t - sqrt(abar_t) mu), with C_t = abar_t Sigma + (1 - abar_t) I the
covariance of q(x_t).  Both take (and ignore) the labels ``y`` a DDPM's network is called with.
"""

import torch

from ppl_dgm.models.samplers import _interp


class OptimalEps(torch.nn.Module):
    """E[eps | x_t] for x_0 ~ N(mu, Sigma): sqrt(1 - abar) C_t^{-1} (x_t - sqrt(abar) mu).

    C_t = abar Sigma + (1 - abar) I is the covariance of q(x_t).
    """

    def __init__(self, schedule, mu, sigma):
        super().__init__()
        ab = schedule.alpha_bars
        C = ab[:, None, None] * sigma + (1 - ab)[:, None, None] * torch.eye(len(mu), dtype=torch.float64)
        self.register_buffer("A", (1 - ab).sqrt()[:, None, None] * torch.linalg.inv(C))
        self.register_buffer("b", ab.sqrt()[:, None] * mu)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        t = torch.as_tensor(t).expand(x.shape[:-1])
        A, b = self.A[t].to(x), self.b[t].to(x)
        return ((x - b)[..., None, :] @ A.transpose(-1, -2))[..., 0, :]


class GaussianEps(torch.nn.Module):
    """E[eps | x_t] for x_0 ~ N(mu, Sigma) at fractional t (abar_t = 1/(1 + sigma_t^2), sigma_t as in vp_field)."""

    def __init__(self, schedule, mu, cov):
        super().__init__()
        ab = schedule.alpha_bars[1:]
        self.log_sig, self.mu, self.cov = ((1 - ab) / ab).sqrt().log(), mu, cov
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[:-1])
        steps = torch.arange(1, len(self.log_sig) + 1, dtype=torch.float64)
        ab = 1 / (1 + _interp(t, steps, self.log_sig).exp() ** 2)[..., None, None]
        C = ab * self.cov + (1 - ab) * torch.eye(len(self.mu), dtype=torch.float64)
        r = (x.double() - ab[..., 0].sqrt() * self.mu)[..., None]
        return ((1 - ab).sqrt() * torch.linalg.solve(C, r))[..., 0].to(x)

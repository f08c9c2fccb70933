"""MAP estimation of the GMM by SVI with discrete enumeration (the alternative to EM).

Same generative program as :class:`ppl_dgm.models.gmm.GMM`, with weak priors on
the globals and a point-mass (Delta) guide on them::

    pi ~ Dirichlet(1_K),  mu_k ~ N(m_0, (10 s_0)^2 I),  Sigma_k = L_k L_k^T (a parameter)
    c_n ~ Categorical(pi)      summed out exactly by TraceEnum_ELBO
    x_n ~ N(mu_{c_n}, Sigma_k)

``TraceEnum_ELBO`` sums ``c`` out, so with Delta guides the objective is the log
joint ``log p(x | pi, mu, Sigma) + log p(pi) + log p(mu)``: gradient ascent on it
is MAP.  Assignments are recovered afterwards with ``infer_discrete``
(``temperature=0``: the MAP ``c_n``, i.e. the argmax responsibility).  Parameters
live on the module (no ``pyro.param``); the loop is plain torch Adam.
"""

from __future__ import annotations

from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, infer_discrete
from torch import Tensor, nn
from torch.nn.functional import softplus

from .gmm import GMMParams, precision_cholesky


class GMMMapResult(NamedTuple):
    """``params`` (full covariances), MAP ``assignments`` (N,), per-step ``losses``."""

    params: GMMParams
    assignments: Tensor
    losses: list


class GMMMap(nn.Module):
    """Full-covariance GMM with MAP (Delta) guide on ``pi`` and ``mu``.

    Parameters
    ----------
    init : GMMParams
        Starting point (e.g. the EM initialisation), full covariances (K, D, D).
    prior_loc, prior_scale : Tensor (D,), float
        Centre and scale of the prior on the means.
    """

    def __init__(self, init: GMMParams, prior_loc: Tensor, prior_scale: float) -> None:
        super().__init__()
        self.logits = nn.Parameter(init.weights.log().clone())
        self.locs = nn.Parameter(init.means.clone())
        chol = torch.linalg.cholesky(init.covariances)
        raw_diag = chol.diagonal(dim1=-2, dim2=-1).expm1().log()  # softplus^{-1}
        self.tril_raw = nn.Parameter(chol.tril(-1) + torch.diag_embed(raw_diag))
        self.register_buffer("prior_loc", prior_loc)
        self.prior_scale = float(prior_scale)

    def scale_tril(self) -> Tensor:
        d = self.tril_raw.diagonal(dim1=-2, dim2=-1)
        return self.tril_raw.tril(-1) + torch.diag_embed(softplus(d) + 1e-6)

    def model(self, x: Tensor) -> None:
        k, d = self.locs.shape
        weights = pyro.sample("weights", dist.Dirichlet(x.new_ones(k)))
        means = pyro.sample("means", dist.Normal(self.prior_loc.expand(k, d),
                                                 self.prior_scale).to_event(2))
        tril = self.scale_tril()
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.MultivariateNormal(means[c], scale_tril=tril[c]), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.sample("weights", dist.Delta(torch.softmax(self.logits, -1)).to_event(1))
        pyro.sample("means", dist.Delta(self.locs).to_event(2))

    def params(self) -> GMMParams:  # type: ignore[override]
        with torch.no_grad():
            tril = self.scale_tril()
            cov = tril @ tril.transpose(-1, -2)
            return GMMParams(torch.softmax(self.logits, -1), self.locs.clone(), cov,
                             precision_cholesky(cov, "full"))

    def map_assignments(self, x: Tensor) -> Tensor:
        """MAP ``c`` per point by ``infer_discrete(temperature=0)``, shape (N,)."""
        if self.locs.shape[0] == 1:  # one component: nothing to enumerate (Pyro would warn)
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        guide_tr = poutine.trace(self.guide).get_trace(x)
        model = infer_discrete(poutine.replay(self.model, trace=guide_tr), first_available_dim=-2,
                               temperature=0)
        with torch.no_grad():
            return poutine.trace(model).get_trace(x).nodes["c"]["value"]


def fit_gmm_map_svi(x: Tensor, init: GMMParams, *, steps: int = 300, lr: float = 0.05) -> GMMMapResult:
    """MAP-by-SVI for a full-covariance GMM from ``init`` (course notes' model, EM's start).

    Parameters
    ----------
    x : Tensor, shape (N, D)
    init : GMMParams
        Full-covariance starting parameters.
    steps, lr : Adam steps on the full data and learning rate.

    Returns
    -------
    GMMMapResult

    Notes
    -----
    Deterministic: ``c`` is summed out exactly and the guides are point masses,
    so no random draw is made (and no global seed is touched).
    """
    module = GMMMap(init, x.mean(0), 10.0 * float(x.std()))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = elbo.differentiable_loss(module.model, module.guide, x)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()) / x.shape[0])
    return GMMMapResult(module.params(), module.map_assignments(x), losses)

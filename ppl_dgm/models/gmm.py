"""Gaussian mixture model as a Pyro model–guide pair.

The generative program (course notes, EM section)::

    c_n ~ Categorical(pi)                      n = 1..N   (site "c", enumerable)
    x_n | c_n = k ~ N(mu_k, Sigma_k)                      (site "x", observed)

and the guide is the exact posterior ``q(c_n = k) = gamma(z_nk)``, the
responsibilities of the E-step.  Parameters are stored as buffers in the
shapes scikit-learn uses, with precision Cholesky factors ``U_k`` such that
``Sigma_k^{-1} = U_k U_k^T``:

============  ======================  ====================
type          covariances             precisions_cholesky
============  ======================  ====================
full          (K, D, D)               (K, D, D)
tied          (D, D)                  (D, D)
diag          (K, D)                  (K, D)
spherical     (K,)                    (K,)
============  ======================  ====================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import InputError, check_choice, check_positive_int
from .base import GenerativeModel
from .options import EMOptions, option

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass
class GMMConfig(EMOptions):
    """Fit options of ``gmm``: the parameters of :class:`ppl_dgm.GaussianMixture`."""

    n_components: int = option(3, "K, the number of components.", role="train", flags=("--components", "-k"), min=1)
    covariance_type: CovarianceType = option("full", "Shape of the covariances.", role="train",
                                             flags=("--covariance",))
    n_init: int = option(1, "Restarts; the best is kept.", role="train", min=1)
    init_params: Literal["kmeans", "k-means++", "random_from_data", "random"] = option(
        "kmeans", "Initial responsibilities.", role="train", flags=("--init",))
    reg_covar: float = option(1e-6, "Added to the covariance diagonals.", role="train", min=0)
    backend: Literal["torch", "jax", "svi", "numpyro"] = option(
        "torch", "torch: EM; jax: jit-compiled EM; svi / numpyro: MAP by Pyro / NumPyro SVI with the "
        "assignments summed out.", role="train")

COLLAPSE_MESSAGE = (
    "expected every mixture component to keep a positive-definite covariance; got an "
    "ill-defined covariance (a collapsed or singleton component) even after adding "
    "reg_covar={reg}: decrease n_components, increase reg_covar, or rescale the data"
)


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture (shapes in the module docstring).

    Attributes
    ----------
    weights : Tensor, shape (K,)
    means : Tensor, shape (K, D)
    covariances : Tensor
    precisions_cholesky : Tensor
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor
    precisions_cholesky: Tensor


def precision_cholesky(covariances: Tensor, covariance_type: str, reg_covar: float = 0.0) -> Tensor:
    """Cholesky factor ``U`` of the precision, ``Sigma^{-1} = U U^T`` (upper triangular).

    Computed as ``U = L^{-T}`` from ``Sigma = L L^T`` (as scikit-learn does).

    Raises
    ------
    InputError
        If a covariance is not positive definite (a collapsed component).
    """
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(covariances)
        if bool((info != 0).any()):
            raise InputError(COLLAPSE_MESSAGE.format(reg=reg_covar))
        eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
        eye = eye.expand_as(chol)
        return torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
    if bool((covariances <= 0).any()):
        raise InputError(COLLAPSE_MESSAGE.format(reg=reg_covar))
    return covariances.rsqrt()


def precision_cholesky_from_precisions(precisions: Tensor, covariance_type: str) -> Tensor:
    """A factor ``U`` with ``U U^T = precisions`` (lower Cholesky for full/tied)."""
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(precisions)
        if bool((info != 0).any()):
            raise InputError("expected positive-definite precisions_init; got a matrix that is not")
        return chol
    if bool((precisions <= 0).any()):
        raise InputError("expected positive precisions_init; got a non-positive entry")
    return precisions.sqrt()


def covariances_from_precision_cholesky(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """Invert :func:`precision_cholesky`: ``Sigma = (U U^T)^{-1}``."""
    if covariance_type in ("full", "tied"):
        return torch.cholesky_inverse(prec_chol.transpose(-1, -2), upper=True)
    return prec_chol.pow(-2)


def log_det_cholesky(prec_chol: Tensor, covariance_type: str, n_features: int) -> Tensor:
    """``log det U_k = 1/2 log det Sigma_k^{-1}``, shape (K,) (or scalar for tied)."""
    if covariance_type in ("full", "tied"):
        return prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if covariance_type == "diag":
        return prec_chol.log().sum(-1)
    return n_features * prec_chol.log()


def log_gaussian_prob(x: Tensor, means: Tensor, prec_chol: Tensor, covariance_type: str) -> Tensor:
    """``log N(x_n | mu_k, Sigma_k)`` for all n, k.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    means : Tensor, shape (K, D)
    prec_chol : Tensor
        Precision Cholesky factors (module docstring).

    Returns
    -------
    Tensor, shape (N, K)
        ``-1/2 (D log 2 pi + ||U_k^T (x_n - mu_k)||^2) + log det U_k``.
    """
    n_features = x.shape[-1]
    log_det = log_det_cholesky(prec_chol, covariance_type, n_features)
    if covariance_type == "full":
        # y_nkd = sum_e x_ne U_ked - (mu_k U_k)_d ; memory N*K*D (callers chunk)
        y = torch.einsum("ne,ked->nkd", x, prec_chol) - torch.einsum("ke,ked->kd", means, prec_chol)
        maha = y.pow(2).sum(-1)
    elif covariance_type == "tied":
        y = (x @ prec_chol).unsqueeze(1) - (means @ prec_chol).unsqueeze(0)
        maha = y.pow(2).sum(-1)
    elif covariance_type == "diag":
        p = prec_chol.pow(2)
        maha = (means.pow(2) * p).sum(1) - 2.0 * x @ (means * p).T + x.pow(2) @ p.T
    else:
        p = prec_chol.pow(2)
        maha = (
            means.pow(2).sum(1) * p
            - 2.0 * (x @ means.T) * p
            + x.pow(2).sum(1, keepdim=True) * p
        )
    return -0.5 * (n_features * math.log(2 * math.pi) + maha) + log_det


class GMM(GenerativeModel):
    """Gaussian mixture fitted by EM: c ~ Categorical(pi), x | c ~ N(mu_c, Sigma_c); exact posterior guide.

    Parameters
    ----------
    weights : Tensor, shape (K,)
    means : Tensor, shape (K, D)
    covariances : Tensor
        Shape according to ``covariance_type`` (module docstring).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    chunk_size : int
        Rows per chunk in :meth:`log_resp` / :meth:`log_prob` (memory O(chunk K D)).
    """

    family = "gmm"
    latent_sites = ("c",)

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covariances: Tensor,
        covariance_type: CovarianceType = "full",
        chunk_size: int = 8192,
    ) -> None:
        super().__init__()
        self.covariance_type = check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
        self.config = {"n_components": int(weights.shape[0]), "n_features": int(means.shape[1]),
                       "covariance_type": covariance_type}
        self.chunk_size = int(chunk_size)
        self.register_buffer("weights", weights)
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("precisions_cholesky", precision_cholesky(covariances, covariance_type))

    @classmethod
    def from_params(cls, params: GMMParams, covariance_type: CovarianceType) -> GMM:
        """Build from a :class:`GMMParams` (keeps its precision factors)."""
        gmm = cls(params.weights, params.means, params.covariances, covariance_type)
        gmm.precisions_cholesky = params.precisions_cholesky
        return gmm

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GMM:
        """Placeholder parameters of the configured shapes (float64), to be filled by ``load_state_dict``."""
        try:
            k, d = (check_positive_int(k, config[k]) for k in ("n_components", "n_features"))
            ct = config["covariance_type"]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"expected a gmm config with n_components, n_features, covariance_type; got {e}") from None
        eye = torch.eye(d, dtype=torch.float64)
        cov = {"full": eye.expand(k, d, d).clone(), "tied": eye, "diag": torch.ones(k, d, dtype=torch.float64),
               "spherical": torch.ones(k, dtype=torch.float64)}[check_choice("covariance_type", ct, COVARIANCE_TYPES)]
        return cls(torch.full((k,), 1.0 / k, dtype=torch.float64), torch.zeros(k, d, dtype=torch.float64), cov, ct)

    @property
    def n_parameters(self) -> int:
        """Free parameters: K - 1 weights, K D means and the covariances (for BIC)."""
        k, d = self.means.shape
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2,
               "spherical": k}[self.covariance_type]
        return int(cov + k * d + k - 1)

    @property
    def params(self) -> GMMParams:
        return GMMParams(self.weights, self.means, self.covariances, self.precisions_cholesky)

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def scale_tril(self) -> Tensor:
        """Cholesky factors of the covariances, shape (K, D, D) (full/tied) or std devs."""
        ct = self.covariance_type
        if ct in ("full", "tied"):
            chol = torch.linalg.cholesky(self.covariances)
            return chol.expand(self.n_components, -1, -1) if ct == "tied" else chol
        if ct == "diag":
            return self.covariances.sqrt()
        return self.covariances.sqrt().unsqueeze(-1).expand(-1, self.n_features)

    def component_dist(self, c: Tensor) -> dist.Distribution:
        """``N(mu_c, Sigma_c)`` for an assignment tensor ``c`` of any batch shape."""
        loc = self.means[c]
        scale = self.scale_tril()[c]
        if self.covariance_type in ("full", "tied"):
            return dist.MultivariateNormal(loc, scale_tril=scale)
        return dist.Normal(loc, scale).to_event(1)

    # --- Pyro programs -------------------------------------------------------------------
    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        """``p(x, c) = prod_n pi_{c_n} N(x_n | mu_{c_n}, Sigma_{c_n})``; x shape (N, D)."""
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample(
                "c", dist.Categorical(self.weights), infer={"enumerate": "parallel"}
            )
            pyro.sample("x", self.component_dist(c), obs=x)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        """Exact posterior ``q(c_n = k) = gamma(z_nk)`` (E-step responsibilities)."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "c",
                dist.Categorical(logits=self.log_resp(x)),
                infer={"enumerate": "parallel"},
            )

    # --- vectorized quantities -----------------------------------------------------------
    def weighted_log_prob(self, x: Tensor) -> Tensor:
        """``log pi_k + log N(x_n | mu_k, Sigma_k)``, shape (N, K), chunked over N."""
        self._check_x(x)
        x = x.to(self.means.dtype)
        log_w = self.weights.log()
        out = [
            log_gaussian_prob(x[i : i + self.chunk_size], self.means, self.precisions_cholesky,
                              self.covariance_type) + log_w
            for i in range(0, x.shape[0], self.chunk_size)
        ]
        return torch.cat(out) if out else x.new_zeros(0, self.n_components)

    def log_prob(self, x: Tensor) -> Tensor:
        """Marginal ``log p(x_n) = logsumexp_k [log pi_k + log N(x_n|mu_k,Sigma_k)]``, (N,)."""
        return torch.logsumexp(self.weighted_log_prob(x), dim=1)

    def log_resp(self, x: Tensor) -> Tensor:
        """Log responsibilities ``log gamma(z_nk)`` (course notes, E-step), shape (N, K)."""
        wlp = self.weighted_log_prob(x)
        return wlp - torch.logsumexp(wlp, dim=1, keepdim=True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` points, shape (n, D)."""
        return self.sample_joint(n, generator)[0]

    def sample_joint(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points and their components: ``(x, c)`` with shapes (n, D) and (n,)."""
        c = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.n_features, generator=generator, dtype=self.means.dtype)
        eps = eps.to(self.means.device)
        scale = self.scale_tril()[c]
        if self.covariance_type in ("full", "tied"):
            x = self.means[c] + (scale @ eps.unsqueeze(-1)).squeeze(-1)
        else:
            x = self.means[c] + scale * eps
        return x, c

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise InputError(
                f"expected data of shape (N, {self.n_features}); got {tuple(x.shape)}"
            )

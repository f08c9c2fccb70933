"""scikit-learn-style estimators over the EM families: ``GaussianMixture`` and ``PPCA``.

``__init__`` only stores arguments; everything is checked at ``fit`` time and a
bad input raises :class:`~ppl_dgm.errors.InputError` ("expected X; got Y").
Fitted attributes end in ``_`` and are NumPy arrays.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from .errors import InputError, check_choice
from .inference.em import fit_em
from .models.gmm import COVARIANCE_TYPES, GMM, GMMParams
from .models.gmm_em import INIT_METHODS, GMMFamily
from .utils import resolve_device

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``'float32' | 'float64'`` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    return _DTYPES[check_choice("dtype", str(dtype), tuple(_DTYPES))]


def check_array(x: Any, *, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Validate user data: a finite real (N, D) array with N >= 1 (D fixed if given)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise InputError(
            f"expected {name} as a 2-D numeric array; got {type(x).__name__} ({e})"
        ) from None
    if not arr.flags.writeable:  # e.g. a JAX array: torch wants writable memory
        arr = arr.copy()
    if arr.dtype.kind not in "biuf":
        raise InputError(f"expected {name} as a 2-D numeric array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"expected {name} with 2 dimensions (n_samples, n_features); "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"expected {name} with at least one sample and feature; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(1).sum())
        raise InputError(f"expected finite values in {name}; got NaN or inf in {bad} row(s)")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"expected {name} with {n_features} features (as at fit); "
                         f"got {arr.shape[1]}")
    return arr


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"expected {name} as a positive integer; got {value!r}")
    return int(value)


class GaussianMixture:
    """Gaussian mixture fitted by EM (Pyro/torch or NumPyro/JAX backend).

    Parameters
    ----------
    n_components : int
        K, the number of components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    tol : float
        Convergence threshold on the change of the mean log-likelihood per sample.
    reg_covar : float
        Non-negative value added to covariance diagonals.
    max_iter, n_init : int
        EM iterations per restart, number of restarts (the best is kept).
    init_params : {'kmeans', 'k-means++', 'random_from_data', 'random'}
    random_state : int or None
        Seed of the initialisation (``None`` means 0, so fits are reproducible).
    backend : {'pyro', 'numpyro'}
        Torch (chunked matrix products) or a jit-compiled JAX twin.
    device : {'cpu', 'cuda', 'auto'}
    dtype : {'float64', 'float32'}
    weights_init, means_init, precisions_init : array-like, optional
        Given initial parameters in scikit-learn's shapes (override ``init_params``).
    chunk_size : int, optional
        Rows per chunk (memory O(chunk x K x D)); automatic by default.
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "kmeans", random_state: int | None = None,
                 backend: Literal["pyro", "numpyro"] = "pyro", device: str = "cpu",
                 dtype: str = "float64", weights_init: Any = None, means_init: Any = None,
                 precisions_init: Any = None, chunk_size: int | None = None) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.chunk_size = chunk_size

    # --- fitting ------------------------------------------------------------------------
    def _check_params(self, n: int) -> None:
        k = _check_positive_int("n_components", self.n_components)
        if k > n:
            raise InputError(f"expected n_components <= n_samples; got {k} > {n}")
        check_choice("covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_choice("init_params", self.init_params, INIT_METHODS)
        check_choice("backend", self.backend, ("pyro", "numpyro"))
        _check_positive_int("max_iter", self.max_iter)
        _check_positive_int("n_init", self.n_init)
        for name in ("tol", "reg_covar"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"expected {name} as a finite number >= 0; got {v!r}")
        if self.random_state is not None:
            _check_positive_int("random_state + 1", int(self.random_state) + 1)

    def _given_init(self, family: GMMFamily, x: torch.Tensor, generator) -> GMMParams | None:
        given = (self.weights_init, self.means_init, self.precisions_init)
        if all(g is None for g in given):
            return None
        k, d = self.n_components, x.shape[1]
        base = family.initialize(family.prepare(x), generator)
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=x.dtype, device=x.device)  # noqa: E731
        w = as_t(self.weights_init) if self.weights_init is not None else base.weights
        m = as_t(self.means_init) if self.means_init is not None else base.means
        if tuple(w.shape) != (k,) or tuple(m.shape) != (k, d):
            raise InputError(f"expected weights_init of shape ({k},) and means_init of shape "
                             f"({k}, {d}); got {tuple(w.shape)} and {tuple(m.shape)}")
        if self.precisions_init is None:
            return GMMParams(w / w.sum(), m, base.covariances, base.precisions_cholesky)
        return family.params_from_given(w, m, as_t(self.precisions_init))

    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Fit by EM; ``X`` is (N, D).  Returns ``self``."""
        arr = check_array(X)
        self._check_params(arr.shape[0])
        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device)
        x = torch.as_tensor(arr, dtype=dtype, device=device)
        seed = 0 if self.random_state is None else int(self.random_state)
        family = GMMFamily(self.n_components, self.covariance_type, float(self.reg_covar),
                           self.init_params, chunk_size=self.chunk_size)
        init = self._given_init(family, x, torch.Generator().manual_seed(seed))
        if self.backend == "numpyro":
            from .numpyro.inference.em import fit_em_gmm

            if init is None:
                init = family.initialize(family.prepare(x), torch.Generator().manual_seed(seed))
            result = fit_em_gmm(arr.astype(np.float64 if dtype == torch.float64 else np.float32),
                                init, covariance_type=self.covariance_type, tol=self.tol,
                                reg_covar=self.reg_covar, max_iter=self.max_iter)
            params = GMMParams(*(torch.as_tensor(np.array(p), dtype=dtype, device=device)
                                 for p in result.params))
        else:
            result = fit_em(family, x, n_init=self.n_init, tol=self.tol, max_iter=self.max_iter,
                            seed=seed, init=init)
            params = result.params
        self._set_fitted(params, result, arr.shape[1])
        return self

    def _set_fitted(self, params: GMMParams, result: Any, n_features: int) -> None:
        self.model_ = GMM.from_params(params, self.covariance_type)
        np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
        self.weights_ = np_(params.weights)
        self.means_ = np_(params.means)
        self.covariances_ = np_(params.covariances)
        self.precisions_cholesky_ = np_(params.precisions_cholesky)
        if self.covariance_type in ("full", "tied"):
            u = params.precisions_cholesky
            self.precisions_ = np_(u @ u.transpose(-1, -2))
        else:
            self.precisions_ = self.precisions_cholesky_ ** 2
        self.lower_bounds_ = list(map(float, result.history))
        self.lower_bound_ = float(result.history[-1])
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.n_features_in_ = n_features

    # --- using the fit --------------------------------------------------------------------
    def _check_fitted(self) -> GMM:
        if not hasattr(self, "model_"):
            raise InputError("expected a fitted GaussianMixture (call fit first); got an unfitted one")
        return self.model_

    def _tensor(self, X: Any) -> torch.Tensor:
        model = self._check_fitted()
        arr = check_array(X, n_features=self.n_features_in_)
        return torch.as_tensor(arr, dtype=model.means.dtype, device=model.means.device)

    def score_samples(self, X: Any) -> np.ndarray:
        """``log p(x_n)`` per sample, shape (N,)."""
        x = self._tensor(X)
        return self.model_.log_prob(x).cpu().numpy()

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample."""
        return float(self.score_samples(X).astype(np.float64).mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        """Responsibilities ``gamma(z_nk)``, shape (N, K)."""
        x = self._tensor(X)
        return self.model_.log_resp(x).exp().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component per sample, shape (N,)."""
        x = self._tensor(X)
        return self.model_.log_resp(x).argmax(1).cpu().numpy()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(X, labels)`` with shapes (n_samples, D) and (n_samples,)."""
        model = self._check_fitted()
        n = _check_positive_int("n_samples", n_samples)
        seed = 0 if self.random_state is None else int(self.random_state)
        x, c = model.sample(n, generator=torch.Generator().manual_seed(seed))
        return x.cpu().numpy(), c.cpu().numpy()

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        cov = {"full": k * d * (d + 1) / 2, "diag": k * d, "tied": d * (d + 1) / 2,
               "spherical": k}[self.covariance_type]
        return int(cov + k * d + k - 1)

    def bic(self, X: Any) -> float:
        """``-2 log L + p log N`` (lower is better)."""
        n = check_array(X).shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """``-2 log L + 2 p`` (lower is better)."""
        return -2 * self.score(X) * check_array(X).shape[0] + 2 * self._n_parameters()



class PPCA:
    """Probabilistic PCA fitted in closed form or by EM.

    Parameters
    ----------
    n_components : int
        Latent dimension ``q`` (``1 <= q < D``).
    method : {'closed_form', 'em'}
    tol, max_iter : float, int
        EM stopping rule (ignored for the closed form).
    random_state : int or None
        Seed of EM's random initial ``W`` (``None`` means 0).
    device, dtype : str

    Attributes
    ----------
    components_ : ndarray, shape (D, q)
        ``W``.
    mean_ : ndarray, shape (D,)
    noise_variance_ : float
        ``sigma^2``.
    lower_bounds_ : list of float
        Mean log-likelihood per EM iteration (one entry for the closed form).
    """

    def __init__(self, n_components: int = 1, *, method: Literal["closed_form", "em"] = "closed_form",
                 tol: float = 1e-6, max_iter: int = 1000, random_state: int | None = None,
                 device: str = "cpu", dtype: str = "float64") -> None:
        self.n_components = n_components
        self.method = method
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def fit(self, X: Any, y: Any = None) -> PPCA:
        from .models.ppca import PPCA as PPCAModel
        from .models.ppca import PPCAFamily, closed_form, sample_moments
        from .models.ppca import log_likelihood_from_moments as ll_moments

        arr = check_array(X)
        q = _check_positive_int("n_components", self.n_components)
        if q >= arr.shape[1]:
            raise InputError(f"expected n_components < n_features={arr.shape[1]}; got {q}")
        check_choice("method", self.method, ("closed_form", "em"))
        x = torch.as_tensor(arr, dtype=resolve_dtype(self.dtype), device=resolve_device(self.device))
        if self.method == "closed_form":
            params = closed_form(x, q)
            mu, s = sample_moments(x)
            self.lower_bounds_ = [float(ll_moments(params, mu, s))]
            self.converged_, self.n_iter_ = True, 0
        else:
            seed = 0 if self.random_state is None else int(self.random_state)
            res = fit_em(PPCAFamily(q), x, tol=self.tol,
                         max_iter=_check_positive_int("max_iter", self.max_iter), seed=seed)
            params = type(res.params)(*(t.to(x.dtype) for t in res.params))
            self.lower_bounds_ = res.history
            self.converged_, self.n_iter_ = res.converged, res.n_iter
        self.model_ = PPCAModel.from_params(params)
        self.components_ = params.W.cpu().numpy()
        self.mean_ = params.mu.cpu().numpy()
        self.noise_variance_ = float(params.sigma2)
        self.n_features_in_ = arr.shape[1]
        return self

    def _tensor(self, X: Any) -> torch.Tensor:
        if not hasattr(self, "model_"):
            raise InputError("expected a fitted PPCA (call fit first); got an unfitted one")
        arr = check_array(X, n_features=self.n_features_in_)
        return torch.as_tensor(arr, dtype=self.model_.W.dtype, device=self.model_.W.device)

    def score_samples(self, X: Any) -> np.ndarray:
        """Exact ``log p(x_n)``, shape (N,)."""
        x = self._tensor(X)
        return self.model_.log_prob(x).cpu().numpy()

    def score(self, X: Any, y: Any = None) -> float:
        """Mean exact log-likelihood per sample."""
        return float(self.score_samples(X).mean())

    def transform(self, X: Any) -> np.ndarray:
        """Posterior means ``E[z | x]``, shape (N, q)."""
        x = self._tensor(X)
        return self.model_.encode(x).cpu().numpy()

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """``W z + mu``, shape (N, D)."""
        z = torch.as_tensor(np.asarray(Z, dtype=float), dtype=self.model_.W.dtype)
        return self.model_.decode(z).cpu().numpy()

    def sample(self, n_samples: int = 1) -> np.ndarray:
        """Draws from the fitted marginal, shape (n_samples, D)."""
        seed = 0 if self.random_state is None else int(self.random_state)
        g = torch.Generator().manual_seed(seed)
        return self.model_.sample(_check_positive_int("n_samples", n_samples), g).cpu().numpy()

    def _n_parameters(self) -> int:
        d, q = self.components_.shape
        return int(d * q - q * (q - 1) / 2 + d + 1)

    def bic(self, X: Any) -> float:
        n = check_array(X).shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        return -2 * self.score(X) * check_array(X).shape[0] + 2 * self._n_parameters()

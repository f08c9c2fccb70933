"""scikit-learn estimators over the EM families: :class:`GaussianMixture` and :class:`PPCA`.

Both are scikit-learn estimators (``DensityMixin`` + ``BaseEstimator``, and PPCA
a transformer): ``__init__`` only stores arguments; ``fit`` checks them against
``_parameter_constraints`` and the data with scikit-learn's ``validate_data``
(which sets ``n_features_in_`` and ``feature_names_in_``); every method that
needs a fit calls ``check_is_fitted``.  Bad arguments raise scikit-learn's
``InvalidParameterError``, bad data :class:`~ppl_dgm.errors.InputError`, both
``ValueError`` with a one-line message saying what was expected and what came.
Fitted attributes end in ``_`` and are NumPy arrays; ``model_`` is the fitted
Pyro model–guide pair.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    DensityMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_array as sk_check_array
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from .errors import InputError, check_positive_int
from .inference.em import ConvergenceWarning, EMResult, fit_em
from .models.gmm import COVARIANCE_TYPES, GMM, GMMParams, precision_cholesky
from .models.gmm_em import INIT_METHODS, GMMFamily
from .models.ppca import PPCA as PPCAModel
from .models.ppca import PPCAFamily, PPCAParams, closed_form, log_likelihood_from_moments, sample_moments
from .models.shards import Shards, shard_rows
from .utils import resolve_device

__all__ = ["GaussianMixture", "PPCA", "ESTIMATORS", "shard_rows"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NOT_FITTED = "expected a fitted %(name)s (call fit first); got an unfitted one"
BACKENDS = ("torch", "jax", "svi", "numpyro")


def _one_line(validate, *args: Any, **kwargs: Any) -> np.ndarray:
    """Run a scikit-learn validator for a dense real 2-D array; its ``ValueError``
    becomes an :class:`InputError` on one line.  Finiteness is left to :func:`_finite`."""
    try:
        return validate(*args, dtype=[np.float64, np.float32], ensure_all_finite=False, **kwargs)
    except ValueError as e:
        raise InputError(" ".join(str(e).split())) from None


def _finite(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` if every value is finite (a writable copy if it was read-only, for torch).

    Checked in blocks of rows, so the check holds no data-sized boolean array."""
    if not all(np.isfinite(arr[i : i + 65536]).all() for i in range(0, len(arr), 65536)):
        bad = int((~np.isfinite(arr)).any(1).sum())
        raise InputError(f"expected finite values in {name}; got NaN or inf in {bad} row(s)")
    return arr if arr.flags.writeable else arr.copy()


class _DensityEstimator(DensityMixin, BaseEstimator):
    """What both estimators share: common options, data checks, scores and criteria."""

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "dtype": [StrOptions(set(_DTYPES))],
    }

    @property
    def _seed(self) -> int:
        """``random_state`` (``None`` means 0, so fits and draws are reproducible)."""
        return 0 if self.random_state is None else int(self.random_state)

    def _data(self, X: Any, *, reset: bool) -> np.ndarray:
        """Validated ``X`` (N, D): at fit (``reset``) N >= 2 and ``n_features_in_`` set, else D checked."""
        arr = _one_line(validate_data, self, X, reset=reset, ensure_min_samples=2 if reset else 1)
        return _finite(arr, "X")

    def _tensor(self, X: Any, *, fitting: bool = False) -> Tensor:
        """``X`` as a tensor of the working dtype and device (checked against the fit unless ``fitting``)."""
        if not fitting:
            check_is_fitted(self, msg=_NOT_FITTED)
        return torch.as_tensor(self._data(X, reset=fitting), dtype=_DTYPES[self.dtype],
                               device=resolve_device(self.device))

    def _generator(self, n_samples: Any) -> tuple[int, torch.Generator]:
        """``(n_samples, generator seeded by random_state)`` for :meth:`sample`, after the checks."""
        check_is_fitted(self, msg=_NOT_FITTED)
        return check_positive_int("n_samples", n_samples), torch.Generator().manual_seed(self._seed)

    def score_samples(self, X: Any) -> np.ndarray:
        """Exact log-density ``log p(x_n)`` per sample.

        Parameters
        ----------
        X : array-like, shape (N, D)

        Returns
        -------
        ndarray, shape (N,)
        """
        x = self._tensor(X)
        return self.model_.log_prob(x).cpu().numpy()

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per sample of ``X`` (N, D); ``y`` is ignored."""
        return float(self.score_samples(X).astype(np.float64).mean())

    def bic(self, X: Any) -> float:
        """Bayesian information criterion ``-2 log L + p log N`` on ``X`` (N, D); lower is better."""
        ll = self.score_samples(X).astype(np.float64)
        return float(-2 * ll.sum() + self.model_.n_parameters * math.log(len(ll)))

    def aic(self, X: Any) -> float:
        """Akaike information criterion ``-2 log L + 2 p`` on ``X`` (N, D); lower is better."""
        return float(-2 * self.score_samples(X).astype(np.float64).sum() + 2 * self.model_.n_parameters)


def _pyro_map_svi(x: Tensor, init: GMMParams, steps: int) -> tuple[GMMParams, list[float]]:
    """MAP-SVI in Pyro from ``init``: ``(params, losses per step)``."""
    from .models.gmm_svi import fit_gmm_map_svi

    res = fit_gmm_map_svi(x, init, steps=steps)
    return res.params, res.losses


def _numpyro_map_svi(x: Tensor, init: GMMParams, steps: int) -> tuple[GMMParams, list[float]]:
    """MAP-SVI in NumPyro (``TraceEnum_ELBO``, jit) from ``init``: ``(params, losses per step)``."""
    from .numpyro.models.gmm import fit_gmm_map_svi  # JAX is imported for this backend only

    start = (init.weights, init.means, torch.linalg.cholesky(init.covariances))
    res = fit_gmm_map_svi(x.cpu().numpy(), tuple(t.detach().cpu().numpy() for t in start), steps=steps)
    tril = torch.as_tensor(np.array(res.scale_tril), dtype=x.dtype, device=x.device)
    cov = tril @ tril.transpose(-1, -2)
    params = GMMParams(torch.as_tensor(np.array(res.weights), dtype=x.dtype, device=x.device),
                       torch.as_tensor(np.array(res.means), dtype=x.dtype, device=x.device), cov,
                       precision_cholesky(cov, "full"))
    return params, [float(v) for v in res.losses]


class GaussianMixture(_DensityEstimator):
    """Gaussian mixture fitted by EM (or by MAP-SVI), a scikit-learn estimator.

    Parameters
    ----------
    n_components : int
        K, the number of components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    tol : float
        Convergence threshold on the change of the per-sample objective between iterations.
    reg_covar : float
        Non-negative value added to covariance diagonals.
    max_iter : int
        EM iterations (Adam steps for ``backend='svi'``) per restart.
    n_init : int
        Restarts from seeded initialisations; the best final objective is kept.
    init_params : {'kmeans', 'k-means++', 'random_from_data', 'random'}
    random_state : int or None
        Seed of the initialisations and of :meth:`sample` (``None`` means 0).
    backend : {'torch', 'jax', 'svi', 'numpyro'}
        ``'torch'``: EM in torch, both steps as chunked matrix products
        (:class:`~ppl_dgm.models.gmm_em.GMMFamily`).  ``'jax'``: the same EM loop
        with jit-compiled JAX passes over blocks of the data run at once, one
        per core (:class:`~ppl_dgm.numpyro.inference.em.JaxGMMFamily`).  ``'svi'``: MAP
        by SVI in Pyro, ``c`` summed out by ``TraceEnum_ELBO``, Delta guides on
        the weights and means (:func:`~ppl_dgm.models.gmm_svi.fit_gmm_map_svi`).
        ``'numpyro'``: the same MAP in NumPyro, the enumerated model fitted by
        NumPyro's ``TraceEnum_ELBO`` with the Adam loop one ``jit`` call
        (:func:`~ppl_dgm.numpyro.models.gmm.fit_gmm_map_svi`).  For ``'svi'`` and
        ``'numpyro'``: full covariances only, all ``max_iter`` Adam steps are run.
    device : {'cpu', 'cuda', 'auto'}
    dtype : {'float64', 'float32'}
    weights_init, means_init, precisions_init : array-like, optional
        Initial parameters in scikit-learn's shapes, (K,), (K, D) and the
        precisions' shape; they override ``init_params`` (then one run).
    chunk_size : int, optional
        Rows per chunk (memory O(chunk x K x D)); automatic by default.
    distributed : bool
        Sharded EM (``backend='torch'`` only) under an initialized ``torch.distributed``
        process group (gloo on CPU, NCCL on GPUs; launch with ``torchrun``): ``X`` given to
        :meth:`fit` is this rank's block of rows (rank order = row order, see
        :func:`~ppl_dgm.models.shards.shard_rows`); the statistics are summed over ranks
        once per iteration and every rank ends with the parameters of a single-process fit
        on the concatenated rows.  Methods after the fit (:meth:`score`, :meth:`predict`,
        :meth:`sample`, ...) use only the rows given to them, on any rank.

    Attributes
    ----------
    weights_ : ndarray, shape (K,)
    means_ : ndarray, shape (K, D)
    covariances_, precisions_, precisions_cholesky_ : ndarray
        (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical;
        ``precisions_ = U U^T`` with ``U = precisions_cholesky_``.
    lower_bounds_ : list of float
        Per iteration, the mean log-likelihood per sample before that iteration's
        M-step (as scikit-learn); for ``'svi'`` and ``'numpyro'``, the MAP objective per sample
        (log-likelihood plus log-prior, over N) at each Adam step.
    lower_bound_ : float
        The last of ``lower_bounds_``.
    converged_ : bool
    n_iter_ : int
    model_ : GMM
        The fitted Pyro model–guide pair.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names.
    """

    _parameter_constraints: dict = {
        **_DensityEstimator._parameter_constraints,
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "reg_covar": [Interval(Real, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_METHODS))],
        "backend": [StrOptions(set(BACKENDS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "distributed": ["boolean"],
    }

    def __init__(self, n_components: int = 1, *, covariance_type: str = "full", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "kmeans", random_state: int | None = None,
                 backend: Literal["torch", "jax", "svi", "numpyro"] = "torch", device: str = "cpu",
                 dtype: str = "float64", weights_init: Any = None, means_init: Any = None,
                 precisions_init: Any = None, chunk_size: int | None = None, distributed: bool = False) -> None:
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
        self.distributed = distributed

    # --- fitting ------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Fit to ``X`` (N, D) with N >= 2; ``y`` is ignored.  Returns ``self``."""
        if self.distributed and self.backend != "torch":
            raise InputError(f"expected backend='torch' with distributed=True (sharded EM runs in the torch "
                             f"backend only); got backend={self.backend!r}")
        shards = Shards.from_process_group() if self.distributed else None
        x = self._tensor(X, fitting=True) if shards is None else self._shard(X, shards)
        if shards is None and self.n_components > x.shape[0]:  # sharded: checked on all rows at initialize
            raise InputError(f"expected n_components <= n_samples; got {self.n_components} > {x.shape[0]}")
        if self.backend in ("svi", "numpyro") and self.covariance_type != "full":
            raise InputError(f"expected covariance_type='full' with backend={self.backend!r}; "
                             f"got {self.covariance_type!r}")
        family = GMMFamily(self.n_components, self.covariance_type, float(self.reg_covar),
                           self.init_params, chunk_size=self.chunk_size, shards=shards)
        init = self._given_init(family, x)
        if self.backend in ("svi", "numpyro"):
            res = self._fit_svi(family, x, init)
        else:
            if self.backend == "jax":
                from .numpyro.inference.em import JaxGMMFamily  # JAX is imported for this backend only

                family = JaxGMMFamily(family, self.chunk_size)
            res = fit_em(family, x, n_init=self.n_init, tol=self.tol, max_iter=self.max_iter,
                         seed=self._seed, init=init)
        self._set_fitted(res)
        return self

    def _shard(self, X: Any, shards: Shards) -> Tensor:
        """This rank's checked rows; if any rank's rows fail the checks, every rank raises (none waits forever)."""
        try:
            x, error = self._tensor(X, fitting=True), None
        except InputError as e:
            x, error = None, e
        flags = torch.zeros(shards.world_size, dtype=torch.float64, device=resolve_device(self.device))
        flags[shards.rank] = error is not None
        bad = [r for r, f in enumerate(shards.sum(flags).tolist()) if f]
        if error is not None:
            raise error
        if bad:
            raise InputError(f"expected valid rows on every rank; got invalid rows on rank(s) {bad}")
        return x

    def _given_init(self, family: GMMFamily, x: Tensor) -> GMMParams | None:
        """Initial parameters from ``*_init`` (the missing ones from the seeded init), or None."""
        k, d = self.n_components, x.shape[1]
        prec_shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}
        expected = {"weights_init": (k,), "means_init": (k, d),
                    "precisions_init": prec_shape[self.covariance_type]}
        given = {}
        for name, shape in expected.items():
            if getattr(self, name) is not None:
                given[name] = torch.as_tensor(np.asarray(getattr(self, name), dtype=np.float64),
                                              dtype=x.dtype, device=x.device)
                if tuple(given[name].shape) != shape:
                    raise InputError(f"expected {name} of shape {shape}; got {tuple(given[name].shape)}")
        if not given:
            return None
        base = None
        if len(given) < len(expected):
            base = family.initialize(family.prepare(x), torch.Generator().manual_seed(self._seed))
        w = given["weights_init"] if "weights_init" in given else base.weights
        m = given["means_init"] if "means_init" in given else base.means
        if "precisions_init" not in given:
            return GMMParams(w / w.sum(), m, base.covariances, base.precisions_cholesky)
        return family.params_from_given(w, m, given["precisions_init"])

    def _fit_svi(self, family: GMMFamily, x: Tensor, init: GMMParams | None) -> EMResult:
        """MAP by SVI (Pyro or NumPyro) from each initialisation; the best final MAP objective is kept."""
        if init is None:
            data, generator = family.prepare(x), torch.Generator().manual_seed(self._seed)
            inits = [family.initialize(data, generator) for _ in range(self.n_init)]
        else:
            inits = [init]
        fit = _numpyro_map_svi if self.backend == "numpyro" else _pyro_map_svi
        best = min((fit(x, p, self.max_iter) for p in inits), key=lambda r: r[1][-1])
        history = [-float(v) for v in best[1]]
        converged = len(history) > 1 and abs(history[-1] - history[-2]) < self.tol
        if not converged:
            warnings.warn(f"MAP-SVI did not converge in max_iter={self.max_iter} Adam steps (last change "
                          f">= tol={self.tol}); increase max_iter", ConvergenceWarning, stacklevel=4)
        return EMResult(best[0], history[-1], history, converged, len(history))

    def _set_fitted(self, res: EMResult) -> None:
        self.model_ = GMM.from_params(res.params, self.covariance_type)
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = (
            t.detach().cpu().numpy() for t in res.params)
        u = self.precisions_cholesky_
        full = self.covariance_type in ("full", "tied")
        self.precisions_ = u @ np.swapaxes(u, -1, -2) if full else u**2
        self.lower_bounds_ = [float(v) for v in res.history]
        self.lower_bound_ = self.lower_bounds_[-1]
        self.converged_ = bool(res.converged)
        self.n_iter_ = int(res.n_iter)

    # --- using the fit --------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """Responsibilities ``gamma(z_nk)`` of ``X`` (N, D), shape (N, K)."""
        x = self._tensor(X)
        return self.model_.log_resp(x).exp().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component of each row of ``X`` (N, D), shape (N,)."""
        x = self._tensor(X)
        return self.model_.log_resp(x).argmax(1).cpu().numpy()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Seeded draws (``random_state``): ``(X, labels)`` of shapes (n_samples, D) and (n_samples,)."""
        n, generator = self._generator(n_samples)
        x, c = self.model_.sample_joint(n, generator)
        return x.cpu().numpy(), c.cpu().numpy()


class PPCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _DensityEstimator):
    """Probabilistic PCA fitted in closed form or by EM, a scikit-learn estimator.

    Parameters
    ----------
    n_components : int
        Latent dimension ``q`` (``1 <= q < D``).
    method : {'closed_form', 'em'}
    tol, max_iter : float, int
        EM stopping rule (ignored for the closed form).
    random_state : int or None
        Seed of EM's random initial ``W`` and of :meth:`sample` (``None`` means 0).
    device : {'cpu', 'cuda', 'auto'}
    dtype : {'float64', 'float32'}

    Attributes
    ----------
    components_ : ndarray, shape (D, q)
        ``W`` (columns, unlike scikit-learn's ``PCA.components_`` rows).
    mean_ : ndarray, shape (D,)
    noise_variance_ : float
        ``sigma^2``.
    lower_bounds_ : list of float
        Mean log-likelihood per sample at each EM iteration (one entry for the closed form).
    lower_bound_ : float
    converged_ : bool
    n_iter_ : int
        EM iterations run (1 for the closed form: one solve).
    model_ : ppl_dgm.models.ppca.PPCA
        The fitted Pyro model–guide pair.
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        **_DensityEstimator._parameter_constraints,
        "method": [StrOptions({"closed_form", "em"})],
    }

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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> PPCA:
        """Fit to ``X`` (N, D) with N >= 2; ``y`` is ignored.  Returns ``self``."""
        x = self._tensor(X, fitting=True)
        q, d = self.n_components, x.shape[1]
        if q >= d:
            raise InputError(f"expected n_components < n_features={d}; got {q}")
        if self.method == "closed_form":
            params = closed_form(x, q)
            history, converged = [float(log_likelihood_from_moments(params, *sample_moments(x)))], True
        else:
            res = fit_em(PPCAFamily(q), x, tol=self.tol, max_iter=self.max_iter, seed=self._seed)
            params = PPCAParams(*(t.to(x.dtype) for t in res.params))
            history, converged = res.history, res.converged
        self.model_ = PPCAModel.from_params(params)
        self.components_ = params.W.cpu().numpy()
        self.mean_ = params.mu.cpu().numpy()
        self.noise_variance_ = float(params.sigma2)
        self.lower_bounds_ = [float(v) for v in history]
        self.lower_bound_ = self.lower_bounds_[-1]
        self.converged_, self.n_iter_ = bool(converged), len(history)
        return self

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[1]

    def transform(self, X: Any) -> np.ndarray:
        """Posterior means ``E[z | x] = M^{-1} W^T (x - mu)`` of ``X`` (N, D), shape (N, q)."""
        x = self._tensor(X)
        return self.model_.encode_mean(x).cpu().numpy()

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """``W z + mu`` for ``Z`` (N, q), shape (N, D)."""
        check_is_fitted(self, msg=_NOT_FITTED)
        z = _finite(_one_line(sk_check_array, Z, input_name="Z"), "Z")
        if z.shape[1] != self.components_.shape[1]:
            raise InputError(f"expected Z with {self.components_.shape[1]} columns (n_components); got {z.shape[1]}")
        return self.model_.decode_mean(torch.as_tensor(z, dtype=_DTYPES[self.dtype],
                                                  device=resolve_device(self.device))).cpu().numpy()

    def sample(self, n_samples: int = 1) -> np.ndarray:
        """Seeded draws (``random_state``) from the fitted marginal, shape (n_samples, D)."""
        n, generator = self._generator(n_samples)
        return self.model_.sample(n, generator).cpu().numpy()


ESTIMATORS: dict[str, type[_DensityEstimator]] = {"gmm": GaussianMixture, "ppca": PPCA}
"""The scikit-learn estimator of each EM family of the registry, by family name."""

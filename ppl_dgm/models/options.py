"""Fit options: the dataclasses whose fields are the ``ppl-dgm fit FAMILY`` options.

Every family has one config dataclass (in its own module) built from these
bases; it is the only place its defaults live.  The CLI turns each field into an
option (``latent_dim`` -> ``--latent-dim``, ``Literal`` -> a choice, ``tuple[int, ...]``
-> comma-separated integers), and a run directory stores the fields in
``config.json``.  Each field says where its value goes (``metadata["role"]``):

- ``"model"``: a constructor argument of the family's model;
- ``"train"``: an option of the trainer (``fit_svi``, or the EM estimator);
- ``"objective"``: an argument of :func:`ppl_dgm.inference.make_objective`.

:meth:`FitOptions.resolve` fills the defaults that depend on the data (``None`` fields).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InputError, check_choice, check_number, check_sizes

if TYPE_CHECKING:  # annotations only: this module (and so ``ppl-dgm --help``) imports no torch
    from ..data import Dataset


def option(default: Any, help: str, *, role: str = "model", flags: tuple[str, ...] = (),
           min: float | None = None, min_open: bool = False, max: float | None = None,
           max_open: bool = False) -> Any:
    """A dataclass field of a config: its default, its help line, where its value goes, its CLI flags, and the
    bounds of a number (``min_open`` / ``max_open``: the bound itself is refused)."""
    meta = {"help": help, "role": role, "flags": flags, "min": min, "min_open": min_open, "max": max,
            "max_open": max_open}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a config field takes, read from its annotation and its :func:`option` metadata; the one source of
    both the CLI's option types (:func:`ppl_dgm.cli.options.config_options`) and :meth:`FitOptions.__post_init__`.

    Attributes
    ----------
    kind : {"int", "float", "bool", "text", "choice", "sizes", "any"}
        ``int``, ``float``, a ``Literal[...]``, ``tuple[int, ...]`` (sizes >= 1), or anything else (unchecked).
    optional : bool
        The annotation is ``X | None``: None is accepted.
    choices : tuple
        The ``Literal`` values of a ``choice``.
    min, max : float or None
        The bounds of a number (from :func:`option`).
    min_open, max_open : bool
        The bound itself is refused.
    """

    kind: Literal["int", "float", "bool", "text", "choice", "sizes", "any"]
    optional: bool = False
    choices: tuple = ()
    min: float | None = None
    min_open: bool = False
    max: float | None = None
    max_open: bool = False

    def check(self, name: str, value: Any) -> Any:
        """``value``, normalized (an ``int``, a ``float``, a tuple), if the field takes it; else
        :class:`ppl_dgm.errors.InputError` naming ``name``, what was expected and what came."""
        if value is None and self.optional:
            return None
        if self.kind == "choice":
            return check_choice(name, value, self.choices)
        if self.kind == "sizes":
            return check_sizes(name, value)
        if self.kind == "text":
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"expected {name} as a non-empty string; got {value!r}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"expected {name} as True or False; got {value!r}")
            return value
        if self.kind in ("int", "float"):
            return check_number(name, value, integer=self.kind == "int", min=self.min, min_open=self.min_open,
                                max=self.max, max_open=self.max_open)
        return value


def _field_spec(f: dataclasses.Field, hint: Any) -> FieldSpec:
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional and len(args) == 2:
        hint = next(a for a in args if a is not type(None))  # X | None
    if typing.get_origin(hint) is Literal:
        return FieldSpec("choice", optional, choices=typing.get_args(hint))
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (int, ...):
        return FieldSpec("sizes", optional)
    if hint is bool:
        return FieldSpec("bool", optional)
    if hint is str:
        return FieldSpec("text", optional)
    if hint in (int, float):
        bounds = {k: f.metadata[k] for k in ("min", "min_open", "max", "max_open") if k in f.metadata}
        return FieldSpec(hint.__name__, optional, **bounds)
    return FieldSpec("any", optional)


@functools.cache
def field_specs(config: type[FitOptions]) -> dict[str, FieldSpec]:
    """Field name -> :class:`FieldSpec` of every field of the config dataclass ``config``, in field order."""
    hints = typing.get_type_hints(config)
    return {f.name: _field_spec(f, hints[f.name]) for f in fields(config)}


def n_classes_of(ds: Dataset) -> int:
    """C = 1 + the largest label of a labelled dataset (at least 2); unlabelled data are refused in one line."""
    if ds.y_train is None or ds.y_test is None:
        raise InputError(f"a conditional model needs labelled data (y and y_test); {ds.name} has none")
    y = ds.y_train if not len(ds.y_test) else ds.y_test if not len(ds.y_train) else None
    top = int(y.max()) if y is not None else max(int(ds.y_train.max()), int(ds.y_test.max()))
    return max(2, top + 1)


@dataclass
class FitOptions:
    """Options every family has; subclasses add theirs (and may redefine a field to change its default).

    Every field is checked on construction (and by :func:`dataclasses.replace`) against its annotation and
    bounds, as the CLI checks its options: a bad value raises :class:`ppl_dgm.errors.InputError` naming the
    field, e.g. ``expected lr as a finite number > 0; got nan``.  Numbers are stored as ``int`` / ``float``,
    sizes given as a list as a tuple.
    """

    def __post_init__(self) -> None:
        for name, spec in field_specs(type(self)).items():
            setattr(self, name, spec.check(name, getattr(self, name)))

    def values(self, role: str) -> dict[str, Any]:
        """The fields with ``metadata["role"] == role``, as a dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("role") == role}

    def resolve(self, ds: Dataset) -> FitOptions:
        """A copy with the data-dependent defaults (``None`` fields) filled in for ``ds``."""
        return dataclasses.replace(self)

    def binarize(self, requested: str | None, image: bool) -> str:
        """The binarization of the training data: ``requested``, or the default: dynamic binarization of
        images for a Bernoulli likelihood (a fresh x ~ Bernoulli(grey level) every minibatch), else none."""
        return requested or ("dynamic" if image and getattr(self, "likelihood", None) == "bernoulli" else "none")

    def model_kwargs(self, ds: Dataset) -> dict[str, Any]:
        """Constructor arguments of the model for data ``ds``: the ``"model"`` fields plus the data's shape."""
        return {**self.values("model"), "x_dim": ds.dim, "image_shape": list(ds.shape)}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> FitOptions:
        """Rebuild from the ``train`` section of a ``config.json`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})  # lists (JSON) become tuples on construction


@dataclass
class SVIOptions(FitOptions):
    """Options of the SVI loop, :func:`ppl_dgm.inference.fit_svi`."""

    epochs: int | None = option(None, "Training epochs (default: 300 for digits, 50 otherwise).", role="train",
                                min=1)
    batch_size: int = option(128, "Examples per minibatch.", role="train", min=1)
    lr: float = option(1e-3, "Learning rate.", role="train", min=0, min_open=True)
    optimizer: Literal["adam", "clipped_adam"] = option("adam", "Optimizer.", role="train")
    lr_schedule: Literal["constant", "cosine", "exponential"] = option(
        "constant", "Learning rate against the epoch.", role="train")
    clip_norm: float | None = option(None, "Clip the global gradient norm.", role="train", min=0, min_open=True)
    checkpoint_every: int = option(10, "Save a checkpoint every N epochs (and at the end).", role="train", min=1)
    held_out_examples: int | None = option(None, "Score the first N held-out examples after each epoch (default "
                                           "all; `evaluate` scores every row).", role="train", min=1)
    compile_step: bool | None = option(
        None, "Record the training step as a graph once and replay it: the same numbers, less Python per step "
        "(programs that read tensor values in Python are refused). Default: on for the families that record "
        "(vae, ae, cvae, hvae, ddpm, score, classifier) in fits of 1000 steps or more.", role="train")
    fuse_step: bool = option(
        False, "Record the step and compile it with torch.compile (inductor) into fused kernels: values equal up to "
        "float rounding, a step 0.83-1.02x the plain PyTorch loop's on CPU, ~10-50 s of compiling once (the full "
        "minibatch at the last epoch's KL weight; needs a C++ compiler, without one the recorded step runs "
        "unfused). For long fits.", role="train")
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "The networks' forward under autocast in bf16/fp16 (fp16 with a gradient scaler; meant for GPUs); "
        "the ELBO terms stay float32.", role="train")

    def resolve(self, ds: Dataset) -> SVIOptions:
        return dataclasses.replace(self, epochs=self.epochs or (300 if ds.name == "digits" else 50))


@dataclass
class ObjectiveOptions(FitOptions):
    """The ELBO variant trained (:func:`ppl_dgm.inference.make_objective`; notes 000 "Beta-VAE", notes 002 eq. (*))."""

    objective: Literal["analytic", "elbo", "iwae"] = option(
        "analytic", "Analytic-KL ELBO, Monte Carlo ELBO, or IWAE with --particles samples.", role="objective")
    particles: int = option(1, "Samples of the latents per example (k of IWAE).", role="objective", min=1)
    beta: float = option(1.0, "Weight of the KL term (beta-VAE); 0 is a deterministic-AE loss.", role="objective",
                         min=0)
    warmup_epochs: int = option(0, "Ramp the KL weight from 0 to beta over N epochs.", role="objective", min=0)
    free_bits: float = option(0.0, "Floor (nats) on each latent dimension's batch-mean KL (ELBO objectives).",
                              role="objective", min=0)


@dataclass
class BackendOptions(FitOptions):
    """Which implementation trains the family: its Pyro model-guide pair, or its NumPyro twin under ``jax.jit``."""

    backend: Literal["pyro", "numpyro"] = option(
        "pyro", "pyro (PyTorch) or numpyro (JAX, jit-compiled SVI; MLP networks; vae, cvae, hvae); the run "
        "directory and every command are the same.", role="backend")
    jax_devices: int = option(1, "--backend numpyro: shard each minibatch over N JAX devices (data parallel; "
                              "parameters replicated).", role="backend", min=1)


@dataclass
class EMOptions(FitOptions):
    """Options of EM (course notes, EM section): stopping rule and precision."""

    max_iter: int = option(100, "EM iterations at most (per restart).", role="train", min=1)
    tol: float = option(1e-3, "Stop when the mean log-likelihood changes by less than this.", role="train", min=0)
    dtype: Literal["float64", "float32"] = option("float64", "Floating point precision.", role="train")

    def estimator_params(self) -> dict[str, Any]:
        """Keyword arguments of the family's scikit-learn estimator."""
        return self.values("train")

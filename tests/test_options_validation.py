"""Config dataclasses check their fields on construction, as the CLI checks its options: NaN, inf, values
below a bound, unknown choices, floats or bools for integers and zero sizes raise InputError in one line
naming the field; defaults, valid values and stored configs pass."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from ppl_dgm.cli.options import _click_type
from ppl_dgm.errors import InputError, check_number
from ppl_dgm.models import REGISTRY
from ppl_dgm.models.options import FitOptions, field_specs, option
from ppl_dgm.models.score import ScoreConfig

from .conftest import run_cli

CONFIGS = {c.__name__: c for c in [*(f.config for f in REGISTRY.values()), ScoreConfig]}


def _bad_values(spec) -> list:
    """Values a field of this spec must refuse."""
    bad = [] if spec.optional else [None]
    if spec.kind == "choice":
        return [*bad, "foo", 1, spec.choices[0].upper()]
    if spec.kind == "sizes":
        return [*bad, (0,), (), (2.5,), (True,), (4, -1), 4, "8,8"]
    if spec.kind == "bool":
        return [*bad, 1, 0, "yes", math.nan]
    if spec.kind == "text":
        return [*bad, math.nan, True, 1, "", "  "]
    number = [*bad, math.nan, math.inf, -math.inf, True, "1"]
    if spec.kind == "int":
        number.append(2.5)
        number.append(float(spec.min if spec.min is not None else 3))  # 3.0: a float, even a whole one
    if spec.min is not None:
        number.append(spec.min if spec.min_open else spec.min - 1)
    return number


BAD = [pytest.param(cls, name, value, id=f"{cls.__name__}-{name}-{value!r}")
       for cls in CONFIGS.values() for name, spec in field_specs(cls).items() for value in _bad_values(spec)]


@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS)
def test_defaults_construct_and_every_field_is_checked(cls):
    cfg = cls()
    assert dataclasses.replace(cfg) == cfg
    assert all(spec.kind != "any" for spec in field_specs(cls).values()), field_specs(cls)


@pytest.mark.parametrize("cls, name, value", BAD)
def test_bad_value_is_refused_in_one_line_naming_the_field(cls, name, value):
    with pytest.raises(InputError) as info:
        cls(**{name: value})
    message = str(info.value)
    assert "\n" not in message and name in message and f"got {value!r}" in message, message
    with pytest.raises(InputError):  # replace re-checks
        dataclasses.replace(cls(), **{name: value})


@pytest.mark.parametrize("make, message", [
    (lambda: CONFIGS["VAEConfig"](lr=float("nan")), "expected lr as a finite number > 0; got nan"),
    (lambda: CONFIGS["VAEConfig"](lr=-1), "expected lr as a finite number > 0; got -1"),
    (lambda: CONFIGS["VAEConfig"](beta=float("inf")), "expected beta as a finite number >= 0; got inf"),
    (lambda: CONFIGS["VAEConfig"](latent_dim=2.5), "expected latent_dim as a positive integer; got 2.5"),
    (lambda: CONFIGS["VAEConfig"](latent_dim=True), "expected latent_dim as a positive integer; got True"),
    (lambda: CONFIGS["DDPMConfig"](epochs=0), "expected epochs as a positive integer; got 0"),
    (lambda: CONFIGS["DDPMConfig"](timesteps=1), "expected timesteps as an integer >= 2; got 1"),
    (lambda: CONFIGS["DDPMConfig"](schedule="foo"), "schedule must be one of 'linear', 'cosine'; got 'foo'"),
    (lambda: CONFIGS["HVAEConfig"](hidden=(0,)),
     "expected hidden as one or more positive sizes (integers >= 1); got (0,)"),
    (lambda: CONFIGS["GMMConfig"](tol=-1e-3), "expected tol as a finite number >= 0; got -0.001"),
    (lambda: CONFIGS["PPCAConfig"](method="svd"), "method must be one of 'closed_form', 'em'; got 'svd'"),
])
def test_messages_say_what_was_expected_and_what_came(make, message):
    with pytest.raises(InputError) as info:
        make()
    assert str(info.value) == message


@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS)
def test_valid_values_pass_and_are_normalized(cls):
    """Each field at its bound (when the bound is allowed), the other choices, sizes as a list, numpy scalars."""
    for name, spec in field_specs(cls).items():
        if spec.kind == "choice":
            values = list(spec.choices)
        elif spec.kind == "bool":
            values = [True, False]
        elif spec.kind == "text":
            values = ["runs/vae-digits"]
        elif spec.kind == "sizes":
            values = [[3, 2], (1,)]
        elif spec.kind == "int":
            lo = spec.min if spec.min is not None else 0
            values = [int(lo) + bool(spec.min_open), np.int64(lo + 5)]
        else:
            lo = spec.min if spec.min is not None else -1.0
            hi = spec.max if spec.max is not None else lo + 4
            values = [lo + (hi - lo) / 8, np.float32(lo + (hi - lo) / 2)] + ([int(lo + 1)] if lo + 1 < hi else [])
        if spec.optional:
            values.append(None)
        for value in values:
            got = getattr(cls(**{name: value}), name)
            if spec.kind == "sizes" and value is not None:
                assert got == tuple(value) and type(got) is tuple
            elif spec.kind in ("int", "float") and value is not None:
                assert got == value and type(got) is {"int": int, "float": float}[spec.kind], (name, value, got)
            else:
                assert got == value


@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS)
def test_from_stored_round_trips_through_json(cls):
    cfg = cls(hidden=(7, 5)) if "hidden" in field_specs(cls) else cls()
    stored = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples come back as lists
    assert cls.from_stored({**stored, "not_a_field": 1}) == cfg
    with pytest.raises(InputError, match="got nan"):
        cls.from_stored({**stored, next(n for n, s in field_specs(cls).items() if s.kind == "float"): math.nan})


@pytest.mark.parametrize("family", sorted(REGISTRY))
@pytest.mark.parametrize("dataset", ["digits", "rings"])
def test_resolve_gives_a_valid_config(family, dataset):
    """resolve() fills the data-dependent defaults (replace and attribute assignment) with valid values."""
    from ppl_dgm.data import load_dataset

    ds = load_dataset(dataset, n_toy=64)
    out = REGISTRY[family].config().resolve(ds)
    assert dataclasses.replace(out) == out  # every filled-in value passes the checks


@dataclass
class _Bounded(FitOptions):
    decay: float = option(0.5, "A decay.", min=0, max=1, max_open=True)
    steps: int | None = option(None, "Steps.", min=0, min_open=True, max=10)


@pytest.mark.parametrize("kw, message", [
    (dict(decay=1.0), "expected decay as a finite number in [0, 1); got 1.0"),
    (dict(decay=-0.1), "expected decay as a finite number in [0, 1); got -0.1"),
    (dict(steps=0), "expected steps as an integer in (0, 10]; got 0"),
    (dict(steps=11), "expected steps as an integer in (0, 10]; got 11"),
])
def test_upper_bounds(kw, message):
    assert _Bounded(decay=0.0, steps=10) == _Bounded(decay=0, steps=10)
    with pytest.raises(InputError) as info:
        _Bounded(**kw)
    assert str(info.value) == message


def test_cli_types_come_from_the_same_specs():
    import click

    specs = field_specs(_Bounded)
    decay, steps = _click_type(specs["decay"]), _click_type(specs["steps"])
    assert decay.convert(0.0, None, None) == 0.0 and steps.convert("10", None, None) == 10
    for typ, value in [(decay, "1"), (decay, "nan"), (steps, "0"), (steps, "11")]:
        with pytest.raises(click.BadParameter):
            typ.convert(value, None, None)
    assert check_number("n", np.int32(4), integer=True, min=1) == 4


def test_cli_refuses_zero_sizes_in_one_line(capsys):
    code, _, err = run_cli(["fit", "hvae", "--hidden", "64,0"], capsys)
    assert code == 2
    assert err.strip() == "error: expected --hidden as one or more positive sizes (integers >= 1); got (64, 0)"

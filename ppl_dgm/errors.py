"""User-facing errors.

Every check of user input raises :class:`InputError` (a ``ValueError``) whose
message says what was expected and what came.  The CLI prints that message as
one line and exits with status 2; Python callers can catch ``ValueError``.
"""

from __future__ import annotations

import math
import numbers


class InputError(ValueError):
    """Bad user input: data, options, paths or files."""


class CheckpointError(InputError):
    """A checkpoint or run directory that is missing, corrupt or foreign."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss; the message names the site and step."""

    def __init__(self, message: str, *, step: int | None = None, sites: list[str] | None = None):
        super().__init__(message)
        self.step = step
        self.sites = sites or []


class DivergenceError(NonFiniteError):
    """Training exploded (the loss grew far beyond where it started) though it stayed finite."""


def check_choice(name: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`InputError`."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_positive_int(name: str, value) -> int:
    """Return ``value`` if it is an integer >= 1 (bools and floats such as 2.5 refused), else raise."""
    return check_number(name, value, integer=True, min=1)


def _describe_number(integer: bool = False, min: float | None = None, min_open: bool = False,
                    max: float | None = None, max_open: bool = False) -> str:
    """What a number check expects, in words: ``"a positive integer"``, ``"a finite number in [0, 1)"``."""
    what = "an integer" if integer else "a finite number"
    if integer and min == 1 and not min_open and max is None:
        return "a positive integer"
    if min is not None and max is not None:
        return f"{what} in {'(' if min_open else '['}{min:g}, {max:g}{')' if max_open else ']'}"
    if min is not None:
        return f"{what} {'>' if min_open else '>='} {min:g}"
    if max is not None:
        return f"{what} {'<' if max_open else '<='} {max:g}"
    return what


def check_number(name: str, value, *, integer: bool = False, min: float | None = None, min_open: bool = False,
                 max: float | None = None, max_open: bool = False) -> int | float:
    """Return ``value`` as an ``int`` (``integer``) or a finite ``float`` within the bounds, else raise
    :class:`InputError`.  Bools are refused, and so are floats such as 2.5 (or 2.0) where an integer is expected."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        try:
            out = int(value) if integer else float(value)
        except OverflowError:  # an int too large for a float
            out = math.nan
        ok = integer or math.isfinite(out)
        ok = ok and (min is None or (out > min if min_open else out >= min))
        ok = ok and (max is None or (out < max if max_open else out <= max))
    if not ok:
        raise InputError(f"expected {name} as {_describe_number(integer, min, min_open, max, max_open)}; "
                         f"got {value!r}")
    return out


def check_sizes(name: str, value) -> tuple[int, ...]:
    """Return ``value`` (a tuple or list of integers >= 1, at least one) as a tuple, else raise :class:`InputError`."""
    try:
        if isinstance(value, (tuple, list)) and value:
            return tuple(check_positive_int(name, v) for v in value)
    except InputError:
        pass
    raise InputError(f"expected {name} as one or more positive sizes (integers >= 1); got {value!r}")

"""User-facing errors.

Every check of user input raises :class:`InputError` (a ``ValueError``) whose
message says what was expected and what came.  The CLI prints that message as
one line and exits with status 2; Python callers can catch ``ValueError``.
"""

from __future__ import annotations


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
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"expected {name} as a positive integer; got {value!r}")
    return int(value)

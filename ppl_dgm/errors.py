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


def check_choice(name: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`InputError`."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value

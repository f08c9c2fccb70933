"""The ``ppl-dgm`` command: ``fit``, ``evaluate``, ``sample``, ``latent``, ``diagnose``, ``list``.

Every command asks the family registry what a family can do.  Bad input, or a command
a family cannot do, prints one line (``error: ...``: what was expected, what came) and
exits with status 2.
"""

from __future__ import annotations

import sys

import click

from ..errors import InputError, NonFiniteError
from .commands import cli
from .latent import latent  # noqa: F401  (registers `ppl-dgm latent`)

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="ppl-dgm", standalone_mode=False)
    except InputError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except NonFiniteError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    sys.exit(0)

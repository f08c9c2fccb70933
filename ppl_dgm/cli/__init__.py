"""The ``ppl-dgm`` command: ``fit``, ``evaluate``, ``sample``, ``latent``, ``diagnose``, ``list``.

Every command asks the family registry what a family can do.  Bad input, or a command
a family cannot do, prints one line (``error: ...``: what was expected, what came) and
exits with status 2.  ``ppl-dgm`` alone prints the help and exits with status 0.
Importing this package imports neither torch nor the families: each command imports what
it needs when it runs.
"""

from __future__ import annotations

import sys

import click

from ..errors import InputError, NonFiniteError
from .commands import cli
from .latent import latent  # noqa: F401  (registers `ppl-dgm latent`)
from .restore import restore  # noqa: F401  (registers `ppl-dgm restore`)

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2.

    Exit status: 0 (done; also the help of ``ppl-dgm`` alone), 2 (bad input or usage: one line
    ``error: ...``), 1 (training produced a non-finite loss: one line), 130 (interrupted).
    """
    try:
        cli.main(args=argv, prog_name="ppl-dgm", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `ppl-dgm` (or a group without its command): the help
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (InputError, NonFiniteError, click.exceptions.ClickException) as e:
        message = e.format_message() if isinstance(e, click.exceptions.ClickException) else str(e)
        # one line: ours are; a library may append more (Pyro adds the trace shapes to an error in a model)
        click.echo("error: " + (message.strip().splitlines() or [""])[0], err=True)
        sys.exit(1 if isinstance(e, NonFiniteError) else getattr(e, "exit_code", 2))
    sys.exit(0)

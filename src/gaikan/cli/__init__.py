"""gaikan's command line: a thin layer over the library (no maths here).

Each sub-command lives in its own module and imports heavy dependencies
(torch, fastapi) inside the command function, so ``gaikan --help`` stays
fast and works without the extras.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .._version import __version__
from ._common import EXIT_CODES_HELP, Exit

__all__ = ["Exit", "cli", "main"]


class _Group(click.Group):
    """Maps every failure to its documented exit code; no traceback reaches a user."""

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import GaikanError, ModelFileError

        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError:
            raise  # exit 2 with click's usage message
        except click.ClickException as exc:  # e.g. a data folder without classes
            exc.show()
            raise SystemExit(int(Exit.INPUT)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            raise SystemExit(int(Exit.INTERRUPTED)) from None
        except ModelFileError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(int(Exit.MODEL)) from None
        except GaikanError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(int(Exit.INPUT)) from None
        except Exception as exc:
            if os.environ.get("GAIKAN_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(exc).__name__}: {exc} (a bug in gaikan; rerun with "
                "GAIKAN_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            raise SystemExit(int(Exit.INTERNAL)) from None


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
@click.version_option(__version__, prog_name="gaikan")
def cli() -> None:
    """gaikan (外観): visual inspection from a handful of good images."""


def _register() -> None:
    from . import bench, demo, export, fit, inspect, serve, synth, train, watch

    for mod in (fit, inspect, demo, bench, synth, train, serve, watch, export):
        for cmd in getattr(mod, "COMMANDS", []):
            cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="gaikan", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

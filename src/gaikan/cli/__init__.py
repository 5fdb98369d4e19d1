"""gaikan's command line: a thin layer over the library (no maths here).

Each sub-command lives in its own module and imports heavy dependencies
(torch, fastapi) inside the command function, so ``gaikan --help`` stays
fast and works without the extras.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

from .._version import __version__
from ._common import EXIT_CODES_HELP, Exit, lang_option

__all__ = ["Exit", "cli", "main"]


class _Group(click.Group):
    """Maps every failure to its documented exit code; no traceback reaches a user."""

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import GaikanError, ModelFileError
        from ..i18n import current_lang, t

        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as exc:
            if current_lang() == "en":
                raise  # exit 2 with click's usage message
            _show_usage_error(exc)
            raise SystemExit(int(Exit.USAGE)) from None
        except click.ClickException as exc:  # e.g. a data folder without classes
            exc.show()
            raise SystemExit(int(Exit.INPUT)) from None
        except KeyboardInterrupt:
            click.echo("\n" + t("cli.interrupted"), err=True)
            raise SystemExit(int(Exit.INTERRUPTED)) from None
        except ModelFileError as exc:
            click.echo(t("cli.error", message=exc), err=True)
            raise SystemExit(int(Exit.MODEL)) from None
        except GaikanError as exc:
            click.echo(t("cli.error", message=exc), err=True)
            raise SystemExit(int(Exit.INPUT)) from None
        except Exception as exc:
            if os.environ.get("GAIKAN_DEBUG"):
                raise
            click.echo(t("cli.internal", kind=type(exc).__name__, message=exc), err=True)
            raise SystemExit(int(Exit.INTERNAL)) from None


_MISSING_PATH = re.compile(r"(?:Path|File|Directory) (['\"])(?P<path>.*)\1 does not exist\.")


def _show_usage_error(exc: click.UsageError) -> None:
    """A usage error in the chosen (non-English) language: the message, then where help is."""
    from ..i18n import t

    message = exc.message
    missing = _MISSING_PATH.fullmatch(message)
    if missing:
        message = t("cli.path_missing", path=missing.group("path"))
    if isinstance(exc, click.BadParameter):
        hint = exc.param_hint or (exc.param.get_error_hint(exc.ctx) if exc.param else None)
        if hint:
            message = t("cli.bad_value", param=hint, message=message)
    click.echo(t("cli.error", message=message), err=True)
    if exc.ctx is not None:
        click.echo(t("cli.usage_hint", command=exc.ctx.command_path), err=True)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
@click.version_option(__version__, prog_name="gaikan")
@lang_option()
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

"""gaikan's command line: a thin layer over the library (no maths here).

Each sub-command lives in its own module and imports heavy dependencies
(torch, fastapi) inside the command function, so ``gaikan --help`` stays
fast and works without the extras.
"""

from __future__ import annotations

import sys

import click

from .. import __version__

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gaikan")
def cli() -> None:
    """gaikan (外観): visual inspection from a handful of good images."""


def _register() -> None:
    from . import core, serve, synth, train

    for mod in (core, synth, train, serve):
        for cmd in getattr(mod, "COMMANDS", []):
            cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="gaikan", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

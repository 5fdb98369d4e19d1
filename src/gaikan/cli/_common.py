"""What every command shares: exit codes, error reporting, option parsing, progress.

No maths here: commands parse, load, call the library and save.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click

__all__ = [
    "EXIT_CODES_HELP",
    "Exit",
    "collect",
    "fail",
    "lang_option",
    "load_model",
    "max_pixels_option",
    "parse_params",
    "parse_size",
    "progress",
    "retention_options",
    "split_top",
    "threshold_option",
]


class Exit(IntEnum):
    """gaikan's exit codes, the same for every command."""

    OK = 0  #: success (parts may have been flagged without --fail-on-defect)
    DEFECT = 1  #: --fail-on-defect and at least one part judged defect
    USAGE = 2  #: bad command line or option values
    INPUT = 3  #: input problems: no or unreadable images, too few good images, a part not inspected
    MODEL = 4  #: the model file is missing, refused or unusable here
    INTERNAL = 5  #: a bug in gaikan (reported without a traceback; GAIKAN_DEBUG=1 shows it)
    INTERRUPTED = 130  #: interrupted (Ctrl-C); results so far are kept


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 defect found (only with --fail-on-defect); 2 usage error; "
    "3 input problem (no or unreadable images, too few good images, or with --fail-on-defect "
    "a part that could not be inspected); 4 model file refused or unusable; 5 internal error; "
    "130 interrupted (results so far are kept)."
)


def fail(msg: str, code: Exit = Exit.USAGE) -> NoReturn:
    """Print ``error: msg`` (in the chosen language) on stderr and exit with ``code``."""
    from ..i18n import t

    click.echo(t("cli.error", message=msg), err=True)
    raise SystemExit(int(code))


def progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr (silent when stderr is not a terminal); ``desc`` already translated."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, disable=None
    )


def parse_size(value: str | None) -> tuple[int, int] | None:
    """``"128"`` → (128, 128); ``"96x128"`` → (96, 128) (HxW); None stays None."""
    from .._validation import as_hw
    from ..errors import ParameterError

    if value is None:
        return None
    try:
        return as_hw(value.replace(",", "x").replace(" ", ""))
    except ParameterError as exc:
        raise click.BadParameter(f"{exc} (HxW, e.g. 128 or 96x128)") from None


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options → dict; values parsed as JSON, else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="-p/--param")
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out[key.strip().replace("-", "_")] = val
    return out


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and braces: "a[x=[1,2]],b" → ["a[x=[1,2]]", "b"]."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def collect(inputs: Sequence[str]) -> list[Path]:
    """Image files under ``inputs`` (files and folders, recursively); exit 3 if none."""
    from ..i18n import t
    from ..io import find_images

    try:
        files = find_images(inputs)
    except FileNotFoundError as exc:
        fail(str(exc), Exit.INPUT)
    if not files:
        fail(t("cli.no_images", inputs=", ".join(inputs)), Exit.INPUT)
    return files


def load_model(path: str) -> Any:
    """Open any gaikan model file; exit 4 with the reason if it cannot be used."""
    from ..detectors.registry import load
    from ..errors import GaikanError
    from ..i18n import t

    try:
        return load(path)
    except (GaikanError, ImportError, OSError) as exc:
        fail(t("cli.model_unusable", path=path, reason=exc), Exit.MODEL)


def _check_threshold(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"must be a finite number ≥ 0, got {value!r}")
    return value


def localize_epilogs(ctx: click.Context) -> None:
    """Put the exit-code help of every command in the chosen language (help texts stay English)."""
    from ..i18n import LANGS, t

    known = {EXIT_CODES_HELP} | {t("cli.exit_codes", lang=lang) for lang in LANGS}
    root = ctx.find_root().command
    commands = [root, *getattr(root, "commands", {}).values()]
    for cmd in commands:
        if cmd.epilog in known:
            cmd.epilog = t("cli.exit_codes")


def _set_lang(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..i18n import set_lang

    # The group's --lang always decides (None: back to GAIKAN_LANG / the locale), so that
    # one process running several commands (tests) does not keep an earlier choice;
    # a sub-command's --lang only overrides when given.
    if value is not None or isinstance(ctx.command, click.Group):
        set_lang(value)
    localize_epilogs(ctx)
    return value


def lang_option(expose_value: bool = False) -> Any:
    """``--lang ja|en``: the language of the messages (default: GAIKAN_LANG, then the locale)."""
    return click.option(
        "--lang",
        type=click.Choice(["ja", "en"], case_sensitive=False),
        default=None,
        is_eager=True,
        expose_value=expose_value,
        callback=_set_lang,
        help="Language of the messages and reports: ja or en "
        "(default: $GAIKAN_LANG, then the locale, then en).",
    )


def max_pixels_option() -> Any:
    """``--max-pixels``: the largest image decoded (the decoder's bomb guard follows it)."""
    return click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=None,
        help="Largest image decoded, in pixels before resizing (default 64 MP).",
    )


def retention_options(f: Any) -> Any:
    """``--keep``, ``--keep-days``, ``--keep-size`` and ``--station`` of the recording commands."""
    for opt in reversed(
        [
            click.option(
                "--keep",
                type=click.Choice(["ng", "all", "none"]),
                default="ng",
                show_default=True,
                help="Which images (and overlays) to keep next to the database.",
            ),
            click.option(
                "--keep-days",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="Remove kept images older than this.",
            ),
            click.option(
                "--keep-size",
                default=None,
                help="Remove the oldest kept images beyond this size (e.g. 20G).",
            ),
            click.option(
                "--station",
                default=None,
                help="Station name recorded with each result (default: host name).",
            ),
        ]
    ):
        f = opt(f)
    return f


def threshold_option(help_text: str) -> Any:
    """``--threshold``: finite and ≥ 0, else a usage error (exit 2)."""
    return click.option(
        "--threshold", type=float, default=None, callback=_check_threshold, help=help_text
    )

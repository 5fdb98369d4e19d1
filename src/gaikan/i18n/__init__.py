"""Messages in Japanese and English: :func:`t` and the language choice.

The catalogs are JSON package data (``en.json``, ``ja.json``), one flat
``{key: text}`` object each, texts with ``{name}`` placeholders.  English is
the reference: a key missing from another language falls back to its English
text, and a key missing everywhere shows as the key itself (never an error on
the line).

The language is, in order: :func:`set_lang` (the CLI's ``--lang``), the
``GAIKAN_LANG`` environment variable, the locale (``LC_ALL``, ``LC_MESSAGES``,
``LANG`` starting with ``ja`` → Japanese), else English.

No third-party import: ``import gaikan`` stays light.
"""

from __future__ import annotations

import json
import os
import string
from functools import cache
from importlib import resources
from typing import Any

from ..errors import ParameterError

__all__ = [
    "LANGS",
    "catalog",
    "chosen_lang",
    "current_lang",
    "negotiate",
    "normalize_lang",
    "placeholders",
    "set_lang",
    "t",
]

#: The languages gaikan speaks; the first is the fallback.
LANGS: tuple[str, ...] = ("en", "ja")

_chosen: str | None = None


def normalize_lang(value: str | None) -> str | None:
    """A language tag or locale name → ``"en"``/``"ja"``, or None when not one of those.

    ``"ja_JP.UTF-8"``, ``"ja-JP"``, ``"JA"`` → ``"ja"``; ``"en_US"`` → ``"en"``;
    ``"C"``, ``"fr"``, ``""`` and None → None.
    """
    if not value:
        return None
    base = value.strip().lower().replace("_", "-").split(".")[0].split("@")[0].split("-")[0]
    return base if base in LANGS else None


def set_lang(lang: str | None) -> None:
    """Fix the language for this process (None: back to the environment's choice).

    Raises
    ------
    ParameterError
        A language gaikan does not have (use ``"en"`` or ``"ja"``).
    """
    global _chosen
    if lang is None:
        _chosen = None
        return
    norm = normalize_lang(lang)
    if norm is None:
        raise ParameterError(f"language {lang!r} is not available: use one of {', '.join(LANGS)}")
    _chosen = norm


def chosen_lang() -> str | None:
    """The language fixed by :func:`set_lang` (the CLI's ``--lang``), None when not fixed."""
    return _chosen


def current_lang() -> str:
    """The language in force: :func:`set_lang`, ``GAIKAN_LANG``, the locale, else ``"en"``."""
    if _chosen is not None:
        return _chosen
    env = normalize_lang(os.environ.get("GAIKAN_LANG"))
    if env is not None:
        return env
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:  # the first one set decides, as in POSIX
            return "ja" if normalize_lang(value) == "ja" else "en"
    return "en"


@cache
def catalog(lang: str) -> dict[str, str]:
    """The ``{key: text}`` catalog of ``lang`` (empty for an unknown language)."""
    if lang not in LANGS:
        return {}
    text = resources.files(__package__).joinpath(f"{lang}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()}


class _Keep(dict[str, Any]):
    """format_map's mapping: an unknown placeholder stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def t(key: str, lang: str | None = None, **vars: Any) -> str:
    """The message ``key`` in ``lang`` (default :func:`current_lang`), ``{vars}`` filled in.

    Parameters
    ----------
    key : str
        A catalog key, e.g. ``"inspect.summary"``.
    lang : {"en", "ja"}, optional
    **vars
        Values of the text's ``{name}`` placeholders.

    Returns
    -------
    str
        The text; English when ``lang`` lacks the key, the key itself when
        no catalog has it.
    """
    lang = normalize_lang(lang) or current_lang()
    text = catalog(lang).get(key)
    if text is None:
        text = catalog(LANGS[0]).get(key, key)
    try:
        return text.format_map(_Keep(vars))
    except (ValueError, IndexError, AttributeError, KeyError):  # a malformed text: show it raw
        return text


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders of a catalog text (for the catalogs' own tests)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def negotiate(accept_language: str | None) -> str | None:
    """The best of :data:`LANGS` for an HTTP ``Accept-Language`` header (None: no match).

    Ranges are taken by their q-value (default 1, ``q=0`` refused); ties keep
    the header's order; ``*`` means English.
    """
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, val = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        lang = LANGS[0] if tag.strip() == "*" else normalize_lang(tag)
        if lang is not None and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None

"""The station pages' translations: ``GET /v1/i18n`` and ``/static/i18n.js``.

Each page has one catalog, ``static/i18n/<page>.json``, shaped
``{"en": {key: text}, "ja": {key: text}}``; every ``*.json`` there is merged
when the routes are added.  ``GET /v1/i18n`` answers
``{"lang": "ja"|"en", "messages": {key: text}}`` for the language chosen by,
in order: the ``?lang=`` query, the server's ``--lang``
(:attr:`ServiceConfig.lang`), the ``Accept-Language`` header (q-values),
else English.  A key a language lacks is sent in English, so a page never
shows a bare key.  ``/static/i18n.js`` applies the messages to the page (see
the contract in docs/decisions.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..i18n import LANGS, negotiate, normalize_lang
from .config import ServiceConfig
from .errors import ApiError

__all__ = ["add_i18n_routes", "choose_lang", "load_page_catalogs"]

_STATIC = Path(__file__).parent / "static"
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def load_page_catalogs(folder: Path = _STATIC / "i18n") -> dict[str, dict[str, str]]:
    """Every page catalog in ``folder`` merged: ``{lang: {key: text}}``, English filled in.

    Raises
    ------
    ValueError
        A catalog that is not ``{"en": {...}, "ja": {...}}`` JSON (a packaging bug).
    """
    merged: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a page catalog must be a JSON object of languages")
        for lang, messages in data.items():
            if lang not in merged or not isinstance(messages, dict):
                raise ValueError(f"{path}: {lang!r} is not one of {LANGS} with a key → text object")
            merged[lang].update({str(k): str(v) for k, v in messages.items()})
    english = merged[LANGS[0]]
    return {lang: {**english, **messages} for lang, messages in merged.items()}


def choose_lang(query: str | None, server: str | None, accept_language: str | None) -> str:
    """The page language: ``?lang=``, then the server's ``--lang``, then Accept-Language, then en.

    Raises
    ------
    ApiError
        400 for a ``?lang=`` gaikan does not have.
    """
    if query:
        lang = normalize_lang(query)
        if lang is None:
            raise ApiError(400, f"lang={query!r} is not available: use one of {', '.join(LANGS)}")
        return lang
    return normalize_lang(server) or negotiate(accept_language) or LANGS[0]


def add_i18n_routes(app: FastAPI, config: ServiceConfig) -> None:
    """Add ``GET /v1/i18n`` and ``GET /static/i18n.js`` to ``app`` (once; a second call is a no-op)."""
    if getattr(app.state, "i18n_routes", False):
        return
    app.state.i18n_routes = True
    catalogs = load_page_catalogs()
    script = (_STATIC / "i18n.js").read_bytes()

    async def messages(request: Request, lang: str | None = None) -> Any:
        """The page messages in the negotiated language: ``{"lang": ..., "messages": {...}}``."""
        chosen = choose_lang(lang, config.lang, request.headers.get("accept-language"))
        return JSONResponse(
            {"lang": chosen, "messages": catalogs[chosen]},
            headers={**_HEADERS, "Content-Language": chosen, "Vary": "Accept-Language"},
        )

    async def i18n_js() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8", headers=_HEADERS)

    app.add_api_route("/v1/i18n", messages, methods=["GET"], summary="Page translations")
    app.add_api_route("/static/i18n.js", i18n_js, methods=["GET"], include_in_schema=False)

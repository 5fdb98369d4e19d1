"""The history page's static files and its translation catalog (no browser needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import gaikan

STATIC = Path(gaikan.__file__).parent / "service" / "static"


def _used_keys() -> dict[str, str]:
    """Every i18n key the history page and review.js use, with its English text."""
    keys: dict[str, str] = {}
    for name in ("history.js", "review.js"):
        text = (STATIC / name).read_text(encoding="utf-8")
        for m in re.finditer(r'T\(\s*"([\w.]+)",\s*"((?:[^"\\]|\\.)*)"', text):
            keys[m.group(1)] = m.group(2)
    for name in ("history.html", "index.html"):
        text = (STATIC / name).read_text(encoding="utf-8")
        for m in re.finditer(r'data-i18n="((?:history|review)\.\w+)"[^>]*>([^<]*)<', text):
            keys.setdefault(m.group(1), m.group(2).strip())
        for m in re.finditer(r'data-i18n-placeholder="((?:history|review)\.\w+)"', text):
            keys.setdefault(m.group(1), "")
    return keys


def test_catalog_covers_every_string_in_english_and_japanese():
    # the page's catalog and the review widget's (shared with the station page)
    catalog: dict[str, dict[str, str]] = {"en": {}, "ja": {}}
    for page in ("history", "review"):
        part = json.loads((STATIC / "i18n" / f"{page}.json").read_text(encoding="utf-8"))
        assert set(part) == {"en", "ja"}
        for lang in catalog:
            catalog[lang].update(part[lang])
    used = _used_keys()
    assert len(used) > 50
    assert set(catalog["en"]) == set(catalog["ja"]) == set(used)
    for key, en in used.items():
        if en:  # the catalog's English is the page's fallback text
            assert catalog["en"][key] == en, key
        ja = catalog["ja"][key]
        assert ja, key
        # the same {placeholders} in both languages
        assert set(re.findall(r"\{(\w+)\}", ja)) == set(
            re.findall(r"\{(\w+)\}", catalog["en"][key])
        ), key
    assert catalog["ja"]["history.control_title"].startswith("画像スコアの管理図")
    assert catalog["ja"]["history.yield_title"] == "歩留まりと不良率"


@pytest.mark.serve
def test_history_page_and_scripts_are_served():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gaikan.service import create_app

    rng = np.random.default_rng(0)
    det = gaikan.SOARTC(kernel=8, stride=4).fit(rng.normal(100, 3, (6, 32, 32)))
    with TestClient(create_app(det, token="tok")) as client:
        page = client.get("/history")
        assert page.status_code == 200  # open, like "/": the data behind it needs the token
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text  # nothing from a CDN
        for src in re.findall(r'<script src="([^"]+)"', page.text):
            if src != "/static/i18n.js":  # the translations' script (its own work)
                assert client.get(src).status_code == 200, src
        assert "gaikanReview" in client.get("/static/review.js").text
        assert '<script src="/static/review.js">' in client.get("/").text

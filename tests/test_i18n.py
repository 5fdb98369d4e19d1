"""Japanese and English: the catalogs, the language choice, the CLI's line messages and
report, and the station's ``GET /v1/i18n`` negotiation (issue 15's 日本語)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gaikan
import gaikan.i18n as i18n
from conftest import plant_defect, structured_images
from gaikan.cli import cli
from gaikan.errors import ParameterError

STATION_CATALOGS = Path(gaikan.__file__).parent / "service" / "static" / "i18n"
LOCALE_VARS = ("GAIKAN_LANG", "LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(autouse=True)
def english_environment(monkeypatch):
    """Every test starts from an environment that does not choose a language."""
    for var in LOCALE_VARS:
        monkeypatch.delenv(var, raising=False)
    i18n.set_lang(None)
    yield
    i18n.set_lang(None)


# ---------------------------------------------------------------- catalogs
def _pairs():
    yield "gaikan/i18n", i18n.catalog("en"), i18n.catalog("ja")
    for path in sorted(STATION_CATALOGS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert set(data) == {"en", "ja"}, path
        yield path.name, data["en"], data["ja"]


def test_every_key_in_both_languages_with_the_same_placeholders():
    seen = 0
    for name, en, ja in _pairs():
        assert en, name
        assert set(en) == set(ja), (name, set(en) ^ set(ja))
        for key, text in en.items():
            assert ja[key].strip(), (name, key)
            assert i18n.placeholders(text) == i18n.placeholders(ja[key]), (name, key)
        seen += 1
    assert seen >= 2  # the CLI's catalog and at least the station page's


def test_page_catalog_keys_carry_their_page_prefix():
    for path in STATION_CATALOGS.glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert all(k.startswith(path.stem + ".") for k in data["en"]), path


def test_japanese_texts_are_japanese():
    ja = i18n.catalog("ja")
    assert ja["verdict.ok"] == "合格" and ja["verdict.defect"] == "不合格"
    assert "閾値" in ja["report.threshold"] and "検査" in ja["inspect.summary"]


def test_missing_key_falls_back_to_english_then_to_the_key(monkeypatch):
    fake = {"en": {"only.en": "hello {name}", "both": "en"}, "ja": {"both": "日本語"}}
    monkeypatch.setattr(i18n, "catalog", lambda lang: fake.get(lang, {}))
    assert i18n.t("only.en", "ja", name="line 7") == "hello line 7"
    assert i18n.t("both", "ja") == "日本語"
    assert i18n.t("no.such.key", "ja") == "no.such.key"
    assert i18n.t("only.en", "en") == "hello {name}"  # a missing variable stays visible


def test_t_fills_variables_in_the_current_language():
    i18n.set_lang("ja")
    assert i18n.t("watch.summary", ok=3, defect=1, error=0, resumed="", db="x.db") == (
        "合格 3 件、不合格 1 件、エラー 0 件 → x.db"
    )
    assert i18n.t("watch.summary", "en", ok=3, defect=1, error=0, resumed="", db="x.db") == (
        "3 ok, 1 defect, 0 error → x.db"
    )


# ---------------------------------------------------------------- language choice
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "en"),
        ({"LANG": "ja_JP.UTF-8"}, "ja"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}, "en"),  # LC_ALL decides first
        ({"LC_ALL": "ja_JP.eucJP", "LANG": "C"}, "ja"),
        ({"GAIKAN_LANG": "ja", "LC_ALL": "C"}, "ja"),
        ({"GAIKAN_LANG": "en", "LANG": "ja_JP.UTF-8"}, "en"),
        ({"GAIKAN_LANG": "fr", "LANG": "ja_JP.UTF-8"}, "ja"),  # unknown: the locale decides
    ],
)
def test_language_from_environment(monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert i18n.current_lang() == expected


def test_set_lang_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("GAIKAN_LANG", "en")
    i18n.set_lang("JA")
    assert i18n.current_lang() == "ja" and i18n.chosen_lang() == "ja"
    i18n.set_lang(None)
    assert i18n.current_lang() == "en"
    with pytest.raises(ParameterError, match="fr"):
        i18n.set_lang("fr")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ja,en;q=0.8", "ja"),
        ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
        ("en-US,en;q=0.9,ja;q=0.8", "en"),
        ("fr-FR, de;q=0.9, ja;q=0.5", "ja"),
        ("en;q=0.3, ja;q=0.7", "ja"),
        ("ja;q=0, fr", None),
        ("fr, de", None),
        ("*", "en"),
        ("", None),
        (None, None),
    ],
)
def test_accept_language_negotiation(header, expected):
    assert i18n.negotiate(header) == expected


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """A fitted model file and a small test folder (good + defective parts)."""
    root = tmp_path_factory.mktemp("line")
    sets = {
        "test/good": structured_images(3, seed=5),
        "test/scratch": plant_defect(structured_images(3, seed=6))[0],
    }
    for folder, imgs in sets.items():
        (root / folder).mkdir(parents=True)
        for i, im in enumerate(imgs):
            Image.fromarray(im.astype(np.uint8)).save(root / folder / f"{i:03d}.png")
    det = gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(10, seed=0).astype(float))
    det.save(root / "model.gaikan")
    return root


def _inspect(line, out, *args):
    return CliRunner().invoke(
        cli, [*args, str(line / "model.gaikan"), str(line / "test"), "-o", str(out)]
    )


def test_inspect_summary_and_report_in_japanese(line, tmp_path):
    res = CliRunner().invoke(
        cli,
        ["--lang", "ja", "inspect", str(line / "model.gaikan"), str(line / "test"), "-o",
         str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "検査 6 枚、不合格(不良)" in res.output and "検査できなかった画像 0 枚" in res.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<html lang="ja">' in page and "gaikan 検査レポート" in page
    assert "閾値" in page and "全結果" in page and ">不合格<" in page
    assert "inspected" not in res.output


def test_inspect_lang_after_the_subcommand_and_from_the_environment(line, tmp_path, monkeypatch):
    res = CliRunner().invoke(
        cli,
        ["inspect", "--lang", "ja", str(line / "model.gaikan"), str(line / "test"), "-o",
         str(tmp_path / "a")],
    )  # fmt: skip
    assert res.exit_code == 0 and "検査 6 枚" in res.output, res.output
    monkeypatch.setenv("GAIKAN_LANG", "ja")
    res = CliRunner().invoke(
        cli, ["inspect", str(line / "model.gaikan"), str(line / "test"), "-o", str(tmp_path / "b")]
    )
    assert res.exit_code == 0 and "検査 6 枚" in res.output, res.output
    # --lang en beats the environment; and English output is what it always was
    res = CliRunner().invoke(
        cli,
        ["--lang", "en", "inspect", str(line / "model.gaikan"), str(line / "test"), "-o",
         str(tmp_path / "c")],
    )  # fmt: skip
    assert res.exit_code == 0 and "6 inspected, " in res.output, res.output
    assert "could not be inspected →" in res.output
    page = (tmp_path / "c" / "report.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in page and "gaikan inspection report" in page


def test_one_process_does_not_keep_an_earlier_language(line, tmp_path):
    runner = CliRunner()
    args = [str(line / "model.gaikan"), str(line / "test")]
    assert (
        "検査"
        in runner.invoke(cli, ["--lang", "ja", "inspect", *args, "-o", str(tmp_path / "1")]).output
    )
    res = runner.invoke(cli, ["inspect", *args, "-o", str(tmp_path / "2")])
    assert "6 inspected" in res.output and "検査" not in res.output


def test_common_errors_in_japanese(line, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["--lang", "ja", "inspect", str(tmp_path / "none.gaikan"), "x"])
    assert res.exit_code == 2
    assert "エラー: 'MODEL' の値が正しくありません" in res.output
    assert (
        "none.gaikan' が見つかりません" in res.output and "inspect -h' で確認できます" in res.output
    )
    bad = tmp_path / "bad.gaikan"
    bad.write_bytes(b"not a model")
    res = runner.invoke(cli, ["--lang", "ja", "inspect", str(bad), str(line / "test")])
    assert res.exit_code == 4 and "エラー: モデルファイルを使用できません" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli, ["--lang", "ja", "inspect", str(line / "model.gaikan"), str(empty)])
    assert res.exit_code == 3 and "に画像が見つかりません" in res.output
    (empty / "a.png").write_bytes(b"this is not an image")
    res = runner.invoke(
        cli,
        [
            "--lang",
            "ja",
            "inspect",
            str(line / "model.gaikan"),
            str(empty),
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 3
    assert (
        "検査できませんでした: " in res.output and "検査できた画像が 1 枚もありません" in res.output
    )
    # English keeps click's own wording
    res = runner.invoke(cli, ["inspect", str(tmp_path / "none.gaikan"), "x"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_exit_code_help_follows_the_language():
    runner = CliRunner()
    ja = runner.invoke(cli, ["--lang", "ja", "inspect", "-h"])
    assert ja.exit_code == 0 and "終了コード: 0 正常終了" in ja.output
    en = runner.invoke(cli, ["inspect", "-h"])
    assert "Exit codes: 0 ok" in en.output and "終了コード" not in en.output
    assert "終了コード" in runner.invoke(cli, ["--lang", "ja", "-h"]).output


def test_watch_summary_in_japanese(line, tmp_path, caplog):
    pytest.importorskip("sqlalchemy")
    caplog.set_level("INFO", logger="gaikan.watch")
    inbox = tmp_path / "in"
    inbox.mkdir()
    for p in sorted((line / "test").rglob("*.png"))[:3]:
        (inbox / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    res = CliRunner().invoke(
        cli,
        ["watch", str(inbox), "--model", str(line / "model.gaikan"), "--once", "--settle", "0",
         "--db", str(tmp_path / "records.db"), "-q", "--lang", "ja"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "合格" in res.output and "件、エラー 0 件 →" in res.output
    # the per-file lines an operator watches name the verdict in Japanese too
    lines = [r.getMessage() for r in caplog.records if r.name == "gaikan.watch"]
    assert len(lines) == 3 and all(" → " in m for m in lines), lines
    assert all(m.split()[0] in ("合格", "不合格", "エラー") for m in lines), lines


# ---------------------------------------------------------------- the report
def test_write_report_language(tmp_path):
    from gaikan.inspection import Inspection
    from gaikan.report import write_report

    recs = [
        Inspection(file="a.png", score=1.0, verdict="ok", label="good"),
        Inspection(file="b.png", score=20.0, verdict="defect", label="scratch"),
    ]
    ja = write_report(tmp_path / "ja", recs, threshold=10.0, model="m", lang="ja").read_text()
    assert "混同行列" in ja and "良品(フォルダ)" in ja and "オーバーレイの見方" in ja
    assert "How to read" not in ja
    en = write_report(tmp_path / "en", recs, threshold=10.0, model="m").read_text()
    assert "Confusion counts" in en and "How to read the overlays" in en and "混同" not in en


# ---------------------------------------------------------------- the station's /v1/i18n
def test_service_config_lang():
    from gaikan.service.config import check_lang

    assert check_lang("ja-JP") == "ja" and check_lang(None) is None
    with pytest.raises(ParameterError, match="fr"):
        check_lang("fr")


@pytest.fixture(scope="module")
def station_app():
    pytest.importorskip("fastapi")
    from gaikan.service import create_app
    from gaikan.service.i18n import add_i18n_routes

    det = gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(8, seed=1).astype(float))
    app = create_app(det, workers=1)
    add_i18n_routes(app, app.state.config)  # a no-op where create_app already added them
    add_i18n_routes(app, app.state.config)
    return app


@pytest.fixture(scope="module")
def live_station(station_app):
    httpx = pytest.importorskip("httpx")
    from test_service import LiveServer

    with LiveServer(station_app) as server:
        yield server, httpx


@pytest.mark.serve
def test_i18n_negotiation(live_station, station_app):
    server, httpx = live_station

    def get(query="", **headers):
        resp = httpx.get(server.url + "/v1/i18n" + query, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp

    resp = get(**{"Accept-Language": "ja,en;q=0.8"})
    body = resp.json()
    assert body["lang"] == "ja" and resp.headers["content-language"] == "ja"
    assert body["messages"]["station.badge_ok"] == "合格"
    assert body["messages"]["station.threshold"] == "閾値"
    assert "accept-language" in resp.headers["vary"].lower()
    assert get("?lang=en", **{"Accept-Language": "ja"}).json()["lang"] == "en"
    assert get(**{"Accept-Language": "en-US,en;q=0.9,ja;q=0.8"}).json()["lang"] == "en"
    en = get().json()
    assert en["lang"] == "en" and en["messages"]["station.badge_ok"] == "OK"
    assert set(en["messages"]) == set(body["messages"])
    bad = httpx.get(server.url + "/v1/i18n?lang=fr", timeout=10)
    assert bad.status_code == 400 and "fr" in bad.json()["error"]
    # the server's --lang beats Accept-Language; ?lang= beats the server
    config = station_app.state.config
    config.lang = "ja"
    try:
        assert get(**{"Accept-Language": "en"}).json()["lang"] == "ja"
        assert get("?lang=en", **{"Accept-Language": "ja"}).json()["lang"] == "en"
    finally:
        config.lang = None
    js = httpx.get(server.url + "/static/i18n.js", timeout=10)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "gaikanI18n" in js.text and "gaikan-i18n-ready" in js.text
    page = httpx.get(server.url + "/", timeout=10).text
    assert '<script src="/static/i18n.js"></script>' in page and 'data-i18n="station.' in page


@pytest.mark.serve
def test_serve_lang_option(line, monkeypatch):
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from fastapi.testclient import TestClient

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.setdefault("app", app))
    res = CliRunner().invoke(
        cli,
        ["serve", str(line / "model.gaikan"), "--no-record", "--workers", "1", "--lang", "ja"],
    )
    assert res.exit_code == 0, res.output
    assert "gaikan 検査ステーション: http://127.0.0.1:8000/" in res.output
    app = served["app"]
    assert app.state.config.lang == "ja"
    with TestClient(app) as client:
        assert client.get("/v1/i18n", headers={"Accept-Language": "en"}).json()["lang"] == "ja"
    served.clear()
    res = CliRunner().invoke(
        cli, ["--lang", "en", "serve", str(line / "model.gaikan"), "--no-record", "--workers", "1"]
    )
    assert res.exit_code == 0 and "gaikan inspection station: http" in res.output, res.output
    assert served["app"].state.config.lang == "en"
    served.clear()
    res = CliRunner().invoke(cli, ["serve", str(line / "model.gaikan"), "--no-record"])
    assert res.exit_code == 0 and served["app"].state.config.lang is None


@pytest.mark.serve
def test_i18n_open_without_the_token():
    """The page's texts are public: a station with a token answers /v1/i18n without it,
    while the rest of /v1 still needs the token."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gaikan.service import create_app

    det = gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(8, seed=1).astype(float))
    with TestClient(create_app(det, workers=1, token="line-7", lang="ja")) as client:
        resp = client.get("/v1/i18n")
        assert resp.status_code == 200 and resp.json()["lang"] == "ja"
        assert client.get("/v1/model").status_code == 401
        auth = {"Authorization": "Bearer line-7"}
        assert client.get("/v1/model", headers=auth).status_code == 200

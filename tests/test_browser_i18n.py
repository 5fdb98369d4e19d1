"""The station page in Japanese, in a real headless Chromium (issue 15's 日本語).

The browser asks for Japanese (Accept-Language ``ja,en;q=0.8``): the page's
labels and the verdict badges are Japanese; the language switcher turns it
into English at once, and the choice survives a reload.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from test_browser import SIZE, chromium_driver, part

pytestmark = [pytest.mark.browser, pytest.mark.serve]

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import gaikan
from gaikan.service import create_app
from gaikan.service.i18n import add_i18n_routes
from test_service import LiveServer


@pytest.fixture
def browser(tmp_path):
    yield from chromium_driver(tmp_path, accept_language="ja,en;q=0.8")


def test_station_in_japanese_then_english(browser, tmp_path):
    good = np.stack([part(s) for s in range(12)]).astype(np.float64)
    det = gaikan.SOARTC(kernel=8, stride=4).fit(good)
    files = {}
    for name, img in {"good-001.png": part(100), "dent-001.png": part(101, "square")}.items():
        files[name] = tmp_path / name
        Image.fromarray(img).save(files[name])
    app = create_app(det, workers=2)
    add_i18n_routes(app, app.state.config)  # a no-op where create_app adds them itself

    d = browser
    wait = WebDriverWait(d, 20)
    text = lambda element_id: d.find_element(By.ID, element_id).text
    lang = lambda: d.execute_script("return document.documentElement.lang")

    def badges():
        return {
            c.find_element(By.CLASS_NAME, "name").text: c.find_element(By.CLASS_NAME, "badge").text
            for c in d.find_elements(By.CSS_SELECTOR, "#results .card")
        }

    with LiveServer(app) as srv:
        d.get(srv.url + "/")
        assert d.execute_script("return navigator.languages[0]") == "ja"
        wait.until(lambda d: lang() == "ja")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        wait.until(lambda d: "閾値" in text("model-info"))
        assert d.title == "gaikan — 外観検査ステーション"
        assert d.find_element(By.CSS_SELECTOR, "header .sub").text == "外観検査ステーション"
        assert "ここに画像をドロップ" in text("drop-zone")
        assert text("download-csv") == "CSV をダウンロード"
        assert text("summary") == "まだ画像を検査していません。"
        assert "閾値" in d.find_element(By.ID, "legend").text

        d.find_element(By.ID, "file-input").send_keys(
            f"{files['good-001.png']}\n{files['dent-001.png']}"
        )
        wait.until(lambda d: badges() == {"good-001.png": "合格", "dent-001.png": "不合格"})
        assert text("summary") == "2 枚: 合格 1、不合格 1"
        wait.until(lambda d: "判定" in text("viewer-details"))
        assert "不合格(不良)" in text("viewer-details") and "スコア" in text("viewer-details")
        shot = tmp_path / "station_ja.png"
        assert d.save_screenshot(str(shot))
        if os.environ.get("GAIKAN_SCREENSHOT_DIR"):  # docs/img holds the committed one
            shutil.copy(shot, os.path.join(os.environ["GAIKAN_SCREENSHOT_DIR"], shot.name))

        # The switcher: English at once, labels and badges and the details.
        Select(d.find_element(By.ID, "lang-switch")).select_by_value("en")
        wait.until(lambda d: lang() == "en")
        wait.until(lambda d: badges() == {"good-001.png": "OK", "dent-001.png": "NG"})
        assert text("summary") == "2 images: 1 OK, 1 NG"
        assert text("download-csv") == "Download CSV"
        assert "Verdict" in text("viewer-details") and "threshold" in text("model-info")
        assert d.execute_script("return localStorage.getItem('gaikan-lang')") == "en"

        # The choice outlives a reload (the page asks ?lang=en despite Accept-Language).
        d.refresh()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        wait.until(lambda d: "threshold" in text("model-info"))
        assert lang() == "en" and text("summary") == "No images inspected yet."
        assert Select(d.find_element(By.ID, "lang-switch")).first_selected_option.text == "English"

        # And back to Japanese.
        Select(d.find_element(By.ID, "lang-switch")).select_by_value("ja")
        wait.until(lambda d: text("summary") == "まだ画像を検査していません。")
        assert lang() == "ja" and "閾値" in text("model-info")

        logs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    assert SIZE == 64  # the parts of test_browser


def test_token_dialog_in_japanese(browser):
    """The dialog api.js adds on the first 401 speaks the page's language."""
    det = gaikan.SOARTC(kernel=8, stride=4).fit(
        np.stack([part(s) for s in range(12)]).astype(np.float64)
    )
    app = create_app(det, workers=1, token="s3cret")
    d = browser
    wait = WebDriverWait(d, 20)
    with LiveServer(app) as srv:
        d.get(srv.url + "/")
        dialog = wait.until(lambda d: d.find_element(By.ID, "token-dialog"))
        wait.until(lambda d: dialog.get_attribute("open"))
        assert d.find_elements(By.ID, "token-dialog") == [dialog]  # one, made by api.js
        wait.until(lambda d: d.find_element(By.ID, "token-ok").text == "トークンを使う")
        assert dialog.find_element(By.TAG_NAME, "p").text == (
            "このステーションにはアクセストークンが必要です。"
        )
        assert d.find_element(By.ID, "token-input").get_attribute("placeholder") == "トークン"
        d.find_element(By.ID, "token-input").send_keys("s3cret")
        d.find_element(By.ID, "token-ok").click()
        wait.until(lambda d: "閾値" in d.find_element(By.ID, "model-info").text)
        assert not dialog.get_attribute("open")

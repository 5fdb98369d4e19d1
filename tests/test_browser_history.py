"""The history dashboard and the operator review in real headless Chromium.

Inspects parts through the station page, overrides one verdict there
(NG → OK with a note), opens ``/history``: rows with thumbnails, the
reviewed count, the yield bars and the Shewhart chart; filters by verdict
and by time; reviews a row; a new inspection shows up by the page's own
polling.  Saves ``review.png`` and ``history.png`` (copied to
``$GAIKAN_SCREENSHOT_DIR`` when set: ``docs/img`` holds the committed ones).
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from test_browser import chromium_driver, part  # skips without chromium

pytest.importorskip("sqlalchemy")
httpx = pytest.importorskip("httpx")
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import gaikan
from gaikan.service import create_app
from test_service import LiveServer, png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.serve]

TOKEN = "line-7"


@pytest.fixture
def browser(tmp_path):
    yield from chromium_driver(tmp_path)


def waiter(d, timeout: float = 30) -> WebDriverWait:
    """A wait that retries when the page redrew an element under it (polling redraws)."""
    return WebDriverWait(d, timeout, ignored_exceptions=(StaleElementReferenceException,))


def _save(d, tmp_path, name: str) -> None:
    shot = tmp_path / name
    assert d.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 800
    if os.environ.get("GAIKAN_SCREENSHOT_DIR"):
        shutil.copy(shot, os.path.join(os.environ["GAIKAN_SCREENSHOT_DIR"], name))


def test_history_dashboard_and_review(browser, tmp_path):
    good = np.stack([part(s) for s in range(12)]).astype(np.float64)
    det = gaikan.SOARTC(kernel=8, stride=4).fit(good)
    files = {}
    for name, img in {
        "good-001.png": part(100),
        "dent-001.png": part(101, "square"),
        "scratch-002.png": part(102, "scratch"),
        "good-002.png": part(104),
    }.items():
        files[name] = tmp_path / name
        Image.fromarray(img).save(files[name])

    d = browser
    wait = waiter(d)
    app = create_app(
        det, token=TOKEN, workers=2, db=str(tmp_path / "records.db"), keep="all", model_id="part"
    )
    with LiveServer(app) as srv:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # ---- the station: inspect four parts, override the dent (NG → OK) with a note
        d.get(srv.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open"))
        d.find_element(By.ID, "token-input").send_keys(TOKEN)
        d.find_element(By.ID, "token-ok").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert d.find_element(By.ID, "history-link").is_displayed()
        # left empty, the review is recorded under the identity the server knows
        wait.until(
            lambda d: (
                d.find_element(By.ID, "reviewer-name").get_attribute("placeholder")
                == "your name (else token@127.0.0.1)"
            )
        )
        d.find_element(By.ID, "reviewer-name").send_keys("Sato")
        d.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in files.values()))

        def cards():
            return {
                c.find_element(By.CLASS_NAME, "name").text: c
                for c in d.find_elements(By.CSS_SELECTOR, "#results .card")
            }

        wait.until(
            lambda d: (
                len(cards()) == 4
                and all(c.get_attribute("data-verdict") != "pending" for c in cards().values())
                and len(d.find_elements(By.CSS_SELECTOR, "#results .card .review")) == 4
            )
        )
        verdicts = {n: c.get_attribute("data-verdict") for n, c in cards().items()}
        assert verdicts == {
            "good-001.png": "ok",
            "dent-001.png": "defect",
            "scratch-002.png": "defect",
            "good-002.png": "ok",
        }
        dent = cards()["dent-001.png"]
        assert dent.find_element(By.CLASS_NAME, "review-override").text == "Override → OK"
        dent.find_element(By.CLASS_NAME, "review-note").send_keys("dust on the lens")
        dent.find_element(By.CLASS_NAME, "review-override").click()
        wait.until(lambda d: cards()["dent-001.png"].get_attribute("data-verdict") == "ok")
        state = cards()["dent-001.png"].find_element(By.CLASS_NAME, "review-state").text
        assert "Sato" in state and "dust on the lens" in state, state
        assert "3 OK, 1 NG" in d.find_element(By.ID, "summary").text
        # the server recorded it, with who and the note
        with httpx.Client(base_url=srv.url, headers=auth) as c:
            items = c.get("/v1/inspections", params={"reviewed": 1}).json()["items"]
            assert [(r["source"], r["verdict"], r["review_verdict"]) for r in items] == [
                ("dent-001.png", "defect", "ok")
            ]
            one = c.get(f"/v1/inspections/{items[0]['id']}").json()
            assert one["reviews"][-1]["who"] == "Sato"
            assert one["reviews"][-1]["note"] == "dust on the lens"
            control = c.get("/v1/control").json()
            scores = {r["source"]: r["score"] for r in c.get("/v1/inspections").json()["items"]}
        _save(d, tmp_path, "review.png")

        # ---- the history page (the token is in this tab's sessionStorage already)
        d.set_window_size(1400, 1500)
        d.get(srv.url + "/history")
        body = d.find_element(By.TAG_NAME, "body")
        wait.until(lambda d: body.get_attribute("data-ready") == "1")

        def rows():
            return d.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")

        def summary(attr):
            return d.find_element(By.ID, "summary").get_attribute("data-" + attr)

        def bars(attr):
            return sum(
                int(g.get_attribute("data-" + attr))
                for g in d.find_elements(By.CSS_SELECTOR, "#yield-chart g.bar")
            )

        def chart(attr):
            svg = d.find_elements(By.CSS_SELECTOR, "#control-chart svg")
            return int(svg[0].get_attribute("data-" + attr)) if svg else -1

        wait.until(lambda d: len(rows()) == 4)
        # thumbnails: every image was kept (keep=all), drawn from the overlay route
        wait.until(
            lambda d: (
                d.execute_script(
                    "return [...document.querySelectorAll('#rows img.row-thumb')]"
                    ".filter(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0).length"
                )
                == 4
            )
        )
        assert summary("n") == "4" and summary("reviewed") == "1" and summary("overridden") == "1"
        assert (bars("ok"), bars("defect")) == (3, 1)
        assert chart("points") == 4
        beyond = sum(not control["lcl"] <= s <= control["ucl"] for s in scores.values())
        assert beyond >= 1  # the scratch, far above the band
        assert chart("beyond") == beyond
        assert len(d.find_elements(By.CSS_SELECTOR, "#control-chart .pt.ooc")) == beyond
        assert d.find_elements(By.CSS_SELECTOR, "#control-chart line.ucl")
        assert d.find_elements(By.CSS_SELECTOR, "#control-chart line.threshold-line")
        dent_row = d.find_element(By.CSS_SELECTOR, "#rows tr[data-reviewed='1']")
        assert dent_row.get_attribute("data-verdict") == "ok"
        assert "Sato" in dent_row.text

        # ---- filters: verdict NG → only the scratch; the CSV link carries the filter
        Select(d.find_element(By.ID, "f-verdict")).select_by_value("defect")
        d.find_element(By.ID, "apply").click()
        wait.until(lambda d: len(rows()) == 1)
        assert "scratch-002.png" in rows()[0].text
        href = d.find_element(By.ID, "csv-link").get_attribute("href")
        assert parse_qs(urlparse(href).query) == {"verdict": ["defect"]}
        # a time range in the future: nothing
        d.execute_script("document.getElementById('f-since').value = '2099-01-01T00:00';")
        d.find_element(By.ID, "apply").click()
        wait.until(lambda d: not rows() and d.find_elements(By.CSS_SELECTOR, "#rows .empty-row"))
        assert "since" in parse_qs(
            urlparse(d.find_element(By.ID, "csv-link").get_attribute("href")).query
        )
        d.find_element(By.ID, "reset-filters").click()
        wait.until(lambda d: len(rows()) == 4)

        # ---- review a row: the scratch NG → OK with a note; table and charts follow
        scratch = next(r for r in rows() if "scratch-002.png" in r.text)
        scratch.find_element(By.CLASS_NAME, "review-note").send_keys("cosmetic, within spec")
        scratch.find_element(By.CLASS_NAME, "review-override").click()
        wait.until(lambda d: summary("reviewed") == "2")
        wait.until(lambda d: (bars("ok"), bars("defect")) == (4, 0))
        scratch = next(r for r in rows() if "scratch-002.png" in r.text)
        assert scratch.get_attribute("data-verdict") == "ok"
        assert "cosmetic, within spec" in scratch.text

        # ---- a new inspection elsewhere shows up by the page's polling (no click)
        with httpx.Client(base_url=srv.url, headers=auth) as c:
            r = c.post(
                "/v1/inspect",
                files=[("files", ("spot-003.png", png_bytes(part(103, "spot")), "image/png"))],
            )
            assert r.status_code == 200, r.text
        # the table within a poll (5 s), the charts within 10 s of the last drawing
        waiter(d, 60).until(lambda d: len(rows()) == 5 and chart("points") == 5)
        assert bars("defect") == 1 and summary("n") == "5"
        _save(d, tmp_path, "history.png")

        logs = [
            e
            for e in d.get_log("browser")
            if e["level"] == "SEVERE"
            and "401" not in e["message"]
            and "i18n.js" not in e["message"]  # written by the translations work, may be absent
        ]
        assert not logs, logs


class ToyClassifier:
    """A numpy stand-in for a fitted classifier: 'bright' / 'dark' spots, else 'good'."""

    kind = "classifier"
    classes_ = np.array(["bright", "dark", "good"])
    good_class_ = "good"
    input_shape_ = (64, 64)

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        out = np.full((len(X), 3), 0.05)
        out[:, 2] = 0.9
        for i, x in enumerate(X):
            if (x > 220).mean() > 0.005:
                out[i] = (0.9, 0.05, 0.05)
            elif (x < 30).mean() > 0.005:
                out[i] = (0.05, 0.9, 0.05)
        return out

    def explain(self, X, target=None):
        X = np.asarray(X, dtype=np.float64)
        return np.abs(X - np.median(X, axis=(1, 2), keepdims=True))


def test_history_classes_chart_and_class_filter(browser, tmp_path):
    def dark(seed):
        img = part(seed)
        img[20:30, 20:30] = 5
        return img

    uploads = {
        "b1.png": part(1, "spot"),
        "b2.png": part(2, "spot"),
        "d1.png": dark(3),
        "g1.png": part(4),
        "g2.png": part(5),
    }
    d = browser
    wait = waiter(d)
    app = create_app(ToyClassifier(), workers=1, db=str(tmp_path / "records.db"))
    with LiveServer(app) as srv:
        with httpx.Client(base_url=srv.url) as c:
            r = c.post(
                "/v1/inspect",
                files=[("files", (n, png_bytes(x), "image/png")) for n, x in uploads.items()],
            )
            assert r.status_code == 200, r.text
            assert [x["class"] for x in r.json()["results"]] == [
                "bright",
                "bright",
                "dark",
                "good",
                "good",
            ]
        d.get(srv.url + "/history")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert d.find_element(By.ID, "classes-box").is_displayed()
        stacked = {
            b.get_attribute("data-class"): int(b.get_attribute("data-n"))
            for b in d.find_elements(By.CSS_SELECTOR, "#classes-chart rect.cls-bar")
        }
        assert stacked == {"bright": 2, "dark": 1}  # one hour, the good class left out
        assert "No control limits" in d.find_element(By.ID, "control-note").text
        # per shift (8 h from 06:00 UTC): one bar starting at a shift's start, the same counts
        Select(d.find_element(By.ID, "bucket")).select_by_value("shift")
        wait.until(
            lambda d: (
                [
                    g.get_attribute("data-start")[11:]
                    for g in d.find_elements(By.CSS_SELECTOR, "#yield-chart g.bar")
                ]
                in (["06:00:00+00:00"], ["14:00:00+00:00"], ["22:00:00+00:00"])
            )
        )
        bar = d.find_element(By.CSS_SELECTOR, "#yield-chart g.bar")
        assert (bar.get_attribute("data-ok"), bar.get_attribute("data-defect")) == ("2", "3")
        assert len(d.find_elements(By.CSS_SELECTOR, "#control-chart .pt")) == 5
        rows = d.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")
        assert len(rows) == 5 and "bright 90.0%" in rows[-1].text
        # the class filter (a classifier's field) narrows the table
        assert d.find_element(By.ID, "f-class").is_displayed()
        d.find_element(By.ID, "f-class").send_keys("dark")
        d.find_element(By.ID, "apply").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr[data-id]")) == 1)
        assert "d1.png" in d.find_element(By.ID, "rows").text
        href = d.find_element(By.ID, "csv-link").get_attribute("href")
        assert parse_qs(urlparse(href).query) == {"class": ["dark"]}

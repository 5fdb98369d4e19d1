"""The station's UI in a real headless browser (Debian's chromium + chromedriver).

Loads the page (it asks for the token once), uploads a good and a defective
part, checks the OK/NG badges and the heatmap overlay, drags the threshold
slider and checks that a badge flips; saves a screenshot in tmp_path.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser, pytest.mark.serve]

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "needs /usr/bin/chromium and /usr/bin/chromedriver (apt: chromium chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

import gaikan
from gaikan.service import create_app
from test_service import LiveServer

SIZE = 64
TOKEN = "line-7"


def part(seed: int, defect: str | None = None) -> np.ndarray:
    """A structured 8-bit grey part with an optional planted defect."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + 20 * np.sin(xx / 5.0)
    img = img * rng.uniform(0.97, 1.03) + rng.normal(0, 3.0, (SIZE, SIZE))
    if defect == "square":
        img[36:46, 12:22] += 90
    elif defect == "scratch":
        img[18:20, 20:52] -= 80
    elif defect == "spot":
        img[44:50, 44:50] = 250
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def chromium_driver(tmp_path, accept_language: str | None = None):
    """Headless chromium with its browser log kept (a generator: yields the driver,
    quits it afterwards); skips the test when chromium does not start.
    ``accept_language`` (e.g. ``"ja,en;q=0.8"``) sets the browser's languages."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    if accept_language:
        opts.add_argument(f"--lang={accept_language.split(',')[0]}")
        opts.add_experimental_option("prefs", {"intl.accept_languages": accept_language})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    try:
        driver = webdriver.Chrome(options=opts, service=service)
    except Exception as exc:  # a broken install is a skip, not a failure of gaikan
        pytest.skip(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(tmp_path):
    yield from chromium_driver(tmp_path)


DROP_JS = """
const dt = new DataTransfer();
for (const [name, b64] of arguments[0]) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  dt.items.add(new File([bytes], name, {type: "image/png"}));
}
const zone = document.getElementById("drop-zone");
for (const type of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}
"""


def test_ui_inspects_flips_and_overlays(browser, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    good = np.stack([part(s) for s in range(12)]).astype(np.float64)
    det = gaikan.SOARTC(kernel=8, stride=4).fit(good)
    files = {}
    for name, img in {
        "good-001.png": part(100),
        "dent-001.png": part(101, "square"),
        "scratch-002.png": part(102, "scratch"),
        "spot-003.png": part(103, "spot"),
        "good-002.png": part(104),
    }.items():
        files[name] = tmp_path / name
        Image.fromarray(img).save(files[name])

    d = browser
    wait = WebDriverWait(d, 20)
    with LiveServer(create_app(det, token=TOKEN, workers=2)) as srv:
        d.get(srv.url + "/")
        # The API answers 401: the page asks for the token once.
        dialog = wait.until(lambda d: d.find_element(By.ID, "token-dialog"))
        wait.until(lambda d: dialog.get_attribute("open") is not None)
        d.find_element(By.ID, "token-input").send_keys(TOKEN)
        d.find_element(By.ID, "token-ok").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "soartc" in d.find_element(By.ID, "model-info").text

        def cards():
            return d.find_elements(By.CSS_SELECTOR, "#results .card")

        def verdicts():
            return {
                c.find_element(By.CLASS_NAME, "name").text: c.get_attribute("data-verdict")
                for c in cards()
            }

        def badges():
            return {
                c.find_element(By.CLASS_NAME, "name").text: c.find_element(
                    By.CLASS_NAME, "badge"
                ).text
                for c in cards()
            }

        # Upload a good and a defective part through the file picker.
        d.find_element(By.ID, "file-input").send_keys(
            f"{files['good-001.png']}\n{files['dent-001.png']}"
        )
        wait.until(lambda d: len(cards()) == 2 and "pending" not in verdicts().values())
        assert badges() == {"good-001.png": "OK", "dent-001.png": "NG"}

        # The defect is selected and its heatmap overlay is loaded and drawn.
        wait.until(
            lambda d: (
                d.execute_script(
                    "const o = document.getElementById('viewer-overlay');"
                    "return o.src.startsWith('blob:') && o.complete && o.naturalWidth;"
                )
                == SIZE
            )
        )
        assert "NG" in d.find_element(By.ID, "viewer-details").text
        opacity = d.find_element(By.ID, "opacity")
        opacity.send_keys(Keys.END)
        assert d.find_element(By.ID, "viewer-overlay").value_of_css_property("opacity") == "1"

        # Drag the threshold slider down: the good part's badge flips to NG, live.
        slider = d.find_element(By.ID, "threshold")
        slider.send_keys(Keys.HOME)
        wait.until(lambda d: badges()["good-001.png"] == "NG")
        assert "(model)" not in d.find_element(By.ID, "threshold-value").text
        d.find_element(By.ID, "threshold-reset").click()
        wait.until(lambda d: badges() == {"good-001.png": "OK", "dent-001.png": "NG"})

        # Three more parts dropped on the drop zone (a synthetic drop event
        # carrying real PNG files: WebDriver cannot drag from the desktop).
        dropped = [
            [n, base64.b64encode(files[n].read_bytes()).decode()]
            for n in ("scratch-002.png", "spot-003.png", "good-002.png")
        ]
        d.execute_script(DROP_JS, dropped)
        wait.until(lambda d: len(cards()) == 5 and "pending" not in verdicts().values())
        assert verdicts() == {
            "good-001.png": "ok",
            "dent-001.png": "defect",
            "scratch-002.png": "defect",
            "spot-003.png": "defect",
            "good-002.png": "ok",
        }
        assert "5 images: 2 OK, 3 NG" in d.find_element(By.ID, "summary").text
        opacity.send_keys(Keys.ARROW_LEFT * 35)  # 100 → 65 %
        cards()[2].click()  # the scratch
        wait.until(
            lambda d: (
                d.execute_script(
                    "const o = document.getElementById('viewer-overlay');"
                    "return o.complete && o.naturalWidth;"
                )
                == SIZE
            )
        )
        shot = tmp_path / "gaikan-ui.png"
        assert d.save_screenshot(str(shot))
        with Image.open(shot) as im:
            assert im.size[0] >= 800
        if os.environ.get("GAIKAN_SCREENSHOT_DIR"):
            shutil.copy(shot, os.environ["GAIKAN_SCREENSHOT_DIR"])

        # Download CSV: what is shown, at the threshold as set.
        d.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        d.find_element(By.ID, "download-csv").click()
        csv_path = downloads / "gaikan-results.csv"
        wait.until(lambda d: csv_path.exists() and csv_path.stat().st_size > 0)
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
        assert [r["file"] for r in rows] == list(verdicts())
        assert {r["file"]: r["verdict"] for r in rows} == verdicts()
        assert all(float(r["threshold"]) == pytest.approx(det.threshold_) for r in rows)
        assert all(float(r["score"]) > 0 and r["error"] == "" for r in rows)

        # No script errors in the console (the expected 401 before the token aside).
        logs = [
            e for e in d.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]
        ]
        assert not logs, logs

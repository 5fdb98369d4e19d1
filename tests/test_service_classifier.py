"""The inspection station serving a defect *classifier*: class, confidence,
probabilities, verdict from the good class, explanation overlays — through a
real HTTP client (httpx) against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import plant_classes, tiny_classifier

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("torch")
pytest.importorskip("timm")
from PIL import Image

from gaikan.io import decode_image
from gaikan.service import create_app
from test_service import PNG_MAGIC, LiveServer, assert_json_error, metric, png_bytes

pytestmark = [pytest.mark.serve, pytest.mark.deep]

SIZE = 32
CLASSES = ("bright", "dark", "good")


def planted(n: int, seed: int):
    """Noisy grey parts (8-bit values); 'bright'/'dark' get a square somewhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(110, 12, (n, SIZE, SIZE))
    y = np.array([CLASSES[i % 3] for i in range(n)])
    X, y, _ = plant_classes(X, y, rng, box=7, delta=90.0, margin=2)
    return X, y


@pytest.fixture(scope="module")
def clf():
    X, y = planted(90, seed=0)
    return tiny_classifier().fine_tune(X, y, epochs=4, base_lr=1e-2)


@pytest.fixture(scope="module")
def model_file(clf, tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "defects.gaikan"
    clf.save(path)
    return path


@pytest.fixture(scope="module")
def live(model_file):
    # every test client is 127.0.0.1: allow the 6 concurrent uploads below
    app = create_app(str(model_file), workers=2, max_files=8, max_uploads_per_client=6)
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        srv.client = client
        yield srv


@pytest.fixture(scope="module")
def parts():
    """Test parts, one of each class (0 bright, 1 dark, 2 good, ...)."""
    X, y = planted(6, seed=1)
    return X, y


def decoded(*pngs: bytes) -> np.ndarray:
    return np.stack([decode_image(p, "x", size=(SIZE, SIZE)) for p in pngs])


class Wrapped:
    """A fitted classifier seen under other labels, optionally failing on bright images."""

    kind = "classifier"  # served as the registry's classifier kind

    def __init__(self, clf, labels=None, fail_bright=False, good_class=None):
        self.clf = clf
        self.labels = np.asarray(labels if labels is not None else clf.classes_)
        self.fail_bright = fail_bright
        self.good_class = good_class
        self.input_shape_ = clf.input_shape_

    @property
    def classes_(self):
        return self.labels

    @property
    def good_class_(self):
        return self.good_class if self.good_class in self.labels.tolist() else None

    def predict_proba(self, X):
        if self.fail_bright and np.asarray(X).max() > 250:
            raise FloatingPointError("boom")
        return self.clf.predict_proba(X)

    def explain(self, X, target=None):
        idx = [self.labels.tolist().index(t) for t in np.asarray(target).tolist()]
        return self.clf.explain(X, target=self.clf.classes_[idx])


# ---------------------------------------------------------------- the happy path
def test_classify_batch_with_per_file_errors(live, clf, parts):
    X, y = parts
    pngs = [png_bytes(x) for x in X[:3]]
    files = [
        ("files", ("bright.png", pngs[0], "image/png")),
        ("files", ("notes.txt", b"just some text, not an image", "text/plain")),
        ("files", ("dark.png", pngs[1], "image/png")),
        ("files", ("cut.png", pngs[2][: len(pngs[2]) // 2], "image/png")),
        ("files", ("good.png", pngs[2], "image/png")),
    ]
    r = live.client.post("/v1/inspect", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    res = body["results"]
    assert [x["file"] for x in res] == [
        "bright.png",
        "notes.txt",
        "dark.png",
        "cut.png",
        "good.png",
    ]
    for i in (1, 3):
        assert "class" not in res[i] and "score" not in res[i]
        assert res[i]["error"].startswith(res[i]["file"] + ":"), res[i]
    assert "not an image" in res[1]["error"]
    assert "truncated" in res[3]["error"] or "corrupt" in res[3]["error"]
    ok = [res[0], res[2], res[4]]
    # Exactly the library's answer on the same decoded pixels.
    pix = decoded(*pngs)
    expect_cls = clf.predict(pix).tolist()
    expect_p = clf.predict_proba(pix)
    assert [x["class"] for x in ok] == expect_cls
    assert expect_cls == y[:3].tolist()  # the toy classifier learned the planted squares
    labels = [str(c) for c in clf.classes_]
    for x, p in zip(ok, expect_p):
        probs = x["probabilities"]
        assert list(probs) == labels
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose([probs[k] for k in labels], p, rtol=1e-6, atol=1e-9)
        assert x["confidence"] == pytest.approx(max(p)) == pytest.approx(probs[x["class"]])
        assert x["score"] == pytest.approx(1.0 - probs["good"])
        assert x["verdict"] == ("defect" if x["score"] > 0.5 else "ok")
        assert x["threshold"] == 0.5
        assert x["map"]["shape"] == [SIZE, SIZE]
        assert 0 <= x["map"]["mean"] <= x["map"]["max"] == x["score"]
        png = live.client.get(x["overlay_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png.content)) as im:
            assert im.size == (SIZE, SIZE) and im.mode == "RGB"
    assert [x["verdict"] for x in ok] == ["defect", "defect", "ok"]
    assert body["threshold"] == 0.5 and body["image_shape"] == [SIZE, SIZE]


def test_map_is_the_explanation_of_the_predicted_class(live, clf, parts):
    X, _ = parts
    data = png_bytes(X[0])
    r = live.client.post("/v1/inspect?inline=1", files={"files": ("a.png", data, "image/png")})
    res = r.json()["results"][0]
    head, b64 = res["overlay"].split(",", 1)
    assert head == "data:image/png;base64" and base64.b64decode(b64).startswith(PNG_MAGIC)
    assert "overlay_url" not in res
    pix = decoded(data)
    amap = clf.explain(pix, target=clf.predict(pix))[0]
    row, col = divmod(int(np.argmax(amap)), SIZE)
    assert res["map"]["peak"] == {"row": row, "col": col}
    # the explanation, scaled so that its maximum is the score
    assert res["map"]["max"] == pytest.approx(res["score"])
    from gaikan.inspection import calibrate

    assert res["map"]["mean"] == pytest.approx(calibrate(amap, res["score"]).mean())

    r = live.client.post("/v1/inspect?overlay=0", files={"files": ("a.png", data, "image/png")})
    res = r.json()["results"][0]
    assert res["class"] == "bright" and "overlay" not in res and "overlay_url" not in res


def test_model_info_and_metrics(live, clf, parts):
    m = live.client.get("/v1/model").json()
    assert m["kind"] == "classifier" and m["detector"] == "classifier"
    assert m["class"] == "Classifier"
    assert m["classes"] == ["bright", "dark", "good"] and m["good_class"] == "good"
    assert m["image_shape"] == [SIZE, SIZE]
    assert m["threshold"] == 0.5
    assert m["n_train"] == clf.n_train_ and m["model_file"] == "defects.gaikan"
    assert m["params"]["image_size"] == 48
    assert live.client.get("/healthz").json()["model"] == "Classifier"

    X, _ = parts
    before = live.client.get("/metrics").text
    files = [("files", (f"{i}.png", png_bytes(X[i]), "image/png")) for i in range(3)]
    files.append(("files", ("x.txt", b"nope", "text/plain")))
    res = live.client.post("/v1/inspect", files=files).json()["results"]
    ng = sum(x.get("verdict") == "defect" for x in res)
    text = live.client.get("/metrics").text
    for name, delta in (
        ("gaikan_images_inspected_total", 3),
        ("gaikan_defects_found_total", ng),
        ("gaikan_image_errors_total", 1),
        ("gaikan_internal_errors_total", 0),
    ):
        assert metric(text, name) - metric(before, name) == delta, name
    assert metric(text, "gaikan_model_threshold") == 0.5


def test_concurrent_requests_agree(live, parts):
    X, y = parts
    data = [png_bytes(x) for x in X]

    def one(i):
        with httpx.Client(base_url=live.url, timeout=60) as c:
            r = c.post("/v1/inspect?overlay=0", files={"files": (f"{i}.png", data[i], "image/png")})
            return i, r.json()["results"][0]

    with ThreadPoolExecutor(6) as ex:
        out = list(ex.map(one, list(range(6)) * 2))
    seen: dict[int, set] = {}
    for i, res in out:
        seen.setdefault(i, set()).add(
            (
                res["class"],
                res["score"],
                res["map"]["max"],
                res["map"]["peak"]["row"],
                res["map"]["peak"]["col"],
            )
        )
    assert all(len(s) == 1 for s in seen.values())  # shared network, no cross-talk
    assert [next(iter(seen[i]))[0] for i in range(6)] == y.tolist()


# ---------------------------------------------------------------- verdict rules
def test_a_classifier_without_good_class_judges_everything_defect(clf, parts):
    X, _ = parts
    wrapped = Wrapped(clf, labels=["crack", "dent", "scratch"])
    with (
        LiveServer(create_app(wrapped, workers=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        m = c.get("/v1/model").json()
        assert m["kind"] == "classifier" and m["good_class"] is None and m["threshold"] == 0.5
        assert m["classes"] == ["crack", "dent", "scratch"]
        files = [("files", (f"{i}.png", png_bytes(X[i]), "image/png")) for i in range(3)]
        body = c.post("/v1/inspect", files=files).json()
        res = body["results"]
        assert [x["class"] for x in res] == ["crack", "dent", "scratch"]  # bright, dark, good
        for x in res:  # P(good) = 0: score 1, always a defect
            assert x["verdict"] == "defect" and x["score"] == 1.0 and x["threshold"] == 0.5
            assert x["confidence"] == max(x["probabilities"].values())
            assert x["overlay_url"].startswith("/v1/overlays/")
        text = c.get("/metrics").text
        assert metric(text, "gaikan_defects_found_total") == 3


def test_named_good_class_and_scoring_failure_is_a_per_file_error(clf, parts):
    X, _ = parts
    # good_class names the 'dark' column; bright images make the model fail
    wrapped = Wrapped(clf, labels=["bright", "fine", "other"], good_class="fine", fail_bright=True)
    bright = X[2].copy()
    bright[0, 0] = 255
    with (
        LiveServer(create_app(wrapped, workers=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        assert c.get("/v1/model").json()["good_class"] == "fine"
        files = [
            ("files", ("dark.png", png_bytes(X[1]), "image/png")),
            ("files", ("hot.png", png_bytes(bright), "image/png")),
            ("files", ("good.png", png_bytes(X[2]), "image/png")),
        ]
        r = c.post("/v1/inspect", files=files)
        assert r.status_code == 200
        res = r.json()["results"]
        assert res[1]["error"] == "hot.png: internal error while scoring"
        assert res[0]["class"] == "fine" and res[0]["verdict"] == "ok"
        assert res[0]["score"] == pytest.approx(1 - res[0]["probabilities"]["fine"])
        assert res[2]["class"] == "other" and res[2]["verdict"] == "defect"
        assert metric(c.get("/metrics").text, "gaikan_internal_errors_total") == 1


# ---------------------------------------------------------------- loading, CLI
def test_an_unfitted_classifier_is_refused():
    with pytest.raises(TypeError, match="not fitted"):
        create_app(tiny_classifier())


def test_gaikan_serve_accepts_a_classifier_file(model_file, parts, monkeypatch):
    from click.testing import CliRunner

    from gaikan.cli import cli

    served = {}

    def fake_run(app, **kw):  # instead of blocking in uvicorn.run: keep the app
        served["app"], served["kw"] = app, kw

    monkeypatch.setattr(uvicorn, "run", fake_run)
    res = CliRunner().invoke(cli, ["serve", str(model_file), "--port", "0", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "inspection station" in res.output
    X, _ = parts
    with LiveServer(served["app"]) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get("/v1/model").json()["model_file"] == "defects.gaikan"
        r = c.post("/v1/inspect", files={"files": ("g.png", png_bytes(X[2]), "image/png")})
        assert r.json()["results"][0]["class"] == "good"
        assert_json_error(c.get("/v1/overlays/nope.png"), 404)


# ---------------------------------------------------------------- the page, in a real browser
@pytest.fixture
def chromium(tmp_path):
    """Headless chromium as in test_browser.py (skipped where that module skips)."""
    tb = pytest.importorskip("test_browser")  # its import skips without chromium/selenium
    yield from tb.chromium_driver(tmp_path)


@pytest.mark.browser
def test_page_shows_class_and_confidence(chromium, live, parts, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    X, _ = parts
    paths = []
    for name, img in zip(("bright.png", "dark.png", "good.png"), X[:3]):
        paths.append(tmp_path / name)
        Image.fromarray(img.astype(np.uint8)).save(paths[-1])
    d, wait = chromium, WebDriverWait(chromium, 20)
    d.get(live.url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "classifier" in d.find_element(By.ID, "model-info").text
    assert not d.find_element(By.ID, "threshold").is_displayed()  # no slider for a classifier
    d.find_element(By.ID, "file-input").send_keys("\n".join(map(str, paths)))

    def cards():
        return {
            c.find_element(By.CLASS_NAME, "name").text: (
                c.get_attribute("data-verdict"),
                c.find_element(By.CLASS_NAME, "badge").text,
            )
            for c in d.find_elements(By.CSS_SELECTOR, "#results .card")
        }

    wait.until(lambda d: len(cards()) == 3 and all(v != "pending" for v, _ in cards().values()))
    shown = cards()
    assert {k: v for k, (v, _) in shown.items()} == {
        "bright.png": "defect",
        "dark.png": "defect",
        "good.png": "ok",
    }
    for name, (_, badge) in shown.items():
        cls, pct = badge.rsplit(" ", 1)
        assert cls == name[:-4] and pct.endswith("%") and 33 <= int(pct[:-1]) <= 100, badge
    assert "3 images: 1 OK, 2 NG" in d.find_element(By.ID, "summary").text
    # The first NG part is selected: its class and overlay are shown.
    wait.until(
        lambda d: (
            d.execute_script(
                "const o = document.getElementById('viewer-overlay');"
                "return o.src.startsWith('blob:') && o.complete && o.naturalWidth;"
            )
            == SIZE
        )
    )
    details = d.find_element(By.ID, "viewer-details").text
    assert "Class" in details and "bright" in details and "Probabilities" in details
    if os.environ.get("GAIKAN_SCREENSHOT_DIR"):
        d.save_screenshot(
            os.path.join(os.environ["GAIKAN_SCREENSHOT_DIR"], "gaikan-ui-classifier.png")
        )
    logs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs

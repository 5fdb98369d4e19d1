"""The inspection station's REST API, through a real HTTP client (httpx)
against a real uvicorn server on 127.0.0.1 (and once through `gaikan serve`)."""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from PIL import Image

import gaikan
from gaikan.io import decode_image
from gaikan.service import create_app

pytestmark = pytest.mark.serve

SIZE = 48
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- helpers
def parts_image(seed: int, defect: bool = False) -> np.ndarray:
    """A structured 8-bit grey part; ``defect`` plants a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + 20 * np.sin(xx / 5.0)
    img = base * rng.uniform(0.97, 1.03) + rng.normal(0, 3.0, (SIZE, SIZE))
    if defect:
        img[20:28, 14:22] += 90
    return np.clip(np.rint(img), 0, 255)


def png_bytes(img: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    im = Image.fromarray(np.asarray(img).astype(np.uint8))
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port in a daemon thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def metric(text: str, name: str, labels: str = "") -> float:
    """Value of one sample in Prometheus text (0 if absent)."""
    pat = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.M)
    m = pat.search(text)
    return float(m.group(1)) if m else 0.0


def assert_json_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert body["status"] == status
    assert "Traceback" not in resp.text
    return body


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def detector():
    good = np.stack([parts_image(s) for s in range(12)])
    return gaikan.SOARTC(kernel=8, stride=4).fit(good)


@pytest.fixture(scope="module")
def live(detector):
    # every test client here is 127.0.0.1: allow the 8 concurrent uploads of the tests below
    app = create_app(
        detector,
        workers=2,
        max_upload_bytes=300_000,
        max_pixels=200_000,
        max_files=8,
        max_uploads_per_client=8,
    )
    with LiveServer(app) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            srv.client = client
            yield srv


@pytest.fixture(scope="module")
def images():
    return {"ok": parts_image(100), "ok2": parts_image(101), "ng": parts_image(102, defect=True)}


# ---------------------------------------------------------------- the happy path
def test_inspect_batch_in_upload_order_with_per_file_errors(live, detector, images):
    ok, ng = png_bytes(images["ok"]), png_bytes(images["ng"])
    files = [
        ("files", ("good.png", ok, "image/png")),
        ("files", ("notes.txt", b"just some text, not an image", "text/plain")),
        ("files", ("scratch.png", ng, "image/png")),
        ("files", ("cut.png", ok[: len(ok) // 2], "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("good2.jpg", png_bytes(images["ok2"], "JPEG"), "image/jpeg")),
    ]
    r = live.client.post("/v1/inspect", files=files)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["file"] for x in res] == [
        "good.png",
        "notes.txt",
        "scratch.png",
        "cut.png",
        "empty.png",
        "good2.jpg",
    ]
    assert [x.get("verdict") for x in res] == ["ok", "error", "defect", "error", "error", "ok"]
    for i in (1, 3, 4):
        assert "score" not in res[i]
        assert res[i]["error"].startswith(res[i]["file"] + ":"), res[i]
    assert "not an image" in res[1]["error"]
    assert "truncated" in res[3]["error"] or "corrupt" in res[3]["error"]
    assert "empty" in res[4]["error"]
    # Scores are exactly the library's on the same decoded pixels.
    expect = detector.detect(
        np.stack(
            [decode_image(ok, "a", size=(SIZE, SIZE)), decode_image(ng, "b", size=(SIZE, SIZE))]
        )
    )
    assert res[0]["score"] == pytest.approx(expect.scores[0], rel=1e-12)
    assert res[2]["score"] == pytest.approx(expect.scores[1], rel=1e-12)
    assert res[2]["score"] > 10 * res[0]["threshold"]
    for x in (res[0], res[2], res[5]):
        assert x["threshold"] == pytest.approx(detector.threshold_)
        assert x["map"]["shape"] == [SIZE, SIZE]
        assert x["map"]["max"] >= x["map"]["mean"] > 0
        assert 0 <= x["map"]["peak"]["row"] < SIZE and 0 <= x["map"]["peak"]["col"] < SIZE
        assert x["overlay_url"].startswith("/v1/overlays/")
        assert x["map"]["max"] == x["score"]  # the display map is calibrated to the score
    # The defect's hottest point lies on the planted square (rows 20-27, cols 14-21).
    arg = res[2]["map"]["peak"]
    assert 14 <= arg["row"] <= 33 and 8 <= arg["col"] <= 27, arg


def test_overlay_by_url_inline_and_off(live, images):
    data = png_bytes(images["ng"])
    r = live.client.post("/v1/inspect", files={"files": ("a.png", data, "image/png")})
    url = r.json()["results"][0]["overlay_url"]
    png = live.client.get(url)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(png.content)) as im:
        assert im.size == (SIZE, SIZE) and im.mode == "RGB"

    r = live.client.post(
        "/v1/inspect?inline=1&alpha=1", files={"files": ("a.png", data, "image/png")}
    )
    res = r.json()["results"][0]
    assert "overlay_url" not in res
    head, b64 = res["overlay"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(b64).startswith(PNG_MAGIC)

    r = live.client.post("/v1/inspect?overlay=0", files={"files": ("a.png", data, "image/png")})
    res = r.json()["results"][0]
    assert res["verdict"] == "defect" and "overlay" not in res and "overlay_url" not in res

    assert_json_error(live.client.get("/v1/overlays/doesnotexist.png"), 404)


def test_content_type_by_content_not_by_name(live, images):
    files = [
        ("files", ("photo.jpg", png_bytes(images["ok"]), "text/plain")),  # a PNG named .jpg
        ("files", ("evil.png", b"<script>alert(1)</script>", "image/png")),  # text named .png
        ("files", ("pic.bmp", png_bytes(images["ok"], "BMP"), "application/octet-stream")),
        ("files", ("rgba.png", png_bytes(images["ok"], mode="RGBA"), "image/png")),
        ("files", ("x.gif", png_bytes(images["ok"], "GIF"), "image/gif")),
    ]
    res = live.client.post("/v1/inspect", files=files).json()["results"]
    assert [x.get("verdict") for x in res] == ["ok", "error", "ok", "ok", "error"]
    assert "not an image" in res[1]["error"]
    assert "GIF" in res[4]["error"]


def test_filenames_are_labels_never_paths(live, images, tmp_path):
    before = set(os.listdir(tmp_path.parent))
    names = [
        "../../../../tmp/pwned.png",
        "C:\\Windows\\evil.png",
        "dir/sub/ok.png",
        "\x1b[31m\x07.png",
        "",
    ]
    # Hand-made body: httpx would percent-escape the control characters.
    data = png_bytes(images["ok"])
    body = (
        b"".join(
            b'--BND\r\nContent-Disposition: form-data; name="files"; filename="'
            + n.encode()
            + b'"\r\nContent-Type: image/png\r\n\r\n'
            + data
            + b"\r\n"
            for n in names
        )
        + b"--BND--\r\n"
    )
    res = live.client.post(
        "/v1/inspect", content=body, headers={"content-type": "multipart/form-data; boundary=BND"}
    )
    res = res.json()["results"]
    assert [x["file"] for x in res] == ["pwned.png", "evil.png", "ok.png", "[31m.png", "file5"]
    assert all(x["verdict"] == "ok" for x in res)
    assert not os.path.exists("/tmp/pwned.png")
    assert set(os.listdir(tmp_path.parent)) == before


# ---------------------------------------------------------------- limits and malformed requests
def test_limits_give_4xx_json(live, images):
    c = live.client
    big = (
        np.random.default_rng(0).integers(0, 256, (500, 500)).astype(np.uint8)
    )  # 250 kpx > 200 kpx
    res = c.post(
        "/v1/inspect",
        files=[
            ("files", ("big.png", png_bytes(big), "image/png")),
            ("files", ("ok.png", png_bytes(images["ok"]), "image/png")),
        ],
    )
    out = res.json()["results"]
    assert "200,000" in out[0]["error"] and "--max-pixels" in out[0]["error"]
    assert out[1]["verdict"] == "ok"

    body = assert_json_error(
        c.post("/v1/inspect", files={"files": ("x.png", b"\0" * 400_000)}), 413
    )
    assert "limit" in body["error"]
    many = [("files", (f"{i}.png", png_bytes(images["ok"]), "image/png")) for i in range(9)]
    assert_json_error(c.post("/v1/inspect", files=many), 413)


@pytest.mark.parametrize(
    "case",
    [
        "json",
        "no_boundary",
        "truncated",
        "garbage",
        "no_files_field",
        "empty_body",
        "bad_flag",
        "bad_alpha",
        "get",
        "unknown_path",
        "bad_length",
    ],
)
def test_malformed_requests_get_4xx_json(live, images, case):
    c = live.client
    ok = png_bytes(images["ok"])
    if case == "json":
        r = c.post("/v1/inspect", json={"files": ["a.png"]})
        assert_json_error(r, 415)
    elif case == "no_boundary":
        r = c.post("/v1/inspect", content=b"abc", headers={"content-type": "multipart/form-data"})
        assert_json_error(r, 400)
    elif case == "truncated":
        req = c.build_request("POST", "/v1/inspect", files={"files": ("a.png", ok, "image/png")})
        body = req.read()
        r = c.post(
            "/v1/inspect",
            content=body[: len(body) - 40],
            headers={"content-type": req.headers["content-type"]},
        )
        assert "truncated" in assert_json_error(r, 400)["error"]
    elif case == "garbage":
        r = c.post(
            "/v1/inspect",
            content=os.urandom(2000),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert_json_error(r, 400)
    elif case == "no_files_field":
        r = c.post("/v1/inspect", files={"image": ("a.png", ok, "image/png")}, data={"x": "1"})
        assert "'files'" in assert_json_error(r, 400)["error"]
    elif case == "empty_body":
        r = c.post(
            "/v1/inspect", content=b"", headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert_json_error(r, 400)
    elif case == "bad_flag":
        r = c.post("/v1/inspect?inline=maybe", files={"files": ("a.png", ok)})
        assert_json_error(r, 400)
    elif case == "bad_alpha":
        r = c.post("/v1/inspect?alpha=nan", files={"files": ("a.png", ok)})
        assert_json_error(r, 400)
    elif case == "get":
        assert_json_error(c.get("/v1/inspect"), 405)
    elif case == "unknown_path":
        assert_json_error(c.get("/../../etc/passwd"), 404)
    elif case == "bad_length":
        # A raw request whose Content-Length promises more than the limit.
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
            s.sendall(
                b"POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                b" boundary=b\r\nContent-Length: 999999999\r\n\r\n"
            )
            reply = b""
            while b'"error"' not in reply and len(reply) < 8192:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
        assert b'"error"' in reply


def test_client_disconnect_mid_upload_is_not_a_bug(live):
    lab = '{path="/v1/inspect",status="400"}'
    before = metric(live.client.get("/metrics").text, "gaikan_http_request_errors_total", lab)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n" + b"x" * 1000
        )
    deadline = time.monotonic() + 10
    while (
        metric(live.client.get("/metrics").text, "gaikan_http_request_errors_total", lab) == before
    ):
        assert time.monotonic() < deadline, "the server never finished the aborted request"
        time.sleep(0.05)
    assert metric(live.client.get("/metrics").text, "gaikan_internal_errors_total") == 0


def test_bad_inputs_never_reach_the_catch_all(live):
    """Runs after the bad-input tests above (module order): no 500s, no bugs."""
    text = live.client.get("/metrics").text
    assert metric(text, "gaikan_internal_errors_total") == 0
    assert 'status="500"' not in text
    assert (
        metric(text, "gaikan_http_request_errors_total", '{path="/v1/inspect",status="400"}') >= 5
    )


# ---------------------------------------------------------------- model, health, metrics
def test_model_and_health(live, detector):
    m = live.client.get("/v1/model").json()
    assert m["detector"] == "soartc"
    assert m["image_shape"] == [SIZE, SIZE]
    assert m["threshold"] == pytest.approx(detector.threshold_)
    assert m["n_train"] == 12
    assert m["params"]["kernel"] == 8 and m["params"]["stride"] == 4
    assert m["format_version"] >= 1
    assert m["limits"] == {"max_upload_bytes": 300_000, "max_pixels": 200_000, "max_files": 8}
    assert m["auth"] is False
    h = live.client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    ui = live.client.get("/")
    assert ui.status_code == 200 and "text/html" in ui.headers["content-type"]
    assert "/static/app.js" in ui.text and "http" not in re.sub(r"<!--.*?-->", "", ui.text).replace(
        "http-equiv", ""
    )  # nothing from a CDN
    for asset in ("/static/app.js", "/static/app.css"):
        assert live.client.get(asset).status_code == 200


def test_metrics_prometheus_text(live, images):
    c = live.client
    before = c.get("/metrics").text
    files = [
        ("files", ("a.png", png_bytes(images["ok"]), "image/png")),
        ("files", ("b.png", png_bytes(images["ng"]), "image/png")),
        ("files", ("c.txt", b"nope", "text/plain")),
    ]
    assert c.post("/v1/inspect", files=files).status_code == 200
    after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = after.text
    for name, delta in (
        ("gaikan_images_inspected_total", 2),
        ("gaikan_defects_found_total", 1),
        ("gaikan_image_errors_total", 1),
    ):
        assert metric(text, name) - metric(before, name) == delta, name
    lab = '{method="POST",path="/v1/inspect",status="200"}'
    name = "gaikan_http_requests_total"
    assert metric(text, name, lab) - metric(before, name, lab) == 1
    assert metric(text, "process_resident_memory_bytes") > 1e6
    # The whole exposition parses as Prometheus text; histogram buckets are cumulative.
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["gaikan_http_request_duration_seconds"]
    assert hist.type == "histogram"
    mine = [s for s in hist.samples if s.labels.get("path") == "/v1/inspect"]
    buckets = [s.value for s in mine if s.name.endswith("_bucket")]
    count = next(s.value for s in mine if s.name.endswith("_count"))
    assert buckets == sorted(buckets) and len(buckets) == 13 and buckets[-1] == count > 0
    assert families["gaikan_inspect_inflight"].type == "gauge"
    assert families["gaikan_http_requests"].type == "counter"


def test_concurrent_requests_agree(live, detector, images):
    data = {k: png_bytes(v) for k, v in images.items()}

    def one(k):
        with httpx.Client(base_url=live.url, timeout=30) as c:
            return k, c.post(
                "/v1/inspect?overlay=0", files={"files": (k, data[k], "image/png")}
            ).json()

    with ThreadPoolExecutor(8) as ex:
        out = list(ex.map(one, ["ok", "ng", "ok2"] * 6))
    scores: dict[str, set] = {}
    for k, body in out:
        res = body["results"][0]
        assert res["verdict"] == ("defect" if k == "ng" else "ok")
        scores.setdefault(k, set()).add(res["score"])
    assert all(len(s) == 1 for s in scores.values())  # shared model, no cross-talk


def test_a_real_bug_gives_json_500_and_is_counted(detector):
    app = create_app(detector, workers=1)

    async def broken():
        raise RuntimeError("secret internal detail")

    app.add_api_route("/v1/broken", broken, methods=["GET"])
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.get("/v1/broken")
        body = assert_json_error(r, 500)
        assert "secret" not in r.text
        assert body["error"].startswith("internal server error")
        assert metric(c.get("/metrics").text, "gaikan_internal_errors_total") == 1


def test_scoring_failure_is_a_per_file_error(detector, images):
    class Flaky:
        kind = "soartc"  # served as the detector it wraps
        """Fails on bright images only (stands in for a detector bug)."""

        image_shape_ = detector.image_shape_
        threshold_ = detector.threshold_

        def detect(self, X):
            if np.asarray(X).max() > 240:
                raise FloatingPointError("boom")
            return detector.detect(X)

    bright = images["ok"].copy()
    bright[0, 0] = 255
    with LiveServer(create_app(Flaky(), workers=1)) as srv, httpx.Client(base_url=srv.url) as c:
        files = [
            ("files", ("a.png", png_bytes(images["ok"]), "image/png")),
            ("files", ("b.png", png_bytes(bright), "image/png")),
        ]
        res = c.post("/v1/inspect", files=files).json()["results"]
        assert res[0]["verdict"] == "ok"
        assert res[1]["error"] == "b.png: internal error while scoring"
        assert metric(c.get("/metrics").text, "gaikan_internal_errors_total") == 1


# ---------------------------------------------------------------- auth, model files, CLI
def test_token_auth(detector, images):
    app = create_app(detector, token="s3cret", workers=1)
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url) as c:
        good = {"Authorization": "Bearer s3cret"}
        files = {"files": ("a.png", png_bytes(images["ok"]), "image/png")}
        for method, path in (
            ("GET", "/v1/model"),
            ("GET", "/metrics"),
            ("POST", "/v1/inspect"),
            ("GET", "/v1/overlays/x.png"),
        ):
            kw = {"files": files} if method == "POST" else {}
            r = c.request(method, path, **kw)
            assert_json_error(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert_json_error(
                c.request(method, path, headers={"Authorization": "Bearer nope"}, **kw), 401
            )
        # The page, its assets and the health check stay open.
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/inspect", files=files, headers=good)
        assert r.status_code == 200
        url = r.json()["results"][0]["overlay_url"]
        assert c.get(url).status_code == 401
        assert c.get(url, headers=good).content.startswith(PNG_MAGIC)
        assert c.get("/v1/model", headers=good).json()["auth"] is True


def test_create_app_from_model_file(detector, tmp_path, images):
    path = tmp_path / "part.gaikan"
    detector.save(path)
    with LiveServer(create_app(str(path), workers=1)) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get("/v1/model").json()["model_file"] == "part.gaikan"
        r = c.post("/v1/inspect", files={"files": ("n.png", png_bytes(images["ng"]), "image/png")})
        assert r.json()["results"][0]["verdict"] == "defect"
    with pytest.raises(TypeError):
        create_app(object())
    for bad in ("", " padded ", "tökén", "new\nline"):
        with pytest.raises(ValueError, match="token"):
            create_app(detector, token=bad)


def test_gaikan_serve_cli(detector, tmp_path):
    path = tmp_path / "m.gaikan"
    detector.save(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GAIKAN_TOKEN="tok", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from gaikan.cli import main; main()",
            "serve",
            str(path),
            "--port",
            str(port),
            "--workers",
            "1",
            "--max-upload-mb",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gaikan serve did not come up"
            time.sleep(0.2)
        assert httpx.get(url + "/v1/model").status_code == 401
        m = httpx.get(url + "/v1/model", headers={"Authorization": "Bearer tok"}).json()
        assert m["model_file"] == "m.gaikan" and m["limits"]["max_upload_bytes"] == 1 << 20
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert b"Traceback" not in out, out.decode()


def test_overload_gives_503_not_unbounded_queueing(detector, images):
    class Slow:
        kind = "soartc"  # served as the detector it wraps
        image_shape_ = detector.image_shape_
        threshold_ = detector.threshold_

        def detect(self, X):
            time.sleep(0.6)
            return detector.detect(X)

    app = create_app(Slow(), workers=1, max_inflight=1)
    data = png_bytes(images["ok"])
    with LiveServer(app) as srv:

        def post(_):
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                return c.post(
                    "/v1/inspect?overlay=0", files={"files": ("a.png", data, "image/png")}
                )

        with ThreadPoolExecutor(3) as ex:
            codes = sorted(r.status_code for r in ex.map(post, range(3)))
        assert codes[0] == 200 and 503 in codes, codes
        r = post(0)
        assert r.status_code == 200  # and it recovers


def test_overlay_store_is_bounded():
    from gaikan.service.overlays import OverlayStore

    store = OverlayStore(max_entries=3, max_bytes=25, ttl_s=3600)
    keys = [store.put(bytes([i]) * 10) for i in range(4)]
    assert store.get(keys[0]) is None and store.get(keys[1]) is None  # bytes bound: 2 × 10 fit
    assert store.get(keys[3]) == bytes([3]) * 10 and len(store) == 2 and store.nbytes == 20
    assert store.put(b"x" * 26) is None  # larger than the whole store
    old = OverlayStore(max_entries=10, max_bytes=1000, ttl_s=0.05)
    k = old.put(b"png")
    time.sleep(0.1)
    assert old.get(k) is None and len(old) == 0
    assert len({store.put(b"a") for _ in range(50)}) == 50  # unguessable, unique keys


def test_serve_cli_rejects_a_bad_model_file(tmp_path):
    from click.testing import CliRunner

    from gaikan.cli import cli

    bad = tmp_path / "broken.gaikan"
    bad.write_bytes(b"not a zip")
    res = CliRunner().invoke(cli, ["serve", str(bad)])
    assert res.exit_code == 4  # the model file
    assert "broken.gaikan" in res.output and "not a gaikan model file" in res.output
    assert "Traceback" not in res.output


def test_non_finite_scores_are_per_file_errors_not_500(detector, images):
    class NaNOnDark:
        kind = "soartc"  # served as the detector it wraps
        image_shape_ = detector.image_shape_
        threshold_ = detector.threshold_

        def detect(self, X):
            out = detector.detect(X)
            dark = np.asarray(X).reshape(len(X), -1).max(axis=1) < 10
            out.scores[dark] = np.nan
            return out

    with LiveServer(create_app(NaNOnDark(), workers=1)) as srv, httpx.Client(base_url=srv.url) as c:
        dark = np.random.default_rng(0).integers(0, 6, (SIZE, SIZE))  # dark, not blank
        files = [
            ("files", ("black.png", png_bytes(dark), "image/png")),
            ("files", ("ok.png", png_bytes(images["ok"]), "image/png")),
        ]
        r = c.post("/v1/inspect", files=files)
        assert r.status_code == 200
        res = r.json()["results"]
        assert "no finite score" in res[0]["error"] and res[1]["verdict"] == "ok"
        assert metric(c.get("/metrics").text, "gaikan_internal_errors_total") == 0


@pytest.mark.deep
@pytest.mark.slow
def test_serves_a_deep_model_file(tmp_path, images):
    """Any saved gaikan model: here a PaDiM file (offline EfficientNet-Lite0 weights)."""
    pytest.importorskip("torch")
    padim = pytest.importorskip("gaikan.deep.padim")
    good = np.stack([parts_image(s) for s in range(10)])
    path = tmp_path / "padim.gaikan"
    # finer layers than the default stride-16 grid: these images are only 64 px
    padim.PaDiM(num_threads=1, layers=(2, 3), feature_stride=8).fit(good).save(path)
    with (
        LiveServer(create_app(str(path), workers=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        assert c.get("/v1/model").json()["detector"] == "padim"
        files = [
            ("files", ("ok.png", png_bytes(images["ok"]), "image/png")),
            ("files", ("ng.png", png_bytes(images["ng"]), "image/png")),
            ("files", ("x.txt", b"text", "text/plain")),
        ]
        res = c.post("/v1/inspect", files=files).json()["results"]
        assert res[1]["score"] > res[0]["score"] > 0
        assert res[0]["map"]["shape"] == [SIZE, SIZE] and "error" in res[2]
        assert c.get(res[1]["overlay_url"]).content.startswith(PNG_MAGIC)
        arg = res[1]["map"]["peak"]  # planted square: rows 20-27, cols 14-21
        assert 12 <= arg["row"] <= 35 and 6 <= arg["col"] <= 29, arg

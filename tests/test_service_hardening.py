"""The station under hostile or heavy clients (issue 13): the read deadline,
the per-client upload cap, readiness, structured logs and the pixel limit.

Real uvicorn servers on 127.0.0.1 and real sockets: a "client" is a source
address, and Linux routes all of 127.0.0.0/8 to loopback, so 127.0.0.2 is
another client of the same server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

import gaikan
from gaikan.service import create_app
from test_service import LiveServer, parts_image, png_bytes

pytestmark = pytest.mark.serve

OTHER_CLIENT = "127.0.0.2"


@pytest.fixture(scope="module")
def detector():
    good = np.stack([parts_image(s) for s in range(12)])
    return gaikan.SOARTC(kernel=8, stride=4).fit(good)


@pytest.fixture(scope="module")
def ok_png():
    return png_bytes(parts_image(100))


def stalled_upload(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection that sends the headers and 1 kB of a 100 kB body, then nothing."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    s.sendall(
        b"POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
        b" boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n" + b"x" * 1000
    )
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    """(status, headers, JSON body) of one HTTP/1.1 response with a Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = s.recv(4096)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def client(url: str, source: str = "127.0.0.1") -> Any:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=url, timeout=30, transport=transport)


def families(text: str) -> dict[str, float]:
    """Every unlabelled sample of a Prometheus exposition (parsed by prometheus_client)."""
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.labels
    }


def test_stalled_uploads_get_408_and_a_client_cap_keeps_others_served(detector, ok_png):
    timeout = 3.0
    app = create_app(
        detector, workers=1, max_inflight=8, max_uploads_per_client=4, read_timeout_s=timeout
    )
    with LiveServer(app) as srv:
        t0 = time.monotonic()
        socks = [stalled_upload(srv.port) for _ in range(12)]
        try:
            # The cap: 4 uploads of this client are admitted, the other 8 get 429 at once.
            rejected = []
            for s in socks[4:]:
                status, headers, body = read_response(s)
                rejected.append(status)
                assert headers["retry-after"] == "1" and "at most 4" in body["error"]
                assert closed_by_server(s)
            assert rejected == [429] * 8
            assert time.monotonic() - t0 < timeout
            # Another client is served meanwhile, with the right answer.
            with client(srv.url, OTHER_CLIENT) as other:
                r = other.post("/v1/inspect", files={"files": ("a.png", ok_png, "image/png")})
                assert r.status_code == 200 and r.json()["results"][0]["verdict"] == "ok"
                m = families(other.get("/metrics").text)
            assert m["gaikan_inspect_inflight"] == 4
            assert m["gaikan_client_uploads_inflight_max"] == 4
            assert m["gaikan_upload_clients"] == 1
            assert m["gaikan_client_uploads_limit"] == 4
            assert m["gaikan_ready"] == 1
            # The deadline: each stalled upload gets 408 and its connection closed.
            for s in socks[:4]:
                status, _, body = read_response(s)
                assert status == 408 and "did not arrive within 3 s" in body["error"]
                assert closed_by_server(s)
            elapsed = time.monotonic() - t0
            assert timeout - 0.1 <= elapsed < timeout + 3.0, elapsed
        finally:
            for s in socks:
                s.close()
        with client(srv.url) as c:
            text = c.get("/metrics").text
            m = families(text)
            assert m["gaikan_inspect_inflight"] == 0 and m["gaikan_upload_clients"] == 0
            codes = {
                s.labels["status"]: s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "gaikan_http_requests_total" and s.labels["path"] == "/v1/inspect"
            }
            assert codes == {"200": 1, "408": 4, "429": 8}
            assert m["gaikan_internal_errors_total"] == 0


def test_saturation_is_reported_and_ends_with_the_deadline(detector, ok_png):
    app = create_app(
        detector, workers=1, max_inflight=2, max_uploads_per_client=2, read_timeout_s=3.0
    )
    with LiveServer(app) as srv, client(srv.url, OTHER_CLIENT) as other:
        socks = [stalled_upload(srv.port) for _ in range(2)]
        try:
            deadline = time.monotonic() + 2.0
            while other.get("/readyz").status_code == 200:  # the two uploads are admitted
                assert time.monotonic() < deadline
                time.sleep(0.02)
            r = other.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            assert "saturated" in r.json()["reason"] and r.json()["inflight"] == 2
            h = other.get("/healthz")  # liveness still answers
            assert h.status_code == 200 and h.json()["status"] == "ok"
            assert h.json()["ready"] is False and "saturated" in h.json()["reason"]
            assert families(other.get("/metrics").text)["gaikan_ready"] == 0
            busy = other.post("/v1/inspect", files={"files": ("a.png", ok_png, "image/png")})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            for s in socks:
                assert read_response(s)[0] == 408
        finally:
            for s in socks:
                s.close()
        r = other.get("/readyz")
        assert r.status_code == 200 and r.json() == {
            "ready": True,
            "reason": None,
            "inflight": 0,
            "max_inflight": 2,
        }
        r = other.post("/v1/inspect", files={"files": ("a.png", ok_png, "image/png")})
        assert r.status_code == 200 and r.json()["results"][0]["verdict"] == "ok"


def test_request_ids(detector, ok_png):
    with LiveServer(create_app(detector, workers=1)) as srv, client(srv.url) as c:
        assert c.get("/healthz", headers={"X-Request-ID": "line-7.cam:2"}).headers[
            "x-request-id"
        ] == ("line-7.cam:2")
        bad = {"X-Request-ID": "no spaces please"}
        got = {c.get("/healthz", headers=bad).headers["x-request-id"] for _ in range(3)}
        assert len(got) == 3 and all(len(g) == 16 and int(g, 16) >= 0 for g in got)
        r = c.post("/v1/inspect", files={"files": ("a.png", b"not an image", "image/png")})
        assert len(r.headers["x-request-id"]) == 16


def test_max_pixels_above_pillows_bomb_limit_is_honoured(detector, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # stands in for Pillow's 89 MP
    noise = np.random.default_rng(0).integers(0, 256, (1500, 1500))  # 2.25 MP: > 2 x 1 MP
    big = png_bytes(noise)
    app = create_app(detector, workers=1, max_pixels=3_000_000)
    with LiveServer(app) as srv, client(srv.url) as c:
        files = [
            ("files", ("big.png", big, "image/png")),
            ("files", ("huge.png", png_bytes(np.tile(noise, (2, 1))), "image/png")),  # 4.5 MP
        ]
        res = c.post("/v1/inspect?overlay=0", files=files).json()["results"]
    assert "error" not in res[0] and res[0]["verdict"] in ("ok", "defect")
    # refused at the limit the user set (Pillow's guard now names it), before decoding
    assert "over the limit of 3,000,000" in res[1]["error"]
    assert Image.MAX_IMAGE_PIXELS == 3_000_000
    create_app(detector, workers=1, max_pixels=10)  # never lowers Pillow's guard
    assert Image.MAX_IMAGE_PIXELS == 3_000_000


def run_serve(model_path, log_level: str, requests) -> list[dict]:
    """Start `gaikan serve`, run ``requests(url)``, stop it; its stderr as parsed JSON lines."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", "from gaikan.cli import main; main()", "serve"),
            *(str(model_path), "--port", str(port), "--workers", "1", "--log-level", log_level),
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gaikan serve did not come up"
            time.sleep(0.2)
        requests(url)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    assert out == b""
    return [json.loads(ln) for ln in lines]  # every stderr line is one JSON object


def test_gaikan_serve_logs_json_lines(detector, ok_png, tmp_path):
    path = tmp_path / "m.gaikan"
    detector.save(path)
    got: dict = {}

    def requests(url: str) -> None:
        files = [
            ("files", ("good.png", ok_png, "image/png")),
            ("files", ("notes.txt", b"not an image", "text/plain")),
        ]
        r = httpx.post(url + "/v1/inspect", files=files, headers={"X-Request-ID": "req-42"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
        got["generated"] = httpx.get(url + "/v1/model").headers["x-request-id"]

    logs = run_serve(path, "info", requests)
    assert logs
    start = next(e for e in logs if e.get("event") == "start")
    assert start["model"] == "m.gaikan" and start["kind"] == "detector"
    assert start["image_shape"] == [48, 48] and start["workers"] == 1
    assert start["threshold"] == pytest.approx(detector.threshold_)
    assert (
        start["limits"]["read_timeout_s"] == 15 and start["limits"]["max_uploads_per_client"] == 4
    )
    assert start["limits"]["max_pixels"] == 25_000_000 and start["level"] == "info"
    inspect = next(e for e in logs if e.get("event") == "request" and e["request_id"] == "req-42")
    assert inspect["method"] == "POST" and inspect["path"] == "/v1/inspect"
    assert inspect["status"] == 200 and inspect["client"] == "127.0.0.1"
    assert inspect["latency_ms"] > 0
    assert inspect["verdicts"] == {"ok": 1, "defect": 0, "error": 1}
    rejected = [e for e in logs if e.get("event") == "file_rejected"]
    assert len(rejected) == 1 and rejected[0]["request_id"] == "req-42"
    assert rejected[0]["file"] == "notes.txt" and "not an image" in rejected[0]["reason"]
    model = next(e for e in logs if e.get("request_id") == got["generated"])
    assert model["path"] == "/v1/model" and model["status"] == 200 and "verdicts" not in model
    assert any("inspection station" in e.get("message", "") for e in logs)
    assert all("ts" in e and "level" in e for e in logs)

    quiet = run_serve(path, "warning", requests)  # --log-level is honoured
    assert not [e for e in quiet if e.get("level") in ("info", "debug")]

"""Model versions at the station: list, refit from reviewed goods, activate (hot swap).

Real uvicorn on 127.0.0.1 and httpx, against SQLite and (where
``.ci/services.sh`` started one) PostgreSQL.  The planted data: a SOARTC
fitted on 12 good parts; a new lot of good parts carries a harmless groove
the model has never seen (flagged NG), real defects carry a bright square.
Operators review some grooved parts as OK; the refit must then pass the
grooved parts and still reject the defects, and its numbers must be the
ones an independent fit on the same images gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import gaikan
from gaikan._params import clone
from gaikan.io import decode_image, find_images, load_images
from gaikan.records import Filters, RecordStore
from gaikan.service import create_app
from gaikan.service.refit import RefitRefused, check_refittable
from test_service import png_bytes
from test_station_records import station

pytestmark = pytest.mark.serve

SIZE = 48
STATIC = Path(gaikan.__file__).parent / "service" / "static"


# ---------------------------------------------------------------- planted data
def part(seed: int, *, groove: bool = False, defect: bool = False) -> np.ndarray:
    """A structured grey part; ``groove``: the new lot's harmless groove; ``defect``: a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + 20 * np.sin(xx / 5.0)
    img = base * rng.uniform(0.97, 1.03) + rng.normal(0, 3.0, (SIZE, SIZE))
    if groove:
        img[:, 30:34] -= 35
    if defect:
        img[20:28, 14:22] += 90
    return np.clip(np.rint(img), 0, 255)


GOOD = png_bytes(part(100))
GROOVED = [png_bytes(part(200 + i, groove=True)) for i in range(6)]
DEFECTS = [png_bytes(part(300 + i, defect=True)) for i in range(2)]
LATER_GROOVED = png_bytes(part(250, groove=True))


@pytest.fixture(scope="module")
def unit_space(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("unit")
    for s in range(12):
        (root / f"good{s:02d}.png").write_bytes(png_bytes(part(s)))
    return root


@pytest.fixture(scope="module")
def model_file(unit_space, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "part.gaikan"
    images = load_images(find_images([unit_space]), size=(SIZE, SIZE)).images
    gaikan.SOARTC(kernel=8, stride=4).fit(images).save(path)
    return path


def inspect(client, files: list[tuple[str, bytes]], **headers) -> list[dict]:
    r = client.post(
        "/v1/inspect",
        files=[("files", (name, data, "image/png")) for name, data in files],
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


def expected_refit(model_file, unit_space, goods: list[bytes], ng: list[bytes], ok: list[bytes]):
    """The candidate computed independently: threshold and re-label counts."""
    det = gaikan.load(model_file)
    unit = load_images(find_images([unit_space]), size=(SIZE, SIZE)).images
    extra = np.stack([decode_image(b, size=(SIZE, SIZE)) for b in goods])
    cand = clone(det).fit(np.concatenate([unit, extra]))
    thr = cand.threshold_

    def new_verdicts(blobs):
        scores = cand.anomaly_score(np.stack([decode_image(b, size=(SIZE, SIZE)) for b in blobs]))
        return ["defect" if s > thr else "ok" for s in scores]

    return det.threshold_, thr, new_verdicts(ng), new_verdicts(ok)


# ---------------------------------------------------------------- the whole loop
def test_review_refit_activate(model_file, unit_space, db_url, tmp_path):
    with (
        station(model_file, db_url, unit_space=unit_space) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        res = inspect(
            c,
            [("good.png", GOOD)]
            + [(f"groove{i}.png", b) for i, b in enumerate(GROOVED)]
            + [(f"defect{i}.png", b) for i, b in enumerate(DEFECTS)],
        )
        verdicts = [r["verdict"] for r in res]
        assert verdicts == ["ok"] + ["defect"] * 8  # the new lot's groove is a false alarm
        ids = [r["id"] for r in res]
        groove_ids, defect_ids = ids[1:7], ids[7:]
        for rid in groove_ids[:4]:  # the operator clears four false alarms
            r = c.post(f"/v1/inspections/{rid}/review", json={"verdict": "ok", "who": "insp-a"})
            assert r.status_code == 200, r.text
        r = c.post(f"/v1/inspections/{defect_ids[0]}/review", json={"verdict": "defect"})
        assert r.status_code == 200, r.text

        listing = c.get("/v1/models").json()
        assert listing["model_id"] == "part" and listing["served_version"] == 1
        [v1] = listing["versions"]
        assert v1["active"] and v1["served"] and v1["file"] == "part.gaikan"
        assert [a["who"] for a in v1["activations"]] == ["station"]
        assert listing["refit"] == {
            "available": True,
            "reason": None,
            "reviewed_goods": 4,
            "running": False,
        }

        # -- refit: a new, inactive version with the numbers of an independent fit
        r = c.post("/v1/models/refit", params={"wait": 120})
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["state"] == "done" and job["error"] is None
        out = job["result"]
        old_thr, new_thr, ng_new, ok_new = expected_refit(
            model_file, unit_space, GROOVED[:4], GROOVED + DEFECTS, [GOOD]
        )
        assert out["version"] == 2 and out["parent_version"] == 1 and out["active"] is False
        assert out["old_threshold"] == pytest.approx(old_thr, rel=1e-12)
        assert out["new_threshold"] == pytest.approx(new_thr, rel=1e-9)
        assert out["new_threshold"] < out["old_threshold"]
        assert (out["n_unit_space"], out["n_reviewed_goods"], out["n_images"]) == (12, 4, 16)
        assert out["reviewed_good_ids"] == groove_ids[:4]
        rl = out["relabel"]
        assert ng_new == ["ok"] * 6 + ["defect"] * 2  # the planted truth
        assert rl["ng_scored"] == 8 and rl["ok_scored"] == 1
        assert rl["ng_to_ok"] == ng_new.count("ok") == 6
        assert sorted(rl["ng_to_ok_ids"]) == groove_ids
        assert rl["ok_to_ng"] == ok_new.count("defect") == 0
        assert rl["ng_to_ok_reviewed_ok"] == 4 and rl["ng_to_ok_reviewed_ng"] == 0
        assert c.get(job["url"]).json()["result"] == out

        models_dir = Path(srv.app.state.recorder.store.blobs.root).parent / "models"
        cand_file = models_dir / out["file"]
        assert cand_file.is_file() and gaikan.load(cand_file).threshold_ == out["new_threshold"]

        listing = c.get("/v1/models").json()
        v1, v2 = listing["versions"]
        assert v1["active"] and v1["served"] and not v2["active"] and not v2["served"]
        assert v2["threshold"] == out["new_threshold"] and v2["parent_version"] == 1
        assert "4 reviewed good image(s) + 12 unit-space image(s)" in v2["note"]
        assert v2["activations"] == []

        # -- not active yet: the station still judges with version 1
        assert c.get("/v1/model").json()["model_version"] == 1
        [later] = inspect(c, [("later.png", LATER_GROOVED)])
        assert later["verdict"] == "defect"
        assert c.get(f"/v1/inspections/{later['id']}").json()["model_version"] == 1

        # -- activate: recorded with who; the next inspection uses and records version 2
        r = c.post("/v1/models/2/activate", json={"who": "lead"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2 and r.json()["previous_version"] == 1
        info = c.get("/v1/model").json()
        assert info["model_version"] == 2 and info["active_version"]["version"] == 2
        assert info["threshold"] == pytest.approx(out["new_threshold"])
        [again] = inspect(c, [("again.png", LATER_GROOVED)])
        assert again["verdict"] == "ok" and again["threshold"] == pytest.approx(new_thr)
        assert c.get(f"/v1/inspections/{again['id']}").json()["model_version"] == 2
        [bad] = inspect(c, [("bad.png", png_bytes(part(350, defect=True)))])
        assert bad["verdict"] == "defect"

        listing = c.get("/v1/models").json()
        v1, v2 = listing["versions"]
        assert not v1["active"] and not v1["served"] and v2["active"] and v2["served"]
        assert [a["who"] for a in v2["activations"]] == ["lead"]

        # -- and back: version 1 serves again, the audit trail has both
        r = c.post("/v1/models/1/activate")
        assert r.status_code == 200, r.text
        [back] = inspect(c, [("back.png", LATER_GROOVED)])
        assert back["verdict"] == "defect"
        assert c.get(f"/v1/inspections/{back['id']}").json()["model_version"] == 1
        acts = [(a["who"]) for a in c.get("/v1/models").json()["versions"][0]["activations"]]
        assert acts == ["station", "127.0.0.1"]  # no token: the client's address

        # the same reviewed goods again: the same bytes, the same version (nothing new)
        r = c.post("/v1/models/refit", params={"wait": 120})
        again = r.json()["result"]
        assert again["version"] == 2 and again["already_registered"] is True
        assert again["digest"] == out["digest"] and again["parent_version"] == 1
        assert len(c.get("/v1/models").json()["versions"]) == 2


def test_an_inspection_started_before_the_swap_is_recorded_with_the_old_version(
    model_file, unit_space, tmp_path
):
    """Scored on version 1, committed after version 2 went live: it says version 1."""
    db = str(tmp_path / "records.db")
    with (
        station(model_file, db, unit_space=unit_space) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        res = inspect(c, [(f"g{i}.png", b) for i, b in enumerate(GROOVED[:3])])
        for r in res:
            c.post(f"/v1/inspections/{r['id']}/review", json={"verdict": "ok"})
        assert c.post("/v1/models/refit", params={"wait": 120}).status_code == 200
        live = srv.app.state.inspector
        req = httpx.Request(
            "POST", srv.url, files=[("files", ("inflight.png", LATER_GROOVED, "image/png"))]
        )
        payload, uploads = live.inspect_request(req.read(), req.headers["content-type"])
        assert payload["results"][0]["verdict"] == "defect"  # scored by version 1
        assert c.post("/v1/models/2/activate").status_code == 200
        [rid] = live.recorder.record(uploads, "test")
        assert c.get(f"/v1/inspections/{rid}").json()["model_version"] == 1
        [now] = inspect(c, [("now.png", LATER_GROOVED)])
        assert now["verdict"] == "ok"
        assert c.get(f"/v1/inspections/{now['id']}").json()["model_version"] == 2


def test_every_record_names_the_version_that_judged_it_under_load(model_file, unit_space, tmp_path):
    """Clients keep posting while a version is activated: no record mixes two versions."""
    import threading

    db = str(tmp_path / "records.db")
    with (
        station(model_file, db, unit_space=unit_space, workers=4) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        res = inspect(c, [(f"g{i}.png", b) for i, b in enumerate(GROOVED[:3])])
        for r in res:
            c.post(f"/v1/inspections/{r['id']}/review", json={"verdict": "ok"})
        assert c.post("/v1/models/refit", params={"wait": 120}).status_code == 200
        stop = threading.Event()
        answers: list[dict] = []

        def client() -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as cc:
                while not stop.is_set():
                    answers.extend(inspect(cc, [("x.png", LATER_GROOVED), ("y.png", GOOD)]))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        while len(answers) < 16:
            stop.wait(0.05)
        assert c.post("/v1/models/2/activate").status_code == 200
        n_at_swap = len(answers)
        while len(answers) < n_at_swap + 16:
            stop.wait(0.05)
        stop.set()
        for t in threads:
            t.join(60)
        thresholds = {v["version"]: v["threshold"] for v in c.get("/v1/models").json()["versions"]}
        store = srv.app.state.recorder.store
        recs = {r.id: r for r in store.query(Filters(source="."), limit=10_000)}
        assert len(answers) >= 32 and {a["id"] for a in answers} <= set(recs)
        seen = set()
        for a in answers:
            rec = recs[a["id"]]
            seen.add(rec.model_version)
            assert rec.threshold == a["threshold"] == thresholds[rec.model_version]
            assert rec.verdict == a["verdict"]
        assert seen == {1, 2}


def test_a_restart_serves_the_file_it_is_given(model_file, unit_space, tmp_path):
    """After an activation, a restart with the old file serves it (and says it is not
    the active one); with the candidate's file it serves the active version."""
    db = str(tmp_path / "records.db")
    with (
        station(model_file, db, unit_space=unit_space) as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        res = inspect(c, [(f"g{i}.png", b) for i, b in enumerate(GROOVED[:3])])
        for r in res:
            c.post(f"/v1/inspections/{r['id']}/review", json={"verdict": "ok"})
        out = c.post("/v1/models/refit", params={"wait": 120}).json()["result"]
        assert c.post("/v1/models/2/activate").status_code == 200
        cand = Path(srv.app.state.recorder.store.blobs.root).parent / "models" / out["file"]
    with station(model_file, db) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        info = c.get("/v1/model").json()
        assert info["model_version"] == 1 and info["active_version"]["version"] == 2
        v1, v2 = c.get("/v1/models").json()["versions"]
        assert v1["served"] and not v1["active"] and v2["active"] and not v2["served"]
    with (
        station(cand, db, model_id="part") as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        info = c.get("/v1/model").json()
        assert info["model_version"] == 2 and info["active_version"]["version"] == 2
        [r] = inspect(c, [("later.png", LATER_GROOVED)])
        assert r["verdict"] == "ok"


# ---------------------------------------------------------------- auth
def test_the_model_routes_need_the_token(model_file, unit_space, tmp_path):
    db = str(tmp_path / "records.db")
    auth = {"Authorization": "Bearer s3cret"}
    with (
        station(model_file, db, unit_space=unit_space, token="s3cret") as srv,
        httpx.Client(base_url=srv.url, timeout=120) as c,
    ):
        assert c.get("/v1/models").status_code == 401
        assert c.post("/v1/models/refit").status_code == 401
        assert c.post("/v1/models/1/activate").status_code == 401
        assert c.get("/models").status_code == 200  # the page is open; its data is not
        res = inspect(c, [("g.png", GROOVED[0]), ("h.png", GROOVED[1])], **auth)
        for r in res:
            c.post(f"/v1/inspections/{r['id']}/review", json={"verdict": "ok"}, headers=auth)
        r = c.post("/v1/models/refit", params={"wait": 120}, headers=auth)
        assert r.status_code == 200 and r.json()["result"]["version"] == 2, r.text
        r = c.post("/v1/models/2/activate", headers=auth)
        assert r.status_code == 200, r.text
        v2 = c.get("/v1/models", headers=auth).json()["versions"][1]
        assert v2["active"] and v2["activations"][0]["who"] == "token@127.0.0.1"


# ---------------------------------------------------------------- refusals
def test_refusals_name_the_fix(model_file, unit_space, tmp_path):
    db = str(tmp_path / "records.db")
    with (
        station(model_file, db, keep="ng") as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        r = c.post("/v1/models/refit")
        assert r.status_code == 409 and "--unit-space" in r.json()["error"]
        listing = c.get("/v1/models").json()
        assert listing["refit"]["available"] is False
        assert "--unit-space" in listing["refit"]["reason"]
        assert c.post("/v1/models/7/activate").status_code == 404
        paths = c.get("/openapi.json").json()["paths"]
        for path in ("/v1/models", "/v1/models/refit", "/v1/models/{version}/activate"):
            assert path in paths, path
    with (
        station(model_file, db, keep="ng", unit_space=unit_space) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        r = c.post("/v1/models/refit")
        assert r.status_code == 409 and "no inspection has been reviewed" in r.json()["error"]
        [ok] = inspect(c, [("good.png", GOOD)])  # judged OK: --keep ng keeps no image
        c.post(f"/v1/inspections/{ok['id']}/review", json={"verdict": "ok"})
        r = c.post("/v1/models/refit")
        assert r.status_code == 409, r.text
        assert "not kept" in r.json()["error"] and "--keep all" in r.json()["error"]

        # a version whose file is gone, one whose file changed
        store = srv.app.state.recorder.store
        gone = tmp_path / "gone.gaikan"
        gone.write_bytes(model_file.read_bytes() + b"x")
        v_gone = store.register_model("part", gone).version
        gone.unlink()
        r = c.post(f"/v1/models/{v_gone}/activate")
        assert r.status_code == 409 and "not on this station" in r.json()["error"]
        changed = tmp_path / "changed.gaikan"
        changed.write_bytes(model_file.read_bytes() + b"y")
        v_changed = store.register_model("part", changed).version
        changed.write_bytes(model_file.read_bytes() + b"z")
        r = c.post(f"/v1/models/{v_changed}/activate")
        assert r.status_code == 409 and "SHA-256" in r.json()["error"]
        assert store.active_model("part").version == 1  # nothing was activated
        assert c.get("/v1/model").json()["model_version"] == 1


def test_models_without_a_fit_are_refused():
    class Exported:
        kind = "onnx-detector"
        source_kind_ = "padim"

    class Clf:
        kind = "classifier"

    with pytest.raises(RefitRefused, match="source model") as exc:
        check_refittable(Exported())
    assert exc.value.status == 422 and "padim" in exc.value.message
    with pytest.raises(RefitRefused, match="gaikan train") as exc:
        check_refittable(Clf())
    assert exc.value.status == 422
    check_refittable(gaikan.SOARTC())  # a detector passes


def test_unit_space_needs_recording(model_file, unit_space):
    from click.testing import CliRunner

    from gaikan.cli import cli
    from gaikan.errors import ParameterError

    res = CliRunner().invoke(
        cli, ["serve", str(model_file), "--no-record", "--unit-space", str(unit_space)]
    )
    assert res.exit_code == 2 and "needs the records" in res.output
    with pytest.raises(ParameterError, match="needs the records"):
        create_app(str(model_file), unit_space=unit_space)
    with pytest.raises(ParameterError, match="folder of good images"):
        create_app(str(model_file), record=True, unit_space=model_file)


# ---------------------------------------------------------------- the page
def test_models_page_is_served_and_fully_translated(model_file, tmp_path):
    with (
        station(model_file, str(tmp_path / "r.db")) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        page = c.get("/models")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/models.js">' in page.text
        assert "Content-Security-Policy" in page.headers
        js = c.get("/static/models.js")
        assert js.status_code == 200 and "/v1/models/refit" in js.text
    html = (STATIC / "models.html").read_text(encoding="utf-8")
    js_text = (STATIC / "models.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-title|-placeholder)?="([^"]+)"', html))
    used |= set(re.findall(r'\bT\("([^"]+)"', js_text))
    catalog = json.loads((STATIC / "i18n" / "models.json").read_text(encoding="utf-8"))
    # the token dialog's words are the station's (static/api.js asks for the token on every page)
    station_cat = json.loads((STATIC / "i18n" / "station.json").read_text(encoding="utf-8"))
    shared = {k for k in used if k.startswith("station.")}
    assert shared <= set(station_cat["en"]) & set(station_cat["ja"])
    used -= shared
    assert used and used <= set(catalog["en"]) and set(catalog["en"]) == set(catalog["ja"])
    assert all(k.startswith("models.") for k in catalog["en"])
    for key in catalog["en"]:
        en, ja = catalog["en"][key], catalog["ja"][key]
        assert ja and ja != en, key
        assert set(re.findall(r"\{(\w+)\}", en)) == set(re.findall(r"\{(\w+)\}", ja)), key
    # the English fallbacks in the JS are the catalog's English
    for key, en in re.findall(r'\bT\("([^"]+)",\s*"([^"]+)"', js_text):
        assert catalog["en"][key] == en.replace("\\'", "'"), key


def test_reviewed_goods_are_the_operator_confirmed_ones(tmp_path):
    """Only records reviewed as ok count (the final verdict filter, not the model's)."""
    from gaikan.inspection import Inspection
    from gaikan.records import Retention
    from gaikan.service.refit import reviewed_goods

    store = RecordStore(str(tmp_path / "r.db"), blob_dir=tmp_path / "b", retention=Retention("all"))
    try:
        a = store.add(
            Inspection("a", "defect", score=2.0, threshold=1.0), image_bytes=b"a", model_id="m"
        )
        b = store.add(
            Inspection("b", "ok", score=0.5, threshold=1.0), image_bytes=b"b", model_id="m"
        )
        store.add(Inspection("c", "ok", score=0.5, threshold=1.0), image_bytes=b"c", model_id="m")
        store.review(a, "ok")
        store.review(b, "defect")
        assert [r.id for r in reviewed_goods(store, "m")] == [a]
        assert store.count(Filters(reviewed=True)) == 2
    finally:
        store.close()


@pytest.mark.browser
def test_models_page_refit_and_activate_in_chromium(model_file, unit_space, tmp_path):
    """The Models page: refit shows the numbers the API gives; activate asks, then swaps."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_browser import chromium_driver  # skips here (not at import) without chromium

    db = str(tmp_path / "records.db")
    drivers = chromium_driver(tmp_path)
    driver = next(drivers)
    try:
        with (
            station(model_file, db, unit_space=unit_space) as srv,
            httpx.Client(base_url=srv.url, timeout=120) as c,
        ):
            res = inspect(c, [(f"g{i}.png", b) for i, b in enumerate(GROOVED)])
            for r in res[:3]:
                c.post(f"/v1/inspections/{r['id']}/review", json={"verdict": "ok"})
            wait = WebDriverWait(driver, 60)
            driver.get(srv.url + "/models")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#versions-body tr"))
            assert (
                "3 inspection(s) reviewed as OK." in driver.find_element(By.ID, "refit-reason").text
            )
            driver.find_element(By.ID, "refit").click()
            wait.until(lambda d: d.find_element(By.ID, "refit-result").is_displayed())
            rl = c.get("/v1/models/refits/1").json()["result"]
            assert driver.find_element(By.ID, "r-version").text.startswith("v2")
            assert driver.find_element(By.ID, "r-ng-ok").text == (
                f"{rl['relabel']['ng_to_ok']} of {rl['relabel']['ng_scored']} re-scored"
            )
            assert rl["relabel"]["ng_to_ok"] == 6
            assert "→" in driver.find_element(By.ID, "r-threshold").text
            assert c.get("/v1/model").json()["model_version"] == 1  # not active yet

            row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-version="2"]'))
            row.find_element(By.CSS_SELECTOR, "button.activate").click()
            wait.until(lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed())
            driver.find_element(By.ID, "confirm-cancel").click()  # the confirm step
            assert c.get("/v1/model").json()["model_version"] == 1
            row = driver.find_element(By.CSS_SELECTOR, 'tr[data-version="2"]')
            row.find_element(By.CSS_SELECTOR, "button.activate").click()
            wait.until(lambda d: d.find_element(By.ID, "confirm-dialog").is_displayed())
            driver.find_element(By.ID, "confirm-who").send_keys("suzuki")
            driver.find_element(By.ID, "confirm-ok").click()
            wait.until(
                lambda d: (
                    "active, served" in d.find_element(By.CSS_SELECTOR, 'tr[data-version="2"]').text
                )
            )
            assert c.get("/v1/model").json()["model_version"] == 2
            v2 = c.get("/v1/models").json()["versions"][1]
            assert [a["who"] for a in v2["activations"]] == ["suzuki"]
            errors = [
                e["message"]
                for e in driver.get_log("browser")
                if e["level"] == "SEVERE" and "i18n.js" not in e["message"]
            ]
            assert errors == []
    finally:
        drivers.close()

"""Control limits of the history page's Shewhart chart: the pure function (golden
numbers) and ``GET /v1/control`` on a recording station."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gaikan
from gaikan.errors import ParameterError
from gaikan.service.control import control_limits


def test_control_limits_golden():
    # mean 3, sample sd sqrt(2.5) = 1.5811388300841898
    lim = control_limits([1.0, 2.0, 3.0, 4.0, 5.0], threshold=4.6)
    sd = math.sqrt(2.5)
    assert lim.centre == pytest.approx(3.0)
    assert lim.sigma == pytest.approx(sd)
    assert lim.ucl == pytest.approx(3.0 + 3 * sd) == pytest.approx(7.743416490252569)
    assert lim.lcl == pytest.approx(3.0 - 3 * sd) == pytest.approx(-1.743416490252569)
    assert lim.threshold == 4.6
    assert lim.n == 5 and lim.k == 3.0
    assert lim.to_json() == {
        "centre": lim.centre,
        "sigma": lim.sigma,
        "ucl": lim.ucl,
        "lcl": lim.lcl,
        "threshold": 4.6,
        "n": 5,
        "k": 3.0,
    }


def test_control_limits_ignores_non_finite_and_other_k():
    lim = control_limits(np.array([[2.0, np.nan], [4.0, np.inf]]), None, k=2.0)
    assert (lim.n, lim.centre, lim.threshold) == (2, 3.0, None)
    assert lim.sigma == pytest.approx(math.sqrt(2.0))
    assert lim.ucl == pytest.approx(3.0 + 2 * math.sqrt(2.0))


@pytest.mark.parametrize("scores", [[], [1.0], [np.nan, 2.0]])
def test_control_limits_need_two_scores(scores):
    with pytest.raises(ParameterError, match="at least 2 finite"):
        control_limits(scores)


def test_control_limits_reject_bad_k():
    with pytest.raises(ParameterError, match="k must be"):
        control_limits([1.0, 2.0], k=0)


# ---------------------------------------------------------------- GET /v1/control
def _part(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + rng.normal(0, 3.0, (size, size))
    return np.clip(np.rint(img), 0, 255)


@pytest.mark.serve
def test_control_route(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("sqlalchemy")
    from fastapi.testclient import TestClient

    from gaikan.service import create_app

    det = gaikan.SOARTC(kernel=8, stride=4).fit(np.stack([_part(s) for s in range(10)]))
    app = create_app(det, db=str(tmp_path / "r.db"), token="tok", model_id="part")
    with TestClient(app) as client:
        assert client.get("/v1/control").status_code == 401  # guarded like every /v1 route
        body = client.get("/v1/control", headers={"Authorization": "Bearer tok"}).json()
        # who a review without "who" is recorded as (the review widget's placeholder)
        who = client.get("/v1/identity", headers={"Authorization": "Bearer tok"}).json()
        assert who == {"identity": "token@testclient"}
    want = control_limits(det.train_scores_, det.threshold_)
    assert body["available"] is True
    assert body["model_id"] == "part"
    for k in ("centre", "sigma", "ucl", "lcl", "threshold"):
        assert body[k] == pytest.approx(getattr(want, k)), k
    assert body["n"] == len(det.train_scores_) == 10
    assert body["lcl"] < body["centre"] < body["ucl"]
    assert body["threshold"] == pytest.approx(det.threshold_)


@pytest.mark.serve
def test_control_route_without_loo_scores(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("sqlalchemy")
    from fastapi.testclient import TestClient

    from gaikan.service import create_app

    det = gaikan.SOARTC(kernel=8, stride=4).fit(np.stack([_part(s) for s in range(10)]))
    del det.train_scores_  # e.g. a classifier: it has no unit space
    app = create_app(det, db=str(tmp_path / "r.db"))
    with TestClient(app) as client:
        body = client.get("/v1/control").json()
    assert body["available"] is False
    assert "leave-one-out" in body["reason"]
    assert body["threshold"] == pytest.approx(det.threshold_)
    assert "ucl" not in body

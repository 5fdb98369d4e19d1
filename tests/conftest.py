import numpy as np
import pytest


def structured_images(n, size=40, seed=0, noise=3.0):
    """Good parts: a fixed pattern of bright blocks on a grey part, with
    small brightness jitter and sensor noise, rounded to 8-bit values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + 20 * np.sin(xx / 5.0)
    imgs = base[None] * rng.uniform(0.95, 1.05, (n, 1, 1)) + rng.normal(0, noise, (n, size, size))
    return np.clip(np.rint(imgs), 0, 255)


def plant_defect(imgs, seed=1, box=6, delta=70.0):
    """Add a bright square at a random place per image; return images and masks."""
    rng = np.random.default_rng(seed)
    out = imgs.copy()
    masks = np.zeros(imgs.shape, bool)
    size = imgs.shape[1]
    for t in range(len(out)):
        y, x = rng.integers(2, size - box - 2, 2)
        out[t, y : y + box, x : x + box] = np.clip(out[t, y : y + box, x : x + box] + delta, 0, 255)
        masks[t, y : y + box, x : x + box] = True
    return out, masks


@pytest.fixture
def good_images():
    return structured_images(30, seed=0)


@pytest.fixture
def test_set():
    good = structured_images(20, seed=5)
    bad, masks = plant_defect(structured_images(20, seed=6))
    return good, bad, masks


def tiny_classifier(**kw):
    """A from-scratch toy EfficientNet classifier for fast tests (no augmentation)."""
    from gaikan.deep.classify import Classifier

    params = {
        "pretrained": False,
        "image_size": 48,
        "batch_size": 16,
        "num_threads": 1,
        "brightness": 0.0,
        "contrast": 0.0,
        "random_state": 0,
    }
    params.update(kw)
    return Classifier("test_efficientnet", **params)


def plant_classes(X, y, rng, box, delta, margin):
    """Squares of ±delta ('bright' / 'dark' labels) at random places; good images untouched.

    Returns the 8-bit-rounded images, the labels and the defect masks.
    """
    masks = np.zeros(X.shape, bool)
    size = X.shape[1]
    for i in np.flatnonzero(y != "good"):
        r, c = rng.integers(margin, size - box - margin, 2)
        X[i, r : r + box, c : c + box] += delta if y[i] == "bright" else -delta
        masks[i, r : r + box, c : c + box] = True
    return np.clip(np.rint(X), 0, 255), y, masks


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path_factory, monkeypatch):
    """Every test's default station database and kept pictures in a temporary folder
    (gaikan serve and gaikan watch record by default)."""
    monkeypatch.setenv("GAIKAN_HOME", str(tmp_path_factory.mktemp("gaikan-home")))
    # English output unless a test asks for Japanese, whatever the developer's locale.
    monkeypatch.setenv("GAIKAN_LANG", "en")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, monkeypatch):
    """A station's records database: a SQLite file, then a fresh PostgreSQL database
    (skipped where no server is reachable; tests/test_records.py has its own)."""
    from test_records import pg_database

    monkeypatch.setenv("GAIKAN_HOME", str(tmp_path / "home"))  # PostgreSQL's blobs go here
    if request.param == "sqlite":
        yield str(tmp_path / "records.db")
        return
    with pg_database() as url:
        yield url

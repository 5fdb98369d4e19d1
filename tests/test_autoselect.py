"""--detector auto: a configuration chosen from good images alone, within a budget."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gaikan
import gaikan.cli
from conftest import structured_images
from gaikan.autoselect import Candidate, select


def test_select_tries_cheapest_first_and_refits_the_winner():
    good = structured_images(16, size=48, seed=0)
    cands = [
        Candidate("rt", {"kernel": 8, "stride": 4}, (48, 48)),
        Candidate("soart3map", {"kernel": 8, "stride": 4}, (48, 48)),
        Candidate("soartc", {"kernel": 6, "stride": 3}, (48, 48)),
    ]
    res = select(good, budget_s=60, seed=0, candidates=cands)
    assert [r["label"] for r in res.rows] == [c.label for c in cands]
    assert sum(r["chosen"] for r in res.rows) == 1
    best = next(r for r in res.rows if r["chosen"])
    assert best["objective"] == max(r["objective"] for r in res.rows)
    assert all(0.0 <= r["pointing"] <= 1.0 and 0.0 <= r["image_auroc"] <= 1.0 for r in res.rows)
    assert res.model.n_train_ == 16  # refitted on every good image
    assert res.best.label in res.reason
    # the planted anomalies are real defects for these detectors
    assert best["image_auroc"] > 0.8


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), levels=st.sampled_from([3, 1000]))
def test_pooled_auroc_is_the_count_weighted_mean_of_the_per_kind_aurocs(seed, levels):
    """Every planted copy is compared with the same goods, so the pooled AUROC is the
    per-kind AUROCs' mean weighted by count — ties (3 score levels) included."""
    import gaikan.autoselect as auto
    from gaikan.metrics import roc_auc

    held = structured_images(7, size=24, seed=seed % 5)
    _, labels, _, kinds = auto._planted_test_set(held, seed)
    scores = np.random.default_rng(seed).integers(0, levels, len(labels)).astype(float)
    by_kind = auto._auroc_by_kind(labels, kinds, scores)
    assert set(by_kind) == set(kinds[labels == 1]) and "" not in by_kind
    counts = {k: int((kinds == k).sum()) for k in by_kind}
    pooled = sum(by_kind[k] * counts[k] for k in by_kind) / sum(counts.values())
    assert pooled == pytest.approx(roc_auc(labels, scores), abs=1e-12)


def test_budget_skips_what_does_not_fit():
    good = structured_images(12, size=40, seed=1)
    cands = [
        Candidate("rt", {"kernel": 8, "stride": 4}, (40, 40)),
        Candidate("soartc", {}, (2000, 2000)),
    ]  # would take far too long
    res = select(good, budget_s=5, candidates=cands)
    assert [c.label for c in res.skipped] == [cands[1].label] and len(res.rows) == 1


def test_too_few_images_is_refused():
    with pytest.raises(gaikan.ParameterError, match="at least"):
        select(structured_images(6, seed=0), budget_s=5)


def test_fit_auto_cli_writes_model_and_table(tmp_path):
    d = tmp_path / "good"
    d.mkdir()
    for i, im in enumerate(structured_images(14, size=48, seed=2)):
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).save(d / f"{i:02d}.png")
    out = tmp_path / "m.gaikan"
    res = CliRunner().invoke(
        gaikan.cli.cli,
        ["fit", str(d), "-o", str(out), "--detector", "auto", "--budget", "6s", "--size", "48"],
    )
    assert res.exit_code == 0, res.output
    assert "auto chose" in res.output
    rows = list(csv.DictReader(open(tmp_path / "m.auto.csv")))
    assert sum(r["chosen"] == "True" for r in rows) == 1
    chosen = next(r for r in rows if r["chosen"] == "True")
    assert gaikan.load(out).kind == chosen["kind"]
    # which planted kinds each configuration catches, and its weakest one
    kinds = [c[len("auroc_") :] for c in rows[0] if c.startswith("auroc_")]
    assert kinds == list(gaikan.autoselect.PLANTED)
    for r in (r for r in rows if not r["error"]):
        aurocs = {k: float(r[f"auroc_{k}"]) for k in kinds if r[f"auroc_{k}"]}
        assert aurocs[r["weakest_kind"]] == min(aurocs.values())
    assert "weakest" in res.output
    page = (tmp_path / "m.auto.html").read_text(encoding="utf-8")
    assert chosen["label"] in page and page.count('class="chosen"') == 1
    assert all(f"<th>{k}</th>" in page for k in kinds)


def test_auto_page_names_failures_skips_and_speaks_japanese(tmp_path):
    from gaikan.report import write_auto_report

    rows = [
        {
            "label": "rt[]@48x48",
            "image_auroc": 0.91,
            "pointing": 0.5,
            "objective": 0.96,
            "fit_s": 0.2,
            "ms_per_img": 1.0,
            "weakest_kind": "crack",
            "auroc_crack": 0.61,
            "auroc_spot": 0.99,
        },
        {"label": "padim[]@256x256", "error": "ImportError: no torch"},
    ]
    out = write_auto_report(
        tmp_path / "a.html",
        rows,
        ["crack", "spot"],
        "rt[]@48x48",
        "best <AUROC>",
        skipped=["patchcore[]@256x256"],
        lang="ja",
    )
    page = out.read_text(encoding="utf-8")
    assert '<html lang="ja">' in page and "試した構成" in page
    assert "0.610" in page and "0.990" in page  # per-kind cells
    assert "ImportError: no torch" in page and "patchcore[]@256x256" in page
    assert "best &lt;AUROC&gt;" in page  # escaped


def test_default_candidates_run_cheapest_first():
    from gaikan.autoselect import default_candidates, prior_cost

    cands = default_candidates(deep=True)
    costs = [prior_cost(c, 100) for c in cands]
    assert costs == sorted(costs)
    assert cands[0].kind == "rt" and {"padim", "patchcore"} <= {c.kind for c in cands}
    assert all(c.kind not in ("padim", "patchcore") for c in default_candidates(deep=False))


def test_choice_uses_a_capped_subset_and_refits_on_all(monkeypatch):
    import gaikan.autoselect as auto

    monkeypatch.setattr(auto, "MAX_CHOICE_IMAGES", 20)
    good = structured_images(30, size=40, seed=3)
    res = select(
        good, budget_s=60, candidates=[Candidate("rt", {"kernel": 8, "stride": 4}, (40, 40))]
    )
    n_held = 6  # 30 % of the 20 images in the choice
    assert res.n_img == (20 - n_held) + (1 + auto.COPIES) * n_held
    assert f"{n_held} held-out good images" in res.reason
    assert res.model.n_train_ == 30  # the winner still sees every good image
    # the same sentence for a Japanese line: the same label and figures, no English left
    ja = auto.explain(res.why, "ja")
    assert f"取り置いた良品 {n_held} 枚" in ja and res.best.label in ja
    assert f"AUROC {res.why['auroc']:.3f}" in ja and "held-out" not in ja
    assert res.reason == auto.explain(res.why, "en")


def test_large_images_get_a_working_size_and_a_tiled_candidate():
    from gaikan.autoselect import MAX_WORKING_BYTES, default_candidates, working_shape

    assert working_shape([(300, 300)] * 5, 900) is None  # ELPV-like: 256² loses nothing
    assert working_shape([(512, 1280)] * 5, 100) == (512, 1280)  # kept: 0.65 MP
    h, w = working_shape([(3000, 4000), (3000, 4000), (2999, 4001)], 50)
    assert h * w <= 1_000_000 and abs(w / h - 4 / 3) < 0.01  # scaled down, aspect kept
    h, w = working_shape([(512, 1280)] * 3, 1000)  # many images: the memory cap rules
    assert 8 * 1000 * h * w <= MAX_WORKING_BYTES and h < 512 and w < 1280
    h, w = working_shape([(512, 1280)] * 3, 20_000)  # ... down to one tile's side
    assert h == 256 and w < 1280
    tiled = [c for c in default_candidates(deep=True, shape=(512, 1280)) if c.kind == "tiled"]
    assert [c.size for c in tiled] == [(512, 1280)] and tiled[0].params["detector"] == "padim"
    assert tiled[0].params["per_position"] is False  # one unit space: a few GB, not 13
    assert not [c for c in default_candidates(deep=True, shape=(256, 256)) if c.kind == "tiled"]
    assert not [c for c in default_candidates(deep=False, shape=(512, 1280)) if c.kind == "tiled"]


def test_a_tiled_candidate_is_scored_at_the_working_size_and_can_win():
    rng = np.random.default_rng(0)
    base = np.add.outer(np.sin(np.arange(48) / 5.0), np.cos(np.arange(160) / 7.0)) * 30 + 120
    good = np.stack([base + rng.normal(0, 2, base.shape) for _ in range(16)])
    tiled = Candidate("tiled", {"detector": "rt", "tile": 32, "overlap": 8}, (48, 160))
    cands = [Candidate("rt", {"kernel": 8, "stride": 4}, (24, 24)), tiled]
    res = select(good, budget_s=60, seed=0, candidates=cands)
    row = next(r for r in res.rows if r["label"] == tiled.label)
    assert "error" not in row and 0.0 <= row["image_auroc"] <= 1.0
    assert tiled.label == "tiled[detector=rt,overlap=8,tile=32]@48x160"
    if res.best == tiled:  # the winner is refitted on the frames at the working size
        assert res.model.image_shape_ == (48, 160)


def test_fit_auto_cli_works_on_large_frames_with_a_tiled_candidate(tmp_path):
    pytest.importorskip("torch")
    d = tmp_path / "good"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):  # 80 x 800: the longer side is over 3 x 256
        im = rng.integers(100, 140, (80, 800)).astype(np.uint8)
        Image.fromarray(im).save(d / f"{i:02d}.png")
    out = tmp_path / "m.gaikan"
    res = CliRunner().invoke(
        gaikan.cli.cli, ["fit", str(d), "-o", str(out), "--detector", "auto", "--budget", "3s"]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "m.auto.csv")))
    tiled = [r for r in rows if r["kind"] == "tiled"]
    label = "tiled[detector=padim,overlap=32,per_position=False,tile=256]@256x800"
    assert [r["label"] for r in tiled] == [label]
    assert gaikan.load(out).image_shape_ is not None  # a model, whichever won

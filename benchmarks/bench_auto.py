"""How well does ``--detector auto`` choose?  (issue 14)

    python benchmarks/bench_auto.py                        # ELPV subset + the basket
    python benchmarks/bench_auto.py --sets weave-s1-d0.06,connectors-top
    python benchmarks/bench_auto.py --elpv-train 300 --budget 120

For every data set and every candidate configuration ``--detector auto``
considers (:func:`gaikan.autoselect.default_candidates`), two numbers:

* the **synthetic score** auto ranks by: :func:`gaikan.autoselect.select`
  run on the data set's good training images with an unlimited budget
  (30 % held out, one planted anomaly per held-out image), its
  ``objective`` = image AUROC + 0.1 · pointing on the planted anomalies,
  and its time;
* the **real AUROC**: the candidate fitted on every good training image
  (as auto refits its winner) and scored on the real test set (good test
  images against the real defects).

Printed per data set: Spearman rank correlation between the two over the
candidates, auto's pick under ``--budget`` (the budget logic of ``select``
replayed on the measured candidate times, cheapest first), the best
configuration in hindsight, and whether the pick is within 0.01 of it;
then the pooled rank correlation over every (data set, candidate) pair.

Data sets, all loaded at 256×256 (``gaikan fit --detector auto``'s working size):

* ``elpv``: ELPV pooled, the anchor split (``gaikan.datasets.elpv_split``, seed 0),
  then a seeded subset: ``--elpv-train`` unit-space images and
  ``--elpv-test`` test images of each class (good, defective);
* ``connectors-top`` / ``connectors-oblique``: ``gaikan.synth.make_dataset``
  (60 good, 20 good test images, 8 of each of the five defect modes);
* the eight textured surfaces of ``gaikan.synth.textures.BASKET``
  (60 good, 20 good test images, 8 of each of the four defects).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZE = (256, 256)


def elpv(n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gaikan.datasets import elpv_split, load_elpv

    d = load_elpv(size=SIZE)
    train, test = elpv_split(d.probs, seed=0)
    rng = np.random.default_rng(seed)
    train = rng.choice(train, min(n_train, train.size), replace=False)
    good = test[d.probs[test] == 0]
    bad = test[d.probs[test] > 0]
    test = np.r_[
        rng.choice(good, min(n_test, good.size), replace=False),
        rng.choice(bad, min(n_test, bad.size), replace=False),
    ]
    imgs = d.images.astype(np.float64)
    return imgs[train], imgs[test], d.labels[test]


def connectors(view: str, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gaikan.io import load_images
    from gaikan.synth import make_dataset

    root = cache / "connectors"
    if not (root / "done").exists():
        make_dataset(root, n_good=60, n_test_good=20, n_defect=8, size=256, seed=0, workers=2)
        (root / "done").write_text("1")
    base = root / view
    train = load_images(sorted((base / "train" / "good").glob("*.png")), SIZE).images
    files = sorted((base / "test").rglob("*.png"))
    test = load_images(files, SIZE).images
    labels = np.array([0 if f.parent.name == "good" else 1 for f in files])
    return train, test, labels


def texture(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gaikan.synth.textures import BASKET, TEXTURE_DEFECTS, render_texture

    spec = next(s for s in BASKET if s.name == name)
    train = np.stack([render_texture(spec, split="train", index=i)[0] for i in range(60)])
    test = [render_texture(spec, index=i)[0] for i in range(20)]
    for d in TEXTURE_DEFECTS:
        test += [render_texture(spec, d, index=1000 + i)[0] for i in range(8)]
    labels = np.r_[np.zeros(20, int), np.ones(8 * len(TEXTURE_DEFECTS), int)]
    return train.astype(np.float64), np.stack(test).astype(np.float64), labels


def real_auroc(cand: Any, train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> float:
    from gaikan.autoselect import _resize
    from gaikan.detectors.registry import create
    from gaikan.metrics import roc_auc

    det = create(cand.kind, **cand.params)
    if "random_state" in det.get_params():
        det.set_params(random_state=0)
    det.fit(_resize(train, cand.size))
    return float(roc_auc(labels, det.anomaly_score(_resize(test, cand.size))))


def replay_budget(cands: list, rows: dict[str, dict], budget: float, n_img: int) -> str | None:
    """The label ``select`` picks under ``budget`` given each candidate's measured time."""
    from gaikan.autoselect import prior_cost

    spent, tried = 0.0, []
    per_px: dict[str, float] = {}
    for c in cands:
        px = n_img * c.size[0] * c.size[1]
        expected = per_px[c.kind] * px if c.kind in per_px else prior_cost(c, n_img)
        if spent + expected > budget:
            continue
        r = rows[c.label]
        spent += r["elapsed_s"]
        per_px[c.kind] = r["elapsed_s"] / px
        if "error" not in r:
            tried.append(r)
    return max(tried, key=lambda r: r["objective"])["label"] if tried else None


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def run_set(
    name: str, data: tuple, budget: float, log, known: dict[str, float] | None = None
) -> dict[str, Any]:
    from gaikan.autoselect import default_candidates, select

    train, test, labels = data
    cands = default_candidates()
    t0 = time.perf_counter()
    res = select(train, budget_s=1e9, seed=0, candidates=cands)
    rows = {r["label"]: r for r in res.rows}
    for c in cands:
        r = rows[c.label]
        if "error" in r:
            continue
        t1 = time.perf_counter()
        r["real_auroc"] = (
            known[c.label] if known and c.label in known else real_auroc(c, train, test, labels)
        )
        log(
            f"{name:22} {c.label:40} synth {r['objective']:.3f} (AUROC {r['image_auroc']:.3f}) "
            f"real {r['real_auroc']:.3f}  select {r['elapsed_s']:.1f} s  "
            f"real {time.perf_counter() - t1:.1f} s"
        )
    n = len(train)
    pick = replay_budget(cands, rows, budget, res.n_img)
    ok = [r for r in rows.values() if "real_auroc" in r]
    best = max(ok, key=lambda r: r["real_auroc"])
    picked = rows[pick] if pick else None
    out = {
        "set": name,
        "n_train": int(n),
        "n_img": int(res.n_img),
        "n_test": len(test),
        "n_defect": int(labels.sum()),
        "spearman_objective": spearman([r["objective"] for r in ok], [r["real_auroc"] for r in ok]),
        "spearman_auroc": spearman([r["image_auroc"] for r in ok], [r["real_auroc"] for r in ok]),
        "pick": pick,
        "pick_real": picked["real_auroc"] if picked else None,
        "best": best["label"],
        "best_real": best["real_auroc"],
        "within_001": bool(picked and best["real_auroc"] - picked["real_auroc"] <= 0.01),
        "select_s_all": float(sum(r["elapsed_s"] for r in rows.values())),
        "wall_s": time.perf_counter() - t0,
        "rows": [
            {k: v for k, v in r.items() if k != "params"} | {"params": r["params"]}
            for r in rows.values()
        ],
    }
    log(
        f"{name}: rho {out['spearman_objective']:.2f}; pick {pick} "
        f"({out['pick_real'] if picked else float('nan'):.3f}) best {best['label']} "
        f"({best['real_auroc']:.3f}) within 0.01: {out['within_001']}"
    )
    return out


def replay(results: list[dict], budget: float) -> list[dict]:
    """Auto's pick under ``budget`` with *today's* cost prior and order, replayed
    on an earlier run's measured candidate times and scores (the rows of a
    ``--json`` file): the effect of the budget logic alone."""
    from gaikan.autoselect import default_candidates

    cands = default_candidates()
    for r in results:
        rows = {x["label"]: x for x in r["rows"]}
        n = r["n_train"]
        n_held = max(3, round(0.3 * n))  # runs before n_img was stored: one copy each
        n_img = r.get("n_img", (n - n_held) + 2 * n_held)
        pick = replay_budget([c for c in cands if c.label in rows], rows, budget, n_img)
        best = max((x for x in rows.values() if "real_auroc" in x), key=lambda x: x["real_auroc"])
        r["pick"] = pick
        r["pick_real"] = rows[pick]["real_auroc"] if pick else None
        r["within_001"] = bool(pick and best["real_auroc"] - rows[pick]["real_auroc"] <= 0.01)
    return results


def table(results: list[dict]) -> str:
    lines = [
        (
            "| data set | train / test (defective) | Spearman ρ (objective) | ρ (synthetic AUROC) "
            "| auto's pick (real AUROC) | best in hindsight (real AUROC) | within 0.01 |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pr = "—" if r["pick_real"] is None else f"{r['pick_real']:.3f}"
        lines.append(
            f"| {r['set']} | {r['n_train']} / {r['n_test']} ({r['n_defect']}) | "
            f"{r['spearman_objective']:.2f} | {r['spearman_auroc']:.2f} | {r['pick']} ({pr}) | "
            f"{r['best']} ({r['best_real']:.3f}) | {'yes' if r['within_001'] else '**no**'} |"
        )
    pairs = [
        (x["objective"], x["real_auroc"]) for r in results for x in r["rows"] if "real_auroc" in x
    ]
    if pairs:
        a, b = zip(*pairs)
        mean_rho = np.nanmean([r["spearman_objective"] for r in results])
        lines.append("")
        lines.append(
            f"Pooled Spearman ρ over {len(pairs)} (data set, candidate) pairs: "
            f"{spearman(list(a), list(b)):.2f}; mean per-set ρ {mean_rho:.2f}; "
            f"within 0.01 on {sum(r['within_001'] for r in results)} of {len(results)} sets."
        )
    return "\n".join(lines)


def main() -> None:
    from gaikan.synth.textures import BASKET

    all_sets = ["elpv", "connectors-top", "connectors-oblique", *(s.name for s in BASKET)]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", default=",".join(all_sets))
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--elpv-train", type=int, default=200)
    ap.add_argument("--elpv-test", type=int, default=100)
    ap.add_argument("--cache", default="bench-out/auto")
    ap.add_argument("--json", default=None, help="Write every row here.")
    ap.add_argument(
        "--replay",
        default=None,
        help="A --json file of an earlier run: print its table with auto's pick replayed "
        "under today's budget logic (nothing is fitted).",
    )
    ap.add_argument(
        "--reuse-real",
        default=None,
        help="A --json file of an earlier run: take each (set, candidate)'s real AUROC from it "
        "(it depends on the candidate and the data only, not on how auto chooses).",
    )
    args = ap.parse_args()
    if args.replay:
        print(table(replay(json.loads(Path(args.replay).read_text()), args.budget)))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def log(s: str) -> None:
        print(s, flush=True)

    log(f"load {os.getloadavg()[0]:.2f}")

    def known(name: str) -> dict[str, float] | None:
        """The set's real AUROCs from --reuse-real (read now: that run may still be going)."""
        if not args.reuse_real or not Path(args.reuse_real).exists():
            return None
        for r in json.loads(Path(args.reuse_real).read_text()):
            if r["set"] == name:
                return {x["label"]: x["real_auroc"] for x in r["rows"] if "real_auroc" in x}
        return None

    results = []
    for name in args.sets.split(","):
        if name == "elpv":
            data = elpv(args.elpv_train, args.elpv_test)
        elif name.startswith("connectors-"):
            data = connectors(name.split("-", 1)[1], cache)
        else:
            data = texture(name)
        results.append(run_set(name, data, args.budget, log, known(name)))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    log(f"load {os.getloadavg()[0]:.2f}")
    print(table(results))


if __name__ == "__main__":
    main()

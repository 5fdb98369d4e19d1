"""Do the maps point at the defect?  (issue 12)

    python benchmarks/bench_pointing.py                      # the four detectors, CLI defaults
    python benchmarks/bench_pointing.py --models soartc,rt   # a subset
    python benchmarks/bench_pointing.py -p rt.map_refine=none   # override a default
    python benchmarks/bench_pointing.py --seed 1                # an independent render

For every detector with the CLI's defaults (pixel detectors at 100×100,
deep ones at 256×256, the class defaults otherwise), fitted on the good
training images of synthetic connectors (``gaikan.synth.make_dataset``,
top and oblique views), it takes each defective test image's anomaly map,
finds its hottest pixel, maps that pixel's centre to the mask's resolution
(the masks are not dilated) and counts a hit when it lies inside the true
defect mask.  Printed: one row per model × view × defect mode with the
share of hits and the counts, a row per model × view over all modes, and
the image AUROC (good test parts against all defective ones) per model ×
view.  The images are rendered once (size 128) into ``--cache`` (default
``bench-out/pointing-seed<SEED>``) and loaded
as ``gaikan fit`` / ``gaikan inspect`` load them
(``gaikan.io.load_images(files, size)``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFECTS = ("missing", "pushed", "tilt_x", "tilt_y", "shifted")
VIEWS = ("top", "oblique")
#: The CLI's default image sizes (``gaikan fit`` without ``--size``).
PIXEL_SIZE, DEEP_SIZE = 100, 256


def render(cache: Path, n_good: int, n_test_good: int, n_defect: int, seed: int) -> Path:
    """Render the connectors once; later runs reuse the folder."""
    from gaikan.synth import make_dataset

    stamp = {"n_good": n_good, "n_test_good": n_test_good, "n_defect": n_defect, "seed": seed}
    done = cache / "bench_pointing.json"
    if done.exists() and json.loads(done.read_text()) == stamp:
        return cache
    make_dataset(
        cache,
        layout="mixed",
        n_good=n_good,
        n_test_good=n_test_good,
        n_defect=n_defect,
        defects=DEFECTS,
        views=VIEWS,
        size=128,
        seed=seed,
        workers=2,
    )
    done.write_text(json.dumps(stamp))
    return cache


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def hit(amap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the hottest pixel of ``amap`` (H, W) lies inside ``mask`` (Hm, Wm).

    The pixel's centre is mapped to the mask's grid (no dilation).
    """
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    hm, wm = mask.shape
    rm = min(hm - 1, int((r + 0.5) * hm / amap.shape[0]))
    cm = min(wm - 1, int((c + 0.5) * wm / amap.shape[1]))
    return bool(mask[rm, cm])


def run(root: Path, models: list[str], params: dict[str, dict], log) -> list[dict[str, Any]]:
    from PIL import Image

    import gaikan
    from gaikan.detectors.registry import default_size
    from gaikan.io import load_images
    from gaikan.metrics import roc_auc

    rows: list[dict[str, Any]] = []
    for view in VIEWS:
        base = root / view
        for kind in models:
            hw = default_size(kind)
            t0 = time.perf_counter()
            det = gaikan.create(kind, **params.get(kind, {}))
            det.fit(load_images(_files(base / "train" / "good"), hw).images)
            good = load_images(_files(base / "test" / "good"), hw).images
            s_good = det.anomaly_score(good)
            s_bad_all = []
            for mode in DEFECTS:
                files = _files(base / "test" / mode)
                det_res = det.detect(load_images(files, hw).images)
                s_bad_all.append(det_res.scores)
                hits = []
                for f, amap in zip(files, det_res.maps):
                    mpath = base / "ground_truth" / mode / f"{f.stem}_mask.png"
                    mask = np.asarray(Image.open(mpath)) > 127
                    hits.append(hit(amap, mask))
                rows.append(
                    {"model": kind, "view": view, "mode": mode, "hits": sum(hits), "n": len(hits)}
                )
            s_bad = np.concatenate(s_bad_all)
            y = np.r_[np.zeros(len(s_good)), np.ones(len(s_bad))]
            auc = roc_auc(y, np.r_[s_good, s_bad])
            mine = [r for r in rows if r["model"] == kind and r["view"] == view]
            rows.append(
                {
                    "model": kind,
                    "view": view,
                    "mode": "all",
                    "hits": sum(r["hits"] for r in mine),
                    "n": sum(r["n"] for r in mine),
                    "auroc": auc,
                }
            )
            log(f"{kind} {view}: {time.perf_counter() - t0:.1f} s")
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | view | defect | hottest pixel in mask | hits / n | image AUROC |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        auc = f"{r['auroc']:.3f}" if "auroc" in r else ""
        share = r["hits"] / max(1, r["n"])
        mode = f"**{r['mode']}**" if r["mode"] == "all" else r["mode"]
        lines.append(
            f"| {r['model']} | {r['view']} | {mode} | {share:.3f} | {r['hits']}/{r['n']} | {auc} |"
        )
    return "\n".join(lines)


def _parse_params(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        key, _, val = item.partition("=")
        kind, _, name = key.partition(".")
        try:
            v = json.loads(val)
        except json.JSONDecodeError:
            v = val
        out.setdefault(kind, {})[name] = v
    return out


def main(argv: list[str] | None = None) -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache",
        default=None,
        help="Rendered images go here (default: bench-out/pointing-seed<SEED>, git-ignored).",
    )
    ap.add_argument("--models", default="soartc,soart3map,rt,padim")
    ap.add_argument("--n-good", type=int, default=60)
    ap.add_argument("--n-test-good", type=int, default=20)
    ap.add_argument("--n-defect", type=int, default=10, help="Per defect mode and view.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-p", "--param", action="append", default=[], metavar="MODEL.KEY=VALUE")
    ap.add_argument("--json", default=None, help="Also write the rows as JSON.")
    a = ap.parse_args(argv)
    cache = Path(a.cache or f"bench-out/pointing-seed{a.seed}")
    root = render(cache, a.n_good, a.n_test_good, a.n_defect, a.seed)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    rows = run(root, models, _parse_params(a.param), lambda m: print(m, file=sys.stderr))
    print(
        f"# pointing: {a.n_good} good train, {a.n_test_good} good test, {a.n_defect} per "
        f"defect mode and view, seed {a.seed}, params {a.param or 'defaults'}"
    )
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Seed sweep of focus-classifier recipes, chosen on a separate dev set.

The experiment behind docs/classifier.md, "Choosing the focus recipe"::

    python benchmarks/sweep_focus.py --device cuda --workers 5      # ~5 min per 50 runs on an H100
    python benchmarks/sweep_focus.py --configs base,f80full24 --seeds 2   # a CPU taste (~1 h)

Data: the mode task of ``bench_classifier.py`` (same renders, crop and
split: 150 training parts per class, 50 test parts) plus a **dev set** of
50 further test-split parts per class (indices 50–99), which the
benchmark never uses.  Every recipe is trained with seeds 0..N-1; the
table gives the dev and test accuracy of single runs (mean, sd) and of
the N-seed ensemble (mean probabilities).  Choose on the dev columns; the
test columns are there to report the chosen recipe, not to choose it.

``--workers K`` runs K processes side by side (on a GPU they share it);
each writes ``runs{k}.jsonl`` and ``P{k}.npz`` (probabilities) to
``--out``, and the table is printed from those files, so a cut-off run can
be tabulated with ``--table-only``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

#: recipe name → (Classifier overrides, fine_tune overrides); the base is the
#: first recipe: focus 64 at 128², 20 % validation with early stopping, 14 epochs
CONFIGS = {
    "base": ({}, {}),
    "full": ({"valid_frac": 0.0, "patience": None}, {}),
    "full24": ({"valid_frac": 0.0, "patience": None}, {"epochs": 24}),
    "ls": ({"label_smoothing": 0.1}, {}),
    "lr1": ({}, {"base_lr": 1e-3}),
    "lr4": ({}, {"base_lr": 4e-3}),
    "shift0": ({"max_shift": 0.0}, {}),
    "shift6": ({"max_shift": 0.06}, {}),
    "f48": ({"focus": 48}, {}),
    "f80": ({"focus": 80}, {}),
    "f96": ({"focus": 96}, {}),
    "f80full14": ({"focus": 80, "valid_frac": 0.0, "patience": None}, {}),
    "f80full24": ({"focus": 80, "valid_frac": 0.0, "patience": None}, {"epochs": 24}),
    "f96full24": ({"focus": 96, "valid_frac": 0.0, "patience": None}, {"epochs": 24}),
    "f112full24": ({"focus": 112, "valid_frac": 0.0, "patience": None}, {"epochs": 24}),
    "f96full24lr4": (
        {"focus": 96, "valid_frac": 0.0, "patience": None},
        {"epochs": 24, "base_lr": 4e-3},
    ),
    "f96n160full24": (
        {"focus": 96, "image_size": 160, "valid_frac": 0.0, "patience": None},
        {"epochs": 24},
    ),
}


def load_data(cache, render_workers):
    """(train X, y), (test X, y), (dev X, y): cropped grey parts, 8-bit values."""
    import bench_classifier as B

    B.CACHE_DIR = cache
    (Xtr, ytr, _, _), (Xte, yte, _, _) = B.synth_mode_data(150, 50, 256, render_workers)
    jobs = [(d, "test", i, 256, None) for d in B.MODES for i in range(50, 100)]
    Xdv, _, ydv, _ = B.render_many(jobs, render_workers)
    ydv = np.array([s.rstrip("+-") for s in ydv])
    roi = B.roi_from_good(Xtr[ytr == "good"])
    return ((B.crop(Xtr, roi), ytr), (B.crop(Xte, roi), yte), (B.crop(Xdv, roi), ydv))


def run_worker(args):
    from gaikan.deep.classifier import Classifier

    (Xtr, ytr), (Xte, yte), (Xdv, ydv) = load_data(args.cache, 1)
    if args.smoke:  # every code path in a minute; numbers meaningless
        Xtr, ytr = Xtr[::15], ytr[::15]
    jobs = [(c, s) for s in range(args.seeds) for c in args.configs.split(",")]
    store = {}
    for name, seed in jobs[args.worker :: args.workers]:
        kw, fkw = CONFIGS[name]
        ckw = {
            "image_size": 128,
            "weights_file": args.weights,
            "reference": True,
            "focus": 64,
            "brightness": 0.1,
            "contrast": 0.1,
            "max_shift": 0.03,
            "patience": 6,
            "batch_size": 32,
            "random_state": seed,
            "num_threads": args.threads,
            "device": args.device,
            **kw,
        }
        fit = {"epochs": 14, "base_lr": 2e-3, "freeze_epochs": 1, "lr_mult": 10, **fkw}
        if args.smoke:
            fit["epochs"] = 1
        clf = Classifier("efficientnet_lite0", **ckw)
        t0 = time.perf_counter()
        clf.fine_tune(Xtr, ytr, **fit)
        t_fit = time.perf_counter() - t0
        Pd, Pt = clf.predict_proba(Xdv), clf.predict_proba(Xte)
        cls = clf.classes_
        rec = {
            "config": name,
            "seed": seed,
            "dev": float((cls[Pd.argmax(1)] == ydv).mean()),
            "test": float((cls[Pt.argmax(1)] == yte).mean()),
            "fit_s": t_fit,
        }
        print(json.dumps(rec), flush=True)
        with open(os.path.join(args.out, f"runs{args.worker}.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        store[f"{name}|{seed}|dev"], store[f"{name}|{seed}|test"] = Pd, Pt
        np.savez_compressed(os.path.join(args.out, f"P{args.worker}.npz"), classes=cls, **store)


def table(args):
    (_, _), (_, yte), (_, ydv) = load_data(args.cache, args.render_workers)
    runs = {}
    for f in glob.glob(os.path.join(args.out, "runs*.jsonl")):
        with open(f) as fh:
            for line in fh:
                r = json.loads(line)
                runs[(r["config"], r["seed"])] = r
    P, classes = {}, None
    for f in glob.glob(os.path.join(args.out, "P*.npz")):
        d = np.load(f, allow_pickle=False)
        classes = d["classes"]
        P.update({k: d[k] for k in d.files if k != "classes"})
    names = sorted({c for c, _ in runs})
    rows = []
    for c in names:
        seeds = sorted(s for cc, s in runs if cc == c)
        dev = [runs[c, s]["dev"] for s in seeds]
        test = [runs[c, s]["test"] for s in seeds]
        fit = float(np.median([runs[c, s]["fit_s"] for s in seeds]))

        def ens(split, y, c=c, seeds=seeds):
            p = np.mean([P[f"{c}|{s}|{split}"] for s in seeds], 0)
            return float((classes[p.argmax(1)] == y).mean())

        rows.append(
            (
                c,
                len(seeds),
                np.mean(dev),
                np.std(dev),
                ens("dev", ydv),
                np.mean(test),
                ens("test", yte),
                fit,
            )
        )
    rows.sort(key=lambda r: -r[2])
    hdr = (
        f"{'recipe':15s}{'seeds':>6s}{'dev mean':>10s}{'sd':>7s}{'dev ens':>9s}"
        f"{'test mean':>11s}{'test ens':>10s}{'fit s':>8s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for c, n, dm, ds, de, tm, te, fit in rows:
        print(f"{c:15s}{n:>6d}{dm:>10.4f}{ds:>7.4f}{de:>9.4f}{tm:>11.4f}{te:>10.4f}{fit:>8.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    ap.add_argument("--workers", type=int, default=1, help="training processes side by side")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--render-workers", type=int, default=2)
    ap.add_argument("--weights", default=None, help="EfficientNet-Lite0 weights file (offline)")
    ap.add_argument("--cache", default="bench-out/cache", help="rendered-image cache")
    ap.add_argument("--out", default="bench-out/sweep_focus")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown recipes {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    os.makedirs(args.out, exist_ok=True)
    if args.worker is not None:
        return run_worker(args)
    if not args.table_only:
        load_data(args.cache, args.render_workers)  # render once, into the cache
        argv = list(argv if argv is not None else sys.argv[1:])
        procs = [
            subprocess.Popen([sys.executable, __file__, *argv, "--worker", str(k)])
            for k in range(args.workers)
        ]
        if any(p.wait() for p in procs):
            print("a worker failed; the table shows the runs that finished", file=sys.stderr)
    table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

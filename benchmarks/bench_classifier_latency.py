"""Benchmark: inference cost of a focus classifier vs a seed ensemble (CPU).

One command, one table::

    python benchmarks/bench_classifier_latency.py [--threads 2] [--members 5]

Times ``predict_proba`` and ``explain`` (integrated gradients, the default
map of a reference model) per image, one image at a time and in batches of
8, on crops of the synthetic connectors (the benchmark's mode task at 256
px, 250×120).  The networks are set up but not trained: inference time
does not depend on the weights, so this runs in a minute or two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def per_image(fn, X, bs):
    fn(X[:bs])  # warm-up
    t = time.perf_counter()
    for s in range(0, len(X), bs):
        fn(X[s : s + bs])
    return (time.perf_counter() - t) / len(X)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--cache", default=None, help="rendered-image cache (bench_classifier's)")
    args = ap.parse_args(argv)
    import bench_classifier as B
    from gaikan.deep import Classifier, ClassifierEnsemble

    B.CACHE_DIR = args.cache
    good = B.render_many([("good", "train", i, 256, None) for i in range(8)], 1)[0]
    test = B.render_many(
        [(d, "test", i, 256, None) for d in B.MODES for i in range(-(-args.images // 6))], 1
    )[0][: args.images]
    roi = B.roi_from_good(good)
    good, X = B.crop(good, roi), B.crop(test, roi)
    Xfit = np.concatenate([good, X[:6]])
    yfit = np.array(["good"] * len(good) + list(B.MODES[1:]) + ["good"])[: len(Xfit)]
    recipe = Classifier(
        image_size=128,
        reference=True,
        focus=80,
        valid_frac=0.0,
        patience=None,
        num_threads=args.threads,
    )
    ens = ClassifierEnsemble(recipe, n_members=args.members).fine_tune(
        Xfit, yfit, epochs=0, freeze_epochs=0
    )
    print(
        f"bench_classifier_latency (cpu x{args.threads} threads; {len(X)} crops "
        f"{X.shape[1]}x{X.shape[2]})"
    )
    hdr = f"{'model':16s}{'batch':>6s}{'predict ms/img':>16s}{'explain ms/img':>16s}"
    print(hdr)
    print("-" * len(hdr))
    for name, m in (("single", ens.members_[0]), (f"ensemble x{args.members}", ens)):
        for bs in (1, 8):
            tp = per_image(m.predict_proba, X, bs)
            te = per_image(m.explain, X, bs)
            print(f"{name:16s}{bs:>6d}{tp * 1e3:>16.1f}{te * 1e3:>16.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

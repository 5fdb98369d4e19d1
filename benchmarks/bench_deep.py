"""Deep detectors on ELPV (anchor protocol): accuracy, speed, memory — one table.

Usage::

    python benchmarks/bench_deep.py                      # ELPV pooled, 256×256, 2 threads
    python benchmarks/bench_deep.py --detectors padim --limit 200   # quick look
    python benchmarks/bench_deep.py --runtimes           # eager vs channels_last vs ONNX
    python benchmarks/bench_deep.py --gpu --weights-file .whl/efficientnet-lite0-57934424.pth

Protocol (issue 4 / the anchor): ELPV from the ``elpv-dataset`` package,
pooled mono+poly, good cells (defect probability 0) split 60/40 with seed 0
(904 to fit), test = the other 604 good + all 1,116 defective cells,
images resized to 256×256 without keeping aspect.  Each detector runs in a
freshly spawned process (so peak RSS is its own, dataset included) with
``--threads`` intra-op threads.  Times exclude decoding (images are in
memory).  Columns:

- ``img AUROC``: image AUROC on the test set;
- ``fit s``: wall time of ``fit`` on the training cells (backbone build
  and ONNX export included);
- ``ms/img b16``: ``anomaly_score`` over the whole test set in batches of 16;
- ``ms/img b1``: one image per call, over the first ``--n-batch1`` test cells;
- ``peak RSS``: the process's own peak (``VmHWM``; see ``gaikan.benchmark.peak_rss_mb``).

The baseline ``zscore`` is a per-pixel z-score (mean/std per pixel over
the training cells, image score = max |z|).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

DEFAULTS: dict[str, dict] = {
    "zscore": {},
    "padim": {"backbone": "efficientnet_lite0"},
    "patchcore": {"backbone": "efficientnet_lite0"},
    "soart-deep": {"backbone": "efficientnet_lite0"},
}


def _peak_rss_mb() -> float:
    from gaikan.benchmark import peak_rss_mb

    return peak_rss_mb()


class ZScore:
    """Per-pixel z-score baseline (max |z| over the image)."""

    def fit(self, X):
        x = np.asarray(X, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0, ddof=1) + 1.0
        return self

    def anomaly_score(self, X):
        z = np.abs(np.asarray(X, dtype=np.float64) - self.mean_) / self.std_
        return z.reshape(len(z), -1).max(axis=1)


def _load(dataset: str, size: int, limit: int | None, seed: int = 0):
    from gaikan.benchmark import load_bench_data

    data = load_bench_data(dataset, size, seed)
    train, test, labels = data.train, data.test, np.asarray(data.labels)
    if limit:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(test), size=min(limit, len(test)), replace=False))
        test, labels = test[keep], labels[keep]
    return train, test, labels


def run_one(kind: str, params: dict, args) -> dict:
    """Fit, time and score one detector in this process."""
    import torch

    from gaikan.metrics import roc_auc

    torch.set_num_threads(args.threads)
    train, test, labels = _load(args.dataset, args.size, args.limit)
    if args.n_train:
        train = train[: args.n_train]
    if kind == "zscore":
        det = ZScore()
    else:
        from gaikan.detectors.registry import create

        p = dict(params)
        p.setdefault("num_threads", args.threads)
        p.setdefault("batch_size", 16)
        if args.device != "cpu":
            p["device"] = args.device
        if args.weights_file:
            p["weights_file"] = args.weights_file
        det = create(kind, **p)
    t0 = time.perf_counter()
    det.fit(train)
    fit_s = time.perf_counter() - t0
    det.anomaly_score(test[:16])  # warm-up
    t0 = time.perf_counter()
    scores = np.concatenate([det.anomaly_score(test[i : i + 64]) for i in range(0, len(test), 64)])
    b16 = 1e3 * (time.perf_counter() - t0) / len(test)
    nb1 = min(args.n_batch1, len(test))
    if hasattr(det, "_fe") and det._fe is not None:
        det._fe.batch_size = 1
    t0 = time.perf_counter()
    for i in range(nb1):
        det.anomaly_score(test[i : i + 1])
    b1 = 1e3 * (time.perf_counter() - t0) / max(1, nb1)
    return {
        "detector": kind,
        "params": params,
        "image_auroc": roc_auc(labels, scores),
        "fit_s": fit_s,
        "ms_b16": b16,
        "ms_b1": b1,
        "peak_rss_mb": _peak_rss_mb(),
        "n_train": len(train),
        "n_test": len(test),
        "runtime": getattr(getattr(det, "_fe", None), "runtime", "-"),
    }


def _child(queue, kind, params, args):
    try:
        queue.put(("ok", run_one(kind, params, args)))
    except BaseException as exc:
        import traceback

        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_isolated(kind, params, args) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(q, kind, params, args))
    proc.start()
    status, payload = q.get()
    proc.join()
    if status == "ok":
        return payload
    return {"detector": kind, "params": params, "error": payload}


def format_rows(rows) -> str:
    head = (
        f"{'detector':<11} {'params':<44} {'img AUROC':>9} {'fit s':>7} "
        f"{'ms/img b16':>10} {'ms/img b1':>9} {'peak RSS MB':>11}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        ps = ",".join(f"{k}={v}" for k, v in r["params"].items() if k != "backbone")
        ps = ps.replace(" ", "")[:44]
        if "error" in r:
            out.append(f"{r['detector']:<11} {ps:<44} error: {r['error'].splitlines()[0]}")
            continue
        out.append(
            f"{r['detector']:<11} {ps:<44} {r['image_auroc']:>9.4f} {r['fit_s']:>7.1f} "
            f"{r['ms_b16']:>10.1f} {r['ms_b1']:>9.1f} {r['peak_rss_mb']:>11.0f}"
        )
    return "\n".join(out)


# -- extra measurements ------------------------------------------------------------
def bench_runtimes(args) -> str:
    """Feature extraction ms/img: eager vs channels_last vs ONNX Runtime (CPU)."""
    import torch

    from gaikan.deep.features import FeatureExtractor

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, (48, args.size, args.size))
    lines = [
        f"{'runtime':<14} {'layers':<10} {'ms/img b16':>10} {'ms/img b1':>9} {'max rel diff':>12}"
    ]
    for layers in ((1, 2, 3), (3, 4)):
        ref = None
        for rt in ("eager", "channels_last", "onnx"):
            fe = FeatureExtractor(
                layers=layers, runtime=rt, num_threads=args.threads, batch_size=16
            )
            fe(X[:16])
            t0 = time.perf_counter()
            f = fe(X)
            b16 = 1e3 * (time.perf_counter() - t0) / len(X)
            fe.batch_size = 1
            t0 = time.perf_counter()
            for i in range(16):
                fe(X[i : i + 1])
            b1 = 1e3 * (time.perf_counter() - t0) / 16
            if ref is None:
                ref = f
            diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(f, ref))
            lines.append(f"{rt:<14} {layers!s:<10} {b16:>10.1f} {b1:>9.1f} {diff:>12.1e}")
    return "\n".join(lines)


def bench_gpu(args) -> str:
    """Images/s at batch 64 on CUDA: feature extractor and PaDiM scoring."""
    import torch

    from gaikan.deep import PaDiM
    from gaikan.deep.features import FeatureExtractor

    if not torch.cuda.is_available():
        return "no CUDA device"
    dev = "cuda"
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, (64, args.size, args.size))
    lines = [f"GPU: {torch.cuda.get_device_name(0)}"]
    for rt in ("eager", "channels_last"):
        fe = FeatureExtractor(
            layers=(1, 2, 3),
            runtime=rt,
            device=dev,
            batch_size=64,
            weights_file=args.weights_file,
        )
        for _ in range(3):
            fe(X)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fe(X)
        torch.cuda.synchronize()
        lines.append(
            f"features (1,2,3) {rt:<14} batch 64: {640 / (time.perf_counter() - t0):8.0f} img/s"
        )
    train = rng.uniform(0, 255, (128, args.size, args.size))
    det = PaDiM(
        device=dev,
        batch_size=64,
        weights_file=args.weights_file,
        runtime="channels_last",
    )
    det.fit(train)
    det.anomaly_score(X)
    t0 = time.perf_counter()
    for _ in range(5):
        det.anomaly_score(X)
    lines.append(
        f"PaDiM scoring (features on GPU, Gaussians on CPU) batch 64: "
        f"{320 / (time.perf_counter() - t0):8.0f} img/s"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="elpv")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--detectors", default="zscore,padim,patchcore,soart-deep")
    ap.add_argument("--params", default="{}", help='JSON: {"padim": {"n_features": 100}, ...}')
    ap.add_argument("--limit", type=int, default=None, help="score a seeded subset of the test set")
    ap.add_argument("--n-train", type=int, default=None, help="fit on the first N training cells")
    ap.add_argument("--n-batch1", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights-file", default=None)
    ap.add_argument("--runtimes", action="store_true", help="only compare backbone runtimes")
    ap.add_argument("--gpu", action="store_true", help="only measure GPU throughput")
    ap.add_argument("--json", default=None, help="also write rows to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.runtimes:
        print(bench_runtimes(args))
        return 0
    if args.gpu:
        print(bench_gpu(args))
        return 0
    extra = json.loads(args.params)
    rows = []
    for spec in args.detectors.split(","):
        kind = spec.partition(":")[0]
        params = dict(DEFAULTS.get(kind, {}))
        params.update(extra.get(spec, extra.get(kind, {})))
        rows.append(run_isolated(kind, params, args))
        print(format_rows(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(
        f"dataset={args.dataset} size={args.size} threads={args.threads} "
        f"train={rows[0].get('n_train')} test={rows[0].get('n_test')}"
    )
    print(format_rows(rows))
    for r in rows:
        if "error" in r:
            print(f"\n{r['detector']} failed:\n{r['error']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

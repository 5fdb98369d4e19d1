"""Benchmark: transfer-learning defect classifiers with explanations.

One command, one table (everything on the CPU unless ``--device cuda``)::

    python benchmarks/bench_classifier.py --cache bench-out/cache   # full, ~2.5 h on 2 cores
    python benchmarks/bench_classifier.py --quick                   # reduced, minutes

Experiments
-----------
Synthetic connectors (``gaikan.synth.render_sample``, layout ``mixed``,
``oblique`` view, 256 px, seed 0; training images from the generator's
``train`` split, test images from its ``test`` split, so no image is
shared):

- ``mode``: {good, missing, pushed, shifted, tilt_x, tilt_y} (6 classes),
  150 training images per class (20 % of them for validation), 50 test;
- ``mode±``: the same images with the tilt sign (8 classes);
- ``pin``: position of the defective pin (27 classes), random defect mode
  per image, 40 training / 20 test images per pin.

Images are cropped to the part's bounding box (computed from the mean
*good training* image; a fixed ROI, as on a line): 250×120 pixels.

Models:

- ``effnet-raw``: EfficientNet-Lite0 (offline ImageNet weights) fine-tuned
  on the whole crop, at 256×128;
- ``effnet-ref``: the same with ``reference=True`` (image, mean good image,
  difference) — used for the pin task;
- ``effnet-focus``: ``reference=True, focus=80``: an 80-pixel window around
  the largest difference from the mean good image, at 128² (the defect
  type; a window carries no position, so the pin task uses effnet-ref),
  trained on all 150 images per class (no held-out validation, fixed
  one-cycle schedule of 24 epochs) — the recipe chosen on a separate dev
  set (docs/classifier.md, "Choosing the focus recipe");
- ``effnet-ens``: :class:`gaikan.deep.ClassifierEnsemble` of five
  effnet-focus members (seeds 0–4, probabilities averaged); its first
  member *is* the effnet-focus row, so that row costs nothing extra;
- ``vit-raw`` / ``vit-soart``: a small ViT from scratch on the raw crop /
  on its SOART3 image (unit space: the good training images).

Pointing score: share of defective test images whose explanation maximum
lies in the exact defect mask (explaining the true class).  ``pointing``:
the model's default explanation (integrated gradients for the reference
models, LayerCAM at stride 16 for effnet-raw, attention rollout for the
ViTs); ``pt-LCAM``: LayerCAM at stride 16 (CNNs; pasted back into the
frame for the focus model); ``pt-GCAM``: Grad-CAM on the last feature map
/ token grid; ``pt-IG``: integrated gradients from the mean good image
(CNNs).

ELPV (real solar cells, ``elpv-dataset``): 4 classes (defect probability 0,
⅓, ⅔, 1), stratified (class × cell type) 75/25 split with seed 0, images
resized to 160²; flips and 90° rotations as augmentation.  Also reported:
the binary accuracy (probability ≥ 0.5 = defective) derived from the
4-class prediction, the quantity of Deitsch et al.'s 88.4 %.

Times are wall-clock ``fine_tune`` times (data rendering excluded; rendered
images are kept in ``--cache`` between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

FOCUS_NET = 128  # network size of the focus window (full run)
MODES = ("good", "missing", "pushed", "shifted", "tilt_x", "tilt_y")
DEFECTS = MODES[1:]


# --------------------------------------------------------------------------- data
def _render(args):
    from gaikan.synth import render_sample

    defect, split, index, size, pin = args
    img, mask, lab = render_sample(
        defect, layout="mixed", view="oblique", size=size, seed=0, split=split, index=index, pin=pin
    )
    sev = lab.get("severity") or {}
    sign = ""
    for k in ("tilt_x", "tilt_y"):
        if k in sev:
            sign = "+" if sev[k] >= 0 else "-"
    pin_lab = lab["pin"]
    return img, mask, defect + sign, (f"r{pin_lab['row']}c{pin_lab['col']}" if pin_lab else "none")


CACHE_DIR = None  # set by --cache: rendered arrays are kept as .npz keyed by the job list


def render_many(jobs, workers):
    path = None
    if CACHE_DIR:
        import hashlib

        key = hashlib.sha1(repr(jobs).encode()).hexdigest()[:16]
        path = os.path.join(CACHE_DIR, f"render-{key}.npz")
        if os.path.exists(path):
            d = np.load(path, allow_pickle=False)
            return d["X"].astype(np.float64), d["M"], d["y"], d["p"]
    out = _render_all(jobs, workers)
    if path:
        os.makedirs(CACHE_DIR, exist_ok=True)
        X = out[0]
        exact = X.min() >= 0 and X.max() <= 255 and np.array_equal(X, np.round(X))
        np.savez(path, X=X.astype(np.uint8) if exact else X, M=out[1], y=out[2], p=out[3])
    return out


def _render_all(jobs, workers):
    if workers <= 1:
        out = [_render(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as ex:
            out = list(ex.map(_render, jobs, chunksize=8))
    imgs = np.stack([o[0] for o in out]).astype(np.float64)
    masks = np.stack([o[1] for o in out])
    return imgs, masks, np.array([o[2] for o in out]), np.array([o[3] for o in out])


def synth_mode_data(n_train, n_test, size, workers):
    jobs = [(d, "train", i, size, None) for d in MODES for i in range(n_train)]
    jobs += [(d, "test", i, size, None) for d in MODES for i in range(n_test)]
    X, M, ysign, _ = render_many(jobs, workers)
    y = np.array([s.rstrip("+-") for s in ysign])
    n = len(MODES) * n_train
    return (X[:n], y[:n], ysign[:n], M[:n]), (X[n:], y[n:], ysign[n:], M[n:])


def synth_pin_data(n_train, n_test, size, workers):
    rng = np.random.default_rng(0)
    jobs = []
    for split, n in (("train", n_train), ("test", n_test)):
        for r in range(9):
            for c in range(3):
                for i in range(n):
                    d = DEFECTS[int(rng.integers(len(DEFECTS)))]
                    # index offset keeps the parts distinct from the mode task's
                    jobs.append((d, split, 10_000 + (r * 3 + c) * 1000 + i, size, (r, c)))
    X, M, _, pins = render_many(jobs, workers)
    n = 27 * n_train
    return (X[:n], pins[:n], M[:n]), (X[n:], pins[n:], M[n:])


def roi_from_good(good, pad=6, thr=25.0):
    """Bounding box (r0, r1, c0, c1) of the part in the mean good image."""
    m = good.mean(0)
    k = max(2, m.shape[0] // 32)
    corners = np.r_[m[:k, :k].ravel(), m[:k, -k:].ravel(), m[-k:, :k].ravel(), m[-k:, -k:].ravel()]
    fg = np.abs(good - np.median(corners)).max(0) > thr
    r, c = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    H, W = m.shape
    return (
        max(0, r[0] - pad),
        min(H, r[-1] + pad + 1),
        max(0, c[0] - pad),
        min(W, c[-1] + pad + 1),
    )


def crop(a, roi):
    r0, r1, c0, c1 = roi
    return a[:, r0:r1, c0:c1]


def load_elpv_arrays(size, npz=None):
    if npz:
        d = np.load(npz)
        return d["images"].astype(np.float64), d["probs"], d["types"]
    from gaikan.datasets import load_elpv

    e = load_elpv(size=size)
    return e.images.astype(np.float64), e.probs, e.types


def elpv_split(probs, types, seed=0, test_frac=0.25):
    rng = np.random.default_rng(seed)
    test = []
    key = np.array([f"{p:.3f}-{t}" for p, t in zip(probs, types)])
    for k in np.unique(key):
        idx = rng.permutation(np.flatnonzero(key == k))
        test.append(idx[: round(test_frac * idx.size)])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(probs)), test), test


# --------------------------------------------------------------------------- models
def make_model(kind, cfg, args, crop_hw):
    from gaikan.deep.classifier import Classifier
    from gaikan.deep.vit import ViTClassifier

    common = dict(
        batch_size=cfg["batch"], random_state=0, num_threads=args.threads, device=args.device
    )
    H, W = crop_hw
    if kind in ("effnet-focus", "effnet-ens"):
        clf = Classifier(
            "efficientnet_lite0",
            image_size=cfg["focus_net"],
            weights_file=args.weights,
            reference=True,
            focus=cfg["focus"],
            brightness=0.1,
            contrast=0.1,
            max_shift=0.03,
            valid_frac=0.0,
            patience=None,
            **common,
        )
        if kind == "effnet-ens":
            from gaikan.deep.ensemble import ClassifierEnsemble

            return ClassifierEnsemble(clf, n_members=cfg["members"])
        return clf
    if kind in ("effnet-raw", "effnet-ref"):
        h = round(cfg["cnn_h"] / 32) * 32
        w = max(32, round(h * W / H / 32) * 32)
        return Classifier(
            "efficientnet_lite0",
            image_size=(h, w),
            weights_file=args.weights,
            reference=kind == "effnet-ref",
            brightness=0.1,
            contrast=0.1,
            max_shift=0.03,
            patience=cfg["patience"],
            **common,
        )
    if kind == "vit-raw":
        h = cfg["vit_h"]
        w = max(8, round(h * W / H / 8) * 8)
        return ViTClassifier(
            "raw", image_size=(h, w), patch_size=8, patience=cfg["patience"], **common
        )
    if kind == "vit-soart":
        gh = (H - 8) // 4 + 1
        gw = (W - 8) // 4 + 1
        h, w = max(8, gh // 4 * 4), max(8, gw // 4 * 4)
        return ViTClassifier(
            "soart",
            image_size=(h, w),
            patch_size=4,
            soart_kernel=8,
            soart_stride=4,
            patience=cfg["patience"],
            **common,
        )
    raise ValueError(kind)


def fit_eval(kind, cfg, args, Xtr, ytr, Xte, yte, Mte, crop_hw, verbose=False, X_good=None):
    from gaikan.deep.evaluate import pointing_score

    clf = make_model(kind, cfg, args, crop_hw)
    cnn = kind.startswith("effnet")
    ep = cfg["cnn_epochs"] if cnn else cfg["vit_epochs"]
    if kind in ("effnet-focus", "effnet-ens"):
        ep = cfg["focus_epochs"]
    t0 = time.perf_counter()
    extra = {"X_good": X_good} if X_good is not None else {}
    clf.fine_tune(
        Xtr,
        ytr,
        epochs=ep,
        base_lr=cfg["cnn_lr"] if cnn else cfg["vit_lr"],
        freeze_epochs=1 if cnn else 0,
        lr_mult=cfg["lr_mult"] if cnn else 1.0,
        **extra,
    )
    t_fit = time.perf_counter() - t0
    if verbose:
        for h in clf.history_:
            print("    ", {k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()})
    row = eval_row(kind, clf, t_fit, Xte, yte, Mte, len(ytr))
    keep = None if Mte is None else Mte.reshape(len(Mte), -1).any(1)
    if cnn and Mte is not None and verbose:
        for meth in ("gradcam", "layercam", "eigencam"):
            for layer in (None, "blocks.2", "blocks.3", "blocks.4", "blocks.5"):
                maps = clf.explain(Xte[keep], method=meth, layer=layer, target=yte[keep])
                print(f"    pointing {meth} {layer}: {pointing_score(maps, Mte[keep]):.3f}")
    return row, clf


def eval_row(kind, clf, t_fit, Xte, yte, Mte, n_train):
    """Accuracy, macro-F1 and the pointing scores of a fitted classifier."""
    from gaikan.deep.evaluate import evaluate, pointing_score

    cnn = kind.startswith("effnet")
    ev = evaluate(clf, Xte, yte, masks=Mte)
    row = {
        "model": kind,
        "accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "pointing": ev.pointing,
        "fit_s": t_fit,
        "epochs_run": len(clf.history_),
        "n_train": int(n_train),
    }
    if Mte is not None:
        # the alternative explanation: Grad-CAM on the last feature map (CNN) / on the tokens (ViT)
        keep = Mte.reshape(len(Mte), -1).any(1)
        maps = clf.explain(Xte[keep], method="gradcam", target=yte[keep])
        row["pointing_alt"] = pointing_score(maps, Mte[keep])
        if cnn:
            maps = clf.explain(Xte[keep], method="layercam", layer="auto", target=yte[keep])
            row["pointing_lcam"] = pointing_score(maps, Mte[keep])
            if clf.reference:  # the default explanation already is IG
                row["pointing_ig"] = row["pointing"]
            else:
                maps = clf.explain(Xte[keep], method="ig", target=yte[keep])
                row["pointing_ig"] = pointing_score(maps, Mte[keep])
    return row


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs (2-core CPU)")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes rendering synthetic images",
    )
    ap.add_argument("--tasks", default="mode,pin,elpv")
    ap.add_argument(
        "--models",
        default="effnet-raw,effnet-focus,effnet-ens,vit-raw,vit-soart",
        help="for the pin task effnet-focus becomes effnet-ref (a window has no position)",
    )
    ap.add_argument("--weights", default=None, help="EfficientNet-Lite0 weights file (offline)")
    ap.add_argument("--elpv-npz", default=None, help="ELPV pre-resized npz (images, probs, types)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument(
        "--cache", default=None, help="folder keeping rendered synthetic images between runs"
    )
    ap.add_argument("--render-only", action="store_true", help="render (into --cache) and stop")
    ap.add_argument("--skip-signed", action="store_true", help="skip the 8-class mode± task")
    ap.add_argument("--verbose", action="store_true", help="per-epoch history, CAM layer sweep")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply epoch counts")
    args = ap.parse_args(argv)
    global CACHE_DIR
    CACHE_DIR = args.cache
    if args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)
    if args.smoke:  # exercises every code path in seconds; numbers are meaningless
        cfg = dict(
            size=64,
            n_train=8,
            n_test=1,
            pin_train=2,
            pin_test=1,
            cnn_h=64,
            vit_h=32,
            focus=20,
            focus_net=32,
            focus_epochs=1,
            members=2,
            cnn_epochs=1,
            vit_epochs=1,
            batch=16,
            patience=2,
            cnn_lr=2e-3,
            vit_lr=2e-3,
            elpv_size=32,
            elpv_frac=0.02,
            elpv_epochs=1,
            lr_mult=10,
        )
    elif args.quick:
        cfg = dict(
            size=128,
            n_train=40,
            n_test=15,
            pin_train=12,
            pin_test=4,
            cnn_h=128,
            vit_h=64,
            focus=40,
            focus_net=64,
            focus_epochs=8,
            members=3,
            cnn_epochs=6,
            vit_epochs=15,
            batch=32,
            patience=4,
            cnn_lr=2e-3,
            vit_lr=2e-3,
            elpv_size=128,
            elpv_frac=0.25,
            elpv_epochs=4,
            lr_mult=10,
        )
    else:  # 2 CPU cores: about 2.5 hours in all (the 5-member ensemble is half of it)
        cfg = dict(
            size=256,
            n_train=150,
            n_test=50,
            pin_train=40,
            pin_test=20,
            cnn_h=256,
            vit_h=128,
            focus=80,
            focus_net=FOCUS_NET,
            focus_epochs=24,
            members=5,
            cnn_epochs=14,
            vit_epochs=40,
            batch=32,
            patience=6,
            cnn_lr=2e-3,
            vit_lr=2e-3,
            elpv_size=160,
            elpv_frac=1.0,
            elpv_epochs=12,
            lr_mult=10,
        )
    for k in ("cnn_epochs", "focus_epochs", "vit_epochs", "elpv_epochs"):
        cfg[k] = max(1, round(cfg[k] * args.epochs_scale))
    tasks = args.tasks.split(",")
    models = args.models.split(",")
    rows = []

    def show(task, r):
        rows.append({"task": task, **r})
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1, default=float)
        pf = r.get("pointing_alt")
        print(
            f"  {task:6s} {r['model']:10s} acc {r['accuracy']:.4f}  F1 {r['macro_f1']:.4f}  "
            f"pointing {r['pointing'] if r['pointing'] is None else round(r['pointing'], 3)}"
            + (f" / {pf:.3f}" if pf is not None else "")
            + f"  fit {r['fit_s']:.1f}s",
            flush=True,
        )

    if args.render_only:
        synth_mode_data(cfg["n_train"], cfg["n_test"], cfg["size"], args.workers)
        synth_pin_data(cfg["pin_train"], cfg["pin_test"], cfg["size"], args.workers)
        return rows
    if "mode" in tasks:
        t0 = time.perf_counter()
        (Xtr, ytr, ystr, _), (Xte, yte, yste, Mte) = synth_mode_data(
            cfg["n_train"], cfg["n_test"], cfg["size"], args.workers
        )
        print(
            f"rendered {len(Xtr) + len(Xte)} images in {time.perf_counter() - t0:.0f}s", flush=True
        )
        roi = roi_from_good(Xtr[ytr == "good"])
        Xtr, Xte, Mte = crop(Xtr, roi), crop(Xte, roi), crop(Mte, roi)
        good_crop = Xtr[ytr == "good"]
        hw = Xtr.shape[1:]
        for kind in models:
            if kind == "effnet-focus" and "effnet-ens" in models:
                continue  # the ensemble's first member is this model
            r, clf = fit_eval(kind, cfg, args, Xtr, ytr, Xte, yte, Mte, hw, args.verbose)
            if kind == "effnet-ens" and "effnet-focus" in models:
                m0 = clf.members_[0]
                show("mode", eval_row("effnet-focus", m0, m0.fit_time_, Xte, yte, Mte, len(ytr)))
            show("mode", r)
    if "pin" in tasks:
        t0 = time.perf_counter()
        (Ptr, ptr, _), (Pte, pte, PMte) = synth_pin_data(
            cfg["pin_train"], cfg["pin_test"], cfg["size"], args.workers
        )
        print(
            f"rendered {len(Ptr) + len(Pte)} images in {time.perf_counter() - t0:.0f}s", flush=True
        )
        if "mode" not in tasks:
            g, _, _, _ = render_many(
                [("good", "train", i, cfg["size"], None) for i in range(cfg["n_train"])],
                args.workers,
            )
            roi = roi_from_good(g)
            good_crop = crop(g, roi)
        Ptr, Pte, PMte = crop(Ptr, roi), crop(Pte, roi), crop(PMte, roi)
        g = good_crop
        pin_models = list(
            dict.fromkeys(
                "effnet-ref" if m == "effnet-focus" else m for m in models if m != "effnet-ens"
            )
        )
        for kind in pin_models:
            r, _ = fit_eval(
                kind, cfg, args, Ptr, ptr, Pte, pte, PMte, Ptr.shape[1:], args.verbose, X_good=g
            )
            show("pin", r)
    if "mode" in tasks and not args.skip_signed:
        for kind in [m for m in models if m in ("effnet-ref", "effnet-focus")]:
            r, _ = fit_eval(kind, cfg, args, Xtr, ystr, Xte, yste, Mte, hw)
            show("mode±", r)
    if "elpv" in tasks:
        from gaikan.deep.classifier import Classifier
        from gaikan.deep.evaluate import classification_metrics

        X, probs, types = load_elpv_arrays(cfg["elpv_size"], args.elpv_npz)
        y = np.round(probs * 3).astype(int)  # 0..3 = probability 0, 1/3, 2/3, 1
        tr, te = elpv_split(probs, types)
        if cfg["elpv_frac"] < 1:
            rng = np.random.default_rng(0)
            tr = np.sort(rng.choice(tr, int(len(tr) * cfg["elpv_frac"]), replace=False))
        clf = Classifier(
            "efficientnet_lite0",
            image_size=cfg["elpv_size"],
            hflip=True,
            vflip=True,
            rot90=True,
            brightness=0.1,
            contrast=0.1,
            patience=5,
            batch_size=cfg["batch"],
            random_state=0,
            num_threads=args.threads,
            device=args.device,
            weights_file=args.weights,
        )
        t0 = time.perf_counter()
        clf.fine_tune(X[tr], y[tr], epochs=cfg["elpv_epochs"], base_lr=2e-3, lr_mult=cfg["lr_mult"])
        t_fit = time.perf_counter() - t0
        pred = clf.predict(X[te])
        m = classification_metrics(y[te], pred, labels=[0, 1, 2, 3])
        mb = classification_metrics(y[te] >= 2, pred >= 2)
        r = {
            "model": "effnet-raw",
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "pointing": None,
            "fit_s": t_fit,
            "epochs_run": len(clf.history_),
            "n_train": len(tr),
            "binary_accuracy": mb["accuracy"],
            "binary_macro_f1": mb["macro_f1"],
            "n_test": len(te),
        }
        show("elpv", r)
        print(
            f"  elpv binary (p>=0.5): acc {mb['accuracy']:.4f}  F1 {mb['macro_f1']:.4f}", flush=True
        )

    dev = args.device
    if dev.startswith("cuda"):
        import torch

        dev = torch.cuda.get_device_name(0)
    else:
        dev = f"cpu x{args.threads} threads"
    print()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    print(f"bench_classifier ({mode}; device: {dev})")
    hdr = (
        f"{'task':7s}{'model':14s}{'train':>7s}{'epochs':>7s}{'accuracy':>10s}{'macroF1':>9s}"
        f"{'pointing':>10s}{'pt-LCAM':>9s}{'pt-GCAM':>9s}{'pt-IG':>8s}{'fit s':>8s}"
        f"{'s/epoch':>9s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        pt = "-" if r["pointing"] is None else f"{r['pointing']:.3f}"
        pf = "-" if r.get("pointing_alt") is None else f"{r['pointing_alt']:.3f}"
        pi = "-" if r.get("pointing_ig") is None else f"{r['pointing_ig']:.3f}"
        pl = "-" if r.get("pointing_lcam") is None else f"{r['pointing_lcam']:.3f}"
        print(
            f"{r['task']:7s}{r['model']:14s}{r['n_train']:>7d}{r['epochs_run']:>7d}"
            f"{r['accuracy']:>10.4f}{r['macro_f1']:>9.4f}{pt:>10s}{pl:>9s}{pf:>9s}{pi:>8s}"
            f"{r['fit_s']:>8.1f}{r['fit_s'] / max(r['epochs_run'], 1):>9.1f}"
        )
    for r in rows:
        if r["task"] == "elpv":
            print(
                f"elpv binary (probability >= 0.5) from the 4-class model: accuracy "
                f"{r['binary_accuracy']:.4f}, macro-F1 {r['binary_macro_f1']:.4f}; "
                f"test {r['n_test']} cells (stratified 25 %, seed 0)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

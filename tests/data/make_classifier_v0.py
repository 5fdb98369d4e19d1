"""Write the classifier model files that tests/test_classifier_v0_files.py loads.

They were written by gaikan at commit 3b9b2b1 (before the classifier was split
into ``gaikan.deep.classify``), so the test proves that files of that release
still load and predict the same.  Rerun only to add files for a new release::

    PYTHONPATH=src python tests/data/make_classifier_v0.py tests/data
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from gaikan.deep.classifier import Classifier
from gaikan.deep.ensemble import ClassifierEnsemble
from gaikan.deep.vit import ViTClassifier

CLASSES = ("bright", "dark", "good")


def parts(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) uint8 parts; 'bright'/'dark' carry a ±90 square somewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    X = 100 + 25 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + rng.normal(0, 6, (n, size, size))
    y = np.array([CLASSES[i % 3] for i in range(n)])
    for i in np.flatnonzero(y != "good"):
        r, c = rng.integers(1, size - 8, 2)
        X[i, r : r + 7, c : c + 7] += 90 if y[i] == "bright" else -90
    return np.clip(np.rint(X), 0, 255).astype(np.uint8), y


def main(out: Path) -> None:
    X, y = parts(60, 0)
    Xt, _ = parts(8, 1)
    tiny: dict[str, Any] = dict(
        pretrained=False,
        image_size=32,
        batch_size=16,
        num_threads=1,
        model_kwargs={"channel_multiplier": 0.25},  # ~12k weights: a ~50 kB file
    )
    clf = Classifier("test_efficientnet", reference=True, focus=16, focus_sigma=2.0, **tiny)
    clf.fine_tune(X, y, epochs=2, base_lr=1e-2)
    ens = ClassifierEnsemble(Classifier("test_efficientnet", **tiny), n_members=2)
    ens.fine_tune(X, y, epochs=1, base_lr=1e-2)
    vit = ViTClassifier(
        "soart", image_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2,
        soart_kernel=4, soart_stride=2, num_threads=1, batch_size=16,
    )  # fmt: skip
    vit.fine_tune(X, y, epochs=2, freeze_epochs=0)
    expected: dict[str, Any] = {"X": Xt}
    for name, model in (("classifier", clf), ("ensemble", ens), ("vit", vit)):
        model.save(out / f"{name}-v0.gaikan")
        expected[f"{name}.proba"] = model.predict_proba(Xt)
        expected[f"{name}.maps"] = model.explain(Xt[:3])
    np.savez(out / "classifier-v0-expected.npz", **expected)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Built-in datasets: ELPV solar cells (real images, shipped by the
``elpv-dataset`` package, so no download) and the anchor split protocol.

ELPV holds 2,624 electroluminescence images (300×300, 8-bit) of mono- and
polycrystalline solar cells with a defect probability in {0, ⅓, ⅔, 1}.
gaikan's protocol (used by the tests, the demo and every benchmark):
good cells are those with probability 0; a seeded permutation puts
``floor(0.6·n_good)`` of them in the unit space (904 pooled) and the rest
(604) plus *all* defective cells (1,116) in the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ParameterError
from .io import normalize_size

__all__ = ["ElpvData", "elpv_split", "load_elpv"]


@dataclass
class ElpvData:
    """ELPV images and labels.

    Attributes
    ----------
    images : ndarray, shape (n, H, W), uint8
    probs : ndarray, shape (n,)
        Defect probability from the expert annotation.
    types : ndarray of str, shape (n,)
        ``"mono"`` or ``"poly"``.
    files : ndarray of str, shape (n,)
    """

    images: np.ndarray
    probs: np.ndarray
    types: np.ndarray
    files: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """1 for defective cells (probability > 0), else 0."""
        return (self.probs > 0).astype(int)


def load_elpv(size=None, cell_type: str | None = None) -> ElpvData:
    """Load ELPV from the installed ``elpv-dataset`` package.

    Parameters
    ----------
    size : int or (H, W), optional
        Resize (antialiased bilinear, 8-bit result) without keeping aspect.
    cell_type : {"mono", "poly"}, optional
        Keep one cell type; default pooled.
    """
    import os

    from PIL import Image

    from ._optional import require

    elpv_dataset = require("elpv_dataset", extra="datasets")
    root = os.path.join(os.path.dirname(str(elpv_dataset.__file__)), "data")
    table = np.genfromtxt(
        os.path.join(root, "labels.csv"),
        dtype=["|S19", "<f8", "|S4"],
        names=["path", "probability", "type"],
    )
    files = np.char.decode(table["path"])
    probs = table["probability"].astype(float)
    types = np.char.decode(table["type"])
    keep = np.ones(files.size, bool) if cell_type is None else types == cell_type
    if not keep.any():
        raise ParameterError(f"unknown cell type {cell_type!r}; use 'mono' or 'poly'")
    hw = normalize_size(size)
    imgs = []
    for f in files[keep]:
        with Image.open(os.path.join(root, f)) as src:
            im = src.convert("L")
            if hw is not None and im.size != (hw[1], hw[0]):
                im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.uint8))
    return ElpvData(np.stack(imgs), probs[keep], types[keep], files[keep])


def elpv_split(
    probs: np.ndarray, seed: int = 0, train_fraction: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """The anchor protocol's split.

    Returns
    -------
    train : ndarray of int
        Indices of good cells for the unit space.
    test : ndarray of int
        Indices of the other good cells and all defective cells, sorted.
    """
    probs = np.asarray(probs)
    good = np.flatnonzero(probs == 0)
    perm = np.random.default_rng(seed).permutation(good)
    n_train = int(np.floor(train_fraction * good.size))
    train = np.sort(perm[:n_train])
    test = np.sort(np.r_[perm[n_train:], np.flatnonzero(probs > 0)])
    return train, test

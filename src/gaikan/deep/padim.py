"""PaDiM: the Mahalanobis–Taguchi method on deep features, per position.

PaDiM (Defard et al., 2020) fits one Gaussian per feature-map position to
the concatenated multi-layer CNN features of good images and scores a new
image by the Mahalanobis distance at every position.  That *is* the MT
method of :mod:`gaikan.taguchi.mt` applied per position with the deep
features as items: the same ``D² = (f − μ)ᵀ Σ⁻¹ (f − μ) / m`` (divided by
the number of items m, Taguchi's convention), the same ridge
``Σ + (reg_rel·tr Σ/m + reg_abs)·I`` and the same Cholesky whitening
(:func:`gaikan.taguchi.mt.regularise_covariance`, then the batched Cholesky
whitener of ``mt._whitener`` run through torch's LAPACK, which is far
faster than numpy's stacked ``cholesky`` here; never an explicit inverse
and never a Python loop over positions).  Only the bookkeeping differs: the scatter matrices are
accumulated batch by batch in float32 BLAS matmuls (on data shifted by a
reference mean, so no precision is lost) instead of holding all features
at once, and scoring runs as a batched float32 matmul.

Preprocessing (the model's own, documented): images (n, H, W) on the
0–255 grey scale are resized to ``image_size`` (default: kept), normalised
with the backbone's mean/std, and grey is fed as 3 identical channels.
Maps come back bilinearly upsampled to the input resolution (n, H, W).

Threshold rule
--------------
The core detectors threshold the leave-one-out (LOO) scores of the
training images.  Refitting hundreds of 100-dimensional Gaussians per
training image would be far too slow, but for a Gaussian the LOO
distance has a closed form (Sherman–Morrison on the rank-one downdate of
the scatter matrix).  With ``d = f_t − μ`` and the in-sample distance
``h = dᵀ S⁻¹ d`` (S the regularised scatter), the sample's distance to the
Gaussian fitted without it is ::

    m·D²_loo = (n − 2) · c² · h / (1 − c·h),   c = n / (n − 1)

so exact LOO scores cost one extra scoring pass over the training
features (kept in memory as float32 during ``fit``), not n refits.  The
ridge is held at its full-data value in the downdate (relative change
1/n).  Grid smoothing is applied to LOO grids just as to test grids.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._optional import require
from .._validation import Check, Interval, OneOf, as_hw
from ..detectors.base import BaseDetector
from ..errors import ParameterError
from ..taguchi.mt import regularise_covariance
from .features import FeatureExtractor, embed, gaussian_blur, upsample_maps

__all__ = ["PaDiM", "loo_from_insample"]


def loo_from_insample(d2: np.ndarray, n: int, m: int) -> np.ndarray:
    """Closed-form leave-one-out MT distance from the in-sample one.

    Parameters
    ----------
    d2 : ndarray
        In-sample MT distances ``D² = dᵀ Σ⁻¹ d / m`` with Σ = S/(n − 1).
    n : int
        Unit-space size (n ≥ 3).
    m : int
        Number of items.

    Returns
    -------
    ndarray
        ``D²`` of each sample against the Gaussian fitted without it.
    """
    c = n / (n - 1.0)
    h = np.asarray(d2, dtype=np.float64) * m / (n - 1.0)
    # c·h < 1 always (a sample cannot explain more than the whole scatter);
    # clip guards float32 rounding at the boundary.
    ch = np.minimum(c * h, 1.0 - 1e-9)
    return (n - 2.0) * c * c * h / (1.0 - ch) / m


def whitener(cov: np.ndarray) -> np.ndarray:
    """Batched ``L⁻¹`` with ``L Lᵀ = cov`` — :func:`gaikan.taguchi.mt._whitener` in torch.

    Same maths (Cholesky, then a triangular solve against I), but torch's
    LAPACK path is ~25× faster than numpy's stacked ``cholesky``/``solve``
    on 400×400 matrices here (0.19 s vs 5 s for 22 of them).

    Parameters
    ----------
    cov : ndarray, shape (P, m, m)
        Symmetric positive definite (already regularised).

    Returns
    -------
    ndarray, shape (P, m, m), float64
    """
    torch = require("torch", "deep")
    c = torch.from_numpy(np.ascontiguousarray(cov, dtype=np.float64))
    chol = torch.linalg.cholesky(c)
    eye = torch.eye(c.shape[-1], dtype=c.dtype).expand_as(c)
    return torch.linalg.solve_triangular(chol, eye, upper=False).numpy()


def _layers_ok(v: Any) -> bool:
    return len(v) > 0 and all(isinstance(i, int) and not isinstance(i, bool) for i in v)


class DeepFeatureDetector(BaseDetector):
    """Shared plumbing of the deep detectors: extractor, grid, maps.

    Subclasses implement ``_fit`` / ``_patch_scores`` on the embeddings of
    :meth:`_iter_embeddings` (one grid of stride ``feature_stride``).  The
    backbone runs on ``device``; the statistics always run on the CPU.
    The feature extractor is built from the parameters on first use and
    cached in ``_fe``; ``set_params`` and ``fit`` drop it, so a changed
    backbone, layer list or runtime is honoured.
    """

    #: Batch of images per call of ``_patch_scores`` (bounds memory).
    _chunk = 64

    #: Images are kept in float32 (the backbone's precision; half the memory
    #: of float64 for 900 training images).
    _input_dtype = np.float32

    _caches: ClassVar[tuple[str, ...]] = ("_fe",)

    #: Parameters every deep detector has (set by the subclass's ``__init__``).
    backbone: str
    layers: Any
    image_size: int | None
    feature_stride: int
    device: str
    num_threads: int | None
    batch_size: int
    runtime: str
    random_state: int
    weights_file: str | None

    _param_rules: ClassVar[dict[str, Any]] = {
        "backbone": Check(lambda v: isinstance(v, str) and v != "", "a backbone name"),
        "layers": Check(_layers_ok, "a non-empty sequence of integer feature levels"),
        "image_size": Check(
            lambda v: v is None or bool(as_hw(v)), "a size (128, (96, 128) or '96x128') or None"
        ),
        "feature_stride": Interval("int", 1, None),
        "device": Check(lambda v: isinstance(v, str) and v != "", "'cpu' or 'cuda'"),
        "num_threads": Interval("int", 1, None, none_ok=True),
        "batch_size": Interval("int", 1, None),
        "runtime": OneOf(("auto", "eager", "channels_last", "onnx")),
        "random_state": Interval("int", 0, None),
        "weights_file": Check(lambda v: v is None or isinstance(v, str), "a path or None"),
    }

    # -- feature extraction -------------------------------------------------
    def _extractor(self) -> FeatureExtractor:
        fe = self.__dict__.get("_fe")
        if fe is None:
            fe = FeatureExtractor(
                backbone=self.backbone,
                layers=self.layers,
                image_size=None if self.image_size is None else as_hw(self.image_size),
                runtime=self.runtime,
                device=self.device,
                num_threads=self.num_threads,
                batch_size=self.batch_size,
                weights_file=self.weights_file,
            )
            self._fe = fe
        return fe

    def _grid_for(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Feature grid of images of ``shape`` after the model's resize."""
        fe = self._extractor()
        h, w = fe.image_size or shape
        s = int(self.feature_stride)
        return (max(1, -(-h // s)), max(1, -(-w // s)))

    def _iter_embeddings(self, X: np.ndarray):
        """Yield (b, C, gh, gw) float32 tensors batch by batch."""
        from .features import num_threads

        grid = self._grid_for(X.shape[1:])
        for outs in self._extractor().iter_batches(X):
            with num_threads(self._post_threads(outs[0].shape[0])):
                e = embed(outs, grid)
            yield e

    def _post_threads(self, batch: int) -> int | None:
        """Threads for the small torch ops after the backbone.

        With few images per call these ops take well under a millisecond
        of work, and on a busy 2-core CPU an OpenMP barrier costs more than
        that (measured: embedding one image 0.3 ms on 1 thread, 24 ms on 2
        with another process running); so small batches use one thread.
        """
        return 1 if batch < 8 else self.num_threads

    def _select_channels(self, total: int, k: int | None) -> np.ndarray:
        """Seeded random subset of ``k`` of ``total`` embedding channels (sorted)."""
        if k is None or int(k) >= total:
            return np.arange(total)
        rng = np.random.default_rng(self.random_state)
        return np.sort(rng.choice(total, size=int(k), replace=False))

    # -- maps -------------------------------------------------------------------
    @staticmethod
    def _smooth(grid, sigma: float) -> np.ndarray:
        """Blur (n, gh, gw) D² grids by ``sigma`` cells → float64 array."""
        if sigma > 0:
            grid = gaussian_blur(np.asarray(grid, dtype=np.float32), sigma).numpy()
        return np.asarray(grid, dtype=np.float64)

    def _to_map(self, grid: np.ndarray) -> np.ndarray:
        return upsample_maps(grid, self.image_shape_)

    @property
    def grid_shape_(self) -> tuple[int, int]:
        return self._grid_for(self.image_shape_)

    def _backbone_meta(self) -> dict[str, Any]:
        fe = self._extractor()
        return {"channels": list(fe.channels), "runtime": fe.runtime}


class PaDiM(DeepFeatureDetector):
    """PaDiM anomaly detector (MT method per feature-map position).

    Parameters
    ----------
    backbone : str
        Backbone (default EfficientNet-Lite0, offline weights).
    layers : sequence of int, default (2, 3, 4)
        Feature levels concatenated (timm numbering; 1, 2, 3, 4 = strides
        4, 8, 16, 32 for EfficientNet).  The default and the two below were
        chosen on the basket of ``benchmarks/bench_basket.py`` (ELPV pooled,
        mono, poly, synthetic connectors top and oblique, synthetic
        textures): no data set more than 0.005 image AUROC below the old
        ``(3, 4)`` at stride 16, mean +0.007 (docs/benchmarks.md).
    image_size : int or None
        Square side images are resized to before the backbone (None: keep).
    feature_stride : int, default 8
        Stride of the Gaussian grid relative to the resized image:
        finer layers are average-pooled to it, coarser ones upsampled.
    n_features : int or None
        Channels kept by seeded random selection (None: all).
    grid_sigma : float, default 1.0
        Gaussian blur (in grid cells) of the D² grid before the image score
        (max) and the map; 0 disables.  On the stride-8 grid one cell of
        blur steadies the per-position Gaussians of small unit spaces
        (synthetic textures +0.05 AUROC against no blur).
    reg_rel, reg_abs : float
        Covariance ridge, as in :func:`gaikan.taguchi.fit_gaussians`.
    threshold_quantile, threshold : see :class:`gaikan.BaseDetector`.
    map_refine : {"pixel", "none"}, default "pixel"
        ``"pixel"`` multiplies the upsampled map by the pixel evidence (see
        :class:`gaikan.BaseDetector`): the 8-pixel grid cells say where,
        the pixels say exactly where.  ``"none"``: the upsampled D² grid.
    device : str
        Where the backbone runs: ``"cpu"`` or ``"cuda"`` (the Gaussians
        always run on the CPU).
    num_threads : int, optional
        CPU threads for the backbone and the Gaussians.
    batch_size : int
        Images per backbone pass.
    runtime : {"auto", "eager", "channels_last", "onnx"}
        Backbone runtime (auto = ONNX Runtime on CPU when installed).
    random_state : int
        Seed of the channel selection.
    weights_file : str, optional
        Local backbone weights instead of the packaged ones.

    Attributes
    ----------
    mean_ : ndarray, shape (P, m)
    whiten_ : ndarray, shape (P, m, m) float32
    channels_ : ndarray of int, shape (m,)
        Selected channels of the concatenated embedding.
    """

    _param_rules: ClassVar[dict[str, Any]] = {
        "n_features": Interval("int", 1, None, none_ok=True),
        "grid_sigma": Interval("real", 0.0, None),
        "reg_rel": Interval("real", 0.0, None),
        "reg_abs": Interval("real", 0.0, None),
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers=(2, 3, 4),
        image_size: int | None = None,
        feature_stride: int = 8,
        n_features: int | None = 200,
        grid_sigma: float = 1.0,
        reg_rel: float = 1e-2,
        reg_abs: float = 1e-6,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        batch_size: int = 16,
        runtime: str = "auto",
        random_state: int = 0,
        weights_file: str | None = None,
        map_refine: str = "pixel",
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.image_size = image_size
        self.feature_stride = feature_stride
        self.n_features = n_features
        self.grid_sigma = grid_sigma
        self.reg_rel = reg_rel
        self.reg_abs = reg_abs
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold
        self.device = device
        self.num_threads = num_threads
        self.batch_size = batch_size
        self.runtime = runtime
        self.random_state = random_state
        self.weights_file = weights_file
        self.map_refine = map_refine

    # -- fitting ----------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> np.ndarray:
        torch = require("torch", "deep")
        from .features import num_threads

        n = X.shape[0]
        fe = self._extractor()
        self.channels_ = self._select_channels(sum(fe.channels), self.n_features)
        sel = torch.from_numpy(self.channels_)
        gh, gw = self._grid_for(X.shape[1:])
        P, m = gh * gw, len(self.channels_)
        # for the LOO pass; float32, not float16: with fewer images than
        # items, 1 − c·h in the closed form is ~1e-3 and float16 features
        # (3 digits) turned it into noise (thresholds of 1e8 at n = 10)
        keep = np.empty((n, P, m), dtype=np.float32)
        shift = None
        s1 = torch.zeros(P, m, dtype=torch.float64)
        s2 = torch.zeros(P, m, m, dtype=torch.float32)
        i = 0
        with num_threads(self.num_threads), torch.inference_mode():
            for e in self._iter_embeddings(X):
                b = e.shape[0]
                f = e[:, sel].reshape(b, m, P).permute(2, 0, 1).contiguous()  # (P, b, m)
                keep[i : i + b] = f.permute(1, 0, 2).numpy()
                if shift is None:
                    # features are shifted by a reference mean so that
                    # float32 sums of squares lose no precision
                    shift = f.mean(dim=1, keepdim=True)  # (P, 1, m)
                d = f - shift
                s1 += d.sum(dim=1, dtype=torch.float64)
                s2.baddbmm_(d.transpose(1, 2).contiguous(), d)
                i += b
            mean_d = s1 / n
            whiten = np.empty((P, m, m), dtype=np.float32)
            step = max(1, (32 << 20) // (m * m * 8))  # ~32 MB of float64 per chunk
            for p0 in range(0, P, step):
                md = mean_d[p0 : p0 + step]
                scatter = s2[p0 : p0 + step].double() - n * md[:, :, None] * md[:, None, :]
                cov = (scatter / (n - 1)).numpy()
                whiten[p0 : p0 + step] = whitener(
                    regularise_covariance(cov, self.reg_rel, self.reg_abs)
                )
            del s2
            assert shift is not None  # n ≥ 5 images: at least one batch
            self.mean_ = (shift[:, 0].double() + mean_d).float().numpy()
            self.whiten_ = whiten
            insample = np.concatenate([self._d2(keep[j : j + 64]) for j in range(0, n, 64)])
        del keep
        loo = loo_from_insample(insample, n, m).reshape(n, gh, gw)
        return self._smooth(loo, self.grid_sigma)

    def _d2(self, f: np.ndarray) -> np.ndarray:
        """MT distances of features (b, P, m) → (b, P), float32 matmul."""
        torch = require("torch", "deep")
        # contiguous (P, m, b): bmm on arbitrary strides falls off the BLAS path
        x = torch.as_tensor(f).permute(1, 2, 0) - torch.from_numpy(self.mean_)[:, :, None]
        z = torch.bmm(torch.from_numpy(self.whiten_), x.contiguous())  # (P, m, b)
        return (z * z).sum(dim=1).T.numpy().astype(np.float64) / self.mean_.shape[-1]

    # -- scoring ------------------------------------------------------------------
    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        torch = require("torch", "deep")
        from .features import num_threads

        sel = torch.from_numpy(self.channels_)
        gh, gw = self._grid_for(X.shape[1:])
        out = []
        with num_threads(self.num_threads), torch.inference_mode():
            for e in self._iter_embeddings(X):
                b = e.shape[0]
                with num_threads(self._post_threads(b)):
                    f = e[:, sel].reshape(b, len(sel), gh * gw).permute(0, 2, 1)
                    d2 = self._d2(f.numpy()).reshape(b, gh, gw)
                    out.append(self._smooth(d2, self.grid_sigma))
        return np.concatenate(out)

    # -- model file -----------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "mean": self.mean_.astype(np.float32),
            "whiten": self.whiten_.astype(np.float32),
            "channels": self.channels_.astype(np.int64),
        }
        return arrays, {"backbone": self.backbone, "grid": list(self.grid_shape_)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        self.whiten_ = np.ascontiguousarray(arrays["whiten"], dtype=np.float32)
        self.channels_ = np.asarray(arrays["channels"], dtype=np.int64)
        P, m = self.mean_.shape
        if self.whiten_.shape != (P, m, m) or self.channels_.shape != (m,):
            raise ParameterError("PaDiM arrays have inconsistent shapes")
        gh, gw = self.grid_shape_
        if gh * gw != P:
            raise ParameterError(f"grid {gh}x{gw} does not match {P} stored positions")

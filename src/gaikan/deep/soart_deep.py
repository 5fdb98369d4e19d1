"""SOARTDeep: the SOART3 / SOARTC stages on deep patch features.

The core SOARTC detector (SOART.md §5) compares pixel patches; here each
position of a multi-layer CNN feature grid is a "patch" whose vector is
its deep feature (m channels).  Stage 1 turns every position into a few
Taguchi numbers, stage 2 is the MT method per position on them:

``soart3``
    SOART3(f_p | μ_p): the feature vector against the unit-space mean
    feature at the same position — (log β, log η, log γ), i.e. how much of
    the good pattern is there, how much else, and how concentrated the rest.
``soartc``
    SOARTC's self-similarity stage: S[i, j] = β of position i against
    position j over the image's own feature vectors, compared with the
    unit space's mean S̄ by SOART3 (:func:`gaikan.taguchi.soartc_features`).

With both stages (default) there are 6 items per position.  Stage 2 uses
:func:`gaikan.taguchi.fit_gaussians` / :func:`~gaikan.taguchi.mahalanobis`
and the threshold uses exact leave-one-out scores from
:func:`gaikan.taguchi.loo_mahalanobis`, where each training image's
stage-1 features are computed against references that leave it out
(μ without it; S̄ via ``loo_n``).  All of it is the core code.

Preprocessing as in :class:`gaikan.deep.PaDiM` (the model's own): resize
to ``image_size`` (default kept), grey as 3 identical channels; maps are
upsampled bilinearly to the input resolution.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._optional import require
from .._validation import Check, Interval
from ..errors import ParameterError
from ..taguchi import (
    fit_gaussians,
    loo_mahalanobis,
    mahalanobis,
    mean_self_similarity,
    soart3,
    soartc_features,
)
from .padim import DeepFeatureDetector

__all__ = ["STAGES", "SOARTDeep"]

STAGES = ("soart3", "soartc")


class SOARTDeep(DeepFeatureDetector):
    """SOART3/SOARTC stages + per-position MT on deep features.

    Parameters
    ----------
    backbone : str
        Backbone (default EfficientNet-Lite0, offline weights).
    layers : sequence of int
        Feature levels concatenated (1, 2, 3 = strides 4, 8, 16).
    image_size : int or None
        Square side images are resized to before the backbone (None: keep).
    feature_stride : int
        Stride of the position grid relative to the resized image.
    n_features : int or None
        Channels kept by seeded random selection (None: all).
    stages : sequence of {"soart3", "soartc"}
        Stage-1 feature sets, concatenated (3 items each).
    grid_sigma : float
        Gaussian blur of the D² grid in cells (0: none).
    reg_rel, reg_abs : float
        Covariance ridge of stage 2.
    threshold_quantile, threshold, device, num_threads, batch_size, runtime,
    random_state, weights_file :
        As for :class:`gaikan.deep.PaDiM`.
    map_refine : {"none", "pixel"}, default "none"
        Pixel evidence of the map (see :class:`gaikan.BaseDetector`).
    """

    _param_rules: ClassVar[dict[str, Any]] = {
        "n_features": Interval("int", 1, None, none_ok=True),
        "stages": Check(
            lambda v: (
                not isinstance(v, str)
                and len(v) > 0
                and all(s in STAGES for s in v)
                and len(set(v)) == len(v)
            ),
            f"a non-empty subset of {STAGES}",
        ),
        "grid_sigma": Interval("real", 0.0, None),
        "reg_rel": Interval("real", 0.0, None),
        "reg_abs": Interval("real", 0.0, None),
    }

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers=(3, 4),
        image_size: int | None = None,
        feature_stride: int = 16,
        n_features: int | None = None,
        stages=("soart3", "soartc"),
        grid_sigma: float = 1.0,
        reg_rel: float = 1e-6,
        reg_abs: float = 1e-12,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        batch_size: int = 16,
        runtime: str = "auto",
        random_state: int = 0,
        weights_file: str | None = None,
        map_refine: str = "none",
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.image_size = image_size
        self.feature_stride = feature_stride
        self.n_features = n_features
        self.stages = stages
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

    def _check_stages(self) -> tuple[str, ...]:
        return tuple(self.stages)  # validated by fit

    def _embeddings(self, X: np.ndarray, dtype=np.float32) -> np.ndarray:
        """(n, P, m) deep features of the selected channels, filled batch by batch."""
        torch = require("torch", "deep")
        from .features import num_threads

        sel = torch.from_numpy(self.channels_)
        gh, gw = self._grid_for(X.shape[1:])
        out = np.empty((X.shape[0], gh * gw, len(sel)), dtype=dtype)
        i = 0
        with num_threads(self.num_threads), torch.inference_mode():
            for e in self._iter_embeddings(X):
                b = e.shape[0]
                out[i : i + b] = e[:, sel].reshape(b, len(sel), -1).permute(0, 2, 1).numpy()
                i += b
        return out

    def _stage1(self, E: np.ndarray, loo_n: int = 0) -> np.ndarray:
        """Stage-1 items (n, P, 3·len(stages)); ``loo_n``: leave-one-out refs."""
        out = []
        for s in self._check_stages():
            if s == "soart3":
                ref = self.mean_feat_[None]
                if loo_n:
                    ref = (loo_n * ref - E) / (loo_n - 1.0)
                out.append(soart3(E, ref))
            else:
                parts = [
                    soartc_features(E[i : i + 32], self.sbar_, loo_n=loo_n, gram_dtype=np.float32)
                    for i in range(0, E.shape[0], 32)
                ]
                out.append(np.concatenate(parts))
        return np.concatenate(out, axis=-1)

    def _fit(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        self.channels_ = self._select_channels(sum(self._extractor().channels), self.n_features)
        E = self._embeddings(X, np.float16)  # (n, P, m), float16 to bound memory
        gh, gw = self._grid_for(X.shape[1:])
        acc = np.zeros(E.shape[1:], dtype=np.float64)
        for i in range(0, n, 64):
            acc += E[i : i + 64].astype(np.float64).sum(axis=0)
        self.mean_feat_ = acc / n
        if "soartc" in self._check_stages():
            P = E.shape[1]
            sbar = np.zeros((P, P))
            for i in range(0, n, 32):
                chunk = E[i : i + 32].astype(np.float64)
                sbar += mean_self_similarity(chunk) * chunk.shape[0]
            self.sbar_ = sbar / n
        else:
            self.sbar_ = np.zeros((0, 0))
        items = np.concatenate(
            [self._stage1(E[i : i + 64].astype(np.float64)) for i in range(0, n, 64)]
        )
        loo_items = np.concatenate(
            [self._stage1(E[i : i + 64].astype(np.float64), loo_n=n) for i in range(0, n, 64)]
        )
        self.mean_, self.whiten_ = fit_gaussians(items, self.reg_rel, self.reg_abs)
        loo = loo_mahalanobis(items, loo_items, self.reg_rel, self.reg_abs)
        return self._smooth(loo.reshape(n, gh, gw), self.grid_sigma)

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        gh, gw = self._grid_for(X.shape[1:])
        E = self._embeddings(X, np.float64)
        d2 = mahalanobis(self._stage1(E), self.mean_, self.whiten_)
        return self._smooth(d2.reshape(X.shape[0], gh, gw), self.grid_sigma)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {
            "channels": self.channels_.astype(np.int64),
            "mean_feat": self.mean_feat_,
            "sbar": self.sbar_,
            "mean": self.mean_,
            "whiten": self.whiten_,
        }, {"backbone": self.backbone}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.channels_ = np.asarray(arrays["channels"], dtype=np.int64)
        self.mean_feat_ = np.asarray(arrays["mean_feat"], dtype=np.float64)
        self.sbar_ = np.asarray(arrays["sbar"], dtype=np.float64)
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.whiten_ = np.asarray(arrays["whiten"], dtype=np.float64)
        P = self.mean_feat_.shape[0]
        if self.mean_.shape[0] != P or self.whiten_.shape[0] != P:
            raise ParameterError("SOARTDeep arrays have inconsistent shapes")

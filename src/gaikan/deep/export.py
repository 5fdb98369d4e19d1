"""Export a fitted deep detector to one ONNX graph (a torch-free ``onnx-detector`` model).

The graph takes the grey image batch (n, H, W) on the 0–255 scale and gives
the patch grid (n, gh, gw), the image score (n,) and the anomaly map
(n, H, W), with every step of the detector inside it: resize,
normalisation, backbone, feature aggregation, the Mahalanobis (PaDiM) or
nearest-neighbour (PatchCore) stage, grid blur, upsampling and map blur.
The result is a :class:`gaikan.runtime.OnnxDetector`, saved as an ordinary
gaikan model file (kind ``onnx-detector``) that needs only numpy and ONNX
Runtime (``pip install 'gaikan[runtime]'``).

How it stays equal to the torch path
------------------------------------
Every fixed resampling step of the detectors — the antialiased resize, the
adaptive average pooling / bilinear upsampling of each layer to the grid,
PatchCore's 3×3 local averaging, the Gaussian blurs (reflect padding) and
the final upsampling to the image — is linear and separable, so on the
model's fixed image size it *is* a pair of matrices ``out = R · x · Cᵀ``.
The matrices are measured by running the detector's own functions on basis
images (no reimplementation that could drift from the source) and checked
on a random input before use.  The statistics (mean, whitening matrices,
memory bank) are the fitted arrays themselves.  The backbone is the same
timm module the detector runs (grey stem already folded).

Every export is verified: the exported model and the source detector score
a batch (``check_images``, default a seeded synthetic batch) and the export
is refused unless scores agree within 1e-4 relative, maps within 1e-3 on
the normalised scale (each image's map divided by max(threshold, its
peak)) and verdicts are identical.  The
errors found are stored in the model file's meta (``check``).

Supported: ``padim``, ``patchcore`` and ``soart-deep`` (its SOART stages
and MT run in float64 inside the graph, as in numpy); the classifiers and
ensembles by :mod:`gaikan.deep.export_classifier` (:func:`export_model`
dispatches).  Formats: ONNX, or OpenVINO IR converted from it
(:func:`to_format`).  An experimental int8 backbone:
:mod:`gaikan.deep.export_int8`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .._optional import require
from ..errors import GaikanError, ParameterError
from ..runtime.onnx_detector import GRAPH_INPUT, GRAPH_OUTPUTS, OnnxDetector

__all__ = [
    "EXPORTABLE",
    "MAP_ATOL",
    "SCORE_RTOL",
    "ExportCheckError",
    "compare",
    "export_detector",
    "export_model",
    "separable_matrices",
    "to_format",
]

#: Kinds :func:`export_detector` handles.
EXPORTABLE = ("padim", "patchcore", "soart-deep")
#: Largest relative score difference an export may show against its source.
SCORE_RTOL = 1e-4
#: Largest map difference on the normalised scale (map / max(threshold, the map's peak)).
MAP_ATOL = 1e-3


class ExportCheckError(GaikanError):
    """The exported graph does not score like its source detector."""


# -- separable linear steps as matrices ------------------------------------------------
def separable_matrices(
    fn: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int],
    *,
    check: bool = True,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column matrices of a separable linear map of images.

    ``fn`` maps (n, h, w) → (n, h2, w2) as ``out = R · x · Cᵀ`` with rows of C
    summing to 1 (every resampling and normalised blur does).  R is read off
    column by column from images ``e_i ⊗ 1``, C from images ``1 ⊗ e_j``.

    Parameters
    ----------
    fn : callable
        The linear map, numpy in and out.
    shape : (int, int)
        (h, w) of its input.
    check : bool
        Verify ``R · x · Cᵀ == fn(x)`` on a seeded random image.
    dtype : numpy dtype
        Of the returned matrices (float64 where the graph computes in float64).

    Returns
    -------
    R : ndarray, shape (h2, h), ``dtype``
    C : ndarray, shape (w2, w), ``dtype``

    Raises
    ------
    GaikanError
        If ``fn`` is not reproduced by the matrices (not separable).
    """
    h, w = int(shape[0]), int(shape[1])
    step = 32  # basis images per call (a 512² resize: 32 MB, not 512 MB)
    r_cols, c_cols = [], []
    for i0 in range(0, h, step):
        idx = np.arange(i0, min(h, i0 + step))
        basis = np.zeros((len(idx), h, w), dtype=np.float32)
        basis[np.arange(len(idx)), idx, :] = 1.0
        # fn(e_i ⊗ 1) = R[:, i] ⊗ (C·1)
        r_cols.append(np.asarray(fn(basis), dtype=np.float64).mean(axis=2))
    for j0 in range(0, w, step):
        idx = np.arange(j0, min(w, j0 + step))
        basis = np.zeros((len(idx), h, w), dtype=np.float32)
        basis[np.arange(len(idx)), :, idx] = 1.0
        # fn(1 ⊗ e_j) = (R·1) ⊗ C[:, j]
        c_cols.append(np.asarray(fn(basis), dtype=np.float64).mean(axis=1))
    R = np.concatenate(r_cols).T  # (h2, h)
    C = np.concatenate(c_cols).T  # (w2, w)
    # R·1 and C·1 are 1 for a normalised resampling; divide out whatever they are
    # (R's column means already carry C·1's mean)
    csum = C.sum(axis=1)
    if not np.allclose(csum, csum.mean(), rtol=1e-5):
        raise GaikanError("a resampling step is not normalised; it cannot be exported")
    R = R / csum.mean()
    if check:
        x = np.random.default_rng(0).uniform(0, 1, (1, h, w)).astype(np.float32)
        ref = np.asarray(fn(x), dtype=np.float64)[0]
        got = R @ x[0].astype(np.float64) @ C.T
        err = np.abs(got - ref).max()
        if not err <= 1e-4 * max(1.0, float(np.abs(ref).max())):
            raise GaikanError(f"a resampling step is not separable and linear (error {err:.2g})")
    return R.astype(dtype), C.astype(dtype)


def _is_identity(R: np.ndarray, C: np.ndarray) -> bool:
    return (
        R.shape[0] == R.shape[1]
        and C.shape[0] == C.shape[1]
        and np.array_equal(R, np.eye(R.shape[0], dtype=R.dtype))
        and np.array_equal(C, np.eye(C.shape[0], dtype=C.dtype))
    )


def _torch_fn(fn: Callable[[Any], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a (n, h, w) torch function as numpy in, numpy out."""
    torch = require("torch", "deep")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return fn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


# -- the graph ---------------------------------------------------------------------------
def _build_graph(det: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """The detector as one torch module; also the map's (rows, cols) matrices."""
    torch = require("torch", "deep")
    F = torch.nn.functional
    from .features import embed, gaussian_blur

    fe = det._extractor()
    H, W = det.image_shape_
    size = fe.image_size or (H, W)
    gh, gw = det._grid_for((H, W))

    def pair(R: np.ndarray, C: np.ndarray) -> tuple[Any, Any] | None:
        if _is_identity(R, C):
            return None
        return torch.from_numpy(R), torch.from_numpy(C.T.copy())

    resize = None
    if tuple(size) != (H, W):

        def _resize(x: Any) -> Any:
            return F.interpolate(
                x[:, None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[:, 0]

        resize = pair(*separable_matrices(_torch_fn(_resize), (H, W)))

    # layer shapes on this input size
    with torch.inference_mode():
        probe = fe.preprocess(np.zeros((1, H, W), dtype=np.float32))
        shapes = [tuple(o.shape[-2:]) for o in fe._model(probe)]
    local = det.kind == "patchcore"  # PatchCore's locally aware 3×3 mean before embedding

    def layer_fn(x: Any) -> Any:
        f = x[:, None]
        if local:
            f = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
        return embed([f], (gh, gw))[:, 0]

    layer_mats = [pair(*separable_matrices(_torch_fn(layer_fn), s)) for s in shapes]

    blur = None
    sigma = float(getattr(det, "grid_sigma", 0.0) or 0.0)
    if det.kind in ("padim", "soart-deep") and sigma > 0:
        blur = pair(*separable_matrices(_torch_fn(lambda g: gaussian_blur(g, sigma)), (gh, gw)))
    map_rows, map_cols = separable_matrices(
        lambda g: det._to_map(np.asarray(g, dtype=np.float64)), (gh, gw)
    )

    if det.kind == "padim":
        head: Any = _MahalanobisHead(det.channels_, det.mean_, det.whiten_, (gh, gw))
    elif det.kind == "soart-deep":
        head = _SOARTHead(det, (gh, gw))
    else:
        head = _NearestHead(
            det.bank_, int(det.n_neighbors), (gh, gw), det._projection(), det.search_candidates
        )

    evidence = None
    if det.map_refine == "pixel" and hasattr(det, "pixel_mean_"):
        # map = √map · G_σ * (|x − μ| / (s + 8)) (BaseDetector._maps); the blur is separable
        from scipy.ndimage import gaussian_filter

        from ..detectors.base import PIXEL_BLUR, PIXEL_FLOOR

        sig = PIXEL_BLUR * min(H, W)
        blur_z = separable_matrices(
            lambda z: gaussian_filter(np.asarray(z, np.float64), (0, sig, sig), mode="nearest"),
            (H, W),
        )
        evidence = (
            torch.from_numpy(np.asarray(det.pixel_mean_, np.float32)),
            torch.from_numpy(np.asarray(1.0 / (det.pixel_std_ + PIXEL_FLOOR), np.float32)),
            pair(*blur_z),
        )

    if fe._grey_stem:
        norm = {
            "grey": True,
            "scale": float(np.float32(1.0 / (255.0 * float(fe.std[0])))),
            "offset": float(np.float32(fe.mean[0] / fe.std[0])),
        }
    else:
        norm = {"grey": False, "mean": fe.mean, "std": fe.std}

    graph = _DetectorGraph(
        fe._model,
        resize=resize,
        norm=norm,
        layers=layer_mats,
        head=head,
        blur=blur,
        to_map=(torch.from_numpy(map_rows), torch.from_numpy(map_cols.T.copy())),
        evidence=evidence,
    )
    return graph.eval(), map_rows, map_cols


def _module_classes() -> tuple[type, type, type, type]:
    """Define the torch modules lazily (``import gaikan.deep.export`` needs no torch)."""
    torch = require("torch", "deep")
    nn: Any = torch.nn

    def _lr(x: Any, mats: tuple[Any, Any] | None) -> Any:
        """``R · x · Cᵀ`` on the last two axes (C passed transposed)."""
        if mats is None:
            return x
        return torch.matmul(torch.matmul(mats[0], x), mats[1])

    class DetectorGraph(nn.Module):
        def __init__(self, backbone, *, resize, norm, layers, head, blur, to_map, evidence=None):
            super().__init__()
            self.backbone = backbone
            self.resize = resize
            self.grey = bool(norm["grey"])
            if self.grey:
                self.scale = float(norm["scale"])
                self.offset = float(norm["offset"])
            else:
                self.register_buffer(
                    "mean", torch.from_numpy(np.asarray(norm["mean"], np.float32)).view(1, 3, 1, 1)
                )
                self.register_buffer(
                    "std", torch.from_numpy(np.asarray(norm["std"], np.float32)).view(1, 3, 1, 1)
                )
            self.layers = layers
            self.head = head
            self.blur = blur
            self.to_map = to_map
            self.evidence = evidence is not None
            if evidence is not None:  # map_refine="pixel"
                self.register_buffer("pixel_mean", evidence[0])
                self.register_buffer("pixel_inv", evidence[1])
                self.evidence_blur = evidence[2]

        def forward(self, images):  # (n, H, W) float32, 0–255
            x = _lr(images, self.resize)[:, None]
            if self.grey:
                x = x * self.scale - self.offset
            else:
                x = (x.expand(-1, 3, -1, -1) / 255.0 - self.mean) / self.std
            feats = self.backbone(x)
            e = torch.cat([_lr(f, m) for f, m in zip(feats, self.layers)], dim=1)
            grid = _lr(self.head(e), self.blur)  # (n, gh, gw)
            score = grid.amax(dim=(1, 2))
            amap = _lr(grid, self.to_map)
            if self.evidence:
                z = _lr(torch.abs(images - self.pixel_mean) * self.pixel_inv, self.evidence_blur)
                amap = torch.sqrt(torch.clamp(amap, min=0.0)) * z
            return grid, score, amap

    class MahalanobisHead(nn.Module):
        """PaDiM: D² = |L⁻¹ (f − μ)|² / m per position (``PaDiM._d2``)."""

        def __init__(self, channels, mean, whiten, grid):
            super().__init__()
            self.register_buffer("channels", torch.from_numpy(np.asarray(channels, np.int64)))
            self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
            self.register_buffer("whiten", torch.from_numpy(np.asarray(whiten, np.float32)))
            self.grid = (int(grid[0]), int(grid[1]))
            self.m = int(np.shape(mean)[1])

        def forward(self, e):  # (n, C, gh, gw)
            f = e.index_select(1, self.channels).flatten(2)  # (n, m, P)
            d = f.permute(2, 1, 0) - self.mean[:, :, None]  # (P, m, n)
            z = torch.matmul(self.whiten, d)
            d2 = (z * z).sum(dim=1) / self.m  # (P, n)
            return d2.transpose(0, 1).reshape(-1, self.grid[0], self.grid[1])

    class NearestHead(nn.Module):
        """PatchCore: nearest bank distance, reweighted (``PatchCore._score_features``)."""

        def __init__(self, bank, n_neighbors, grid, projection=None, candidates=16):
            super().__init__()
            b = torch.from_numpy(np.asarray(bank, np.float32))
            self.register_buffer("bank", b)
            self.projected = projection is not None
            if projection is not None:  # two-step search (PatchCore._nearest_one)
                mu, comp = (torch.from_numpy(a) for a in projection)
                self.register_buffer("mu", mu)
                self.register_buffer("comp", comp)
                bp = torch.matmul(b - mu, comp)
                self.register_buffer("bank_p", bp)
                self.register_buffer("bank_psq", (bp * bp).sum(1))
                self.m = min(int(candidates), int(b.shape[0]))
            self.register_buffer("bank_sq", (b * b).sum(1))
            self.k = int(n_neighbors)
            self.grid = (int(grid[0]), int(grid[1]))

        def _sqdist(self, f):  # (..., d) → (..., K), clamped at 0
            fsq = (f * f).sum(-1, keepdim=True)
            return (self.bank_sq - 2.0 * torch.matmul(f, self.bank.T) + fsq).clamp_min(0.0)

        def forward(self, e):  # (n, d, gh, gw)
            f = e.flatten(2).transpose(1, 2)  # (n, P, d)
            n, d = f.shape[0], f.shape[2]
            if self.projected:
                fp = torch.matmul(f - self.mu, self.comp)  # (n, P, p)
                fpsq = (fp * fp).sum(-1, keepdim=True)
                dp = (self.bank_psq - 2.0 * torch.matmul(fp, self.bank_p.T) + fpsq).clamp_min(0.0)
                _, cand = torch.topk(dp, self.m, dim=-1, largest=False)  # (n, P, m)
                d2c = ((self.bank[cand] - f[:, :, None, :]) ** 2).sum(-1)  # (n, P, m)
                d2, j = d2c.min(dim=-1)
                nn_idx = torch.gather(cand, 2, j[..., None])[..., 0]
            else:
                d2, nn_idx = self._sqdist(f).min(dim=-1)  # (n, P)
            dist = d2.sqrt()
            K = self.bank.shape[0]
            if self.k > 0 and K > 1:
                star = dist.argmax(dim=1, keepdim=True)  # (n, 1)
                dist_star = torch.gather(dist, 1, star)  # (n, 1)
                m_star = self.bank[torch.gather(nn_idx, 1, star)[:, 0]]  # (n, d)
                kk = min(self.k + 1, K)
                _, nb = torch.topk(self._sqdist(m_star), kk, dim=1, largest=False)  # (n, kk)
                f_star = torch.gather(f, 1, star[:, :, None].expand(n, 1, d))  # (n, 1, d)
                dn = ((self.bank[nb] - f_star) ** 2).sum(-1).clamp_min(0.0).sqrt()  # (n, kk)
                dn = torch.cat([dist_star, dn[:, 1:]], dim=1)
                w = 1.0 - torch.softmax(dn, dim=1)[:, :1]
                dist = dist * w
            return dist.reshape(n, self.grid[0], self.grid[1])

    class SOARTHead(nn.Module):
        """SOARTDeep: SOART3 / SOARTC stage-1 items, then MT per position, in float64.

        The same arithmetic as ``SOARTDeep._patch_scores`` (``soart3``,
        ``soartc_features`` with its float32 Gram matrix, ``mahalanobis``).
        """

        def __init__(self, det, grid):
            super().__init__()
            from ..taguchi.soart import BETA_FLOOR, EPS

            self.stages = tuple(det._check_stages())
            self.eps = float(EPS)
            self.register_buffer("channels", torch.from_numpy(np.asarray(det.channels_, np.int64)))
            self.register_buffer("floor", torch.tensor(float(BETA_FLOOR), dtype=torch.float64))
            self.register_buffer("mean_feat", torch.from_numpy(np.asarray(det.mean_feat_, "f8")))
            sbar = np.asarray(det.sbar_, np.float64)
            self.register_buffer("sbar", torch.from_numpy(sbar))
            self.register_buffer("sbar_sq", torch.from_numpy(np.einsum("ij,ij->i", sbar, sbar)))
            self.register_buffer("mean", torch.from_numpy(np.asarray(det.mean_, np.float64)))
            self.register_buffer("whiten", torch.from_numpy(np.asarray(det.whiten_, np.float64)))
            self.grid = (int(grid[0]), int(grid[1]))

        def _soart3(self, y, x, xx):
            beta = ((x * y).sum(-1) + self.eps) / (xx + self.eps)
            r = (y - beta[..., None] * x).abs()
            log_eta = torch.log(r.sum(-1) + 1.0)
            log_nu = torch.log(r.amax(-1) + 1.0)
            return torch.stack(
                [torch.log(torch.maximum(beta, self.floor)), log_eta, log_nu - log_eta], dim=-1
            )

        def forward(self, e):  # (n, C, gh, gw) float32
            f32 = e.index_select(1, self.channels).flatten(2).transpose(1, 2)  # (n, P, m)
            f = f32.double()
            items = []
            for st in self.stages:
                if st == "soart3":
                    x = self.mean_feat
                    items.append(self._soart3(f, x, (x * x).sum(-1)))
                else:
                    g = torch.matmul(f32, f32.transpose(1, 2)).double()  # float32 Gram
                    w = 1.0 / ((f * f).sum(-1) + self.eps)  # (n, P), float64
                    sm = (g + self.eps) * w[:, None, :]  # S[i, j]
                    items.append(self._soart3(sm, self.sbar, self.sbar_sq))
            z = torch.cat(items, dim=-1) - self.mean  # (n, P, k)
            z = torch.matmul(self.whiten, z.permute(1, 2, 0))  # (P, k, n)
            d2 = (z * z).sum(1) / self.mean.shape[-1]  # (P, n)
            return d2.transpose(0, 1).reshape(-1, self.grid[0], self.grid[1]).float()

    return DetectorGraph, MahalanobisHead, NearestHead, SOARTHead


def _SOARTHead(*args: Any) -> Any:
    return _module_classes()[3](*args)


def _DetectorGraph(*args: Any, **kw: Any) -> Any:
    return _module_classes()[0](*args, **kw)


def _MahalanobisHead(*args: Any) -> Any:
    return _module_classes()[1](*args)


def _NearestHead(*args: Any) -> Any:
    return _module_classes()[2](*args)


def _to_onnx(graph: Any, shape: tuple[int, int], opset: int) -> bytes:
    torch = require("torch", "deep")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.zeros(2, *shape),),
            buf,
            input_names=[GRAPH_INPUT],
            output_names=list(GRAPH_OUTPUTS),
            dynamic_axes={GRAPH_INPUT: {0: "n"}, **{k: {0: "n"} for k in GRAPH_OUTPUTS}},
            opset_version=int(opset),
            dynamo=False,
        )
    return buf.getvalue()


# -- formats --------------------------------------------------------------------------------
def to_format(onnx_bytes: bytes, fmt: str) -> dict[str, bytes]:
    """The graph members of format ``fmt`` for an exported ONNX graph.

    Parameters
    ----------
    onnx_bytes : bytes
        The serialised ONNX graph.
    fmt : {"onnx", "openvino"}
        ``"openvino"`` converts the graph to OpenVINO IR (``model.xml`` +
        ``model.bin``, float32 weights: no fp16 compression) with the
        installed ``openvino`` package.

    Returns
    -------
    dict of str to bytes
        The blob members (:data:`gaikan.runtime.backends.FORMATS`).

    Raises
    ------
    ParameterError
        An unknown format, or OpenVINO not installed (the message says what
        to install).
    """
    if fmt == "onnx":
        return {"model.onnx": onnx_bytes}
    if fmt != "openvino":
        raise ParameterError(f"unknown export format {fmt!r}; choose onnx or openvino")
    try:
        import openvino as ov
    except ImportError as exc:
        raise ParameterError(
            f"--format openvino needs OpenVINO: pip install 'gaikan[openvino]' ({exc})"
        ) from None
    import tempfile
    from pathlib import Path

    model = ov.Core().read_model(onnx_bytes)
    with tempfile.TemporaryDirectory(prefix="gaikan-ov-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return {"model.xml": xml.read_bytes(), "model.bin": xml.with_suffix(".bin").read_bytes()}


# -- equality check -----------------------------------------------------------------------
def compare(source: Any, exported: Any, images: np.ndarray) -> dict[str, Any]:
    """How closely ``exported`` scores like ``source`` on ``images``.

    Parameters
    ----------
    source, exported : fitted detectors
    images : ndarray, shape (n, H, W), 0–255

    Returns
    -------
    dict
        ``n``, ``score_rel`` (max |Δscore| / max(|score|, 1e-12)),
        ``map_abs`` (max |Δmap| on the normalised scale: each image's map
        divided by max(threshold, the image's map peak)), ``verdicts_equal``,
        ``ok`` (all within :data:`SCORE_RTOL` / :data:`MAP_ATOL`).
    """
    a = source.detect(images)
    b = exported.detect(images)
    n = len(images)
    rel = np.abs(b.scores - a.scores) / np.maximum(np.abs(a.scores), 1e-12)
    # normalised scale: each image's map over max(threshold, its own peak), so
    # a defect whose map peaks at 10⁴× the threshold is held to float32's
    # relative precision, not to 1e-3 of the threshold
    scale = np.maximum(np.abs(a.maps).reshape(n, -1).max(axis=1), abs(float(source.threshold_)))
    map_abs = (np.abs(b.maps - a.maps).reshape(n, -1).max(axis=1) / np.maximum(scale, 1e-12)).max()
    same = bool(np.array_equal(a.is_defect, b.is_defect))
    return {
        "n": n,
        "score_rel": float(rel.max()),
        "map_abs": float(map_abs),
        "verdicts_equal": same,
        "ok": bool(rel.max() <= SCORE_RTOL and map_abs <= MAP_ATOL and same),
    }


def _check_batch(shape: tuple[int, int], n: int = 4) -> np.ndarray:
    """A seeded batch of smooth random textures, 0–255 (for the export check)."""
    rng = np.random.default_rng(0)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        fx, fy = (float(v) for v in rng.uniform(2, 12, 2))
        ph = float(rng.uniform(0, 6.3))
        base = 128 + 60 * np.sin(2 * np.pi * fx * xx + ph) * np.cos(2 * np.pi * fy * yy)
        out[i] = np.clip(np.rint(base + rng.normal(0, 8, (h, w))), 0, 255)
    return out


# -- public entry point ---------------------------------------------------------------------
def export_detector(
    det: Any,
    *,
    fmt: str = "onnx",
    opset: int = 17,
    check_images: np.ndarray | None = None,
    num_threads: int | None = None,
    int8_calibration: np.ndarray | None = None,
) -> OnnxDetector:
    """Export a fitted PaDiM, PatchCore or SOARTDeep to a torch-free :class:`OnnxDetector`.

    Parameters
    ----------
    det : fitted PaDiM, PatchCore or SOARTDeep
    fmt : {"onnx", "openvino"}
        Graph format: ONNX (run by ONNX Runtime) or OpenVINO IR (the same
        graph converted; run by OpenVINO's CPU plugin).
    opset : int
        ONNX opset (17: ONNX Runtime ≥ 1.13).
    check_images : ndarray, shape (n, H, W), optional
        Images the export is verified on (default: a seeded synthetic batch).
        Give real parts (good and defective) to check verdicts that matter.
    num_threads : int, optional
        ONNX Runtime threads of the returned detector (stored in its params).
    int8_calibration : ndarray, shape (m, H, W), optional
        Experimental: good images to calibrate an int8 quantisation of the
        backbone's convolutions (:func:`gaikan.deep.export_int8.quantize_int8`).
        The float32 graph is checked as always; the int8 graph's differences
        from the source are recorded in ``export_info_["int8"]["check"]``
        (not held to the float32 limits).  See docs/export.md for its
        measured accuracy change.

    Returns
    -------
    OnnxDetector
        Fitted, with the source's threshold, image shape and training scores;
        ``.save(path)`` writes the model file.

    Raises
    ------
    ParameterError
        An unfitted detector or a kind that cannot be exported.
    ExportCheckError
        The exported graph does not score like ``det`` on the check images.
    """
    torch = require("torch", "deep")
    from .. import __version__

    kind = getattr(type(det), "kind", "")
    if kind not in EXPORTABLE:
        raise ParameterError(
            f"gaikan export handles {', '.join(EXPORTABLE)} models and the classifiers "
            f"(export_classifier); this is a {kind or type(det)!r} model"
        )
    if not hasattr(det, "threshold_"):
        raise ParameterError(f"this {type(det).__name__} is not fitted; fit it before exporting")
    if kind == "soart-deep" and fmt == "openvino":
        # OpenVINO's CPU plugin runs the float64 SOART head in float32: scores
        # then differ by up to 100 % (measured), so the check would refuse it
        raise ParameterError(
            "a soart-deep model cannot be exported to OpenVINO (its float64 SOART/MT head "
            "runs in float32 there and scores differ); use --format onnx"
        )
    if getattr(det, "device", "cpu") != "cpu":
        det.set_params(device="cpu")
        det._fe = None
    shape = (int(det.image_shape_[0]), int(det.image_shape_[1]))
    graph, map_rows, map_cols = _build_graph(det)
    onnx_bytes = _to_onnx(graph, shape, opset)
    info = {
        "format": fmt,
        "opset": int(opset),
        "exported_with": {"gaikan": __version__, "torch": str(torch.__version__)},
    }
    built: dict[str, Any] = {
        "threshold": float(det.threshold_),
        "image_shape": shape,
        "train_scores": np.asarray(det.train_scores_),
        "n_train": int(det.n_train_),
        "map_rows": map_rows,
        "map_cols": map_cols,
        "source_kind": kind,
        "source_params": _jsonable(det.get_params()),
        "num_threads": num_threads,
    }
    imgs = _check_batch(shape) if check_images is None else np.asarray(check_images, np.float32)
    int8 = int8_calibration is not None
    out = OnnxDetector.from_graph(
        onnx_bytes if int8 else to_format(onnx_bytes, fmt),
        export_info={**info, "format": "onnx" if int8 else fmt},
        **built,
    )
    check = compare(det, out, imgs)
    if not check["ok"]:
        raise ExportCheckError(
            f"the exported graph does not score like the {kind} model on {check['n']} check "
            f"images (score error {check['score_rel']:.2g} relative, limit {SCORE_RTOL:g}; map "
            f"error {check['map_abs']:.2g} normalised, limit {MAP_ATOL:g}; verdicts equal: "
            f"{check['verdicts_equal']}); please report this with the model's kind and params"
        )
    if int8:
        from .export_int8 import quantize_int8

        cal = np.asarray(int8_calibration, np.float32)
        if cal.ndim != 3 or cal.shape[1:] != shape:
            raise ParameterError(
                f"int8 calibration images must be (m, {shape[0]}, {shape[1]}); got {cal.shape}"
            )
        q = quantize_int8(onnx_bytes, cal)
        out = OnnxDetector.from_graph(to_format(q, fmt), export_info=dict(info), **built)
        out.export_info_["int8"] = {
            "calibration_images": int(cal.shape[0]),
            "method": "minmax",
            "quantised": "Conv (per-channel int8 weights, uint8 activations, QDQ)",
            "check": compare(det, out, imgs),
        }
    out.export_info_["check"] = check
    return out


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def export_model(model: Any, **kw: Any) -> Any:
    """Export any exportable fitted model: a deep detector or a classifier (ensemble).

    Dispatches on the model's family to :func:`export_detector` (→
    :class:`~gaikan.runtime.OnnxDetector`) or
    :func:`gaikan.deep.export_classifier.export_classifier` (→
    :class:`~gaikan.runtime.OnnxClassifier`); keyword arguments are passed
    on (``fmt``, ``opset``, ``check_images``, ``num_threads``).
    """
    from ..detectors.registry import model_family

    try:
        family = model_family(model)
    except ParameterError:
        family = "detector"
    if family == "classifier":
        if getattr(type(model), "kind", "") == "onnx-classifier":
            raise ParameterError(
                "this model is already exported (onnx-classifier); export its source classifier"
            )
        from .export_classifier import export_classifier

        return export_classifier(model, **kw)
    return export_detector(model, **kw)

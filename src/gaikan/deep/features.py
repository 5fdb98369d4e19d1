"""Grey images → multi-layer deep feature maps, fast on a CPU.

:class:`FeatureExtractor` wraps a ``features_only`` backbone and does the
model's own preprocessing: resize to ``image_size`` (antialiased
bilinear), scale 0–255 → [0, 1], normalise with the backbone's mean/std
and replicate grey to 3 channels.  It runs in batches under
``torch.inference_mode`` with a bounded thread count, on one of three
runtimes that give the same numbers (within float32 rounding):

========== ==============================================================
``eager``  plain PyTorch (NCHW)
``channels_last``  PyTorch with NHWC memory format
``onnx``   the backbone exported to ONNX (in memory) and run by ONNX Runtime
========== ==============================================================

Measured on 2 CPU cores (EfficientNet-Lite0, stages 1–3, 256×256, batch 16;
see ``benchmarks/bench_deep.py``): eager ≈ 47 ms/img, channels_last
≈ 26 ms/img, ONNX Runtime ≈ 12 ms/img.  ``runtime="auto"`` therefore picks
ONNX Runtime on the CPU when it is installed, else channels_last; on CUDA
it uses channels_last PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from .._optional import require
from ..errors import ParameterError
from ..runtime.backends import ort_session_options
from .backbones import backbone_config, create_backbone

__all__ = ["RUNTIMES", "FeatureExtractor", "num_threads", "parse_layers"]

RUNTIMES = ("auto", "eager", "channels_last", "onnx")

#: Images per ONNX Runtime call (see :meth:`FeatureExtractor.iter_batches`).
ONNX_MICRO_BATCH = 2


@contextlib.contextmanager
def num_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: unchanged)."""
    torch = require("torch", "deep")
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class FeatureExtractor:
    """Multi-layer features of grey images.

    Parameters
    ----------
    backbone : str
        Backbone name (:data:`gaikan.deep.backbones.BACKBONES` or timm).
    layers : sequence of int
        Feature levels (timm numbering; for EfficientNet 1 = stride 4,
        2 = stride 8, 3 = stride 16).
    image_size : int or (int, int) or None
        Side the images are resized to before the backbone; None keeps the
        input size.
    runtime : {"auto", "eager", "channels_last", "onnx"}
    device : str
        ``"cpu"`` or a CUDA device such as ``"cuda"``; ONNX is CPU-only.
    num_threads : int, optional
        Intra-op threads for torch / ONNX Runtime (None: torch's setting).
    batch_size : int
        Images per forward pass.
    weights_file : path, optional
        Local backbone weights (see :func:`create_backbone`).
    pretrained : bool
        False gives random weights (tests of plumbing only).

    Attributes
    ----------
    channels : list of int
        Channels per requested layer.
    reductions : list of int
        Stride of each layer relative to the resized input.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[int] = (1, 2, 3),
        image_size=None,
        runtime: str = "auto",
        device: str = "cpu",
        num_threads: int | None = None,
        batch_size: int = 16,
        weights_file=None,
        pretrained: bool = True,
    ) -> None:
        torch = require("torch", "deep")
        if runtime not in RUNTIMES:
            raise ParameterError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.backbone = backbone
        self.layers = parse_layers(layers)
        if not self.layers:
            raise ParameterError("layers must name at least one feature level")
        self.image_size = _size2(image_size)
        self.device = torch.device(device)
        self.num_threads = num_threads
        self.batch_size = max(1, int(batch_size))
        cfg = backbone_config(backbone)
        self.mean = np.asarray(cfg["mean"], dtype=np.float32)
        self.std = np.asarray(cfg["std"], dtype=np.float32)
        if runtime == "auto":
            if self.device.type == "cpu" and _onnx_available():
                runtime = "onnx"
            else:
                runtime = "channels_last"
        if runtime == "onnx" and self.device.type != "cpu":
            raise ParameterError(
                "runtime='onnx' runs on the CPU only; use 'eager' or 'channels_last'"
            )
        self.runtime = runtime
        model = create_backbone(
            backbone,
            pretrained=pretrained,
            features_only=True,
            out_indices=self.layers,
            weights_file=weights_file,
        )
        self.channels = list(model.feature_info.channels())
        self.reductions = list(model.feature_info.reduction())
        # Grey replicated to 3 channels equals summing the stem's kernels
        # over RGB when the 3 channels are normalised alike (the Lite family).
        self._grey_stem = bool(
            np.all(self.mean == self.mean[0]) and np.all(self.std == self.std[0])
        )
        if self._grey_stem:
            _fold_grey_stem(model)
            self._grey_stem = getattr(getattr(model, "conv_stem", None), "in_channels", 3) == 1
        model = model.to(self.device).eval()
        if runtime == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._session = None
        if runtime == "onnx":
            self._session = self._export_onnx(model)

    # -- runtimes -----------------------------------------------------------
    def backbone_onnx(self, model) -> bytes:
        """The backbone ``model`` as an ONNX graph: input ``x`` (n, c, h, w), outputs ``f0…``."""
        torch = require("torch", "deep")
        h, w = self.image_size or (224, 224)
        buf = io.BytesIO()
        with warnings.catch_warnings(), num_threads(self.num_threads):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, 1 if self._grey_stem else 3, h, w),),
                buf,
                input_names=["x"],
                output_names=[f"f{i}" for i in range(len(self.layers))],
                dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
                opset_version=17,
                dynamo=False,
            )
        return buf.getvalue()

    def _export_onnx(self, model):
        import onnxruntime as ort

        torch = require("torch", "deep")
        graph = self.backbone_onnx(model)
        n = self.num_threads if self.num_threads is not None else torch.get_num_threads()
        so = ort_session_options(int(n))
        return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])

    # -- preprocessing --------------------------------------------------------
    def preprocess(self, X: np.ndarray):
        """(n, H, W) grey 0–255 → normalised float32 tensor (n, c, h, w).

        c = 1 when the stem's kernels were summed over RGB (same as grey
        replicated to 3 channels), else c = 3 with per-channel statistics.
        Scaling runs in numpy (no torch thread pool for a few cheap ops).
        """
        torch = require("torch", "deep")
        x = np.asarray(X, dtype=np.float32)[:, None]
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = torch.nn.functional.interpolate(
                torch.from_numpy(np.ascontiguousarray(x)),
                size=self.image_size,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).numpy()
        if self._grey_stem:
            scale = np.float32(1.0 / (255.0 * float(self.std[0])))
            x = x * scale - np.float32(self.mean[0] / self.std[0])
        else:
            mean = self.mean.reshape(1, 3, 1, 1)
            std = self.std.reshape(1, 3, 1, 1)
            x = (np.repeat(x, 3, axis=1) / np.float32(255.0) - mean) / std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    # -- extraction -----------------------------------------------------------
    def iter_batches(self, X: np.ndarray) -> Iterator[list]:
        """Yield, per batch, a list of float32 tensors (b, C_l, h_l, w_l) on the CPU.

        ``num_threads`` applies to the backbone only (ORT's own pool, or
        torch's for the torch runtimes); what the caller does between
        batches runs with its own setting.
        """
        torch = require("torch", "deep")
        X = np.asarray(X)
        if X.ndim != 3:
            raise ParameterError(f"X must be (n, H, W), got {X.shape}")
        for i in range(0, X.shape[0], self.batch_size):
            with torch.inference_mode(), num_threads(self.num_threads):
                x = self.preprocess(X[i : i + self.batch_size])
                if self._session is not None:
                    # ONNX Runtime is fastest per image on micro-batches of
                    # 2 (activations stay in cache): 2 CPU cores, 256², Lite0:
                    # 17–20 ms/img at 1–2 vs 34 ms/img at 16.
                    xn = x.numpy()
                    parts = [
                        self._session.run(None, {"x": xn[j : j + ONNX_MICRO_BATCH]})
                        for j in range(0, xn.shape[0], ONNX_MICRO_BATCH)
                    ]
                    outs = [
                        torch.from_numpy(np.concatenate([p[k] for p in parts]))
                        for k in range(len(parts[0]))
                    ]
                else:
                    x = x.to(self.device)
                    if self.runtime == "channels_last":
                        x = x.contiguous(memory_format=torch.channels_last)
                    outs = [o.float().contiguous().cpu() for o in self._model(x)]
            yield outs

    def __call__(self, X: np.ndarray) -> list[np.ndarray]:
        """Features of all images: list over layers of (n, C_l, h_l, w_l) float32."""
        parts = [[o.numpy() for o in outs] for outs in self.iter_batches(X)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.layers))]

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor(backbone={self.backbone!r}, layers={self.layers}, "
            f"image_size={self.image_size}, runtime={self.runtime!r}, device={str(self.device)!r})"
        )


def parse_layers(layers) -> tuple[int, ...]:
    """Feature levels from a sequence, an int or a string like ``"3,4"`` (CLI)."""
    if isinstance(layers, str):
        layers = [v for v in layers.strip(" ()[]").replace(" ", "").split(",") if v]
    elif isinstance(layers, (int, np.integer)):
        layers = [layers]
    try:
        return tuple(int(v) for v in layers)
    except (TypeError, ValueError):
        raise ParameterError(f"layers must be integers such as (3, 4), got {layers!r}") from None


def _size2(size) -> tuple[int, int] | None:
    from .._validation import as_hw

    return None if size is None else as_hw(size, "image_size")


def _fold_grey_stem(model) -> None:
    """Let the stem take 1 grey channel instead of 3 identical ones.

    With identical input channels, Σ_c W_c * x = (Σ_c W_c) * x exactly
    (zero padding included), so summing the kernels over RGB saves the
    replication.  Only valid when all channels share mean and std.
    """
    torch = require("torch", "deep")
    stem = getattr(model, "conv_stem", None)
    if stem is None or stem.weight.shape[1] != 3:
        return
    with torch.no_grad():
        stem.weight = torch.nn.Parameter(stem.weight.sum(dim=1, keepdim=True).clone())
    stem.in_channels = 1


# -- helpers shared by the detectors -------------------------------------------
def embed(feats: list, grid: tuple[int, int]):
    """Concatenate multi-layer maps on one grid: (b, ΣC_l, gh, gw) float32.

    Finer layers are average-pooled to the grid (adaptive pooling keeps
    their detail as a local mean), coarser layers bilinearly upsampled.
    """
    torch = require("torch", "deep")
    F = torch.nn.functional
    out = []
    for f in feats:
        h, w = f.shape[-2:]
        if (h, w) == tuple(grid):
            out.append(f)
        elif h >= grid[0] and w >= grid[1]:
            out.append(F.adaptive_avg_pool2d(f, grid))
        else:
            out.append(F.interpolate(f, size=grid, mode="bilinear", align_corners=False))
    return torch.cat(out, dim=1)


def gaussian_kernel1d(sigma: float):
    """Normalised 1-D Gaussian, radius 4σ (float32 tensor)."""
    torch = require("torch", "deep")
    r = max(1, int(4.0 * sigma + 0.5))
    ax = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(ax * ax) / (2.0 * sigma * sigma))
    return g / g.sum()


def gaussian_blur(maps, sigma: float):
    """Separable Gaussian blur of (n, h, w) maps with reflect padding."""
    torch = require("torch", "deep")
    F = torch.nn.functional
    x = torch.as_tensor(maps, dtype=torch.float32)
    if sigma <= 0:
        return x
    g = gaussian_kernel1d(sigma)
    r = g.numel() // 2
    x = x[:, None]
    h, w = x.shape[-2:]
    # reflect padding needs pad < size; fall back to replicate on tiny grids
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), g.view(1, 1, -1, 1))
    return x[:, 0]


def upsample_maps(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear (n, gh, gw) → (n, H, W) float64, align_corners=False."""
    torch = require("torch", "deep")
    x = torch.as_tensor(np.asarray(grid, dtype=np.float32))[:, None]
    if tuple(x.shape[-2:]) != tuple(shape):
        x = torch.nn.functional.interpolate(
            x, size=tuple(shape), mode="bilinear", align_corners=False
        )
    return x[:, 0].numpy().astype(np.float64)

"""The :class:`Classifier` estimator: parameters, fit, predict, explain, model files.

A pretrained timm CNN with a new head, fine-tuned on labelled images the
fastai way (:mod:`.training`), fed by the input pipeline of :mod:`.inputs`
(optionally comparing each part with the mean good part and looking
closely where it differs), explained by :mod:`.explain`.

Images follow gaikan's convention: (n, H, W) grey on the 0–255 scale (or
(n, H, W, 3) RGB).  Explanations (:meth:`Classifier.explain`) are
(n, H, W) maps at the input resolution, higher = more relevant, like
anomaly maps.

Model files hold the weights as a ``weights.safetensors`` member and
everything else as JSON; nothing is pickled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..._optional import require
from ..._params import ParamsMixin
from ...errors import ModelFileError, NotFittedError, ParameterError
from ...modelfile import ModelFileMixin
from . import explain as _explain
from . import training
from .inputs import Augmentation, InputPipeline, augment, check_X, plain_label, select_good_images
from .network import create_network, logits, rebuild_network, to_device, torch_context
from .params import CLASSIFIER_RULES, FIT_RULES, as_hw, check_all, one_of
from .training import LRFindResult, stratified_split

__all__ = ["Classifier"]


class Classifier(ModelFileMixin, ParamsMixin):
    """Defect classifier: a pretrained timm CNN fine-tuned the fastai way.

    Parameters
    ----------
    backbone : str, default "efficientnet_lite0"
        A gaikan backbone (``efficientnet_lite{0,1,2}``, offline ImageNet
        weights) or any timm architecture (then ``pretrained=False``: no
        download ever happens).
    pretrained : bool, default True
    image_size : int or (int, int), default 128
        Images are resized to ``image_size²`` (or ``(h, w)``) for the network.
    batch_size : int, default 32
    valid_frac : float, default 0.2
        Share of each class held out for validation (early stopping), in [0, 1).
    patience : int or None, default 3
        Stop a stage after this many epochs without a lower validation
        loss; the best weights are restored at the end.  None: never stop.
    weight_decay : float, default 0.01
    hflip, vflip, rot90 : bool, default False
        Geometric augmentation; enable only when the part is symmetric so
        (a flipped good part is still good *and* the defect class does not
        change).
    max_rotate : float, default 0.0
        Random rotation in ± degrees.
    max_shift : float, default 0.0
        Random translation, fraction of the image size.
    brightness, contrast : float, default 0.1
        Random photometric jitter amplitudes.
    drop_rate : float, default 0.2
        Dropout before the head.
    n_groups : int, default 3
        Layer groups for discriminative rates (body split in ``n_groups-1``
        consecutive parts, plus the head).
    label_smoothing : float, default 0.0
    precise_bn : int, default 256
        After every epoch, BatchNorm running statistics are recomputed
        exactly (cumulative average, no augmentation) on up to this many
        training images ("precise BN", Wu & Johnson 2021).  With few steps
        per epoch the exponential running averages lag far behind the
        weights and evaluation-mode predictions collapse; 0 turns it off.
    reference : bool, default False
        Feed the network a reference-aware input instead of the bare grey
        image: the three channels (image, mean good image, 0.5 + image −
        mean good image).  The mean good image (``reference_``) comes from
        the training images of ``good_class`` or from ``X_good`` given to
        :meth:`fine_tune`; every image must then have the training size
        (crop parts to a fixed ROI first).  On the synthetic connectors it
        is the difference between ~89 % and ≥ 99 % defect-mode accuracy: a
        pin that is slightly shorter is hard to see, but easy to see next
        to a good pin.
    focus : int or None, default None
        With ``reference=True``: feed the network only a ``focus × focus``
        window (image pixels, at least 8) centred on the largest difference
        from the reference (``|image − reference|`` smoothed by a Gaussian
        of ``focus_sigma`` pixels), resized to ``image_size``.  A two-stage
        read, as an inspector does: find where the part differs, then look
        closely there.  Small-defect *types* (a shifted vs. a tilted pin)
        need resolution that a whole-image input cannot afford on a CPU;
        a 64-pixel window at 128² costs half a 256×128 whole image and
        shows the pin at 2× its size.  Not for tasks that need the defect's
        position (use the whole image there).  Maps from :meth:`explain`
        are pasted back into the full frame (zero outside the window).
    focus_sigma : float, default 5.0
    good_class : label or None, default None
        Class of the good parts (the reference and the integrated-gradients
        baseline); None: ``"good"`` when it is a class.
    cam_method : str, default "auto"
        Explanation used by :meth:`explain` when it is given no method;
        "auto": integrated gradients (``"ig"``) for a ``reference`` model —
        they point at the defective pin 92–98 % of the time on the
        synthetic connectors, against 50–87 % for LayerCAM —, else
        LayerCAM at ``cam_layer``.
    cam_layer : str or None, default "auto"
        Its layer: ``"auto"`` = the stage at stride 16 (timm's
        ``feature_info``; ``blocks.4`` for EfficientNet-Lite), finer than
        the stride-32 last feature map, which is coarse for small defects
        (on the synthetic connectors LayerCAM at stride 16 points at the
        defective pin 3–5× as often as Grad-CAM on the last map); None =
        the last feature map.
    random_state : int, default 0
        Seeds the split, the head initialisation, shuffling, augmentation
        and dropout (the global torch RNG is left untouched).
    num_threads : int or None
        torch CPU threads while training/predicting (restored afterwards).
    device : str, default "cpu"
    weights_file : str or None
        Explicit pretrained weights for the backbone (safetensors / state dict).
    model_kwargs : dict or None
        Extra keyword arguments for the timm model (e.g. ``img_size``).

    Attributes
    ----------
    classes_ : ndarray, shape (k,)
    model_ : torch.nn.Module
    reference_ : ndarray, shape (H, W), float32, or None
        Mean good training image (None in model files written before it existed).
    input_mean_, input_std_ : list of float
    arch_ : str
    in_chans_ : int
    history_ : list of dict
        One record per epoch (:class:`~gaikan.deep.classify.training.TrainingRun`).
    best_epoch_ : int
    fit_time_ : float
    n_train_, n_valid_ : int
    input_shape_ : list of int
        Shape of one training image.
    valid_idx_ : ndarray of int or None
        Validation images of X (None with an explicit validation set).
    """

    kind: ClassVar[str] = "classifier"
    #: Evaluation batch size.
    _chunk: ClassVar[int] = 64
    #: Train and predict in channels-last memory format (CPU convolutions,
    #: depthwise ones above all, run 2–3× faster; same results to float error).
    _channels_last: ClassVar[bool] = True
    #: Methods :meth:`explain` accepts.
    methods: ClassVar[tuple[str, ...]] = ("gradcam", "layercam", "eigencam", "ig")
    #: Method used when :meth:`explain` gets none.
    default_method: ClassVar[str] = "gradcam"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        pretrained: bool = True,
        image_size: int = 128,
        batch_size: int = 32,
        valid_frac: float = 0.2,
        patience: int | None = 3,
        weight_decay: float = 0.01,
        hflip: bool = False,
        vflip: bool = False,
        rot90: bool = False,
        max_rotate: float = 0.0,
        max_shift: float = 0.0,
        brightness: float = 0.1,
        contrast: float = 0.1,
        drop_rate: float = 0.2,
        n_groups: int = 3,
        label_smoothing: float = 0.0,
        precise_bn: int = 256,
        reference: bool = False,
        focus: int | None = None,
        focus_sigma: float = 5.0,
        good_class: Any = None,
        cam_method: str = "auto",
        cam_layer: str | None = "auto",
        random_state: int = 0,
        num_threads: int | None = None,
        device: str = "cpu",
        weights_file: str | None = None,
        model_kwargs: dict | None = None,
    ) -> None:
        self.backbone = backbone
        self.pretrained = pretrained
        self.image_size = image_size
        self.batch_size = batch_size
        self.valid_frac = valid_frac
        self.patience = patience
        self.weight_decay = weight_decay
        self.hflip = hflip
        self.vflip = vflip
        self.rot90 = rot90
        self.max_rotate = max_rotate
        self.max_shift = max_shift
        self.brightness = brightness
        self.contrast = contrast
        self.drop_rate = drop_rate
        self.n_groups = n_groups
        self.label_smoothing = label_smoothing
        self.precise_bn = precise_bn
        self.reference = reference
        self.focus = focus
        self.focus_sigma = focus_sigma
        self.good_class = good_class
        self.cam_method = cam_method
        self.cam_layer = cam_layer
        self.random_state = random_state
        self.num_threads = num_threads
        self.device = device
        self.weights_file = weights_file
        self.model_kwargs = model_kwargs

    # -- parameters -------------------------------------------------------------
    def _check_params(self) -> None:
        """Validate every parameter (``fit`` calls this first); ParameterError names the bad one."""
        params = self.get_params()
        check_all(CLASSIFIER_RULES, params)
        if "cam_method" in params:
            one_of("auto", *self.methods)("cam_method", self.cam_method)
        if self.focus is not None and not self.reference:
            raise ParameterError("focus needs reference=True and a window of at least 8 pixels")

    # -- hooks a subclass (ViTClassifier) replaces --------------------------------
    def _create_model(self, n_classes: int) -> tuple[Any, str, list[float], list[float]]:
        """A new network: (model, timm architecture, input mean, input std)."""
        return create_network(
            self.backbone,
            n_classes,
            pretrained=self.pretrained,
            drop_rate=self.drop_rate,
            weights_file=self.weights_file,
            model_kwargs=self.model_kwargs,
        )

    def _rebuild(self, arch: str, n_classes: int) -> Any:
        """The untrained network of a model file (its weights are loaded next)."""
        return rebuild_network(arch, n_classes, self.drop_rate, self.model_kwargs)

    def _fit_input(self, X: np.ndarray, y_idx: np.ndarray, X_good: Any = None) -> None:
        """Fit input statistics: the mean good image (reference / IG baseline)."""
        if self.reference and X.ndim != 3:
            raise ParameterError("reference=True needs grey images (n, H, W)")
        good = select_good_images(
            X, y_idx, self.classes_, self.good_class, required=self.reference, X_good=X_good
        )
        if good.shape[1:] != X.shape[1:]:
            raise ParameterError(f"X_good images have shape {good.shape[1:]}, X has {X.shape[1:]}")
        self.reference_ = good.mean(0).astype(np.float32)

    def input_pipeline(self) -> InputPipeline:
        """What the network sees: the fitted input transform.

        ``encode(X)`` is the normalised network tensor (n, c, h, w) of checked
        images, ``focus_boxes(X)`` the focus windows (n, 4) or None,
        ``expand(x)`` the batch as the network takes it, ``to_input_maps``
        brings maps on the network input back to the image.

        Returns
        -------
        InputPipeline
        """
        self._check_fitted()
        return InputPipeline(
            size=as_hw("image_size", self.image_size),
            mean=self.input_mean_,
            std=self.input_std_,
            reference=self.reference_,
            compare=self.reference,
            focus=self.focus,
            focus_sigma=self.focus_sigma,
            in_chans=self.in_chans_,
            channels_last=self._channels_last,
        )

    @property
    def good_class_(self) -> Any:
        """The fitted good class — the one rule every face of gaikan uses.

        ``good_class`` when given (None when it is no class), else a class
        named ``"good"``, else the first class whose name is a usual good
        folder name in any case (``ok``, ``normal``, ``pass``:
        :data:`gaikan.io.GOOD_NAMES`), else None (every class a defect type).
        """
        from ...io import GOOD_NAMES

        labels = self.classes_.tolist()
        good = plain_label(self.good_class)
        if good is not None:
            return good if good in labels else None
        if "good" in labels:
            return "good"
        return next((c for c in labels if str(c).strip().lower() in GOOD_NAMES), None)

    # -- fitting ------------------------------------------------------------------
    def _split(
        self, X: Any, y: Any, X_valid: Any = None, y_valid: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Check the data, fit ``classes_``; (X_train, y_train, X_valid, y_valid) as class indices."""
        X = check_X(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ParameterError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        classes = np.unique(y)
        if classes.size < 2:
            raise ParameterError("y must hold at least two classes")
        self.classes_ = classes
        y_idx = np.searchsorted(classes, y)
        if X_valid is not None:
            Xv = check_X(X_valid, "X_valid")
            yv = np.asarray(y_valid)
            unknown = set(np.unique(yv)) - set(classes.tolist())
            if unknown:
                raise ParameterError(f"y_valid holds classes not in y: {sorted(unknown)}")
            Xt, yt, yvi = X, y_idx, np.searchsorted(classes, yv)
            self.valid_idx_ = None
        else:
            tr, va = stratified_split(y_idx, self.valid_frac, self.random_state)
            Xt, yt, Xv, yvi = X[tr], y_idx[tr], X[va], y_idx[va]
            self.valid_idx_ = va
        return Xt, yt, Xv, yvi

    def _setup(self, Xt: np.ndarray, yt: np.ndarray, X_good: Any = None) -> InputPipeline:
        """Build the network and fit the input statistics (inside the seeded torch context)."""
        model, arch, mean, std = self._create_model(int(self.classes_.size))
        self.arch_ = arch
        self.input_mean_, self.input_std_ = mean, std
        self._fit_input(Xt, yt, X_good)
        self.in_chans_ = int(getattr(model, "in_chans", 3) or 3)
        self.model_ = to_device(model, self.device, self._channels_last)
        return self.input_pipeline()

    def _train_batch(self, pipe: InputPipeline) -> Callable[[Any, Any], Any]:
        """Encoded training batch → augmented network input."""
        aug = Augmentation(
            self.hflip,
            self.vflip,
            self.rot90,
            self.max_rotate,
            self.max_shift,
            self.brightness,
            self.contrast,
        )

        def prepare(xb: Any, gen: Any) -> Any:
            return augment(pipe.expand(xb), gen, aug, pipe.mean, pipe.std, reference=self.reference)

        return prepare

    def fine_tune(
        self,
        X: Any,
        y: Any,
        epochs: int = 5,
        base_lr: float = 2e-3,
        freeze_epochs: int = 1,
        lr_mult: float | None = None,
        pct_start: float = 0.3,
        div: float = 5.0,
        *,
        X_valid: Any = None,
        y_valid: Any = None,
        X_good: Any = None,
        progress: bool | Callable[[dict], None] = False,
    ) -> Classifier:
        """Fine-tune on labelled images (fastai's recipe, see :mod:`.training`).

        Parameters
        ----------
        X : array-like, shape (n, H, W) or (n, H, W, 3)
            Images on the 0–255 scale.
        y : array-like, shape (n,)
            Class labels (strings or integers).
        epochs : int
            Epochs of the unfrozen stage.
        base_lr : float
            Peak rate of the head; the frozen stage uses it as is.
        freeze_epochs : int
            Epochs of the frozen stage (0 skips it).
        lr_mult : float or None
            Ratio between the head's and the stem's peak rate.  None: 100
            (fastai's ``slice(lr/100, lr)``) for a pretrained body, 1 for a
            network trained from scratch (nothing to protect).  On images
            far from ImageNet — synthetic parts, difference channels — 10
            learns markedly faster (connectors, focus model, same epochs:
            97.7 % vs 96.0 % test accuracy).
        pct_start, div : float
            One-cycle parameters of the unfrozen stage.
        X_valid, y_valid : optional
            Explicit validation set (else ``valid_frac`` of X).
        X_good : array-like, optional
            Images of good parts for the reference (and a SOART ViT's unit
            space) when the classes hold none, e.g. a task that classifies
            only defective parts.
        progress : bool or callable
            True: a tqdm bar with loss/metrics per epoch; a callable gets a
            dict per epoch.

        Returns
        -------
        self

        Raises
        ------
        ParameterError
            A bad parameter or argument (named), or unusable images/labels.
        """
        torch = require("torch", "deep")
        self._check_params()
        check_all(
            FIT_RULES,
            dict(
                epochs=epochs,
                freeze_epochs=freeze_epochs,
                base_lr=base_lr,
                lr_mult=lr_mult,
                pct_start=pct_start,
                div=div,
            ),
        )
        if lr_mult is None:
            lr_mult = 100.0 if self.pretrained else 1.0
        Xt, yt, Xv, yv = self._split(X, y, X_valid, y_valid)
        t0 = time.perf_counter()
        with torch_context(self.num_threads, self.random_state, self.device):
            pipe = self._setup(Xt, yt, X_good)
            xt, xv = pipe.encode(Xt), pipe.encode(Xv) if len(Xv) else None
            groups = training.layer_groups(self.model_, self.n_groups)
            run = training.TrainingRun(
                model=self.model_,
                opt=training.make_optimizer(groups, self.weight_decay),
                groups=groups,
                xt=xt,
                yt=torch.as_tensor(yt, dtype=torch.long),
                xv=xv,
                yv=torch.as_tensor(yv, dtype=torch.long) if len(Xv) else None,
                gen=torch.Generator().manual_seed(int(self.random_state) + 1),
                prepare=self._train_batch(pipe),
                expand=pipe.expand,
                device=self.device,
                batch_size=self.batch_size,
                label_smoothing=self.label_smoothing,
                patience=self.patience,
                precise_bn=self.precise_bn,
                chunk=self._chunk,
                progress=progress,
            )
            self.history_ = run.history
            stages = training.plan_stages(
                len(groups),
                base_lr=base_lr,
                epochs=epochs,
                freeze_epochs=freeze_epochs,
                lr_mult=lr_mult,
                pct_start=pct_start,
                div=div,
            )
            self.best_epoch_ = run.fit(stages)
            self.model_.eval()
        self.fit_time_ = time.perf_counter() - t0
        self.n_train_ = len(Xt)
        self.n_valid_ = len(Xv)
        self.input_shape_ = list(np.shape(X)[1:])
        return self

    def fit(self, X: Any, y: Any, **kw: Any) -> Classifier:
        """Alias of :meth:`fine_tune` (scikit-learn style)."""
        return self.fine_tune(X, y, **kw)

    def lr_find(
        self,
        X: Any,
        y: Any,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        beta: float = 0.98,
        stop_div: float = 4.0,
        X_good: Any = None,
    ) -> LRFindResult:
        """Exponential learning-rate sweep (Smith, 2015) on the unfrozen net.

        Trains one mini-batch per step with the rate growing geometrically
        from ``start_lr`` to ``end_lr`` and records the exponentially
        smoothed loss (bias-corrected), stopping once it exceeds
        ``stop_div`` × its minimum (:func:`.training.lr_sweep`).  The model
        is discarded afterwards, so the sweep does not change what
        :meth:`fine_tune` starts from.

        Returns
        -------
        LRFindResult
        """
        torch = require("torch", "deep")
        self._check_params()
        Xt, yt, _, _ = self._split(X, y)
        with torch_context(self.num_threads, self.random_state, self.device):
            pipe = self._setup(Xt, yt, X_good)  # the reference, as fine_tune(X_good=) builds it
            xt = pipe.encode(Xt)
            groups = training.layer_groups(self.model_, self.n_groups)
            training.freeze_body(self.model_, groups, False)
            res = training.lr_sweep(
                self.model_,
                training.make_optimizer(groups, self.weight_decay),
                xt,
                torch.as_tensor(yt, dtype=torch.long),
                torch.Generator().manual_seed(int(self.random_state) + 2),
                prepare=self._train_batch(pipe),
                device=self.device,
                batch_size=self.batch_size,
                start_lr=start_lr,
                end_lr=end_lr,
                num_it=num_it,
                beta=beta,
                stop_div=stop_div,
            )
            del self.model_
        return res

    # -- prediction -----------------------------------------------------------------
    def _check_fitted(self) -> None:
        """The one fitted check: NotFittedError before :meth:`fine_tune` (or load)."""
        if getattr(self, "model_", None) is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted; call fine_tune first")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        torch = require("torch", "deep")
        self._check_fitted()
        X = check_X(X)
        pipe = self.input_pipeline()
        with torch_context(self.num_threads, None, self.device):
            out = []
            for s in range(0, X.shape[0], 256):
                z = logits(
                    self.model_,
                    pipe.encode(X[s : s + 256]),
                    chunk=self._chunk,
                    expand=pipe.expand,
                    device=self.device,
                )
                out.append(torch.softmax(z, 1).numpy())
        return np.concatenate(out).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, shape (n,), taken from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # -- explanations ---------------------------------------------------------------
    def explain(
        self,
        X: Any,
        method: str | None = None,
        target: Any = None,
        layer: str | None = None,
    ) -> np.ndarray:
        """Where the network looked: (n, H, W) maps at X's resolution.

        Parameters
        ----------
        X : array-like, shape (n, H, W) or (n, H, W, 3)
        method : {"gradcam", "layercam", "eigencam", "ig"}, optional
            Default: ``cam_method`` ("auto": IG for a reference model, else
            LayerCAM at ``cam_layer``, stride 16).
            Grad-CAM (Selvaraju et al. 2017), LayerCAM (Jiang et al. 2021;
            finer, element-wise gradients), EigenCAM (Muhammad & Yeasin
            2020; gradient-free, first principal component) or "ig":
            integrated gradients (Sundararajan et al. 2017) from the mean
            good image to the image, i.e. which pixels' *differences from
            a good part* raised the class score — pixel-sharp, see
            :meth:`integrated_gradients`.
        target : label or None
            Class to explain (default: the predicted class of each image).
        layer : str or None
            Module name (``model_.named_modules()``) whose activations are
            used when ``method`` is given; None: the last feature map;
            ``"auto"``: the stage at stride 16.

        Returns
        -------
        ndarray, shape (n, H, W), float64
            Each map scaled to [0, 1]; higher = more relevant.
        """
        self._check_fitted()
        X = check_X(X)
        if method is None:
            method = self.cam_method or self.default_method
            if method == "auto":
                method = "ig" if self.reference else "layercam"
            layer = self.cam_layer
        if method not in self.methods:
            raise ParameterError(
                f"unknown method {method!r}; choose from {', '.join(self.methods)}"
            )
        if method == "ig":
            return self.integrated_gradients(X, target=target)
        layer = _explain.resolve_layer(self.model_, layer)
        targets = _explain.target_indices(self.classes_, target, X.shape[0])
        with torch_context(self.num_threads, None, self.device):
            return _explain.cam_maps(
                self.model_,
                self.input_pipeline(),
                X,
                method=method,
                targets=targets,
                layer=layer,
                device=self.device,
            )

    def integrated_gradients(
        self,
        X: Any,
        target: Any = None,
        steps: int = 8,
        smooth: float = 1.5,
        part: str = "positive",
        normalize: bool = True,
    ) -> np.ndarray:
        """Integrated gradients against the mean good image, (n, H, W) in [0, 1].

        Attribution of pixel p: ``(x_p − r_p) · mean_α ∂f_c/∂x_p`` along the
        straight path ``r + α(x − r)`` (midpoint rule, ``steps`` points),
        with ``r = reference_`` the mean good training image and ``f_c`` the
        class logit.  By IG's completeness the attributions sum to
        ``f_c(x) − f_c(r)``: the map splits *how much more class-c the
        image is than a good part* over the pixels that differ from one.
        It lives at the image's own resolution (no upsampled feature grid),
        so it can point at one pin.

        Parameters
        ----------
        X : array-like, shape (n, H, W) or (n, H, W, 3), the training size
        target : label or None
            Class to explain (default: the predicted class).
        steps : int
            Path points (cost: ``steps`` forward/backward passes per image).
        smooth : float
            Gaussian sigma in pixels against single-pixel speckle (0: none).
        part : {"positive", "abs", "signed"}
            Keep the evidence *for* the class (default), its magnitude, or
            the signed attributions.
        normalize : bool
            Scale each map to a maximum of 1 (False: raw attributions in
            logit units; with ``part="signed", smooth=0`` they sum to
            ``f_c(x) − f_c(r)`` up to the quadrature error).

        Returns
        -------
        ndarray, shape (n, H, W), float64
            In [0, 1] unless ``part="signed"`` or ``normalize=False``.
        """
        if part not in _explain.IG_PARTS:
            raise ParameterError("part must be 'positive', 'abs' or 'signed'")
        if int(steps) < 1:
            raise ParameterError("steps must be at least 1")
        self._check_fitted()
        X = check_X(X)
        ref = self.reference_
        if ref is None:
            raise ParameterError(
                "this model has no reference image (a model file written before "
                "gaikan stored one): retrain it, or use method='layercam'"
            )
        if ref.shape != X.shape[1:]:
            raise ParameterError(
                "integrated gradients need the images at the training size "
                f"{ref.shape}; got {X.shape[1:]}"
            )
        targets = _explain.target_indices(self.classes_, target, X.shape[0])
        with torch_context(self.num_threads, None, self.device):
            return _explain.integrated_gradients(
                self.model_,
                self.input_pipeline(),
                X,
                targets=targets,
                steps=int(steps),
                smooth=smooth,
                part=part,
                normalize=normalize,
                device=self.device,
            )

    # -- model files ----------------------------------------------------------------
    def _extra_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fitted input state beyond the network: (arrays, JSON meta)."""
        ref = self.reference_
        return ({"reference": np.asarray(ref, np.float32)} if ref is not None else {}), {}

    def _set_extra_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if "reference" in arrays:
            self.reference_ = np.asarray(arrays["reference"], np.float32)
        elif self.reference:
            raise ModelFileError("reference=True but the model file holds no reference image")
        else:
            self.reference_ = None  # a file written before gaikan stored the reference

    def to_modelfile(self):
        """The fitted classifier as a :class:`gaikan.modelfile.ModelFile`."""
        from safetensors.torch import save as st_save

        from ...modelfile import ModelFile

        self._check_fitted()
        arrays, extra = self._extra_state()
        classes = self.classes_.tolist()
        meta = {
            "classes": classes,
            "classes_dtype": "str" if self.classes_.dtype.kind in "US" else "int",
            "arch": self.arch_,
            "in_chans": self.in_chans_,
            "input_mean": list(self.input_mean_),
            "input_std": list(self.input_std_),
            "history": self.history_,
            "best_epoch": int(self.best_epoch_),
            "fit_time": float(self.fit_time_),
            "n_train": int(self.n_train_),
            "n_valid": int(self.n_valid_),
            "input_shape": list(self.input_shape_),
            "extra": extra,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        # numpy scalars (e.g. good_class=y[0]) become plain JSON numbers/strings
        params = json.loads(
            json.dumps(
                self.get_params(), default=lambda o: o.item() if hasattr(o, "item") else str(o)
            )
        )
        # the weights travel inside the file; a model file never names a path to open
        if "weights_file" in params:
            params["weights_file"] = None
        return ModelFile(
            kind=self.kind,
            params=params,
            meta=meta,
            arrays=arrays,
            blobs={"weights.safetensors": st_save(state)},
        )

    @classmethod
    def from_modelfile(cls, mf) -> Classifier:
        """Rebuild a fitted classifier from a :class:`ModelFile`."""
        from safetensors.torch import load as st_load

        if mf.kind != cls.kind:
            raise ModelFileError(f"model file holds a {mf.kind!r}, not a {cls.kind!r}")
        try:
            obj = cls(**mf.params)
            meta = mf.meta
            dtype = str if meta.get("classes_dtype") == "str" else int
            obj.classes_ = np.asarray(meta["classes"], dtype=dtype)
            obj.arch_ = meta["arch"]
            obj.in_chans_ = int(meta["in_chans"])
            obj.input_mean_ = [float(v) for v in meta["input_mean"]]
            obj.input_std_ = [float(v) for v in meta["input_std"]]
            obj.history_ = meta.get("history", [])
            obj.best_epoch_ = meta.get("best_epoch", -1)
            obj.fit_time_ = meta.get("fit_time", 0.0)
            obj.n_train_ = meta.get("n_train", 0)
            obj.n_valid_ = meta.get("n_valid", 0)
            obj.input_shape_ = meta.get("input_shape", [])
            obj._set_extra_state(mf.arrays, meta.get("extra", {}))
            blob = mf.blobs.get("weights.safetensors")
            if blob is None:
                raise ModelFileError("model file has no weights.safetensors member")
            model = obj._rebuild(obj.arch_, int(obj.classes_.size))
            model.load_state_dict(st_load(blob), strict=True)
            obj.model_ = to_device(model, obj.device, obj._channels_last).eval()
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"model file content does not fit {cls.__name__}: {exc}") from None
        return obj

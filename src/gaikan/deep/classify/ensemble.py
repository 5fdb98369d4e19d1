"""Seed ensembles of classifiers: the same recipe trained ``n_members`` times.

Averaging the class probabilities of a few networks that differ only in
their seed (head initialisation, shuffling, augmentation) is the cheapest
reliable accuracy gain there is for small data (Lakshminarayanan et al.
2017, "deep ensembles"), and it makes the confidences better calibrated.
On the synthetic connectors' defect-mode task (docs/classifier.md) five
members lifted the focus model from 0.990 (mean of five single runs) to
0.997 on both the dev and the test set.  The price is ``n_members`` × the
training and inference time, so the default is a single model everywhere
else (``gaikan train --members``).

The ensemble has the classifier interface that the CLI, the report and the
service use (``classes_``, ``good_class_``, ``predict_proba``, ``predict``,
``explain``, ``save``/``load``), so it can be served and inspected like
one classifier.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from ..._params import ParamsMixin
from ...errors import ModelFileError, NotFittedError, ParameterError
from ...modelfile import ModelFileMixin
from .classifier import Classifier
from .params import integer
from .training import stratified_split

__all__ = ["ClassifierEnsemble"]


class ClassifierEnsemble(ModelFileMixin, ParamsMixin):
    """Mean of ``n_members`` copies of ``estimator`` trained with seeds
    ``estimator.random_state + i``.

    All members share one train/validation split (the estimator's
    ``valid_frac`` and ``random_state``), so the validation figures of the
    ensemble are honest.

    Parameters
    ----------
    estimator : Classifier or ViTClassifier
        The recipe (unfitted); it is cloned, never fitted itself.
    n_members : int, default 5

    Attributes
    ----------
    members_ : list of Classifier
        The fitted members.
    classes_, good_class_, input_shape_
        As the members' (identical by construction).
    history_, best_epoch_
        The first member's (for training curves).
    fit_time_ : float
        Total training time of all members, seconds.

    Examples
    --------
    >>> from gaikan.deep import Classifier, ClassifierEnsemble
    >>> ens = ClassifierEnsemble(Classifier(focus=80, reference=True, valid_frac=0.0,
    ...                                     patience=None), n_members=5)  # doctest: +SKIP
    >>> ens.fine_tune(X, y, epochs=24).predict(X_test)  # doctest: +SKIP
    """

    kind: ClassVar[str] = "classifier-ensemble"

    def __init__(self, estimator: Classifier | None = None, *, n_members: int = 5) -> None:
        self.estimator = estimator
        self.n_members = n_members

    # -- fitting -----------------------------------------------------------------
    def _template(self) -> Classifier:
        est = self.estimator if self.estimator is not None else Classifier()
        if not isinstance(est, Classifier):
            raise TypeError(f"estimator must be a gaikan Classifier, got {type(est).__name__}")
        integer(1)("n_members", self.n_members)
        return est

    def _member(self, i: int) -> Classifier:
        est = self._template()
        params = est.get_params()
        params["random_state"] = int(params.get("random_state") or 0) + i
        return type(est)(**params)

    def fine_tune(
        self,
        X: Any,
        y: Any,
        *args: Any,
        X_valid: Any = None,
        y_valid: Any = None,
        progress: Any = False,
        **kw: Any,
    ) -> ClassifierEnsemble:
        """Train every member with :meth:`Classifier.fine_tune` (same arguments).

        Parameters
        ----------
        X : array-like, shape (n, H, W) or (n, H, W, 3)
        y : array-like, shape (n,)
        *args
            ``epochs``, ``base_lr``, … positionally, as :meth:`Classifier.fine_tune`.
        X_valid, y_valid : optional
            Explicit validation set; default: one seeded stratified split
            of ``X`` (``estimator.valid_frac``) shared by all members.
        progress : bool or callable
            As :meth:`Classifier.fine_tune`; a callable also receives the
            member index as ``rec["member"]``.
        **kw
            ``epochs``, ``base_lr``, ``freeze_epochs``, ``lr_mult``,
            ``X_good``… passed on.
        """
        est = self._template()
        est._check_params()  # before the shared split uses valid_frac
        X = np.asarray(X)
        y = np.asarray(y)
        self.valid_idx_ = None
        if X_valid is None and est.valid_frac > 0:
            if y.shape != (X.shape[0],):
                raise ParameterError(f"y must have shape ({X.shape[0]},), got {y.shape}")
            _, y_idx = np.unique(y, return_inverse=True)
            tr, va = stratified_split(y_idx, est.valid_frac, est.random_state)
            if len(va):
                self.valid_idx_ = va
                X, y, X_valid, y_valid = X[tr], y[tr], X[va], y[va]
        members = []
        for i in range(int(self.n_members)):
            m = self._member(i)
            cb = progress
            if callable(progress):

                def cb(rec, _i=i):
                    progress({**rec, "member": _i})
            elif progress:
                from tqdm.auto import tqdm

                tqdm.write(f"member {i + 1}/{self.n_members}")
            m.fine_tune(X, y, *args, X_valid=X_valid, y_valid=y_valid, progress=cb, **kw)
            members.append(m)
        self.members_ = members
        self.n_train_ = len(y)
        self.n_valid_ = 0 if X_valid is None else len(X_valid)
        return self

    def fit(self, X: Any, y: Any, **kw: Any) -> ClassifierEnsemble:
        """Alias of :meth:`fine_tune` (scikit-learn style)."""
        return self.fine_tune(X, y, **kw)

    def lr_find(self, X: Any, y: Any, **kw: Any):
        """The learning-rate sweep of the first member's recipe (see :meth:`Classifier.lr_find`)."""
        return self._member(0).lr_find(X, y, **kw)

    # -- the classifier interface ------------------------------------------------
    def _check_fitted(self) -> None:
        if not getattr(self, "members_", None):
            raise NotFittedError("this ClassifierEnsemble is not fitted; call fine_tune first")

    #: fitted attributes read from the first member (identical in all)
    _SHARED: ClassVar[frozenset] = frozenset(
        {
            "classes_",
            "good_class_",
            "input_shape_",
            "history_",
            "best_epoch_",
            "arch_",
            "in_chans_",
            "methods",
            "default_method",
        }
    )

    def __getattr__(self, name: str) -> Any:
        # only reached for names the ensemble does not define: the shared
        # fitted attributes above and the recipe's parameters (image_size,
        # reference, focus, device, ...) that the CLI and the service read
        d = self.__dict__
        members, est = d.get("members_"), d.get("estimator")
        if name in self._SHARED and members:
            return getattr(members[0], name)
        if est is not None and name in est._param_names():
            return getattr(est, name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def fit_time_(self) -> float:
        self._check_fitted()
        return float(sum(m.fit_time_ for m in self.members_))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Mean of the members' class probabilities, shape (n, n_classes)."""
        self._check_fitted()
        return np.mean([m.predict_proba(X) for m in self.members_], axis=0)

    def predict(self, X: Any) -> np.ndarray:
        """Labels of the highest mean probability, shape (n,)."""
        proba = self.predict_proba(X)
        return self.members_[0].classes_[proba.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def explain(
        self, X: Any, method: str | None = None, target: Any = None, **kw: Any
    ) -> np.ndarray:
        """Mean of the members' explanation maps, (n, H, W) in [0, 1].

        Every member explains the same class: ``target``, or by default the
        ensemble's prediction (not each member's own).
        """
        self._check_fitted()
        if target is None:
            target = self.predict(X)
        maps = np.mean(
            [m.explain(X, method=method, target=target, **kw) for m in self.members_], axis=0
        )
        hi = maps.reshape(len(maps), -1).max(axis=1) if maps.size else np.zeros(0)
        return maps / np.where(hi > 0, hi, 1.0)[:, None, None]

    # -- model files -------------------------------------------------------------
    def to_modelfile(self):
        """All members in one :class:`gaikan.modelfile.ModelFile` (``save`` writes it)."""
        from ...modelfile import ModelFile, pack_members

        self._check_fitted()
        members, arrays, blobs = pack_members([m.to_modelfile() for m in self.members_])
        valid = self.valid_idx_
        meta = {"members": members, "n_train": self.n_train_, "n_valid": self.n_valid_}
        if valid is not None:
            arrays["valid_idx"] = np.asarray(valid, np.int64)
        params = {
            "n_members": int(self.n_members),
            "estimator": {"kind": members[0]["kind"], "params": members[0]["params"]},
        }
        return ModelFile(
            kind=self.kind,
            params=json.loads(json.dumps(params)),
            meta=meta,
            arrays=arrays,
            blobs=blobs,
        )

    @classmethod
    def from_modelfile(cls, mf) -> ClassifierEnsemble:
        """Rebuild a fitted ensemble from a :class:`ModelFile`."""
        from ...detectors.registry import get_detector_class
        from ...modelfile import unpack_members

        if mf.kind != cls.kind:
            raise ModelFileError(f"model file holds a {mf.kind!r}, not a {cls.kind!r}")
        try:
            spec = mf.params["estimator"]
            member_cls = get_detector_class(spec["kind"])
            if not (isinstance(member_cls, type) and issubclass(member_cls, Classifier)):
                raise ModelFileError(f"ensemble member kind {spec['kind']!r} is not a classifier")
            members = [
                member_cls.from_modelfile(sub)
                for sub in unpack_members(mf.meta["members"], mf.arrays, mf.blobs)
            ]
            if len(members) != int(mf.params["n_members"]) or not members:
                raise ModelFileError(
                    f"ensemble file holds {len(members)} members, expected {mf.params['n_members']}"
                )
            if any(not np.array_equal(m.classes_, members[0].classes_) for m in members):
                raise ModelFileError("ensemble members disagree on the classes")
            obj = cls(member_cls(**spec["params"]), n_members=int(mf.params["n_members"]))
            obj.members_ = members
            obj.n_train_ = int(mf.meta.get("n_train", 0))
            obj.n_valid_ = int(mf.meta.get("n_valid", 0))
            obj.valid_idx_ = mf.arrays.get("valid_idx")
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"model file content does not fit {cls.__name__}: {exc}") from None
        return obj

"""Model files that anyone can open safely.

A model file is a zip archive with

- ``manifest.json``: format name, format version, gaikan version, and the
  SHA-256 of every other member;
- ``params.json``: the detector's kind, its constructor parameters and
  metadata (image shape, threshold, training-set size, …);
- ``arrays.npz``: fitted numpy arrays, read with ``allow_pickle=False``;
- optional extra members (``*.safetensors`` for torch weights).

Nothing is ever unpickled; a tampered, truncated or foreign file raises
:class:`~gaikan.errors.ModelFileError` with a message that says why.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFile", "ModelFileMixin", "read_model", "write_model"]

FORMAT = "gaikan-model"
FORMAT_VERSION = 1
_MAX_MEMBER = 4 << 30  # refuse absurd members (zip bombs)


@dataclass
class ModelFile:
    """The parsed content of a model file.

    Attributes
    ----------
    kind : str
        Registry name of the detector (``"soartc"``, ``"padim"``, …).
    params : dict
        Constructor keyword parameters.
    meta : dict
        Fitted scalars and descriptive metadata (JSON types only).
    arrays : dict of str to ndarray
    blobs : dict of str to bytes
        Extra members such as safetensors weights.
    """

    kind: str
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_model(path: str | os.PathLike, model: ModelFile) -> Path:
    """Write ``model`` to ``path`` atomically (temp file, then rename)."""
    from . import __version__

    members: dict[str, bytes] = {}
    members["params.json"] = json.dumps(
        {"kind": model.kind, "params": model.params, "meta": model.meta},
        indent=1,
        sort_keys=True,
        allow_nan=True,
    ).encode()
    buf = io.BytesIO()
    for name, arr in model.arrays.items():
        if np.asarray(arr).dtype == object:
            raise ModelFileError(f"array {name!r} has dtype object; model files hold plain arrays")
    np.savez(buf, **{k: np.asarray(v) for k, v in model.arrays.items()})
    members["arrays.npz"] = buf.getvalue()
    for name, data in model.blobs.items():
        if name in members or name == "manifest.json" or "/" in name or name.startswith("."):
            raise ModelFileError(f"bad blob name {name!r}")
        members[name] = bytes(data)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gaikan_version": __version__,
        "kind": model.kind,
        "sha256": {k: _sha(v) for k, v in members.items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        for name, data in members.items():
            zf.writestr(name, data)
    os.replace(tmp, path)
    return path


def read_model(path: str | os.PathLike) -> ModelFile:
    """Read and verify a model file.

    Raises
    ------
    ModelFileError
        Missing, not a zip, truncated, checksum mismatch, foreign format or
        unsupported version, unsafe arrays.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ModelFileError(f"{where}: no such model file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            f"{where}: not a gaikan model file (not a zip archive: {exc}); "
            "was it truncated in transfer? Re-save it with `gaikan fit`."
        ) from None
    with zf:
        names = set(zf.namelist())
        if "manifest.json" not in names:
            raise ModelFileError(f"{where}: not a gaikan model file (no manifest.json)")
        for info in zf.infolist():
            if info.file_size > _MAX_MEMBER:
                raise ModelFileError(f"{where}: member {info.filename} is implausibly large")

        def member(name: str) -> bytes:
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, KeyError, zlib.error) as exc:
                raise ModelFileError(f"{where}: damaged member {name} ({exc})") from None

        try:
            manifest = json.loads(member("manifest.json"))
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{where}: manifest.json is not JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelFileError(f"{where}: not a gaikan model file (format is not {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                f"{where}: model format version {version!r} is not supported by this gaikan "
                f"(reads version {FORMAT_VERSION}); refit the model or use a matching gaikan"
            )
        sums = manifest.get("sha256")
        if not isinstance(sums, dict) or "params.json" not in sums or "arrays.npz" not in sums:
            raise ModelFileError(f"{where}: manifest lacks checksums")
        extra = names - set(sums) - {"manifest.json"}
        if extra:
            raise ModelFileError(f"{where}: unlisted members {sorted(extra)} (tampered?)")
        data: dict[str, bytes] = {}
        for name, digest in sums.items():
            if name not in names:
                raise ModelFileError(f"{where}: member {name} is missing (truncated?)")
            blob = member(name)
            if _sha(blob) != digest:
                raise ModelFileError(
                    f"{where}: checksum mismatch in {name}: the file was modified or damaged"
                )
            data[name] = blob
    try:
        head = json.loads(data.pop("params.json"))
        kind, params, meta = head["kind"], head["params"], head.get("meta", {})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{where}: params.json is malformed ({exc})") from None
    try:
        with np.load(io.BytesIO(data.pop("arrays.npz")), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{where}: arrays.npz is unreadable or unsafe ({exc})") from None
    return ModelFile(
        kind=kind, params=params, meta=meta, arrays=arrays, blobs=data, format_version=version
    )


class ModelFileMixin:
    """``save`` / ``load`` for a class with ``kind``, ``to_modelfile()`` and
    ``from_modelfile(mf)`` (the classifiers; detectors load through the
    registry instead)."""

    def save(self, path: str | os.PathLike) -> None:
        """Write a gaikan model file (zip of JSON, npz and safetensors; no pickle)."""
        write_model(path, self.to_modelfile())

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a model file written by :meth:`save`; refuses another kind of model."""
        mf = read_model(path)
        if mf.kind != cls.kind:
            raise ModelFileError(f"{path}: holds a {mf.kind!r} model, not a {cls.kind!r}")
        return cls.from_modelfile(mf)
